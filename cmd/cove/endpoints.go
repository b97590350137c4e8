package main

// The HTTP surface beside the registry and the admin API: deadlines for small requests, the
// metrics' route labels, and the health and readiness probes.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"cove/auth"
	"cove/internal/telemetry"
	"cove/mirror"
)

// smallRequestTimeout bounds a whole request to the API and operations endpoints, whose bodies
// and answers are small; /v2 renews idle deadlines instead, since blobs are large (docs/SECURITY.md 12).
const smallRequestTimeout = time.Minute

// withDeadline gives every request of h absolute read and write deadlines d from now.
func withDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(d))
		_ = rc.SetWriteDeadline(time.Now().Add(d))
		h.ServeHTTP(w, r)
	})
}

// routeName labels a request for metrics with a small, fixed set of values.
func routeName(r *http.Request) string {
	p := r.URL.Path
	switch {
	case p == "/v2" || strings.HasPrefix(p, "/v2/"):
		return mirror.RouteKind(p).Metric()
	case strings.HasPrefix(p, "/api/"):
		return "api"
	case strings.HasPrefix(p, "/static/"):
		return "static"
	case p == auth.TokenPath:
		return "token"
	case p == "/metrics", p == "/healthz", p == "/readyz":
		return p[1:]
	}
	return "web"
}

// registerProbes serves /healthz (the process answers) and /readyz (cove is up, not stopping, and
// its metadata store and shared blob store answer) on mux.
func registerProbes(mux *http.ServeMux, ready *atomic.Bool, pingMeta, pingBlobs func(context.Context) error) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			telemetry.SetCause(r.Context(), errors.New("not ready: cove is starting or shutting down"))
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if err := pingMeta(r.Context()); err != nil {
			telemetry.SetCause(r.Context(), fmt.Errorf("not ready: the metadata database does not answer: %w", err))
			http.Error(w, "not ready: the metadata database (storage.metadata) does not answer", http.StatusServiceUnavailable)
			return
		}
		if err := pingBlobs(r.Context()); err != nil {
			telemetry.SetCause(r.Context(), fmt.Errorf("not ready: %w", err))
			http.Error(w, "not ready: the shared blob store (storage.blobs) does not answer", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
}
