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
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
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

// coldBlob: a blob no mirror has; time to first byte and throughput from the upstream directly,
// through cove, through the peer; and how many bytes cove took from upstream.
func (e *env) coldBlob(s *Scenario) error {
	var upTTFB, upTput, coveTTFB, coveTput, peerTTFB, peerTput, upBytes []float64
	for r := range e.cfg.Reps {
		e.progress("cold blob %d/%d: generating %d MiB", r+1, e.cfg.Reps, e.cfg.BlobSize>>20)
		d, err := e.up.addBlob(e.cfg.BlobSize, e.next())
		if err != nil {
			return err
		}
		f, err := e.fetchAll(blobURL(e.up.url, d), e.cfg.BlobSize, false, d)
		if err != nil {
			return err
		}
		upTTFB, upTput = append(upTTFB, ms(f.TTFB)), append(upTput, mibps(f.Bytes, f.Total))
		// The upstream counts a body's bytes when its handler returns, which can be after the
		// client read the last of them: wait for the count before taking cove's start.
		for deadline := time.Now().Add(10 * time.Second); e.up.blobBytesOf(d) < e.cfg.BlobSize; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				return fmt.Errorf("the upstream did not count the bytes of %s", d)
			}
		}
		before := e.up.blobBytesOf(d)
		e.progress("cold blob %d/%d: through cove", r+1, e.cfg.Reps)
		if f, err = e.fetchAll(blobURL(e.cove.url, d), e.cfg.BlobSize, false, d); err != nil {
			return err
		}
		coveTTFB, coveTput = append(coveTTFB, ms(f.TTFB)), append(coveTput, mibps(f.Bytes, f.Total))
		if err := e.settle(d); err != nil {
			return err
		}
		upBytes = append(upBytes, float64(e.up.blobBytesOf(d)-before)/float64(e.cfg.BlobSize))
		if e.peer != nil {
			d2, err := e.up.addBlob(e.cfg.BlobSize, e.next())
			if err != nil {
				return err
			}
			e.progress("cold blob %d/%d: through the peer", r+1, e.cfg.Reps)
			if f, err = e.fetchAll(blobURL(e.peer.url, d2), e.cfg.BlobSize, false, d2); err != nil {
				return err
			}
			peerTTFB, peerTput = append(peerTTFB, ms(f.TTFB)), append(peerTput, mibps(f.Bytes, f.Total))
			// The warm scenario reads it from the peer again, once the upstream has it no more.
			if err := e.settleAt(e.peer, d2); err != nil {
				e.progress("cold blob: %v: no warm figure of the peer from this repetition", err)
			} else {
				e.peerCold = append(e.peerCold, d2)
			}
			_ = os.Remove(e.up.blobPath(d2))
		}
		e.lastCold = append(e.lastCold, d)
	}
	s.Metrics["upstream TTFB"] = summarize("ms", upTTFB)
	s.Metrics["upstream throughput"] = summarize("MiB/s", upTput)
	s.Metrics["cove TTFB"] = summarize("ms", coveTTFB)
	s.Metrics["cove throughput"] = summarize("MiB/s", coveTput)
	s.Metrics["cove upstream bytes / blob size"] = summarize("×", upBytes)
	s.setRatio("cove/upstream throughput", coveTput, upTput)
	if e.peer != nil {
		s.Metrics["peer TTFB"] = summarize("ms", peerTTFB)
		s.Metrics["peer throughput"] = summarize("MiB/s", peerTput)
		s.setRatio("cove/peer throughput", coveTput, peerTput)
		s.setRatio("peer/upstream throughput", peerTput, upTput)
	}
	return nil
}

