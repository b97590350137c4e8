package mirror_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net/http"
	"sync"
	"testing"

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

// BenchmarkWarmBlob serves a cached 16 MiB blob: the file path, with sendfile.
func BenchmarkWarmBlob(b *testing.B) {
	me, up := benchEnv(b)
	data := make([]byte, 16<<20)
	rand.Read(data)
	d := pushUpstream(b, up, data)
	url := me.srv.URL + "/v2/bench/blobs/" + d.String()
	client := &http.Client{}
	getAll(b, client, url) // fill the cache
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		getAll(b, client, url)
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
