package e2e

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchQuick runs cove bench --quick, the smoke check of the harness: every scenario runs
// against the generated upstream, cove and Debian's docker-registry as the peer; the table and
// the target lines are printed; results.json holds every scenario with its figures and ratios, and
// chart.svg is an SVG document. The figures themselves are reported, not asserted (issue 7), but
// the ones that say the harness measured something real must be there: bytes moved, digests
// checked, the peer compared with.
func TestBenchQuick(t *testing.T) {
	requireTool(t, "docker-registry")
	out := t.TempDir()
	cmd := execCove("bench", "--quick", "--out", out)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cove bench --quick: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"COLD BLOB", "WARM BLOB", "HERD", "MANIFESTS", "MANY SMALL LAYERS", "TOKEN ISSUANCE", "TARGETS", "peak RSS"} {
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
	var rep struct {
		Machine   map[string]string
		Scenarios []struct {
			Name    string
			Metrics map[string]struct{ Median, Min, Max float64 }
			Ratios  map[string]float64
			RSS     float64 `json:"cove_peak_rss_mib"`
			Reset   bool    `json:"rss_reset"`
		}
		Targets []struct {
			Name   string
			Absent bool
		}
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if rep.Machine["cpus"] == "" {
		t.Errorf("results.json does not say what machine it ran on: %v", rep.Machine)
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
		"warm blob":         {"cove throughput", "limit throughput"},
		"herd":              {"cove upstream downloads", "peer upstream downloads", "cove wall", "cove wall, warm", "digests checked and right"},
		"manifests":         {},
		"many small layers": {"upstream pull", "cove cold pull", "cove warm pull", "peer cold pull"},
		"token issuance":    {"cove tokens"},
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
		if len(s.Ratios) == 0 && name != "token issuance" {
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
		"token issuance":    {"cove tokens errors": 0},
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
		"cove/limit throughput":    {"warm blob", "cove throughput", "limit throughput"},
		"cove cold/warm wall":      {"herd", "cove wall", "cove wall, warm"},
		"cove/upstream GET by tag": {"manifests", "cove GET by tag", "upstream GET by tag"},
		"cove/peer GET by digest":  {"manifests", "cove GET by digest", "peer GET by digest"},
		"cove cold/upstream time":  {"many small layers", "cove cold pull", "upstream pull"},
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
	if len(rep.Targets) != 12 {
		t.Errorf("%d target lines, want the issue's 12", len(rep.Targets))
	}
	for _, tg := range rep.Targets {
		if tg.Absent {
			t.Errorf("target %q had no figure to stand against", tg.Name)
		}
	}

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
