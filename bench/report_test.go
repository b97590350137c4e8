package bench

import (
	"strings"
	"testing"
)

func one(v float64) stat { return stat{Median: v, Min: v, Max: v} }

// report is a run with the given figures, as the scenarios would have left them.
func report(warm, cold, upBytes, herdDownloads, herdRatio, byTag, byDigest, p99, layers, rss, tokens float64) *Report {
	r := &Report{Scenarios: []*Scenario{
		{Name: "cold blob", Ratios: map[string]float64{"cove/upstream throughput": cold}, Metrics: map[string]stat{"cove upstream bytes / blob size": one(upBytes)}, PeakRSSMiB: rss},
		{Name: "warm blob", Ratios: map[string]float64{"cove/limit throughput": warm}, PeakRSSMiB: 10},
		{Name: "herd", Ratios: map[string]float64{"cove cold/warm wall": herdRatio}, Metrics: map[string]stat{"cove upstream downloads": one(herdDownloads), "digests checked and right": one(1)}},
		{Name: "manifests", Ratios: map[string]float64{"cove/upstream GET by tag": byTag, "cove/peer GET by digest": byDigest},
			Metrics: map[string]stat{"cove GET by tag p99": {Median: 1}, "cove HEAD by digest p99": {Median: p99}, "peer GET by tag p99": {Median: 50}}},
		{Name: "many small layers", Ratios: map[string]float64{"cove cold/upstream time": layers}},
		{Name: "token issuance", Metrics: map[string]stat{"cove tokens": {Median: tokens}}},
	}}
	r.Targets = targets(r)
	return r
}

func TestTargets(t *testing.T) {
	good := report(0.95, 0.9, 1, 1, 1.1, 1.2, 3, 4, 1.2, 30, 5000)
	for _, tg := range good.Targets {
		if !tg.Met || tg.Absent {
			t.Errorf("%s: %v %s should meet %q (the peer's p99 does not count)", tg.Name, tg.Got, tg.Unit, tg.Want)
		}
	}
	bad := report(0.5, 0.3, 2, 17, 2, 0.17, 1, 12, 4.6, 103, 100)
	for _, tg := range bad.Targets {
		if tg.Name == "herd digests" {
			continue
		}
		if tg.Met {
			t.Errorf("%s: %v %s should miss %q", tg.Name, tg.Got, tg.Unit, tg.Want)
		}
	}
	// The invariants stand on the worst repetition: one herd with two downloads, or one wrong
	// digest, misses although the median is right.
	worst := report(0.95, 0.9, 1, 1, 1.1, 1.2, 3, 4, 1.2, 30, 5000)
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
	if len(good.Targets) != 12 {
		t.Errorf("%d targets, want 12", len(good.Targets))
	}
	empty := &Report{}
	for _, tg := range targets(empty) {
		if !tg.Absent || tg.Met {
			t.Errorf("%s: met or present without a scenario", tg.Name)
		}
	}
	var sb strings.Builder
	bad.WriteTable(&sb)
	if !strings.Contains(sb.String(), "MISSED") || !strings.Contains(bad.chart(), "<svg") {
		t.Errorf("the table does not say what was missed:\n%s", sb.String())
	}
}
