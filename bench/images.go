package bench

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The image scenarios: manifests under a closed-loop load, and the pull of an image of many
// small layers.

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
