package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is one run: where it ran, with what, each scenario's figures, and how they stand
// against the targets. results.json is this, as JSON. Every figure in it, and every figure the
// table and the chart print, was measured in this run: there are no reference figures.
type Report struct {
	Machine   map[string]string `json:"machine"`
	Config    map[string]any    `json:"config"`
	Started   time.Time         `json:"started"`
	Finished  time.Time         `json:"finished"`
	Scenarios []*Scenario       `json:"scenarios"`
	Targets   []Target          `json:"targets"`
}

// Scenario is one scenario's figures (median, min and max over the repetitions), the ratios of
// medians taken within the run, and the mirrors' peak resident memory while it ran. A figure
// that was not measured is left out, not zero.
type Scenario struct {
	Name           string             `json:"name"`
	Note           string             `json:"note,omitempty"` // what the figures are, where the name cannot say it all
	Metrics        map[string]stat    `json:"metrics"`
	Ratios         map[string]float64 `json:"ratios"`
	PeakRSSMiB     float64            `json:"cove_peak_rss_mib,omitempty"`
	PeerPeakRSSMiB float64            `json:"peer_peak_rss_mib,omitempty"`
	// RSSReset is false when the kernel refused to reset the peak: PeakRSSMiB is then the peak
	// since cove started, not within this scenario.
	RSSReset bool `json:"rss_reset"`
}

// Target is one of the targets and where this run stands against it. It is a report line,
// not an assertion: a machine busy with something else misses targets without cove being wrong.
type Target struct {
	Name      string  `json:"name"`
	Want      string  `json:"want"`
	Threshold float64 `json:"threshold"` // the number in Want
	// Got is cove's figure, in Unit; nil (and Absent) when the run did not produce it.
	Got  *float64 `json:"got,omitempty"`
	Unit string   `json:"unit"`
	Met  bool     `json:"met"`
	// Peer is the peer mirror's corresponding figure, in Unit, measured in this run; nil when the
	// peer did not run or the run measures no such figure of it. It is never a figure from
	// elsewhere.
	Peer   *float64 `json:"peer,omitempty"`
	Absent bool     `json:"absent,omitempty"` // the scenario did not produce cove's figure
}

