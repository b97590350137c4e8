package mirror_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/mirror"
)

// pushUpstream uploads a blob straight to the fake upstream's repository library/bench.
func pushUpstream(b testing.TB, up *fakeUpstream, data []byte) digest.Digest {
	b.Helper()
	d := digest.FromBytes(data)
	srv := up.srv.URL
	resp, err := http.Post(srv+"/v2/library/bench/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b.Fatalf("seed upstream: %d", resp.StatusCode)
	}
	return d
}

func benchEnv(b testing.TB) (*mirrorEnv, *fakeUpstream) {
	up := newFakeUpstream(b)
	me := newMirrorEnv(b, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	return me, up
}

func getAll(b testing.TB, client *http.Client, url string) {
	resp, err := client.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("GET %s: %d, %d bytes, %v", url, resp.StatusCode, n, err)
	}
}

// BenchmarkWarmBlob serves a cached blob to 1 and to 16 clients at once: the file path (a
// Range-less GET answered by http.ServeContent with the *os.File, so sendfile, in segments of the
// idle writer). server=plain is the same bytes from a bare http.ServeContent of a file, the
// kernel's sendfile with nothing of cove's around it: cove's cost is the difference. The blob is
// 64 MiB, or COVE_BENCH_WARM_MIB.
func BenchmarkWarmBlob(b *testing.B) {
	me, up := benchEnv(b)
	size := 64 << 20
	if v, err := strconv.Atoi(os.Getenv("COVE_BENCH_WARM_MIB")); err == nil && v > 0 {
		size = v << 20
	}
	data := make([]byte, size)
	rand.Read(data)
	d := pushUpstream(b, up, data)
	coveURL := me.srv.URL + "/v2/bench/blobs/" + d.String()
	getAll(b, &http.Client{}, coveURL) // fill the cache
	// Synced, as cove's fill syncs its file: the kernel writing back fresh pages would slow
	// whichever server runs first.
	path := filepath.Join(b.TempDir(), "blob")
	pf, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pf.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := errors.Join(pf.Sync(), pf.Close()); err != nil {
		b.Fatal(err)
	}
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		http.ServeContent(w, r, "", time.Time{}, f)
	}))
	b.Cleanup(plain.Close)
	for _, clients := range []int{1, 16} {
		for _, srv := range []struct{ name, url string }{{"cove", coveURL}, {"plain", plain.URL + "/blob"}} {
			b.Run(fmt.Sprintf("server=%s/clients=%d", srv.name, clients), func(b *testing.B) {
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}}
				b.SetBytes(int64(size) * int64(clients))
				b.ReportAllocs()
				for b.Loop() {
					var wg sync.WaitGroup
					for range clients {
						wg.Go(func() { readAll(b, client, srv.url, size) })
					}
					wg.Wait()
				}
			})
		}
	}
}

// readAll GETs url and reads the body with a large buffer, as a puller does (io.Discard's own
// 8 KiB reads would measure the client).
func readAll(b *testing.B, client *http.Client, url string, size int) {
	resp, err := client.Get(url)
	if err != nil {
		b.Error(err)
		return
	}
	defer resp.Body.Close()
	buf := make([]byte, 256<<10)
	n := 0
	for {
		m, err := resp.Body.Read(buf)
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Error(err)
			return
		}
	}
	if resp.StatusCode != http.StatusOK || n != size {
		b.Errorf("GET %s: %d, %d bytes, want 200, %d", url, resp.StatusCode, n, size)
	}
}

// BenchmarkColdFanOut has 8 clients ask at once for a 4 MiB blob that is not cached: one upstream
// download, streamed to all eight.
func BenchmarkColdFanOut(b *testing.B) {
	me, up := benchEnv(b)
	const clients = 8
	data := make([]byte, 4<<20)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	b.SetBytes(int64(len(data)) * clients)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		rand.Read(data)
		d := pushUpstream(b, up, data)
		url := me.srv.URL + "/v2/bench/blobs/" + d.String()
		b.StartTimer()
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() { getAll(b, client, url) })
		}
		wg.Wait()
	}
}

// BenchmarkColdBlob has one client ask for a 64 MiB blob that is not cached: the upstream's bytes
// are verified, written to the fill's file and streamed to the client as they arrive.
func BenchmarkColdBlob(b *testing.B) {
	me, up := benchEnv(b)
	data := make([]byte, 64<<20)
	rand.Read(data)
	client := &http.Client{}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		binary.LittleEndian.PutUint64(data, uint64(i)) // a new blob each time
		d := pushUpstream(b, up, data)
		url := me.srv.URL + "/v2/bench/blobs/" + d.String()
		b.StartTimer()
		getAll(b, client, url)
	}
}

// BenchmarkColdSmallLayers pulls 50 uncached layers of 256 KiB, three at a time as dockerd does:
// the fixed cost of a cold blob (fill file, hand-offs, index commit) over its bytes.
func BenchmarkColdSmallLayers(b *testing.B) {
	me, up := benchEnv(b)
	const layers = 50
	data := make([]byte, 256<<10)
	rand.Read(data)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 3}}
	b.SetBytes(int64(len(data)) * layers)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		urls := make([]string, layers)
		for l := range urls {
			binary.LittleEndian.PutUint64(data, uint64(i*layers+l)) // a new blob each time
			urls[l] = me.srv.URL + "/v2/bench/blobs/" + pushUpstream(b, up, data).String()
		}
		b.StartTimer()
		pullAll(b, client, urls)
	}
}

// pullAll GETs every URL, three at a time.
func pullAll(b testing.TB, client *http.Client, urls []string) {
	sem := make(chan struct{}, 3)
	var wg sync.WaitGroup
	for _, url := range urls {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			getAll(b, client, url)
		})
	}
	wg.Wait()
}
