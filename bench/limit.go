package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The limit is the fastest way this machine copies a cached file to an HTTP client, not one way
// of copying (#16, point 7): on a loopback socket the kernel's sendfile is not always ahead of a
// copy through user space with a large buffer, nor the kernel's autotuned socket send buffer
// ahead of a small fixed one. The limit server therefore answers every file with each of several
// copiers, under /<copier>/<file>, and the warm scenario takes the fastest of them in each
// repetition and says which it was. BenchmarkLimit measures the same copiers, with one client
// and with 16, and with set socket send buffers.

// copier writes a whole file as the body of a 200 answer to a GET; it serves no ranges.
type copier struct {
	name string
	copy func(w http.ResponseWriter, r *http.Request, f *os.File, size int64) error
	// sndbuf, when positive, is the socket send buffer the copier sets on its connection
	// first. That turns the kernel's autotuning off for good on the connection, so the answer
	// closes it: the next request, of whatever copier, gets a fresh one.
	sndbuf int
}

// copiers are the ways of copying the limit server offers. sendfile is http.ServeContent handed
// the *os.File, as a plain file server (and nginx) copies; the others read the file into a
// buffer of their size and write it, the way a proxy copies through user space; splice, where
// the platform has it, moves the file's pages through a pipe into the socket.
func copiers() []copier {
	cs := []copier{
		{name: "sendfile", copy: func(w http.ResponseWriter, r *http.Request, f *os.File, _ int64) error {
			http.ServeContent(w, r, "", time.Time{}, f)
			return nil
		}},
		userCopier(32 << 10),
		userCopier(256 << 10),
		userCopier(1 << 20),
		userCopier(4 << 20),
	}
	if c, ok := spliceCopier(); ok {
		cs = append(cs, c)
	}
	return cs
}

// limitCopiers are the copiers of cove bench's limit: every copier, and sendfile and splice
// with a socket send buffer of 256 KiB, which on a loopback socket keeps what is in flight
// within the processor's caches (BenchmarkLimit measures the sizes). A server should not do
// that to its clients: a fixed 256 KiB buffer bounds a download 20 ms away to 12.5 MiB/s,
// where autotuning grows the buffer with the path. It is in the limit because the limit is
// what this machine can do, not what a server should.
func limitCopiers() []copier {
	cs := copiers()
	for _, c := range cs[:len(cs):len(cs)] {
		if c.name == "sendfile" || c.name == "splice" {
			c.name += "-sndbuf-256k"
			c.sndbuf = 256 << 10
			cs = append(cs, c)
		}
	}
	return cs
}

// userCopier copies through a user-space buffer of size bytes, taken from a pool so that 16
// clients do not allocate 16 buffers per request.
func userCopier(size int) copier {
	pool := &sync.Pool{New: func() any { b := make([]byte, size); return &b }}
	return copier{name: "copy-" + sizeName(size), copy: func(w http.ResponseWriter, _ *http.Request, f *os.File, size int64) error {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		buf := pool.Get().(*[]byte)
		defer pool.Put(buf)
		// Hiding ReadFrom and WriteTo keeps io.CopyBuffer from handing the file to sendfile.
		_, err := io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{f}, *buf)
		return err
	}}
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dm", n>>20)
	}
	return fmt.Sprintf("%dk", n>>10)
}

// limitServer serves the files of dir at /<copier>/<name>, GET and HEAD only.
type limitServer struct {
	dir     string
	copiers map[string]copier
}

func newLimitServer(dir string, cs []copier) *limitServer {
	l := &limitServer{dir: dir, copiers: map[string]copier{}}
	for _, c := range cs {
		l.copiers[c.name] = c
	}
	return l
}

func (l *limitServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, file, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	c, known := l.copiers[name]
	if !ok || !known || file == "" || strings.Contains(file, "/") || strings.HasPrefix(file, ".") {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	f, err := os.Open(filepath.Join(l.dir, file))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if c.sndbuf > 0 && r.Method == http.MethodGet {
		tc, ok := r.Context().Value(connKey{}).(*net.TCPConn)
		if !ok {
			http.Error(w, "no TCP connection to set the send buffer of", http.StatusInternalServerError)
			return
		}
		if err := tc.SetWriteBuffer(c.sndbuf); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Connection", "close")
	}
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		return
	}
	_ = c.copy(w, r, f, fi.Size()) // a client that hangs up: nothing to tell it
}

// connKey is the context key of the limit server's connection, for copiers that set its send
// buffer.
type connKey struct{}

// newLimitHTTPServer is the limit server over dir with the copiers cs.
func newLimitHTTPServer(dir string, cs []copier) *http.Server {
	return &http.Server{Handler: newLimitServer(dir, cs), ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) }}
}

// sndbufListener sets the socket send buffer of every accepted connection to n bytes (which
// turns off the kernel's autotuning of it); n ≤ 0 leaves the kernel's default.
type sndbufListener struct {
	net.Listener
	n int
}

func (l sndbufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil && l.n > 0 {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(l.n)
		}
	}
	return c, err
}