func (r *Report) scenario(name string) *Scenario {
	for _, s := range r.Scenarios {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// figure is a measured value, or none.
type figure struct {
	v  float64
	ok bool
}

func (f figure) ptr() *float64 {
	if !f.ok {
		return nil
	}
	v := f.v
	return &v
}

// none is the figure of what the run does not measure.
var none = figure{}

// targets sets the run against the targets. Beside cove's figure each target carries the
// peer's, where the run measured the same thing of the peer.
func targets(r *Report) []Target {
	var out []Target
	add := func(name, want, unit string, threshold float64, got figure, met bool, peer figure) {
		out = append(out, Target{Name: name, Want: want, Threshold: threshold, Got: got.ptr(), Unit: unit,
			Met: got.ok && met, Peer: peer.ptr(), Absent: !got.ok})
	}
	ratioOf := func(sc, key string) figure {
		s := r.scenario(sc)
		if s == nil {
			return none
		}
		v, ok := s.Ratios[key]
		return figure{v, ok && v > 0}
	}
	stats := func(sc, key string) (stat, bool) {
		s := r.scenario(sc)
		if s == nil {
			return stat{}, false
		}
		v, ok := s.Metrics[key]
		return v, ok
	}
	// worstP99 is the largest median of the manifest scenario's "<who> … p99" latencies.
	worstP99 := func(who string) figure {
		var f figure
		if s := r.scenario("manifests"); s != nil {
			for k, m := range s.Metrics {
				if strings.HasPrefix(k, who+" ") && strings.HasSuffix(k, " p99") {
					f = figure{max(f.v, m.Median), true}
				}
			}
		}
		return f
	}
	// The invariants stand on the worst repetition, not the median: the most downloads, the
	// fewest digests right.
	worstMax := func(sc, key string) (figure, bool) {
		st, ok := stats(sc, key)
		return figure{st.Max, ok}, ok && st.Min == 1 && st.Max == 1
	}
	worstMin := func(sc, key string) (figure, bool) {
		st, ok := stats(sc, key)
		return figure{st.Min, ok}, ok && st.Min == 1
	}

	v := ratioOf("warm blob", "cove/limit throughput")
	add("warm blob throughput", "≥ 0.95 × limit (the fastest copy)", "× limit", 0.95, v, v.v >= 0.95, ratioOf("warm blob", "peer/limit throughput"))
	v = ratioOf("warm blob", "cove/peer throughput")
	add("warm blob throughput, against the peer", "≥ 1.0 × peer", "× peer", 1, v, v.v >= 1, none)
	v = ratioOf("cold blob", "cove/upstream throughput")
	add("cold blob throughput", "≥ 0.85 × upstream", "× upstream", 0.85, v, v.v >= 0.85, ratioOf("cold blob", "peer/upstream throughput"))
	v, met := worstMax("cold blob", "cove upstream bytes / blob size")
	add("cold blob upstream bytes", "= blob size", "× blob size (worst repetition)", 1, v, met, none)
	v, met = worstMax("herd", "cove upstream downloads")
	peer, _ := worstMax("herd", "peer upstream downloads")
	add("herd upstream downloads", "1", "downloads (worst repetition)", 1, v, met, peer)
	v = ratioOf("herd", "cove cold/warm wall")
	add("herd wall", "≤ 1.3 × the same herd warm", "× warm", 1.3, v, v.v <= 1.3, none)
	v, met = worstMin("herd", "digests checked and right")
	peer, _ = worstMin("herd", "peer digests checked and right")
	add("herd digests", "all right", "all=1 (worst repetition)", 1, v, met, peer)
	v = ratioOf("manifests", "cove/memory GET by tag")
	add("manifest GET by tag", "≥ 0.8 × an in-memory handler", "× in-memory handler", 0.8, v, v.v >= 0.8, ratioOf("manifests", "peer/memory GET by tag"))
	v = ratioOf("manifests", "cove/peer GET by digest")
	add("manifest GET by digest", "≥ 2 × peer", "× peer", 2, v, v.v >= 2, none)
	v = worstP99("cove")
	add("manifest p99", "< 5 ms", "ms (worst of GET/HEAD by tag/digest)", 5, v, v.v < 5, worstP99("peer"))
	v = ratioOf("many small layers", "cove cold/upstream time")
	add("many small layers, cold", "≤ 1.5 × upstream time", "× upstream", 1.5, v, v.v <= 1.5, ratioOf("many small layers", "peer cold/upstream time"))
	var rss, peerRSS figure
	for _, s := range r.Scenarios {
		if s.PeakRSSMiB > 0 {
			rss = figure{max(rss.v, s.PeakRSSMiB), true}
		}
		if s.PeerPeakRSSMiB > 0 {
			peerRSS = figure{max(peerRSS.v, s.PeerPeakRSSMiB), true}
		}
	}
	add("peak RSS", "< 64 MiB in every scenario", "MiB", 64, rss, rss.v < 64, peerRSS)
	st, ok := stats(scenarioTokens, metricTokens)
	add("token issuance, remembered password", "≥ 2,000/s", "tokens/s", 2000, figure{st.Median, ok}, st.Median >= 2000, none)
	// A first check is a bcrypt comparison: its rate is bounded by the machine's, which the run
	// measures beside it, not by a number of tokens a second.
	v = ratioOf(scenarioTokens, "first check/bcrypt limit")
	add("token issuance, first check of each password", "≥ 0.8 × bcrypt limit", "× bcrypt limit", 0.8, v, v.v >= 0.8, none)
	return out
}

// WriteTable prints the report as tables: every scenario's figures, then the targets with the
// peer's figure beside cove's where the run measured it.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "\ncove bench — %s, %s CPUs (%s), %s; %s\n", r.Machine["host"], r.Machine["cpus"], r.Machine["cpu"], r.Machine["go"], r.Started.Format(time.RFC3339))
	if shaping, ok := r.Config["upstream_shaping"].(string); ok {
		fmt.Fprintf(w, "upstream shaping: %s\n", shaping)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, s := range r.Scenarios {
		fmt.Fprintf(tw, "\n%s\tmedian\tmin\tmax\t\n", strings.ToUpper(s.Name))
		for _, k := range slices.Sorted(maps.Keys(s.Metrics)) {
			m := s.Metrics[k]
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", k, num(m.Median), num(m.Min), num(m.Max), m.Unit)
		}
		for _, k := range slices.Sorted(maps.Keys(s.Ratios)) {
			fmt.Fprintf(tw, "  %s\t%s\t\t\t×\n", k, num(s.Ratios[k]))
		}
		if s.PeakRSSMiB > 0 {
			fmt.Fprintf(tw, "  cove peak RSS\t%s\t\t\tMiB\n", num(s.PeakRSSMiB))
		}
		if s.PeerPeakRSSMiB > 0 {
			fmt.Fprintf(tw, "  peer peak RSS\t%s\t\t\tMiB\n", num(s.PeerPeakRSSMiB))
		}
		// Notes have no tab: they are no column's cell, and do not widen the first.
		if s.PeakRSSMiB > 0 && !s.RSSReset {
			fmt.Fprintf(tw, "  (the kernel refused to reset cove's peak RSS: it is the peak since cove started)\n")
		}
		if s.Note != "" {
			fmt.Fprintf(tw, "  (%s)\n", s.Note)
		}
	}
	tw.Flush()
	r.writeTargets(w)
}

// writeTargets prints the targets with the peer's figure beside cove's where the run measured it.
func (r *Report) writeTargets(w io.Writer) {
	fmt.Fprintln(w, "\nTARGETS (report lines, not assertions; the peer's figure only where this run measured it)")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  target\twant\tcove\t\tpeer, this run\n")
	for _, t := range r.Targets {
		got, mark := "not measured", "n/a"
		if t.Got != nil {
			got, mark = num(*t.Got)+" "+t.Unit, "met"
			if !t.Met {
				mark = "MISSED"
			}
		}
		peer := ""
		if t.Peer != nil {
			peer = num(*t.Peer) + " " + shortUnit(t.Unit)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", t.Name, t.Want, got, mark, peer)
	}
	tw.Flush()
}

// WriteFiles writes results.json and chart.svg into dir.
func (r *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "chart.svg"), []byte(r.chart()), 0o644)
}

// chart draws every target as a bar of got/threshold, with the threshold as a line: to the right
// of the line is better for "≥" targets, to the left for "≤", "<" and "=" ones.
func (r *Report) chart() string {
	const rowH, left, width = 28, 230, 420
	h := 50 + rowH*len(r.Targets)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+300, h)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14" font-weight="bold">cove bench — %s, %s CPUs, %s</text>`+"\n",
		html.EscapeString(r.Machine["host"]), html.EscapeString(r.Machine["cpus"]), r.Started.Format("2006-01-02"))
	scale := float64(width) / 2 // the threshold sits in the middle; bars are clipped at 2× it
	fmt.Fprintf(&b, `<line x1="%d" y1="30" x2="%d" y2="%d" stroke="#444" stroke-dasharray="4 3"/>`+"\n", left+width/2, left+width/2, h-10)
	for i, t := range r.Targets {
		y := 40 + i*rowH
		frac := 0.0
		if t.Threshold > 0 && t.Got != nil {
			frac = min(*t.Got/t.Threshold, 2)
		}
		colour := "#2e7d32"
		if !t.Met {
			colour = "#c62828"
		}
		if t.Absent {
			colour = "#9e9e9e"
		}
		label := "not measured"
		if t.Got != nil {
			label = num(*t.Got) + " " + shortUnit(t.Unit)
		}
		label += " (want " + t.Want
		if t.Peer != nil {
			label += "; peer " + num(*t.Peer)
		}
		label += ")"
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text>`+"\n", y+15, html.EscapeString(t.Name))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="18" fill="%s"/>`+"\n", left, y+2, frac*scale, colour)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", left+width+8, y+15, html.EscapeString(label))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func shortUnit(u string) string {
	if i := strings.Index(u, " ("); i > 0 {
		return u[:i]
	}
	return u
}

// num prints a figure with three significant digits or so.
func num(f float64) string {
	switch {
	case f == 0:
		return "0"
	case f >= 100 || f <= -100:
		return fmt.Sprintf("%.0f", f)
	case f >= 10 || f <= -10:
		return fmt.Sprintf("%.1f", f)
	default:
		return fmt.Sprintf("%.2f", f)
	}
}
