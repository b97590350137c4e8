// Package bench is the harness behind cove bench: it seeds an upstream with generated images,
// starts the cove mirror under test (and Debian's docker-registry as a peer pull-through cache,
// when there is one), serves the same files from a plain file server that copies them in each of
// several ways as the machine's limit (the fastest of them, limit.go), and measures each of them
// over HTTP, black-box, within one run, so that the ratios between them mean something. It
// imports no package of cove's: cove is a process it talks to.
package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"
)

// Config is one run.
type Config struct {
	CoveBin     string        // the cove binary to run
	Quick       bool          // every scenario at small sizes, one repetition
	Reps        int           // repetitions of each scenario
	BlobSize    int64         // the cold and warm blob
	HerdSize    int64         // the herd's blob
	Herd        int           // clients in the herd
	Concurrency int           // clients of the manifest and token loads
	Duration    time.Duration // length of each load
	Layers      int           // layers of the many-layer image
	LayerSize   int64
	Upstream    Shaping // the generated upstream's latency and rate; zero: loopback
	FirstChecks int     // accounts created for the first-check token load, per repetition
	Peer        bool    // run docker-registry as the peer mirror
	Listen      Listen  // where each server listens; empty: a port of Ports
	Ports       Ports   // ports for the servers with no Listen address; zero: the kernel picks
	Out         string  // directory for results.json and chart.svg; empty: none
	ServerLog   string  // file to copy cove's log to; empty: none
	// Scale, when set, runs cove bench --scale (RunScale) for its list of sizes instead of the
	// scenarios, with ScaleReps (the --reps given, 0: RunScale's default).
	Scale     string
	ScaleReps int
	Progress  io.Writer // progress lines (stderr)
}

// Standard is the set of make bench; Quick the smoke check of cove bench --quick.
func Standard() Config {
	return Config{Reps: 3, BlobSize: 1 << 30, HerdSize: 256 << 20, Herd: 16, Concurrency: 16, Duration: 3 * time.Second,
		Layers: 50, LayerSize: 256 << 10, FirstChecks: 128, Peer: true}
}

// QuickConfig is every scenario at small sizes with one repetition.
func QuickConfig() Config {
	return Config{Quick: true, Reps: 1, BlobSize: 16 << 20, HerdSize: 8 << 20, Herd: 4, Concurrency: 4, Duration: 500 * time.Millisecond,
		Layers: 10, LayerSize: 16 << 10, FirstChecks: 16, Peer: true}
}

// env is the running set-up of one run.
type env struct {
	cfg      Config
	dir      string
	up       *upstream
	cove     *daemon
	peer     *daemon // nil without a peer
	limit    string  // the plain file server's URL: its copiers under /<copier>/
	copiers  []string
	client   *http.Client
	password string
	seed     uint64
	progress func(format string, args ...any)
	lastCold []string // the cold scenario's blobs, warm now
	peerCold []string // the blobs the peer fetched cold, warm in the peer now
	users    int      // accounts created so far for the first-check token load
	manifest string   // the digest of library/manifests:v1, the manifest scenario's
	memory   *memoryServer
}

// Run sets everything up, runs every scenario, and returns the report. A server that cannot
// listen on its address is a *ListenError, before anything runs.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.ServerLog != "" {
		_ = os.Remove(cfg.ServerLog) // a fresh log for this run (startCove appends)
	}
	addrs, err := bind(cfg)
	if err != nil {
		return nil, err
	}
	defer addrs.close()
	dir, err := os.MkdirTemp("", "cove-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	e := &env{cfg: cfg, dir: dir, password: "bench-Passw0rd", client: newClient(max(cfg.Concurrency, cfg.Herd) + 4), seed: uint64(time.Now().UnixNano())}
	scenarios := []struct {
		name string
		run  func(*Scenario) error
	}{
		{"cold blob", e.coldBlob}, {"warm blob", e.warmBlob}, {"herd", e.herd}, {"manifests", e.manifests},
		{"many small layers", e.manyLayers}, {scenarioTokens, e.tokens},
	}
	done := 0
	e.progress = func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "%s %s\n", bar(done, len(scenarios)), fmt.Sprintf(format, args...))
		}
	}
	if e.up, err = startUpstream(dir+"/upstream", addrs.take(roleUpstream), cfg.Upstream); err != nil {
		return nil, err
	}
	defer e.up.close()
	ln := addrs.take(roleLimit)
	cs := limitCopiers()
	for _, c := range cs {
		e.copiers = append(e.copiers, c.name)
	}
	limitSrv := newLimitHTTPServer(e.up.dir, cs)
	go limitSrv.Serve(ln)
	defer limitSrv.Close()
	e.limit = baseURL(ln.Addr().String())
	if e.cove, err = startCove(ctx, cfg.CoveBin, dir, addrs.release(roleCove), e.up.url, e.password, cfg.ServerLog, ""); err != nil {
		return nil, err
	}
	defer e.cove.stop()
	if cfg.Peer {
		if e.peer, err = startPeer(ctx, dir, addrs.release(rolePeer), e.up.url); err != nil {
			return nil, err
		}
		defer e.peer.stop()
	}
	// The manifest of the manifest scenario, and the in-memory handler that serves it alone.
	if e.manifest, _, err = e.up.addImage("library/manifests", "v1", []int64{1024}, e.next()); err != nil {
		return nil, err
	}
	if e.memory, err = startMemory(ctx, cfg.CoveBin, dir, addrs.release(roleMemory), e.up.manifest("library/manifests:v1")); err != nil {
		return nil, err
	}
	defer e.memory.stop()
	urls := map[string]string{roleUpstream: e.up.url, roleCove: e.cove.url, roleLimit: e.limit, roleMemory: e.memory.url}
	if e.peer != nil {
		urls[rolePeer] = e.peer.url
	}
	e.progress("upstream %s, cove %s, peer %s, limit %s, in-memory handler %s", e.up.url, e.cove.url, cmp.Or(urls[rolePeer], "none"), e.limit, e.memory.url)
	rep := &Report{Machine: machine(), Config: describe(cfg), Started: time.Now().UTC()}
	rep.Config["urls"] = urls
	for _, sc := range scenarios {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		s := &Scenario{Name: sc.name, Metrics: map[string]stat{}, Ratios: map[string]float64{}}
		e.progress("%s", sc.name)
		s.RSSReset = peakRSS(e.cove.cmd.Process.Pid, true) == 0
		if e.peer != nil {
			peakRSS(e.peer.cmd.Process.Pid, true)
		}
		if err := sc.run(s); err != nil {
			return rep, fmt.Errorf("%s: %w", sc.name, err)
		}
		if b := peakRSS(e.cove.cmd.Process.Pid, false); b > 0 {
			s.PeakRSSMiB = float64(b) / (1 << 20)
		}
		if e.peer != nil {
			if b := peakRSS(e.peer.cmd.Process.Pid, false); b > 0 {
				s.PeerPeakRSSMiB = float64(b) / (1 << 20)
			}
		}
		rep.Scenarios = append(rep.Scenarios, s)
		done++
	}
	e.progress("done")
	rep.Targets = targets(rep)
	rep.Finished = time.Now().UTC()
	return rep, nil
}