// warmBlob: the cold blobs again, now cached, against the limit and the peer. The limit is the
// fastest copy of the same file this machine made in the repetition: the limit server copies it
// once with each of its copiers, in an order that turns with every repetition, and the fastest
// counts (limit.go says why one way of copying is not the limit).
func (e *env) warmBlob(s *Scenario) error {
	var coveTput, limitTput, autoTput, peerTput, upGets []float64
	perCopier := map[string][]float64{}
	won := map[string]int{}
	for r := range e.cfg.Reps {
		d := e.lastCold[r%len(e.lastCold)]
		before := e.up.blobGetsAll()
		f, err := e.fetchAll(blobURL(e.cove.url, d), e.cfg.BlobSize, false, d)
		if err != nil {
			return err
		}
		coveTput = append(coveTput, mibps(f.Bytes, f.Total))
		upGets = append(upGets, float64(e.up.blobGetsAll()-before))
		best, bestName, bestAuto := 0.0, "", 0.0
		for i := range e.copiers {
			c := e.copiers[(i+r)%len(e.copiers)]
			if f, err = e.fetchAll(e.limit+"/"+c+"/"+strings.ReplaceAll(d, ":", "_"), e.cfg.BlobSize, false, d); err != nil {
				return err
			}
			v := mibps(f.Bytes, f.Total)
			perCopier[c] = append(perCopier[c], v)
			if v > best {
				best, bestName = v, c
			}
			if !strings.Contains(c, "-sndbuf-") {
				bestAuto = max(bestAuto, v)
			}
		}
		limitTput = append(limitTput, best)
		autoTput = append(autoTput, bestAuto)
		won[bestName]++
		if e.peer != nil && len(e.peerCold) > 0 {
			// The peer's own cold blob, of the same size: it is the one the peer holds.
			d2 := e.peerCold[r%len(e.peerCold)]
			if f, err = e.fetchAll(blobURL(e.peer.url, d2), e.cfg.BlobSize, false, d2); err != nil {
				e.progress("warm blob: the peer did not serve its cached blob (%v): no peer figure", err)
			} else {
				peerTput = append(peerTput, mibps(f.Bytes, f.Total))
			}
		}
	}
	s.Metrics["cove throughput"] = summarize("MiB/s", coveTput)
	s.Metrics["cove upstream GETs"] = summarize("", upGets)
	s.Metrics[metricLimit] = summarize("MiB/s", limitTput)
	for c, v := range perCopier {
		s.Metrics["limit throughput, "+c] = summarize("MiB/s", v)
	}
	s.setRatio("cove/limit throughput", coveTput, limitTput)
	// The copies a server can keep for every client: with the kernel's autotuned send buffer (a
	// fixed one bounds a distant client's download; see limitCopiers).
	s.Metrics[metricLimitAuto] = summarize("MiB/s", autoTput)
	s.setRatio("cove/limit throughput, autotuned copiers", coveTput, autoTput)
	if len(peerTput) > 0 {
		s.Metrics["peer throughput"] = summarize("MiB/s", peerTput)
		s.setRatio("cove/peer throughput", coveTput, peerTput)
		s.setRatio("peer/limit throughput", peerTput, limitTput)
	}
	var wins []string
	for _, c := range slices.Sorted(maps.Keys(won)) {
		wins = append(wins, fmt.Sprintf("%s %d×", c, won[c]))
	}
	s.Note = "the limit is the fastest of the limit server's copiers in each repetition; fastest: " + strings.Join(wins, ", ")
	for _, d := range e.lastCold {
		_ = os.Remove(e.up.blobPath(d))
	}
	return nil
}

// metricLimit is the warm scenario's limit: the fastest copier of each repetition; metricLimitAuto
// the fastest of those that leave the socket's send buffer to the kernel.
const (
	metricLimit     = "limit throughput (fastest copier)"
	metricLimitAuto = "limit throughput (fastest copier, autotuned send buffer)"
)

// herdOnce has n clients GET url at once; it returns the wall time and whether every digest matched.
func (e *env) herdOnce(url, want string) (time.Duration, bool, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := true
	var firstErr error
	start := time.Now()
	for range e.cfg.Herd {
		wg.Go(func() {
			f, err := fetch(e.client, url, true)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			ok = ok && err == nil && f.Digest == want && f.Bytes == e.cfg.HerdSize
		})
	}
	wg.Wait()
	return time.Since(start), ok, firstErr
}

