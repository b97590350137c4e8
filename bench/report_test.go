package bench

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

func one(v float64) stat { return stat{Median: v, Min: v, Max: v} }

// report is a run with the given figures of cove, as the scenarios would have left them, and
// none of the peer's.
func report(warm, cold, upBytes, herdDownloads, herdRatio, byTag, byDigest, p99, layers, rss, tokens, warmPeer, firstCheck float64) *Report {
	r := &Report{Scenarios: []*Scenario{
		{Name: "cold blob", Ratios: map[string]float64{"cove/upstream throughput": cold}, Metrics: map[string]stat{"cove upstream bytes / blob size": one(upBytes)}, PeakRSSMiB: rss},
		{Name: "warm blob", Ratios: map[string]float64{"cove/limit throughput": warm, "cove/peer throughput": warmPeer}, PeakRSSMiB: 10},
		{Name: "herd", Ratios: map[string]float64{"cove cold/warm wall": herdRatio}, Metrics: map[string]stat{"cove upstream downloads": one(herdDownloads), "digests checked and right": one(1)}},
		{Name: "manifests", Ratios: map[string]float64{"cove/memory GET by tag": byTag, "cove/peer GET by digest": byDigest},
			Metrics: map[string]stat{"cove GET by tag p99": {Median: 1}, "cove HEAD by digest p99": {Median: p99}}},
		{Name: "many small layers", Ratios: map[string]float64{"cove cold/upstream time": layers}},
		{Name: scenarioTokens, Metrics: map[string]stat{metricTokens: {Median: tokens}}, Ratios: map[string]float64{"first check/bcrypt limit": firstCheck}},
	}}
	r.Targets = targets(r)
	return r
}

// withPeer adds the peer's figures to a report made by report, each a different number, as a
// run with the peer leaves them, and sets the targets again.
func withPeer(r *Report) *Report {
	r.scenario("cold blob").Ratios["peer/upstream throughput"] = 0.37
	r.scenario("cold blob").PeerPeakRSSMiB = 41.5
	r.scenario("warm blob").Ratios["peer/limit throughput"] = 0.875
	r.scenario("herd").Metrics["peer upstream downloads"] = stat{Median: 5, Min: 4, Max: 6}
	r.scenario("herd").Metrics["peer digests checked and right"] = stat{Median: 1, Min: 0, Max: 1}
	r.scenario("herd").PeerPeakRSSMiB = 57.25
	m := r.scenario("manifests")
	m.Ratios["peer/memory GET by tag"] = 0.0123
	m.Metrics["peer GET by tag p99"] = one(48.5)
	m.Metrics["peer HEAD by digest p99"] = one(55.5)
	r.scenario("many small layers").Ratios["peer cold/upstream time"] = 7.75
	r.Targets = targets(r)
	return r
}