// bar is a progress bar of done out of n.
func bar(done, n int) string {
	const w = 24
	k := done * w / max(n, 1)
	return fmt.Sprintf("[%s%s] %d/%d", strings.Repeat("█", k), strings.Repeat("·", w-k), done, n)
}

func machine() map[string]string {
	host, _ := os.Hostname()
	cpu := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				_, cpu, _ = strings.Cut(line, ": ")
				break
			}
		}
	}
	return map[string]string{"host": host, "cpus": fmt.Sprint(runtime.NumCPU()), "cpu": cpu, "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH}
}

func describe(c Config) map[string]any {
	return map[string]any{"quick": c.Quick, "reps": c.Reps, "blob_bytes": c.BlobSize, "herd_bytes": c.HerdSize, "herd_clients": c.Herd,
		"concurrency": c.Concurrency, "load_seconds": c.Duration.Seconds(), "layers": c.Layers, "layer_bytes": c.LayerSize, "peer": c.Peer,
		"first_check_accounts": c.FirstChecks,
		// The upstream's shaping: zero is the loopback upstream of the standard run.
		"upstream_latency_ms": ms(c.Upstream.Latency), "upstream_rate_bytes_per_s": c.Upstream.Rate,
		"upstream_shaping": c.Upstream.String()}
}

// blobURL is the URL of a blob of library/bench on a target.
func blobURL(base, dgst string) string { return base + "/v2/library/bench/blobs/" + dgst }

func mibps(bytes int64, d time.Duration) float64 { return float64(bytes) / (1 << 20) / d.Seconds() }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (e *env) next() uint64 { e.seed++; return e.seed }

// settle waits until cove has stored the blob it just served: clients get a blob's last bytes as
// soon as its digest matched, while cove syncs and indexes it, and the next measurement must not
// run beside that (nor a "warm" one join the fill still open). A HEAD answered without asking
// the upstream means stored.
func (e *env) settle(d string) error { return e.settleAt(e.cove, d) }

// settleAt waits until the mirror m has stored the blob d, as settle. The peer needs it too:
// Distribution's proxy stores a blob by a second download of its own, in the background, which
// may end after its client's (it is why the peer's herd counts 17 downloads for 16 clients).
func (e *env) settleAt(m *daemon, d string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		before := e.up.requests.Load()
		if err := request(e.client, http.MethodHead, blobURL(m.url, d)); err != nil {
			return err
		}
		if e.up.requests.Load() == before {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s did not store %s within 2 minutes", m.name, d)
}

// fetchAll GETs a blob and checks it came whole: the length, and with verify the digest.
func (e *env) fetchAll(url string, size int64, verify bool, want string) (fetched, error) {
	f, err := fetch(e.client, url, verify)
	if err != nil {
		return f, err
	}
	if f.Bytes != size {
		return f, fmt.Errorf("GET %s: %d bytes, want %d", url, f.Bytes, size)
	}
	if verify && f.Digest != want {
		return f, fmt.Errorf("GET %s: content hashes to %s", url, f.Digest)
	}
	return f, nil
}

// setRatio records the ratio of the medians of a and b, unless one of them is missing or zero:
// then there is no figure to print.
func (s *Scenario) setRatio(key string, a, b []float64) {
	ma, mb := summarize("", a).Median, summarize("", b).Median
	if ma > 0 && mb > 0 {
		s.Ratios[key] = ma / mb
	}
}