// herd: many clients of one uncached blob at once: upstream downloads, wall time, digests; then
// the same herd on the cached blob.
func (e *env) herd(s *Scenario) error {
	var coveWall, coveWarm, coveUp, warmUp, peerWall, peerUp, coveOK, peerOK []float64
	for r := range e.cfg.Reps {
		e.progress("herd %d/%d: %d clients of %d MiB", r+1, e.cfg.Reps, e.cfg.Herd, e.cfg.HerdSize>>20)
		d, err := e.up.addBlob(e.cfg.HerdSize, e.next())
		if err != nil {
			return err
		}
		wall, ok, err := e.herdOnce(blobURL(e.cove.url, d), d)
		if err != nil {
			return err
		}
		coveWall = append(coveWall, wall.Seconds())
		coveOK = append(coveOK, boolf(ok))
		if err := e.settle(d); err != nil {
			return err
		}
		cold := e.up.blobGetsOf(d)
		if wall, ok, err = e.herdOnce(blobURL(e.cove.url, d), d); err != nil {
			return err
		}
		coveWarm = append(coveWarm, wall.Seconds())
		coveOK = append(coveOK, boolf(ok))
		coveUp, warmUp = append(coveUp, float64(e.up.blobGetsOf(d))), append(warmUp, float64(e.up.blobGetsOf(d)-cold))
		if e.peer != nil {
			d2, err := e.up.addBlob(e.cfg.HerdSize, e.next())
			if err != nil {
				return err
			}
			wall, ok, err := e.herdOnce(blobURL(e.peer.url, d2), d2)
			if err != nil {
				return err
			}
			peerWall, peerUp = append(peerWall, wall.Seconds()), append(peerUp, float64(e.up.blobGetsOf(d2)))
			peerOK = append(peerOK, boolf(ok))
			_ = os.Remove(e.up.blobPath(d2))
		}
		_ = os.Remove(e.up.blobPath(d))
	}
	s.Metrics["cove upstream downloads"] = summarize("", coveUp)
	s.Metrics["cove upstream GETs, warm"] = summarize("", warmUp)
	s.Metrics["cove wall"] = summarize("s", coveWall)
	s.Metrics["cove wall, warm"] = summarize("s", coveWarm)
	s.Metrics["digests checked and right"] = summarize("all=1", coveOK)
	s.setRatio("cove cold/warm wall", coveWall, coveWarm)
	if e.peer != nil {
		s.Metrics["peer upstream downloads"] = summarize("", peerUp)
		s.Metrics["peer digests checked and right"] = summarize("all=1", peerOK)
		s.Metrics["peer wall"] = summarize("s", peerWall)
		s.setRatio("cove/peer wall", coveWall, peerWall)
	}
	return nil
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// manifests: GET and HEAD by tag and by digest, closed-loop at the configured concurrency.
func (e *env) manifests(s *Scenario) error {
	dgst := e.manifest
	accept := "application/vnd.oci.image.manifest.v1+json"
	targets := map[string]string{"upstream": e.up.url, "cove": e.cove.url, "memory": e.memory.url}
	if e.peer != nil {
		targets["peer"] = e.peer.url
	}
	for _, base := range targets { // warm the caches
		if err := request(e.client, http.MethodGet, base+"/v2/library/manifests/manifests/v1", "Accept", accept); err != nil {
			return err
		}
	}
	perSec := map[string][]float64{}
	for r := range e.cfg.Reps {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			for refName, ref := range map[string]string{"tag": "v1", "digest": dgst} {
				for name, base := range targets {
					e.progress("manifests %d/%d: %s by %s on %s", r+1, e.cfg.Reps, method, refName, name)
					url := base + "/v2/library/manifests/manifests/" + ref
					res := load(e.cfg.Concurrency, e.cfg.Duration, func() error { return request(e.client, method, url, "Accept", accept) })
					key := fmt.Sprintf("%s %s by %s", name, method, refName)
					perSec[key] = append(perSec[key], res.PerSec)
					perSec[key+" errors"] = append(perSec[key+" errors"], float64(res.Errors))
					if res.Errors > 0 {
						e.progress("%s: %d requests failed, the first with: %s", key, res.Errors, res.FirstErr)
					}
					perSec[key+" p50"] = append(perSec[key+" p50"], ms(res.P50))
					perSec[key+" p99"] = append(perSec[key+" p99"], ms(res.P99))
				}
			}
		}
	}
	for k, v := range perSec {
		unit := "req/s"
		switch {
		case strings.HasSuffix(k, "p50") || strings.HasSuffix(k, "p99"):
			unit = "ms"
		case strings.HasSuffix(k, "errors"):
			unit = "failed requests"
		}
		s.Metrics[k] = summarize(unit, v)
	}
	s.setRatio("cove/upstream GET by tag", perSec["cove GET by tag"], perSec["upstream GET by tag"])
	s.setRatio("cove/memory GET by tag", perSec["cove GET by tag"], perSec["memory GET by tag"])
	if e.peer != nil {
		s.setRatio("cove/peer GET by digest", perSec["cove GET by digest"], perSec["peer GET by digest"])
		s.setRatio("peer/upstream GET by tag", perSec["peer GET by tag"], perSec["upstream GET by tag"])
		s.setRatio("peer/memory GET by tag", perSec["peer GET by tag"], perSec["memory GET by tag"])
	}
	return nil
}

