package bench

// cove bench --scale (issue #16, point 4, "Growth"): cove with N blob records and N/10 tags, for
// each N of a list, measured over HTTP as a process, as the other scenarios; the figures of each
// N are set against the first N's.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// ScaleConfig is a run of cove bench --scale.
type ScaleConfig struct {
	CoveBin   string    // the cove binary: it populates (cove bench-populate) and serves
	Sizes     []int     // the numbers of blob records, the first the reference of the ratios
	Reps      int       // requests of each paging measure (default 50); cold fills are a fifth
	ServerLog string    // file to copy the log of the last cove to; empty: none
	Progress  io.Writer // progress lines (stderr)
}

// ParseSizes reads the list of --scale: numbers separated by commas ("10000,100000,1000000").
func ParseSizes(s string) ([]int, error) {
	var sizes []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2000 {
			// Fewer blobs make fewer than ten repositories or tags after the deep pages' start.
			return nil, fmt.Errorf("scale: %q is not a number of blobs of 2000 or more", f)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

// populated is what cove bench-populate printed (cache.Populated).
type populated struct {
	Blobs     int    `json:"blobs"`
	Layers    int    `json:"layers"`
	Manifests int    `json:"manifests"`
	Tags      int    `json:"tags"`
	Repos     int    `json:"repos"`
	Links     int    `json:"links"`
	Mirrored  int64  `json:"mirrored_bytes"`
	FirstRepo string `json:"first_repo"`
	DeepRepo  string `json:"deep_repo"`
	DeepTag   string `json:"deep_tag"`
}

// scaleLayer is the size of a populated layer and of the cold blob: with max_size at the
// populated layers' bytes, each cold fill puts cove one layer over its cap, and the eviction
// after it removes one blob.
const scaleLayer = 4096

// Metrics of a scale scenario; scaleRequests are the requests whose latency must not grow.
const (
	metricStartup     = "start-up (process start to /v2/ answering)"
	metricCrashStart  = "start-up after a kill -9 (reconciles)"
	metricEvict       = "eviction pass after a fill (one blob evicted)"
	metricColdCove    = "cold 4 KiB blob through cove"
	metricColdUp      = "cold 4 KiB blob from the upstream directly"
	metricColdOver    = "cold fill overhead (cove − upstream)"
	metricCatalog     = "GET /v2/_catalog?n=10, first page"
	metricCatalogDeep = "GET /v2/_catalog?n=10, page at 90%"
	metricTags        = "GET tags/list?n=10, first page"
	metricTagsDeep    = "GET tags/list?n=10, page at 90%"
	metricRSS         = "resident memory after the requests (VmRSS)"
	metricPeakRSS     = "peak resident memory (VmHWM)"
	metricCrashRSS    = "peak resident memory of the start after a kill -9"
	metricIndex       = "index on disk (allocated)"
	metricPopulate    = "populate (cove bench-populate)"
)

var scaleRequests = []string{metricColdCove, metricCatalog, metricCatalogDeep, metricTags, metricTagsDeep}

// RunScale runs cove at each of cfg.Sizes in turn, each in a fresh data directory, and returns the
// report: a scenario per size, with the ratios of its figures to the first size's.
func RunScale(ctx context.Context, cfg ScaleConfig) (*Report, error) {
	if cfg.ServerLog != "" {
		_ = os.Remove(cfg.ServerLog) // every cove of the run appends to it (startCove)
	}
	if cfg.Reps <= 0 {
		cfg.Reps = 50
	}
	progress := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "scale: "+format+"\n", args...)
		}
	}
	rep := &Report{Machine: machine(), Started: time.Now().UTC(),
		Config: map[string]any{"scale": cfg.Sizes, "reps": cfg.Reps, "layer_bytes": scaleLayer}}
	for _, n := range cfg.Sizes {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		s, err := runScaleOnce(ctx, cfg, n, progress)
		if err != nil {
			return rep, fmt.Errorf("scale %d: %w", n, err)
		}
		if len(rep.Scenarios) > 0 {
			first := rep.Scenarios[0]
			for k, m := range s.Metrics {
				if f, ok := first.Metrics[k]; ok && f.Median > 0 {
					s.Ratios[k+" / at N="+strconv.Itoa(cfg.Sizes[0])] = m.Median / f.Median
				}
			}
		}
		rep.Scenarios = append(rep.Scenarios, s)
	}
	rep.Targets = scaleTargets(rep, cfg.Sizes)
	rep.Finished = time.Now().UTC()
	return rep, nil
}

