package bench

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// The blob scenarios: a cold blob, the same blob warm against the limit, a herd on one blob.

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
