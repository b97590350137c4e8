package e2e

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBenchQuick runs cove bench --quick, the smoke check of the harness: every scenario runs
// against the generated upstream, cove and Debian's docker-registry as the peer; the table and
// the target lines are printed; results.json holds every scenario with its figures and ratios, and
// chart.svg is an SVG document. The figures themselves are reported, not asserted (issue 7), but
// the ones that say the harness measured something real must be there: bytes moved, digests
// checked, the peer compared with. Every figure printed was measured in the run (issue 10): a
// target's peer figure is the peer's figure of the run, and no other number is printed. The
// servers listen on ports of a range given with --ports.
func TestBenchQuick(t *testing.T) {
	requireTool(t, "docker-registry")
	out := t.TempDir()
	// Below the kernel's ephemeral ports, so that no client connection takes one meanwhile.
	first := 20000 + rand.IntN(10000)
	ports := fmt.Sprintf("%d-%d", first, first+40)
	cmd := execCove("bench", "--quick", "--out", out, "--ports", ports)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cove bench --quick: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"COLD BLOB", "WARM BLOB", "HERD", "MANIFESTS", "MANY SMALL LAYERS", "TOKENS", "TARGETS", "peak RSS",
		"token issuance, remembered password", "token issuance, first check of each password"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "6/6 done") {
		t.Errorf("no progress bar reached the end:\n%s", stderr.String())
	}

	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep benchReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if rep.Machine["cpus"] == "" {
		t.Errorf("results.json does not say what machine it ran on: %v", rep.Machine)
	}
	for role, u := range rep.Config.URLs {
		pu, err := url.Parse(u)
		if err != nil {
			t.Errorf("results.json: the %s's URL %q: %v", role, u, err)
			continue
		}
		if p, _ := strconv.Atoi(pu.Port()); p < first || p > first+40 {
			t.Errorf("the %s listened on %s, outside --ports %s", role, u, ports)
		}
	}
	if len(rep.Config.URLs) != 5 {
		t.Errorf("results.json: URLs of %v, want the upstream's, cove's, the peer's, the limit's and the in-memory handler's", rep.Config.URLs)
	}
	byName := map[string]int{}
	for i, s := range rep.Scenarios {
		byName[s.Name] = i
		if s.RSS <= 0 || !s.Reset {
			t.Errorf("%s: no peak RSS of cove within the scenario (%v MiB, reset %v)", s.Name, s.RSS, s.Reset)
		}
		for k, m := range s.Metrics {
			if m.Min > m.Median || m.Median > m.Max {
				t.Errorf("%s %s: min %v, median %v, max %v out of order", s.Name, k, m.Min, m.Median, m.Max)
			}
		}
	}
	var manifestKeys []string
	for _, who := range []string{"upstream", "cove", "peer"} {
		for _, m := range []string{"GET", "HEAD"} {
			for _, by := range []string{"tag", "digest"} {
				k := who + " " + m + " by " + by
				manifestKeys = append(manifestKeys, k, k+" p50", k+" p99")
			}
		}
	}
	need := map[string][]string{
		"cold blob":         {"cove TTFB", "cove throughput", "upstream throughput", "peer throughput", "cove upstream bytes / blob size"},
		"warm blob":         {"cove throughput", "limit throughput (fastest copier)", "limit throughput, sendfile", "peer throughput"},
		"herd":              {"cove upstream downloads", "peer upstream downloads", "cove wall", "cove wall, warm", "digests checked and right"},
		"manifests":         {},
		"many small layers": {"upstream pull", "cove cold pull", "cove warm pull", "peer cold pull"},
		"tokens":            {"cove tokens, remembered password", "cove tokens, first check of each password", "bcrypt limit, every core"},
	}
	need["manifests"] = manifestKeys
	for name, metrics := range need {
		i, ok := byName[name]
		if !ok {
			t.Errorf("results.json lacks the %q scenario", name)
			continue
		}
		s := rep.Scenarios[i]
		for _, m := range metrics {
			if _, ok := s.Metrics[m]; !ok {
				t.Errorf("%s: no %q", name, m)
			} else if s.Metrics[m].Median <= 0 {
				t.Errorf("%s: %q is %v: nothing measured", name, m, s.Metrics[m].Median)
			}
		}
		if len(s.Ratios) == 0 {
			t.Errorf("%s: no ratios", name)
		}
	}
	// What does not depend on the machine's speed is checked exactly: cove's invariants held in
	// every repetition, warm steps never reached the upstream, no load request failed, and each
	// ratio is the quotient of its two medians.
	exact := map[string]map[string]float64{
		"cold blob":         {"cove upstream bytes / blob size": 1},
		"warm blob":         {"cove upstream GETs": 0},
		"herd":              {"cove upstream downloads": 1, "cove upstream GETs, warm": 0, "digests checked and right": 1, "peer digests checked and right": 1},
		"many small layers": {"cove upstream GETs, warm": 0},
		"tokens":            {"cove tokens errors": 0, "cove tokens errors, first check": 0},
		"manifests":         {},
	}
	for _, m := range []string{"GET", "HEAD"} {
		for _, by := range []string{"tag", "digest"} {
			exact["manifests"]["cove "+m+" by "+by+" errors"] = 0
		}
	}
	for name, want := range exact {
		i, ok := byName[name]
		if !ok {
			continue
		}
		for k, v := range want {
			m, ok := rep.Scenarios[i].Metrics[k]
			if !ok || m.Min != v || m.Max != v {
				t.Errorf("%s: %q is %+v, want %v in every repetition", name, k, m, v)
			}
		}
	}
	quotients := map[string][3]string{
		"cove/upstream throughput": {"cold blob", "cove throughput", "upstream throughput"},
		"cove/peer throughput":     {"cold blob", "cove throughput", "peer throughput"},
		"cove/limit throughput":    {"warm blob", "cove throughput", "limit throughput (fastest copier)"},
		"peer/limit throughput":    {"warm blob", "peer throughput", "limit throughput (fastest copier)"},
		"first check/bcrypt limit": {"tokens", "cove tokens, first check of each password", "bcrypt limit, every core"},
		"cove cold/warm wall":      {"herd", "cove wall", "cove wall, warm"},
		"cove/upstream GET by tag": {"manifests", "cove GET by tag", "upstream GET by tag"},
		"cove/peer GET by digest":  {"manifests", "cove GET by digest", "peer GET by digest"},
		"cove cold/upstream time":  {"many small layers", "cove cold pull", "upstream pull"},
		"peer/upstream throughput": {"cold blob", "peer throughput", "upstream throughput"},
		"peer/upstream GET by tag": {"manifests", "peer GET by tag", "upstream GET by tag"},
		"cove/memory GET by tag":   {"manifests", "cove GET by tag", "memory GET by tag"},
		"peer/memory GET by tag":   {"manifests", "peer GET by tag", "memory GET by tag"},
		"peer cold/upstream time":  {"many small layers", "peer cold pull", "upstream pull"},
	}
	for ratio, q := range quotients {
		i, ok := byName[q[0]]
		if !ok {
			continue
		}
		sc := rep.Scenarios[i]
		want := sc.Metrics[q[1]].Median / sc.Metrics[q[2]].Median
		if got := sc.Ratios[ratio]; got < want*0.999 || got > want*1.001 {
			t.Errorf("%s: ratio %q = %v, want %s / %s = %v", q[0], ratio, got, q[1], q[2], want)
		}
	}
	if len(rep.Targets) != 14 {
		t.Errorf("%d target lines, want the issue's 14", len(rep.Targets))
	}
	for _, tg := range rep.Targets {
		if tg.Absent || tg.Got == nil {
			t.Errorf("target %q had no figure to stand against", tg.Name)
		}
	}
	checkPeerFigures(t, &rep)
	checkPrintedFigures(t, &rep, stdout.String())

	f, err := os.Open(filepath.Join(out, "chart.svg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	root := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("chart.svg is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Errorf("chart.svg's root is %q, want svg", root)
	}
}