// scaleName is the scenario of n blobs.
func scaleName(n int) string { return "scale " + strconv.Itoa(n) }

func runScaleOnce(ctx context.Context, cfg ScaleConfig, n int, progress func(string, ...any)) (*Scenario, error) {
	s := &Scenario{Name: scaleName(n), Metrics: map[string]stat{}, Ratios: map[string]float64{}}
	dir, err := os.MkdirTemp("", "cove-scale-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "data")

	progress("N=%d: populating %d blob records and %d tags", n, n, n/10)
	start := time.Now()
	cmd := exec.CommandContext(ctx, cfg.CoveBin, "bench-populate", "--data", data, "--blobs", strconv.Itoa(n), "--tags", strconv.Itoa(n/10),
		"--layer-size", strconv.Itoa(scaleLayer))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("cove bench-populate: %v\n%s", err, stderr.Bytes())
	}
	// The kernel writes the populated files' inodes back for a while: not under the measures,
	// where every fsync of cove's would wait for it.
	syscall.Sync()
	s.Metrics[metricPopulate] = summarize("s", []float64{time.Since(start).Seconds()})
	var p populated
	if err := json.Unmarshal(stdout.Bytes(), &p); err != nil {
		return nil, fmt.Errorf("cove bench-populate printed %q: %w", stdout.Bytes(), err)
	}
	s.Note = fmt.Sprintf("populated: %d blob records (%d mirrored %d-byte layers with sparse files and generated digests, %d image manifests), "+
		"%d links, %d tags over %d repositories; max_size = the layers' %d bytes, so that each cold fill evicts one layer",
		p.Blobs, p.Layers, scaleLayer, p.Manifests, p.Links, p.Tags, p.Repos, p.Mirrored)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	up, err := startUpstream(filepath.Join(dir, "upstream"), ln, Shaping{})
	if err != nil {
		return nil, err
	}
	defer up.close()
	progress("N=%d: starting cove", n)
	start = time.Now()
	cove, err := startCove(ctx, cfg.CoveBin, dir, "127.0.0.1:0", up.url, "bench-Passw0rd", cfg.ServerLog, strconv.FormatInt(p.Mirrored, 10))
	if err != nil {
		return nil, err
	}
	defer cove.stop()
	client := newClient(4)
	if err := answering(client, cove.url); err != nil {
		return nil, err
	}
	s.Metrics[metricStartup] = summarize("s", []float64{time.Since(start).Seconds()})
	s.RSSReset = peakRSS(cove.cmd.Process.Pid, true) == 0

	progress("N=%d: cold fills", n)
	var coldUp, coldCove, over, evict []float64
	for i := range max(cfg.Reps/5, 3) {
		d, err := up.addBlob(scaleLayer, uint64(n)*1000+uint64(i))
		if err != nil {
			return nil, err
		}
		f, err := fetch(client, blobURL(up.url, d), false)
		if err != nil {
			return nil, err
		}
		u := ms(f.Total)
		if f, err = fetch(client, blobURL(cove.url, d), false); err != nil {
			return nil, err
		}
		if f.Bytes != scaleLayer {
			return nil, fmt.Errorf("cold blob through cove: %d bytes, want %d", f.Bytes, scaleLayer)
		}
		c := ms(f.Total)
		coldUp, coldCove, over = append(coldUp, u), append(coldCove, c), append(over, c-u)
		select {
		case took := <-cove.evictions:
			evict = append(evict, ms(took))
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("cove logged no eviction within 30 s of a fill over its cap; the end of its log:\n%s", cove.out)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.Metrics[metricColdUp] = summarize("ms", coldUp)
	s.Metrics[metricColdCove] = summarize("ms", coldCove)
	s.Metrics[metricColdOver] = summarize("ms", over)
	s.Metrics[metricEvict] = summarize("ms", evict)

	progress("N=%d: catalog and tag lists", n)
	pages := []struct{ metric, url string }{
		{metricCatalog, cove.url + "/v2/_catalog?n=10"},
		{metricCatalogDeep, cove.url + "/v2/_catalog?n=10&last=" + p.DeepRepo},
		{metricTags, cove.url + "/v2/" + p.FirstRepo + "/tags/list?n=10"},
		{metricTagsDeep, cove.url + "/v2/" + p.FirstRepo + "/tags/list?n=10&last=" + p.DeepTag},
	}
	for _, pg := range pages {
		// A page that lists nothing would be quick for the wrong reason.
		if got, err := listed(client, pg.url); err != nil || got != 10 {
			return nil, fmt.Errorf("GET %s: %d names listed (%v), want 10", pg.url, got, err)
		}
		var xs []float64
		for range cfg.Reps {
			t0 := time.Now()
			if err := request(client, http.MethodGet, pg.url); err != nil {
				return nil, err
			}
			xs = append(xs, ms(time.Since(t0)))
		}
		s.Metrics[pg.metric] = summarize("ms", xs)
	}

	if b := rss(cove.cmd.Process.Pid); b > 0 {
		s.Metrics[metricRSS] = summarize("MiB", []float64{float64(b) / (1 << 20)})
	}
	if b := peakRSS(cove.cmd.Process.Pid, false); b > 0 {
		s.PeakRSSMiB = float64(b) / (1 << 20)
		s.Metrics[metricPeakRSS] = summarize("MiB", []float64{s.PeakRSSMiB})
	}
	if b, err := allocated(filepath.Join(data, "index")); err == nil {
		s.Metrics[metricIndex] = summarize("MiB", []float64{float64(b) / (1 << 20)})
	}

	// A crash: the next start walks the blob files and reads every record.
	progress("N=%d: kill -9 and start again", n)
	cove.cmd.Process.Kill()
	<-cove.exited
	start = time.Now()
	again, err := startCove(ctx, cfg.CoveBin, dir, "127.0.0.1:0", up.url, "bench-Passw0rd", cfg.ServerLog, strconv.FormatInt(p.Mirrored, 10))
	if err != nil {
		return nil, err
	}
	defer again.stop()
	if err := answering(client, again.url); err != nil {
		return nil, err
	}
	s.Metrics[metricCrashStart] = summarize("s", []float64{time.Since(start).Seconds()})
	if b := peakRSS(again.cmd.Process.Pid, false); b > 0 {
		s.Metrics[metricCrashRSS] = summarize("MiB", []float64{float64(b) / (1 << 20)})
	}
	progress("N=%d: done", n)
	return s, nil
}

// listed returns how many repositories or tags a page of the catalog or of a tag list names.
func listed(client *http.Client, url string) (int, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s", resp.Status)
	}
	var page struct{ Repositories, Tags []string }
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return 0, err
	}
	return len(page.Repositories) + len(page.Tags), nil
}

