package main

// How a SIGTERM ends the requests in flight: the graces, and the downloads cut when theirs is over.

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// shutdownGrace bounds how long a SIGTERM waits for requests in flight (Kubernetes' default
// grace is 30 s); fills from upstreams get fillShutdownGrace of it, downloads
// downloadShutdownGrace, uploads all of it.
const (
	shutdownGrace         = 25 * time.Second
	fillShutdownGrace     = 3 * time.Second
	downloadShutdownGrace = 10 * time.Second
)

type connKey struct{}

// withConn keeps a request's connection in its context, for downloads.track.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// downloads knows the connections serving a GET or HEAD, to cut them at shutdown.
type downloads struct {
	mu    sync.Mutex
	conns map[net.Conn]int // requests in flight on each
}

func (d *downloads) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := r.Context().Value(connKey{}).(net.Conn)
		if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			h.ServeHTTP(w, r)
			return
		}
		d.mu.Lock()
		if d.conns == nil {
			d.conns = map[net.Conn]int{}
		}
		d.conns[c]++
		d.mu.Unlock()
		defer func() {
			d.mu.Lock()
			if d.conns[c]--; d.conns[c] == 0 {
				delete(d.conns, c)
			}
			d.mu.Unlock()
		}()
		h.ServeHTTP(w, r)
	})
}

// cut closes every connection serving a download, and says how many it closed.
func (d *downloads) cut() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.conns {
		c.Close()
	}
	return len(d.conns)
}