func TestTargets(t *testing.T) {
	good := report(0.95, 0.9, 1, 1, 1.1, 1.2, 3, 4, 1.2, 30, 5000, 1.1, 0.9)
	for _, tg := range good.Targets {
		if !tg.Met || tg.Absent {
			t.Errorf("%s: %v %s should meet %q", tg.Name, tg.Got, tg.Unit, tg.Want)
		}
	}
	// The peer's figures are beside cove's, never instead of them: its slow p99 does not miss
	// cove's target.
	for _, tg := range withPeer(report(0.95, 0.9, 1, 1, 1.1, 1.2, 3, 4, 1.2, 30, 5000, 1.1, 0.9)).Targets {
		if !tg.Met || tg.Absent {
			t.Errorf("with the peer's figures, %s: %v %s should meet %q", tg.Name, *tg.Got, tg.Unit, tg.Want)
		}
	}
	bad := report(0.5, 0.3, 2, 17, 2, 0.17, 1, 12, 4.6, 103, 100, 0.8, 0.3)
	for _, tg := range bad.Targets {
		if tg.Name == "herd digests" {
			continue
		}
		if tg.Met {
			t.Errorf("%s: %v %s should miss %q", tg.Name, *tg.Got, tg.Unit, tg.Want)
		}
	}
	// The invariants stand on the worst repetition: one herd with two downloads, or one wrong
	// digest, misses although the median is right.
	worst := report(0.95, 0.9, 1, 1, 1.1, 1.2, 3, 4, 1.2, 30, 5000, 1.1, 0.9)
	worst.scenario("herd").Metrics["cove upstream downloads"] = stat{Median: 1, Min: 1, Max: 2}
	worst.scenario("herd").Metrics["digests checked and right"] = stat{Median: 1, Min: 0, Max: 1}
	worst.scenario("cold blob").Metrics["cove upstream bytes / blob size"] = stat{Median: 1, Min: 1, Max: 2}
	worst.Targets = targets(worst)
	for _, tg := range worst.Targets {
		switch tg.Name {
		case "herd upstream downloads", "herd digests", "cold blob upstream bytes":
			if tg.Met {
				t.Errorf("%s: met with one bad repetition", tg.Name)
			}
		}
	}
	if len(good.Targets) != 14 {
		t.Errorf("%d targets, want 14", len(good.Targets))
	}
	empty := &Report{}
	for _, tg := range targets(empty) {
		if !tg.Absent || tg.Met || tg.Got != nil || tg.Peer != nil {
			t.Errorf("%s: a figure, or met, without a scenario: %+v", tg.Name, tg)
		}
	}
	var sb strings.Builder
	bad.Config = describe(Config{Upstream: Shaping{Latency: 20 * time.Millisecond, Rate: 100e6}})
	bad.WriteTable(&sb)
	if want := "upstream shaping: 20ms round trip per answer and per new connection, 100MB/s per connection on blob bodies\n"; !strings.Contains(sb.String(), want) {
		t.Errorf("the table does not say how the upstream was shaped (%q):\n%s", want, sb.String())
	}
	if !strings.Contains(sb.String(), "MISSED") || !strings.Contains(bad.chart(), "<svg") {
		t.Errorf("the table does not say what was missed:\n%s", sb.String())
	}
}

// TestTargetPeerIsMeasured: a target's peer figure is the peer's figure of the same run, the
// one that corresponds to cove's, and the target line prints exactly it; where the run has no
// such figure of the peer there is none.
func TestTargetPeerIsMeasured(t *testing.T) {
	want := map[string]float64{
		"cold blob throughput":    0.37,
		"warm blob throughput":    0.875,
		"herd upstream downloads": 6, // the worst repetition, as cove's
		"herd digests":            0, // the worst repetition, as cove's
		"manifest GET by tag":     0.0123,
		"manifest p99":            55.5, // the worst of its four
		"many small layers, cold": 7.75,
		"peak RSS":                57.25, // the highest of the scenarios
	}
	r := withPeer(report(0.95, 0.9, 1, 1, 1.1, 1.2, 3, 4, 1.2, 30, 5000, 1.1, 0.9))
	lines := targetLines(t, r)
	for _, tg := range r.Targets {
		w, ok := want[tg.Name]
		switch {
		case !ok && tg.Peer != nil:
			t.Errorf("%s: peer figure %v, but the run measures none of the peer's", tg.Name, *tg.Peer)
		case ok && tg.Peer == nil:
			t.Errorf("%s: no peer figure, want the measured %v", tg.Name, w)
		case ok && *tg.Peer != w:
			t.Errorf("%s: peer figure %v, want the measured %v", tg.Name, *tg.Peer, w)
		}
		cells := lines[tg.Name]
		if len(cells) != 5 {
			t.Errorf("%s: target line %q, want 5 columns", tg.Name, cells)
			continue
		}
		if got, wantCell := cells[4], peerCell(want, tg); got != wantCell {
			t.Errorf("%s: peer column %q, want %q", tg.Name, got, wantCell)
		}
	}
}

func peerCell(want map[string]float64, tg Target) string {
	w, ok := want[tg.Name]
	if !ok {
		return ""
	}
	return num(w) + " " + shortUnit(tg.Unit)
}