// answering waits until cove's /v2/ answers (200, or 401 asking for a login), two minutes at most.
func answering(client *http.Client, url string) error {
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if resp, err := client.Get(url + "/v2/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cove's /v2/ did not answer within 2 minutes of its start")
		}
	}
}

// rss returns a process's resident memory (VmRSS) in bytes, -1 when unknown.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return -1
}

// allocated returns the disk space the files under dir take (their blocks, not their lengths:
// badger's files are preallocated).
func allocated(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total, err
}

// scaleTargets sets a scale run against point 4's targets, at the largest N.
func scaleTargets(r *Report, sizes []int) []Target {
	if len(sizes) == 0 {
		return nil
	}
	big := r.scenario(scaleName(slices.Max(sizes)))
	first := r.scenario(scaleName(sizes[0]))
	if big == nil || first == nil {
		return nil
	}
	at := " at N=" + strconv.Itoa(slices.Max(sizes))
	var out []Target
	add := func(name, want, unit string, threshold float64, got float64, ok, met bool) {
		t := Target{Name: name, Want: want, Threshold: threshold, Unit: unit, Met: ok && met, Absent: !ok}
		if ok {
			t.Got = &got
		}
		out = append(out, t)
	}
	m, ok := big.Metrics[metricStartup]
	add("start-up"+at, "≤ 5 s", "s", 5, m.Median, ok, m.Median <= 5)
	ratio := func(metric string) (float64, bool) {
		b, ok1 := big.Metrics[metric]
		f, ok2 := first.Metrics[metric]
		if !ok1 || !ok2 || f.Median <= 0 {
			return 0, false
		}
		return b.Median / f.Median, true
	}
	ref := " × N=" + strconv.Itoa(sizes[0])
	v, ok := ratio(metricEvict)
	add("eviction pass"+at, "independent of N (≤ 2"+ref+")", ref[1:], 2, v, ok, v <= 2)
	m, ok = big.Metrics[metricPeakRSS]
	add("peak resident memory"+at, "≤ 256 MiB", "MiB", 256, m.Median, ok, m.Median <= 256)
	worst, worstOK, which := 0.0, false, ""
	for _, k := range scaleRequests {
		if v, ok := ratio(k); ok && v >= worst {
			worst, worstOK, which = v, true, k
		}
	}
	add("slowest request"+at, "≤ 2"+ref, ref[1:]+" ("+which+")", 2, worst, worstOK, worst <= 2)
	return out
}

