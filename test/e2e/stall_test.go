package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
)

// TestStalledUpstreamDoesNotHoldShutdown: an upstream that stops sending in the middle of a
// blob holds neither its clients past mirror.upstreams.X.timeout nor a SIGTERM: with fills in
// progress, cove exits within seconds (it took 62 s).
func TestStalledUpstreamDoesNotHoldShutdown(t *testing.T) {
	proxy, ld, size, release := seededUpstream(t, "library/stall:1", 1<<20)
	proxy.setFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method != "GET" || !strings.HasSuffix(r.URL.Path, "/blobs/"+ld) {
			return false
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(200)
		w.Write(make([]byte, 4096))
		w.(http.Flusher).Flush()
		select { // stalls: no more bytes until the test ends
		case <-release:
		case <-r.Context().Done():
		}
		return true
	})

	// The time budget cuts a stalled fill: the client's request ends, well before the fill's hour.
	s := startMirror(t, t.TempDir(), "mirror:\n  timeout: 5m\n  upstreams:\n    docker.io:\n      url: "+proxy.srv.URL+"\n      timeout: 1s\n")
	start := time.Now()
	if _, err := getBlob(s, "stall", ld, 30*time.Second); err == nil {
		t.Error("a stalled upstream's blob was served whole")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("the stalled fill ended after %v, want about its 1s budget", d)
	}
	s.stop()

	// With a long budget, a SIGTERM still ends the stalled fills within seconds.
	s = startMirror(t, t.TempDir(), mirrorConfig(proxy.srv.URL, "  timeout: 5m\n"))
	errc := make(chan error, 2)
	for range 2 {
		go func() { _, err := getBlob(s, "stall", ld, 2*time.Minute); errc <- err }()
	}
	waitFor(t, 30*time.Second, "the clients to reach the stalled upstream", func() bool { return proxy.count("GET", "/blobs/"+ld) >= 2 })
	start = time.Now()
	if code := s.stop(); code != 0 {
		t.Errorf("cove exited %d after SIGTERM", code)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("SIGTERM with a stalled fill took %v, want seconds", d)
	}
	for range 2 {
		if err := <-errc; err == nil {
			t.Error("a client of the stalled fill got the whole blob")
		}
	}
}

// seededUpstream starts docker-registry seeded with ref, a random image of one layer of about
// size bytes, and a fault proxy in front of it: the proxy, the layer's digest and size, and a channel closed when the
// test ends (for faults that hold a response until then).
func seededUpstream(t *testing.T, ref string, size int64) (*faultProxy, string, int64, chan struct{}) {
	t.Helper()
	reg := startRegistry(t, "", nil)
	img, err := random.Image(size, 1)
	if err != nil {
		t.Fatal(err)
	}
	reg.seed(t, ref, img)
	layer := must(img.Layers())[0]
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	return newFaultProxy(t, reg.url), must(layer.Digest()).String(), must(layer.Size()), release
}

// getBlob GETs a blob of repo through cove and reads it whole; a short or failed read is an error.
func getBlob(s *server, repo, dgst string, limit time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", s.url+"/v2/"+repo+"/blobs/"+dgst, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = &httpStatusError{resp.StatusCode}
	}
	return b, err
}

type httpStatusError struct{ code int }

func (e *httpStatusError) Error() string { return "HTTP " + strconv.Itoa(e.code) }

// TestTricklingUpstreamAndSlowClients: an upstream that sends a byte now and then is as stalled
// as a silent one (each byte reset the budget: a 1 MiB blob at 3 bytes a second held its clients
// for days), and a client reading a blob at a kilobyte a second does not hold a SIGTERM for the
// whole grace (it held it 60 s).
func TestTricklingUpstreamAndSlowClients(t *testing.T) {
	proxy, ld, size, release := seededUpstream(t, "library/trickle:1", 16<<20)
	proxy.setFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method != "GET" || !strings.HasSuffix(r.URL.Path, "/blobs/"+ld) {
			return false
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(200)
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for range size { // a byte at a time, bounded by the blob's size and the test's end
			if _, err := w.Write([]byte{0}); err != nil {
				return true
			}
			w.(http.Flusher).Flush()
			select {
			case <-tick.C:
			case <-release:
				return true
			case <-r.Context().Done():
				return true
			}
		}
		return true
	})
	s := startMirror(t, t.TempDir(), "mirror:\n  upstreams:\n    docker.io:\n      url: "+proxy.srv.URL+"\n      timeout: 1s\n")
	start := time.Now()
	if _, err := getBlob(s, "trickle", ld, 30*time.Second); err == nil {
		t.Error("a trickling upstream's blob was served whole")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("the trickling fill ended after %v, want about its 1s budget", d)
	}
	s.stop()

	// A slow client: the blob is cached (the upstream is healthy now), and the client reads
	// a kilobyte a second.
	proxy.setFault(nil)
	s = startMirror(t, t.TempDir(), mirrorConfig(proxy.srv.URL, ""))
	if _, err := getBlob(s, "trickle", ld, time.Minute); err != nil {
		t.Fatalf("GET the blob: %v", err)
	}
	// A raw connection with a small receive buffer, so that the server's writes block on the
	// slow reader once the kernel's buffers are full (the blob is several times their size).
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	fmt.Fprintf(conn, "GET /v2/library/trickle/blobs/%s HTTP/1.1\r\nHost: %s\r\n\r\n", ld, s.addr)
	var got atomic.Int64
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := conn.Read(buf)
			got.Add(int64(n))
			if err != nil {
				return
			}
			time.Sleep(time.Second) // the pace of the slow client: a kilobyte a second
		}
	}()
	waitFor(t, 30*time.Second, "the slow client's first bytes", func() bool { return got.Load() > 0 })
	start = time.Now()
	if code := s.stop(); code != 0 {
		t.Errorf("cove exited %d after SIGTERM", code)
	}
	// Uploads get 25 s: a download that was not cut holds the SIGTERM that long.
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("SIGTERM with a slow client took %v, want its 10 s for downloads", d)
	}
	conn.Close() // the client gives up; what the kernel still held for it is of no interest
}