// TestNoUnmeasuredFigure: whatever the run measured, every number printed in the target lines
// and the chart is a figure of the run or a threshold of the targets, and without the peer's
// figures no peer figure is printed nor written to results.json.
func TestNoUnmeasuredFigure(t *testing.T) {
	noPeer := report(0.95, 0.9, 1, 1, 1.1, 1.2, 3, 4, 1.2, 30, 5000, 1.1, 0.9)
	delete(noPeer.scenario("manifests").Ratios, "cove/peer GET by digest") // as with --no-peer
	noPeer.Targets = targets(noPeer)
	partial := report(0.5, 0.3, 2, 17, 2, 0.17, 1, 12, 4.6, 103, 100, 0.8, 0.3)
	partial.Scenarios = partial.Scenarios[:3] // stopped after the herd
	partial.Targets = targets(partial)
	for name, r := range map[string]*Report{
		"without the peer":    noPeer,
		"with the peer":       withPeer(report(0.95, 0.9, 1, 1, 1.1, 1.2, 3, 4, 1.2, 30, 5000, 1.1, 0.9)),
		"stopped in the herd": partial,
		"nothing measured":    {Targets: targets(&Report{})},
	} {
		t.Run(name, func(t *testing.T) {
			allowed := measured(r)
			lines := targetLines(t, r)
			for tgName, cells := range lines {
				for _, n := range numbers(strings.Join(cells, "  ")) {
					if !allowed[n] {
						t.Errorf("target %q prints %s, which is no figure of the run nor a threshold: %q", tgName, n, cells)
					}
				}
			}
			for _, line := range strings.Split(r.chart(), "\n") {
				text := textRE.FindStringSubmatch(line)
				if text == nil || strings.HasPrefix(text[1], "cove bench") { // the title: the machine
					continue
				}
				for _, n := range numbers(text[1]) {
					if !allowed[n] {
						t.Errorf("the chart prints %s, which is no figure of the run nor a threshold: %q", n, text[1])
					}
				}
			}
			if name == "with the peer" {
				return
			}
			for tgName, cells := range lines {
				if cells[4] != "" {
					t.Errorf("target %q prints a peer figure %q, but the run measured none", tgName, cells[4])
				}
			}
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var back struct{ Targets []map[string]any }
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			for _, tg := range back.Targets {
				if v, ok := tg["peer"]; ok {
					t.Errorf("results.json: target %v has a peer figure %v, but the run measured none", tg["name"], v)
				}
				if v, ok := tg["got"]; ok && tg["absent"] == true {
					t.Errorf("results.json: target %v has a figure %v, but the run did not produce it", tg["name"], v)
				}
			}
		})
	}
}

// numberRE is a number as the report prints one; in "p99" and "all=1" the digits are words.
var numberRE = regexp.MustCompile(`(?:^|[^\w.=])(\d[\d,]*(?:\.\d+)?)`)

// textRE is the content of one of the chart's text elements.
var textRE = regexp.MustCompile(`^<text[^>]*>([^<]*)</text>`)

func numbers(s string) []string {
	var out []string
	for _, m := range numberRE.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// measured is every number the report may print: its figures as num prints them, and the
// numbers in the targets' wording (thresholds, not measurements).
func measured(r *Report) map[string]bool {
	ok := map[string]bool{}
	add := func(v float64) { ok[num(v)] = true }
	for _, s := range r.Scenarios {
		for _, m := range s.Metrics {
			add(m.Median)
			add(m.Min)
			add(m.Max)
		}
		for _, v := range s.Ratios {
			add(v)
		}
		for _, v := range []float64{s.PeakRSSMiB, s.PeerPeakRSSMiB} {
			if v > 0 { // 0 is not measured: it is left out of results.json
				add(v)
			}
		}
	}
	for _, tg := range r.Targets {
		for _, n := range numbers(tg.Want) {
			ok[n] = true
		}
	}
	return ok
}

// targetLines splits the printed target lines into their columns: name, want, cove's figure,
// mark, the peer's figure.
func targetLines(t *testing.T, r *Report) map[string][]string {
	t.Helper()
	var sb strings.Builder
	r.WriteTable(&sb)
	_, section, ok := strings.Cut(sb.String(), "\nTARGETS")
	if !ok {
		t.Fatalf("no TARGETS section:\n%s", sb.String())
	}
	out := map[string][]string{}
	for _, line := range strings.Split(section, "\n")[2:] { // the title and the column heads
		if strings.TrimSpace(line) == "" {
			continue
		}
		cells := regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1)
		for len(cells) < 5 {
			cells = append(cells, "")
		}
		out[cells[0]] = cells
	}
	if len(out) != len(r.Targets) {
		t.Fatalf("%d target lines, want %d:\n%s", len(out), len(r.Targets), section)
	}
	return out
}