// WriteScaleTable prints a scale run's figures as one table: a row per figure, a column per N
// with its ratio to the first N.
func (r *Report) WriteScaleTable(w io.Writer, sizes []int) {
	fmt.Fprintf(w, "\ncove bench --scale — %s, %s CPUs (%s), %s; %s\n", r.Machine["host"], r.Machine["cpus"], r.Machine["cpu"], r.Machine["go"], r.Started.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "median\t")
	for _, n := range sizes {
		fmt.Fprintf(tw, "N=%d\t", n)
	}
	fmt.Fprint(tw, "unit\t\n")
	for _, k := range []string{metricPopulate, metricStartup, metricCrashStart, metricEvict, metricColdUp, metricColdCove, metricColdOver,
		metricCatalog, metricCatalogDeep, metricTags, metricTagsDeep, metricRSS, metricPeakRSS, metricCrashRSS, metricIndex} {
		fmt.Fprintf(tw, "%s\t", k)
		unit := ""
		for i, n := range sizes {
			s := r.scenario(scaleName(n))
			m, ok := stat{}, false
			if s != nil {
				m, ok = s.Metrics[k]
			}
			switch {
			case !ok:
				fmt.Fprint(tw, "—\t")
			case i == 0:
				fmt.Fprintf(tw, "%s\t", num(m.Median))
			default:
				ratio := "—"
				if f, ok := r.Scenarios[0].Metrics[k]; ok && f.Median > 0 {
					ratio = num(m.Median/f.Median) + "×"
				}
				fmt.Fprintf(tw, "%s (%s)\t", num(m.Median), ratio)
			}
			if ok {
				unit = m.Unit
			}
		}
		fmt.Fprintf(tw, "%s\t\n", unit)
	}
	tw.Flush()
	for _, s := range r.Scenarios {
		if s.Note != "" {
			fmt.Fprintf(w, "%s: %s\n", s.Name, s.Note)
		}
	}
	r.writeTargets(w)
}
