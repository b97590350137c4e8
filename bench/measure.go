package bench

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"
)

// client is the HTTP client of every measurement: keep-alive, no compression, loopback only.
func newClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: conns, MaxConnsPerHost: 0, DisableCompression: true,
		WriteBufferSize: 256 << 10, ReadBufferSize: 256 << 10,
	}, Timeout: 10 * time.Minute}
}

// fetched is one GET of a blob.
type fetched struct {
	TTFB, Total time.Duration
	Bytes       int64
	Digest      string // when hashed
}

// fetch GETs url to the end, timing the first byte and the whole; it hashes when verify is set.
func fetch(c *http.Client, url string, verify bool) (fetched, error) {
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		return fetched{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fetched{}, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	buf := make([]byte, 256<<10)
	var h hash.Hash
	var out fetched
	n, err := resp.Body.Read(buf)
	out.TTFB = time.Since(start)
	if verify {
		h = sha256.New()
		h.Write(buf[:n])
	}
	out.Bytes = int64(n)
	for err == nil {
		n, err = resp.Body.Read(buf)
		out.Bytes += int64(n)
		if verify {
			h.Write(buf[:n])
		}
	}
	if err != io.EOF {
		return out, err
	}
	out.Total = time.Since(start)
	if verify {
		out.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	}
	return out, nil
}

// loadResult is a closed-loop load: requests done, per second, and latency percentiles.
type loadResult struct {
	Requests int
	PerSec   float64
	P50, P99 time.Duration
	Errors   int
	FirstErr string
}

// load runs concurrency workers sending req for d, and reports the rate and latencies. A worker
// whose req returns errLoadDone stops early: the load's time ends with its last worker.
func load(concurrency int, d time.Duration, req func() error) loadResult {
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	firstErr := ""
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Go(func() {
			var mine []time.Duration
			bad, first := 0, ""
			for time.Now().Before(deadline) {
				t := time.Now()
				err := req()
				if errors.Is(err, errLoadDone) {
					break
				}
				if err != nil {
					if bad == 0 {
						first = err.Error()
					}
					bad++
					continue
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			if firstErr == "" {
				firstErr = first
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	r := loadResult{Requests: len(lat), PerSec: float64(len(lat)) / elapsed.Seconds(), Errors: errs, FirstErr: firstErr}
	if len(lat) > 0 {
		r.P50, r.P99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return r
}

// request sends method to url and drains the answer.
func request(c *http.Client, method, url string, hdr ...string) error {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s", method, url, resp.Status)
	}
	return nil
}

// stat is a figure over repetitions.
type stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Unit   string  `json:"unit"`
}

func summarize(unit string, xs []float64) stat {
	if len(xs) == 0 {
		return stat{Unit: unit}
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	return stat{Median: s[len(s)/2], Min: s[0], Max: s[len(s)-1], Unit: unit}
}
