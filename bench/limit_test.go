package bench

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// limitFile writes size pseudo-random bytes to a file in dir and returns its name and digest.
func limitFile(tb testing.TB, dir string, size int) (string, string) {
	tb.Helper()
	b := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{'l', 'i', 'm', 'i', 't'})
	_, _ = rng.Read(b)
	if err := os.WriteFile(filepath.Join(dir, "blob"), b, 0o644); err != nil {
		tb.Fatal(err)
	}
	return "blob", "sha256:" + hexSum(b)
}

// serveLimit serves dir with every copier on 127.0.0.1, setting each connection's send buffer
// to sndbuf bytes when it is positive, until the test ends.
func serveLimit(tb testing.TB, dir string, sndbuf int) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := newLimitHTTPServer(dir, limitCopiers())
	go srv.Serve(sndbufListener{Listener: ln, n: sndbuf})
	tb.Cleanup(func() { srv.Close() })
	return baseURL(ln.Addr().String())
}

// TestLimitCopiers checks that every copier sends the file whole and right, twice over one
// client (the second time on a kept-alive connection where the copier keeps it), answers HEAD
// with the length and no body, and that unknown copiers and files are 404.
func TestLimitCopiers(t *testing.T) {
	dir := t.TempDir()
	const size = 3<<20 + 12345 // not a multiple of any buffer
	name, want := limitFile(t, dir, size)
	base := serveLimit(t, dir, 0)
	c := newClient(4)
	for _, cp := range limitCopiers() {
		t.Run(cp.name, func(t *testing.T) {
			for i := range 2 {
				f, err := fetch(c, base+"/"+cp.name+"/"+name, true)
				if err != nil {
					t.Fatalf("GET %d: %v", i, err)
				}
				if f.Bytes != size || f.Digest != want {
					t.Errorf("GET %d = %d bytes, %s; want %d, %s", i, f.Bytes, f.Digest, size, want)
				}
			}
			// A copier that fixes the send buffer, and splice, which takes the connection over,
			// close it; the others keep it alive.
			resp, err := c.Get(base + "/" + cp.name + "/" + name)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if wantClose := cp.sndbuf > 0 || cp.name == "splice"; resp.Close != wantClose {
				t.Errorf("GET: the connection closes: %v, want %v", resp.Close, wantClose)
			}
			resp, err = c.Head(base + "/" + cp.name + "/" + name)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("Content-Length"); resp.StatusCode != http.StatusOK || got != strconv.Itoa(size) {
				t.Errorf("HEAD = %d, Content-Length %q; want 200, %d", resp.StatusCode, got, size)
			}
		})
	}
	for _, path := range []string{"/nocopier/" + name, "/sendfile/nothere", "/sendfile/", "/sendfile/../limit.go", "/" + name} {
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, resp.StatusCode)
		}
	}
}

// BenchmarkLimit copies one cached file to 1 and to 16 clients at once with each copier and
// socket send buffer size (0: the kernel's autotuned default). One op is every client reading
// the whole file. COVE_BENCH_LIMIT_FILE names a large file to serve (a page-cached file of
// 512 MiB or more measures the copy, not the set-up); by default it is 64 MiB in a temporary
// directory. Compare with -benchtime 1x and repetitions that alternate the copiers, as a busy
// machine drifts: make bench-limit does.
func BenchmarkLimit(b *testing.B) {
	dir, name := b.TempDir(), ""
	if p := os.Getenv("COVE_BENCH_LIMIT_FILE"); p != "" {
		dir, name = filepath.Dir(p), filepath.Base(p)
	} else {
		name, _ = limitFile(b, dir, 64<<20)
	}
	fi, err := os.Stat(filepath.Join(dir, name))
	if err != nil {
		b.Fatal(err)
	}
	for _, sndbuf := range []int{0, 64 << 10, 128 << 10, 256 << 10, 1 << 20, 4 << 20} {
		base := serveLimit(b, dir, sndbuf)
		for _, cp := range copiers() {
			for _, clients := range []int{1, 16} {
				b.Run(fmt.Sprintf("copier=%s/sndbuf=%s/clients=%d", cp.name, sndbufName(sndbuf), clients), func(b *testing.B) {
					url := base + "/" + cp.name + "/" + name
					c := newClient(clients)
					b.SetBytes(fi.Size() * int64(clients))
					b.ReportAllocs()
					for b.Loop() {
						var wg sync.WaitGroup
						errs := make(chan error, clients)
						for range clients {
							wg.Go(func() {
								f, err := fetch(c, url, false)
								if err == nil && f.Bytes != fi.Size() {
									err = fmt.Errorf("%d bytes, want %d", f.Bytes, fi.Size())
								}
								if err != nil {
									errs <- err
								}
							})
						}
						wg.Wait()
						close(errs)
						if err := <-errs; err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

func sndbufName(n int) string {
	if n <= 0 {
		return "default"
	}
	return sizeName(n)
}