// pull fetches an image's manifest and then its layers, three at a time as dockerd does.
func (e *env) pull(base, repo, tag string, layers []string) (time.Duration, error) {
	start := time.Now()
	if err := request(e.client, http.MethodGet, base+"/v2/"+repo+"/manifests/"+tag, "Accept", "application/vnd.oci.image.manifest.v1+json"); err != nil {
		return 0, err
	}
	sem := make(chan struct{}, 3)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for _, l := range layers {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := fetch(e.client, base+"/v2/"+repo+"/blobs/"+l, false); err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return time.Since(start), firstErr
}

// manyLayers: an image of many small layers, pulled cold and warm.
func (e *env) manyLayers(s *Scenario) error {
	sizes := make([]int64, e.cfg.Layers)
	for i := range sizes {
		sizes[i] = e.cfg.LayerSize
	}
	var up, coveCold, coveWarm, warmUp, peerCold, peerWarm []float64
	for r := range e.cfg.Reps {
		e.progress("many small layers %d/%d", r+1, e.cfg.Reps)
		repo := fmt.Sprintf("library/layers%d", r)
		_, layers, err := e.up.addImage(repo, "v1", sizes, e.next())
		if err != nil {
			return err
		}
		t, err := e.pull(e.up.url, repo, "v1", layers)
		if err != nil {
			return err
		}
		up = append(up, t.Seconds())
		if t, err = e.pull(e.cove.url, repo, "v1", layers); err != nil {
			return err
		}
		coveCold = append(coveCold, t.Seconds())
		for _, l := range layers {
			if err := e.settle(l); err != nil {
				return err
			}
		}
		before := e.up.blobGetsAll()
		if t, err = e.pull(e.cove.url, repo, "v1", layers); err != nil {
			return err
		}
		coveWarm = append(coveWarm, t.Seconds())
		warmUp = append(warmUp, float64(e.up.blobGetsAll()-before))
		if e.peer != nil {
			if t, err = e.pull(e.peer.url, repo, "v1", layers); err != nil {
				return err
			}
			peerCold = append(peerCold, t.Seconds())
			if t, err = e.pull(e.peer.url, repo, "v1", layers); err != nil {
				return err
			}
			peerWarm = append(peerWarm, t.Seconds())
		}
	}
	s.Metrics["upstream pull"] = summarize("s", up)
	s.Metrics["cove cold pull"] = summarize("s", coveCold)
	s.Metrics["cove warm pull"] = summarize("s", coveWarm)
	s.Metrics["cove upstream GETs, warm"] = summarize("", warmUp)
	s.setRatio("cove cold/upstream time", coveCold, up)
	if e.peer != nil {
		s.Metrics["peer cold pull"] = summarize("s", peerCold)
		s.Metrics["peer warm pull"] = summarize("s", peerWarm)
		s.setRatio("cove/peer cold time", coveCold, peerCold)
		s.setRatio("peer cold/upstream time", peerCold, up)
	}
	return nil
}

// scenarioTokens is the token scenario's name. It measures two rates, named so that neither is
// read as the other (#16, point 6). cove remembers a password it checked right for a minute
// (auth's credTTL), so that a pull storm does not run one bcrypt comparison per request: a load
// with one account measures that remembered path. The other load spends one new account per
// request, so that every request is the first check of its password: a bcrypt comparison (or,
// with LDAP, a bind), what a login, or a CI job's first pull with new credentials, costs.
const scenarioTokens = "tokens"

// The token scenario's rates.
const (
	metricTokens      = "cove tokens, remembered password"
	metricTokensFirst = "cove tokens, first check of each password"
)

// tokenURL is the token request of both loads: pull of a mirrored repository.
func (e *env) tokenURL() string {
	return e.cove.url + "/service/token?service=cove&scope=repository:library/bench:pull"
}

// token asks cove for a token with Basic credentials.
func (e *env) token(user, password string) error {
	req, err := http.NewRequest(http.MethodGet, e.tokenURL(), nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(user, password)
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("token for %s: %s", user, resp.Status)
	}
	return nil
}

// tokens: token issuance at the configured concurrency. The remembered load uses the admin's
// Basic credentials, with one request before each load to have the password checked (by bcrypt,
// unless still remembered), so that every request of the load is answered from the remembered
// check. The first-check load uses FirstChecks accounts made for it through the admin API, each
// once: the load ends after its duration or when they are used up, whichever comes first.
func (e *env) tokens(s *Scenario) error {
	var rates, errs, firstRates, firstErrs, firstN, bcryptRates []float64
	for r := range e.cfg.Reps {
		e.progress("tokens %d/%d: remembered password", r+1, e.cfg.Reps)
		if err := e.token(adminName, e.password); err != nil {
			return fmt.Errorf("the token request before the load: %w", err)
		}
		res := load(e.cfg.Concurrency, e.cfg.Duration, func() error { return e.token(adminName, e.password) })
		rates, errs = append(rates, res.PerSec), append(errs, float64(res.Errors))
		if res.Errors > 0 {
			e.progress("tokens: %d requests failed, the first with: %s", res.Errors, res.FirstErr)
		}
		if e.cfg.FirstChecks <= 0 {
			continue
		}
		e.progress("tokens %d/%d: creating %d accounts for first checks", r+1, e.cfg.Reps, e.cfg.FirstChecks)
		users, err := e.createUsers(e.cfg.FirstChecks)
		if err != nil {
			return err
		}
		e.progress("tokens %d/%d: first check of each password", r+1, e.cfg.Reps)
		var next atomic.Int64
		res = load(e.cfg.Concurrency, e.cfg.Duration, func() error {
			i := next.Add(1) - 1
			if i >= int64(len(users)) {
				return errLoadDone
			}
			return e.token(users[i], e.password)
		})
		firstRates, firstErrs = append(firstRates, res.PerSec), append(firstErrs, float64(res.Errors))
		firstN = append(firstN, float64(res.Requests+res.Errors))
		if res.Errors > 0 {
			e.progress("tokens, first checks: %d requests failed, the first with: %s", res.Errors, res.FirstErr)
		}
		e.progress("tokens %d/%d: bcrypt on every core, the limit of first checks", r+1, e.cfg.Reps)
		// At least 2 s: a bcrypt comparison takes tens of milliseconds, and a short count on a
		// shared machine gave --quick limits under cove's own figure.
		rate, err := bcryptRate(max(e.cfg.Duration, 2*time.Second))
		if err != nil {
			return err
		}
		bcryptRates = append(bcryptRates, rate)
	}
	s.Metrics[metricTokens] = summarize("tokens/s", rates)
	s.Metrics["cove tokens errors"] = summarize("failed requests", errs)
	s.Note = "remembered: cove remembers a password checked right for a minute, and one request before each load " +
		"has it checked, so that load measures the remembered path, not bcrypt"
	if len(firstRates) > 0 {
		s.Metrics[metricTokensFirst] = summarize("tokens/s", firstRates)
		s.Metrics["cove tokens errors, first check"] = summarize("failed requests", firstErrs)
		s.Metrics["first-check requests"] = summarize("requests (one account each)", firstN)
		s.Metrics[metricBcrypt] = summarize("comparisons/s", bcryptRates)
		s.setRatio("first check/bcrypt limit", firstRates, bcryptRates)
		s.Note += "; first check: one new account per request, so every request is a bcrypt comparison " +
			"(cove's failed-login limiter does not slow right passwords; it checks at most 8 at a time per address)"
	}
	return nil
}

// metricBcrypt is the limit of first checks: bcrypt comparisons a second on every core at once,
// in the harness's own process, at the cost cove hashes passwords with (bcrypt.DefaultCost).
const metricBcrypt = "bcrypt limit, every core"

// bcryptRate runs bcrypt comparisons at cove's cost on every core for about d and returns how
// many it did a second.
func bcryptRate(d time.Duration) (float64, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte("bench-Passw0rd"), bcrypt.DefaultCost)
	if err != nil {
		return 0, err
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range runtime.NumCPU() {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				_ = bcrypt.CompareHashAndPassword(hash, []byte("bench-Passw0rd"))
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// adminName is cove's built-in administrator.
const adminName = "admin"

// errLoadDone ends a load's worker early, without counting as a request: its work is used up.
var errLoadDone = errors.New("load done")

// createUsers makes n accounts, with the admin's password, through cove's Harbor-shaped admin
// API, a few at a time (each costs a bcrypt hash), and returns their names.
func (e *env) createUsers(n int) ([]string, error) {
	names := make([]string, n)
	for i := range names {
		e.users++
		names[i] = fmt.Sprintf("bench%06d", e.users)
	}
	g := make(chan struct{}, 4)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for _, name := range names {
		g <- struct{}{}
		wg.Go(func() {
			defer func() { <-g }()
			body := fmt.Sprintf(`{"username":%q,"email":"%s@bench.invalid","realname":"bench","password":%q}`, name, name, e.password)
			req, err := http.NewRequest(http.MethodPost, e.cove.url+"/api/v2.0/users", strings.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			req.Header.Set("Content-Type", "application/json")
			req.SetBasicAuth(adminName, e.password)
			resp, err := e.client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				errs <- fmt.Errorf("create user %s: %s: %s", name, resp.Status, strings.TrimSpace(string(msg)))
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return names, nil
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