// benchReport is results.json as the tests read it.
type benchReport struct {
	Machine map[string]string
	Config  struct {
		URLs map[string]string `json:"urls"`
	}
	Scenarios []struct {
		Name    string
		Metrics map[string]struct{ Median, Min, Max float64 }
		Ratios  map[string]float64
		RSS     float64 `json:"cove_peak_rss_mib"`
		PeerRSS float64 `json:"peer_peak_rss_mib"`
		Reset   bool    `json:"rss_reset"`
	}
	Targets []struct {
		Name, Want, Unit string
		Got, Peer        *float64
		Absent           bool
	}
}

// checkPeerFigures: each target's peer figure is the peer's corresponding figure of the run,
// taken from the scenarios here independently of the harness, and targets with no such figure
// have none.
func checkPeerFigures(t *testing.T, rep *benchReport) {
	t.Helper()
	sc := func(name string) int {
		for i, s := range rep.Scenarios {
			if s.Name == name {
				return i
			}
		}
		t.Fatalf("results.json lacks the %q scenario", name)
		return -1
	}
	metric := func(scenario, key string) struct{ Median, Min, Max float64 } {
		m, ok := rep.Scenarios[sc(scenario)].Metrics[key]
		if !ok {
			t.Errorf("%s: no %q", scenario, key)
		}
		return m
	}
	quotient := func(scenario, a, b string) float64 {
		return metric(scenario, a).Median / metric(scenario, b).Median
	}
	worstP99, peakRSS := 0.0, 0.0
	for _, m := range []string{"GET", "HEAD"} {
		for _, by := range []string{"tag", "digest"} {
			worstP99 = max(worstP99, metric("manifests", "peer "+m+" by "+by+" p99").Median)
		}
	}
	for _, s := range rep.Scenarios {
		peakRSS = max(peakRSS, s.PeerRSS)
	}
	want := map[string]float64{
		"cold blob throughput":    quotient("cold blob", "peer throughput", "upstream throughput"),
		"warm blob throughput":    quotient("warm blob", "peer throughput", "limit throughput (fastest copier)"),
		"herd upstream downloads": metric("herd", "peer upstream downloads").Max,
		"herd digests":            metric("herd", "peer digests checked and right").Min,
		"manifest GET by tag":     quotient("manifests", "peer GET by tag", "memory GET by tag"),
		"manifest p99":            worstP99,
		"many small layers, cold": quotient("many small layers", "peer cold pull", "upstream pull"),
		"peak RSS":                peakRSS,
	}
	if peakRSS <= 0 {
		t.Errorf("no peak RSS of the peer in any scenario")
	}
	for _, tg := range rep.Targets {
		w, ok := want[tg.Name]
		switch {
		case !ok && tg.Peer != nil:
			t.Errorf("target %q: peer figure %v, but the run measures none of the peer's", tg.Name, *tg.Peer)
		case ok && tg.Peer == nil:
			t.Errorf("target %q: no peer figure, want the measured %v", tg.Name, w)
		case ok && math.Abs(*tg.Peer-w) > 1e-9*max(1, math.Abs(w)):
			t.Errorf("target %q: peer figure %v, want the measured %v", tg.Name, *tg.Peer, w)
		}
	}
}

