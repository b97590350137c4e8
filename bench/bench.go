// Package bench is the harness behind cove bench: it seeds an upstream with generated images,
// starts the cove mirror under test (and Debian's docker-registry as a peer pull-through cache,
// when there is one), serves the same files from a plain sendfile file server as the machine's
// limit, and measures each of them over HTTP, black-box, within one run, so that the ratios between
// them mean something. It imports no package of cove's: cove is a process it talks to.
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
	"sync"
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
	Peer        bool      // run docker-registry as the peer mirror
	Listen      Listen    // where each server listens; empty: a port of Ports
	Ports       Ports     // ports for the servers with no Listen address; zero: the kernel picks
	Out         string    // directory for results.json and chart.svg; empty: none
	ServerLog   string    // file to copy cove's log to; empty: none
	Progress    io.Writer // progress lines (stderr)
}

// Standard is the set of make bench; Quick the smoke check of cove bench --quick.
func Standard() Config {
	return Config{Reps: 3, BlobSize: 1 << 30, HerdSize: 256 << 20, Herd: 16, Concurrency: 16, Duration: 3 * time.Second,
		Layers: 50, LayerSize: 256 << 10, Peer: true}
}

// QuickConfig is every scenario at small sizes with one repetition.
func QuickConfig() Config {
	return Config{Quick: true, Reps: 1, BlobSize: 16 << 20, HerdSize: 8 << 20, Herd: 4, Concurrency: 4, Duration: 500 * time.Millisecond,
		Layers: 10, LayerSize: 16 << 10, Peer: true}
}

// env is the running set-up of one run.
type env struct {
	cfg      Config
	dir      string
	up       *upstream
	cove     *daemon
	peer     *daemon // nil without a peer
	limit    string  // the plain file server's URL
	client   *http.Client
	password string
	seed     uint64
	progress func(format string, args ...any)
	lastCold []string // the cold scenario's blobs, warm now
}

// Run sets everything up, runs every scenario, and returns the report. A server that cannot
// listen on its address is a *ListenError, before anything runs.
func Run(ctx context.Context, cfg Config) (*Report, error) {
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
	if e.up, err = startUpstream(dir+"/upstream", addrs.take(roleUpstream)); err != nil {
		return nil, err
	}
	defer e.up.close()
	ln := addrs.take(roleLimit)
	limitSrv := &http.Server{Handler: http.FileServer(http.Dir(e.up.dir)), ReadHeaderTimeout: 10 * time.Second}
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
	urls := map[string]string{roleUpstream: e.up.url, roleCove: e.cove.url, roleLimit: e.limit}
	if e.peer != nil {
		urls[rolePeer] = e.peer.url
	}
	e.progress("upstream %s, cove %s, peer %s, limit %s", e.up.url, e.cove.url, cmp.Or(urls[rolePeer], "none"), e.limit)
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
		"concurrency": c.Concurrency, "load_seconds": c.Duration.Seconds(), "layers": c.Layers, "layer_bytes": c.LayerSize, "peer": c.Peer}
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

// warmBlob: the cold blobs again, now cached, against the limit (the plain file server).
func (e *env) warmBlob(s *Scenario) error {
	var coveTput, limitTput, upGets []float64
	for r := range e.cfg.Reps {
		d := e.lastCold[r%len(e.lastCold)]
		before := e.up.blobGetsAll()
		f, err := e.fetchAll(blobURL(e.cove.url, d), e.cfg.BlobSize, false, d)
		if err != nil {
			return err
		}
		coveTput = append(coveTput, mibps(f.Bytes, f.Total))
		upGets = append(upGets, float64(e.up.blobGetsAll()-before))
		if f, err = e.fetchAll(e.limit+"/"+strings.ReplaceAll(d, ":", "_"), e.cfg.BlobSize, false, d); err != nil {
			return err
		}
		limitTput = append(limitTput, mibps(f.Bytes, f.Total))
	}
	s.Metrics["cove throughput"] = summarize("MiB/s", coveTput)
	s.Metrics["cove upstream GETs"] = summarize("", upGets)
	s.Metrics["limit throughput"] = summarize("MiB/s", limitTput)
	s.setRatio("cove/limit throughput", coveTput, limitTput)
	for _, d := range e.lastCold {
		_ = os.Remove(e.up.blobPath(d))
	}
	return nil
}

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
	dgst, _, err := e.up.addImage("library/manifests", "v1", []int64{1024}, e.next())
	if err != nil {
		return err
	}
	accept := "application/vnd.oci.image.manifest.v1+json"
	targets := map[string]string{"upstream": e.up.url, "cove": e.cove.url}
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
	if e.peer != nil {
		s.setRatio("cove/peer GET by digest", perSec["cove GET by digest"], perSec["peer GET by digest"])
		s.setRatio("peer/upstream GET by tag", perSec["peer GET by tag"], perSec["upstream GET by tag"])
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

// scenarioTokens is the token scenario's name. cove remembers a password it checked right for a
// minute (auth's credTTL), so that a pull storm does not run one bcrypt comparison per request:
// a load with one account measures that remembered path, not bcrypt, and says so.
const scenarioTokens = "tokens (remembered password)"

// tokens: token issuance at the configured concurrency, with the admin's Basic credentials. One
// request before each load has the password checked (by bcrypt, unless still remembered), so
// that every request of the load is answered from the remembered check.
func (e *env) tokens(s *Scenario) error {
	url := e.cove.url + "/service/token?service=cove&scope=repository:library/bench:pull"
	get := func() error {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.SetBasicAuth("admin", e.password)
		resp, err := e.client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("token: %s", resp.Status)
		}
		return nil
	}
	s.Note = "cove remembers a password checked right for a minute: one request before each load " +
		"has it checked, so the load measures the remembered path, not bcrypt"
	var rates, errs []float64
	for range e.cfg.Reps {
		if err := get(); err != nil {
			return fmt.Errorf("the token request before the load: %w", err)
		}
		res := load(e.cfg.Concurrency, e.cfg.Duration, get)
		rates, errs = append(rates, res.PerSec), append(errs, float64(res.Errors))
		if res.Errors > 0 {
			e.progress("tokens: %d requests failed, the first with: %s", res.Errors, res.FirstErr)
		}
	}
	s.Metrics[metricTokens] = summarize("tokens/s", rates)
	s.Metrics["cove tokens errors"] = summarize("failed requests", errs)
	return nil
}

// metricTokens is the token scenario's rate.
const metricTokens = "cove tokens, remembered password"

func (e *env) next() uint64 { e.seed++; return e.seed }

// settle waits until cove has stored the blob it just served: clients get a blob's last bytes as
// soon as its digest matched, while cove syncs and indexes it, and the next measurement must not
// run beside that (nor a "warm" one join the fill still open). A HEAD answered without asking
// the upstream means stored.
func (e *env) settle(d string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		before := e.up.requests.Load()
		if err := request(e.client, http.MethodHead, blobURL(e.cove.url, d)); err != nil {
			return err
		}
		if e.up.requests.Load() == before {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("cove did not store %s within 2 minutes", d)
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
