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
// against the targets. results.json is this, as JSON.
type Report struct {
	Machine   map[string]string `json:"machine"`
	Config    map[string]any    `json:"config"`
	Started   time.Time         `json:"started"`
	Finished  time.Time         `json:"finished"`
	Scenarios []*Scenario       `json:"scenarios"`
	Targets   []Target          `json:"targets"`
}

// Scenario is one scenario's figures (median, min and max over the repetitions), the ratios of
// medians taken within the run, and the mirrors' peak resident memory while it ran.
type Scenario struct {
	Name           string             `json:"name"`
	Metrics        map[string]stat    `json:"metrics"`
	Ratios         map[string]float64 `json:"ratios"`
	PeakRSSMiB     float64            `json:"cove_peak_rss_mib"`
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
	Got       float64 `json:"got"`
	Unit      string  `json:"unit"`
	Met       bool    `json:"met"`
	Peer      string  `json:"peer_for_scale,omitempty"` // the peer's figure on this kind of machine, from the issue
	Absent    bool    `json:"absent,omitempty"`         // the scenario did not produce the figure
}

func (r *Report) scenario(name string) *Scenario {
	for _, s := range r.Scenarios {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// targets sets the run against the targets.
func targets(r *Report) []Target {
	var out []Target
	add := func(name, want, unit, peer string, threshold, got float64, present, met bool) {
		out = append(out, Target{Name: name, Want: want, Threshold: threshold, Got: got, Unit: unit, Met: present && met, Peer: peer, Absent: !present})
	}
	ratioOf := func(sc, key string) (float64, bool) {
		s := r.scenario(sc)
		if s == nil {
			return 0, false
		}
		v, ok := s.Ratios[key]
		return v, ok && v > 0
	}
	stats := func(sc, key string) (stat, bool) {
		s := r.scenario(sc)
		if s == nil {
			return stat{}, false
		}
		v, ok := s.Metrics[key]
		return v, ok
	}
	metric := func(sc, key string) (float64, bool) {
		v, ok := stats(sc, key)
		return v.Median, ok
	}

	v, ok := ratioOf("warm blob", "cove/limit throughput")
	add("warm blob throughput", "≥ 0.9 × limit", "× limit", "0.56", 0.9, v, ok, v >= 0.9)
	v, ok = ratioOf("cold blob", "cove/upstream throughput")
	add("cold blob throughput", "≥ 0.85 × upstream", "× upstream", "0.31", 0.85, v, ok, v >= 0.85)
	// The invariants stand on the worst repetition, not the median.
	st, ok := stats("cold blob", "cove upstream bytes / blob size")
	add("cold blob upstream bytes", "= blob size", "× blob size (worst repetition)", "2", 1, st.Max, ok, st.Min == 1 && st.Max == 1)
	st, ok = stats("herd", "cove upstream downloads")
	add("herd upstream downloads", "1", "downloads (worst repetition)", "17 for a herd of 16", 1, st.Max, ok, st.Min == 1 && st.Max == 1)
	v, ok = ratioOf("herd", "cove cold/warm wall")
	add("herd wall", "≤ 1.3 × the same herd warm", "× warm", "", 1.3, v, ok, v <= 1.3)
	st, ok = stats("herd", "digests checked and right")
	add("herd digests", "all right", "all=1 (worst repetition)", "", 1, st.Min, ok, st.Min == 1)
	v, ok = ratioOf("manifests", "cove/upstream GET by tag")
	add("manifest GET by tag", "≥ 1.0 × upstream", "× upstream", "0.17", 1, v, ok, v >= 1.0)
	v, ok = ratioOf("manifests", "cove/peer GET by digest")
	add("manifest GET by digest", "≥ 2 × peer", "× peer", "", 2, v, ok, v >= 2)
	worst, okAll := 0.0, false
	if s := r.scenario("manifests"); s != nil {
		for k, m := range s.Metrics {
			if strings.HasPrefix(k, "cove ") && strings.HasSuffix(k, " p99") {
				worst, okAll = max(worst, m.Median), true
			}
		}
	}
	add("manifest p99", "< 10 ms", "ms (worst of GET/HEAD by tag/digest)", "", 10, worst, okAll, worst < 10)
	v, ok = ratioOf("many small layers", "cove cold/upstream time")
	add("many small layers, cold", "≤ 1.5 × upstream time", "× upstream", "4.6", 1.5, v, ok, v <= 1.5)
	peak := 0.0
	for _, s := range r.Scenarios {
		peak = max(peak, s.PeakRSSMiB)
	}
	add("peak RSS", "< 64 MiB in every scenario", "MiB", "103", 64, peak, len(r.Scenarios) > 0 && peak > 0, peak < 64)
	v, ok = metric("token issuance", "cove tokens")
	add("token issuance", "≥ 2,000/s", "tokens/s", "", 2000, v, ok, v >= 2000)
	return out
}

// WriteTable prints the report as tables: every scenario's figures, then the targets.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "\ncove bench — %s, %s CPUs (%s), %s; %s\n", r.Machine["host"], r.Machine["cpus"], r.Machine["cpu"], r.Machine["go"], r.Started.Format(time.RFC3339))
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
		fmt.Fprintf(tw, "  cove peak RSS\t%s\t\t\tMiB\n", num(s.PeakRSSMiB))
		if !s.RSSReset {
			fmt.Fprintf(tw, "  (the kernel refused to reset the peak: it is since cove started)\t\t\t\t\n")
		}
		if s.PeerPeakRSSMiB > 0 {
			fmt.Fprintf(tw, "  peer peak RSS\t%s\t\t\tMiB\n", num(s.PeerPeakRSSMiB))
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "\nTARGETS (report lines, not assertions)")
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, t := range r.Targets {
		mark := "met"
		switch {
		case t.Absent:
			mark = "n/a"
		case !t.Met:
			mark = "MISSED"
		}
		peer := ""
		if t.Peer != "" {
			peer = "peer: " + t.Peer
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s %s\t%s\t%s\n", t.Name, t.Want, num(t.Got), t.Unit, mark, peer)
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
		if t.Threshold > 0 {
			frac = min(t.Got/t.Threshold, 2)
		}
		colour := "#2e7d32"
		if !t.Met {
			colour = "#c62828"
		}
		if t.Absent {
			colour = "#9e9e9e"
		}
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text>`+"\n", y+15, html.EscapeString(t.Name))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="18" fill="%s"/>`+"\n", left, y+2, frac*scale, colour)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s %s (want %s)</text>`+"\n", left+width+8, y+15,
			html.EscapeString(num(t.Got)), html.EscapeString(shortUnit(t.Unit)), html.EscapeString(t.Want))
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