// checkPrintedFigures: in the printed target lines, cove's figure and the peer's are those of
// results.json, a target with no peer figure prints none, and every other number is a threshold
// from the target's wording: no number comes from anywhere but the run.
func checkPrintedFigures(t *testing.T, rep *benchReport, table string) {
	t.Helper()
	_, section, ok := strings.Cut(table, "\nTARGETS")
	if !ok {
		t.Fatalf("no TARGETS section:\n%s", table)
	}
	lines := map[string][]string{}
	for _, line := range strings.Split(section, "\n")[2:] { // the title and the column heads
		if strings.TrimSpace(line) == "" {
			continue
		}
		cells := regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1)
		for len(cells) < 5 {
			cells = append(cells, "")
		}
		lines[cells[0]] = cells
	}
	for _, tg := range rep.Targets {
		cells, ok := lines[tg.Name]
		if !ok {
			t.Errorf("no target line for %q:\n%s", tg.Name, section)
			continue
		}
		if len(cells) != 5 {
			t.Errorf("target line %q: %d columns, want 5", cells, len(cells))
			continue
		}
		if tg.Got != nil && !printedAs(*tg.Got, firstNumber(cells[2])) {
			t.Errorf("target %q: cove's figure printed %q, results.json has %v", tg.Name, cells[2], *tg.Got)
		}
		switch {
		case tg.Peer == nil && cells[4] != "":
			t.Errorf("target %q prints a peer figure %q, but results.json has none", tg.Name, cells[4])
		case tg.Peer != nil && !printedAs(*tg.Peer, firstNumber(cells[4])):
			t.Errorf("target %q: the peer's figure printed %q, results.json has %v", tg.Name, cells[4], *tg.Peer)
		}
		for _, n := range numbersIn(cells[1]) {
			if !slices.Contains(numbersIn(tg.Want), n) {
				t.Errorf("target %q: want column %q has %s, not in the target %q", tg.Name, cells[1], n, tg.Want)
			}
		}
		for i, cell := range cells[2:] {
			if n := numbersIn(cell); len(n) > 1 || (len(n) == 1 && strings.TrimPrefix(cell, n[0]) == cell) {
				t.Errorf("target %q: column %d %q prints other numbers than its figure", tg.Name, i+3, cell)
			}
		}
	}
}

// printedRE is a number as the table prints one; in "p99" and "all=1" the digits are words.
var printedRE = regexp.MustCompile(`(?:^|[^\w.=])(\d[\d,]*(?:\.\d+)?)`)

func numbersIn(s string) []string {
	var out []string
	for _, m := range printedRE.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

func firstNumber(s string) string {
	if n := numbersIn(s); len(n) > 0 {
		return n[0]
	}
	return ""
}

// printedAs reports whether v printed with p's number of decimals is p.
func printedAs(v float64, p string) bool {
	decimals := 0
	if _, frac, ok := strings.Cut(p, "."); ok {
		decimals = len(frac)
	}
	return p != "" && strconv.FormatFloat(v, 'f', decimals, 64) == p
}

// TestBenchPortInUse: an address in use is an error at once that names the server, the address
// and the flag that chooses another; nothing is generated or started first.
func TestBenchPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	for _, role := range []string{"upstream", "cove", "peer", "limit"} {
		t.Run(role, func(t *testing.T) {
			cmd := execCove("bench", "--quick", "--listen-"+role, addr)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			start := time.Now()
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("cove bench --listen-%s %s (in use): %v, want exit status 2\n%s", role, addr, err, stderr.String())
			}
			for _, want := range []string{"the " + role + " cannot listen on " + addr, "address already in use", "--listen-" + role, "--ports"} {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
			if d := time.Since(start); d > 10*time.Second || stdout.Len() > 0 {
				t.Errorf("it ran %v and printed %q before refusing", d, stdout.String())
			}
		})
	}
}
