// Package telemetry is the HTTP boundary every request crosses: a request id, one access-log line,
// panic recovery, and Prometheus metrics (requests by route and status, latency, bytes served).
package telemetry

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the HTTP metrics, registered on a registry of the caller's.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	served   *prometheus.CounterVec

	mu sync.RWMutex
	// series holds the children of the three vectors by their labels, guarded by mu: looking
	// them up in the vectors hashes every label value of every request.
	series map[seriesKey]*series
}

type seriesKey struct {
	route, method string
	code          int // -1: cut
}

type series struct {
	requests, served prometheus.Counter
	latency          prometheus.Observer
}

// maxSeries bounds the series remembered.
const maxSeries = 1024

// methodLabel is the method label of a request: its method when HTTP defines it, "other" for
// whatever else a client sends, so that made-up methods cannot grow the series without bound.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

func (m *Metrics) of(k seriesKey) *series {
	m.mu.RLock()
	s := m.series[k]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	code := strconv.Itoa(k.code)
	if k.code < 0 {
		code = "aborted"
	}
	s = &series{requests: m.requests.WithLabelValues(k.route, k.method, code),
		latency: m.latency.WithLabelValues(k.route), served: m.served.WithLabelValues(k.route)}
	m.mu.Lock()
	if len(m.series) < maxSeries {
		m.series[k] = s
	}
	m.mu.Unlock()
	return s
}

// NewMetrics creates the HTTP metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		series: map[seriesKey]*series{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cove_http_requests_total", Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cove_http_request_duration_seconds", Help: "Time to answer HTTP requests, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cove_http_response_bytes_total", Help: "Bytes of response bodies served, by route.",
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.latency, m.served)
	return m
}

type ctxKey struct{}

// state is what Middleware keeps of a request while it is served.
type state struct {
	id string

	mu sync.Mutex
	// cause and route are guarded by mu.
	cause error
	route string
}

// RequestID returns the id that Middleware gave the request of ctx, or "".
func RequestID(ctx context.Context) string {
	if st, ok := ctx.Value(ctxKey{}).(*state); ok {
		return st.id
	}
	return ""
}

// SetCause records why the request of ctx failed: the access-log line of a request answered
// with a 5xx carries it, at level ERROR. The first cause recorded is kept (it is the nearest to
// the fault). Without a Middleware in ctx it does nothing.
// SetRoute names the route of the request of ctx for its metrics and access-log line, when the
// handler has parsed its path anyway: Middleware then does not ask its route function.
func SetRoute(ctx context.Context, name string) {
	if st, ok := ctx.Value(ctxKey{}).(*state); ok {
		st.mu.Lock()
		st.route = name
		st.mu.Unlock()
	}
}

func SetCause(ctx context.Context, err error) {
	st, ok := ctx.Value(ctxKey{}).(*state)
	if !ok || err == nil {
		return
	}
	st.mu.Lock()
	if st.cause == nil {
		st.cause = err
	}
	st.mu.Unlock()
}

func (st *state) causeText() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.cause == nil {
		return "no cause recorded by the handler"
	}
	return st.cause.Error()
}

// LogHandler wraps h so that every record logged with a request's context (the *Context
// methods of slog.Logger) carries that request's request_id.
func LogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ slog.Handler }

func (h logHandler) Handle(ctx context.Context, rec slog.Record) error {
	if id := RequestID(ctx); id != "" {
		rec = rec.Clone()
		rec.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, rec)
}

func (h logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return logHandler{h.Handler.WithAttrs(attrs)}
}

func (h logHandler) WithGroup(name string) slog.Handler { return logHandler{h.Handler.WithGroup(name)} }

// AccessLog says which requests get an access-log line: every one (AccessAll, the default), those
// answered 4xx or 5xx or cut (AccessErrors), or those and one in Sample of the others
// (AccessSample). A 5xx is always logged, with its cause. The metrics count every request.
type AccessLog struct {
	Mode   string
	Sample int
	// Flush, when set, is called after the line of a 5xx or a cut request: the access log is
	// written through a LineBuffer, and what went wrong does not wait in it.
	Flush func() error
}

// The modes of AccessLog.
const (
	AccessAll     = "all"
	AccessErrors  = "errors"
	AccessSample  = "sample"
	defaultSample = 100
)

// Middleware wraps next: it gives the request an id (X-Request-Id), recovers a panic into a 500,
// writes one access-log line and records the metrics. route names the endpoint for labels; it
// must return a small, fixed set of values. The line of a request answered with a 5xx is logged
// at ERROR with its cause (see SetCause); every other one at INFO, as access (its zero value:
// every request) says.
func Middleware(next http.Handler, log *slog.Logger, m *Metrics, route func(*http.Request) string, access ...AccessLog) http.Handler {
	var al AccessLog
	if len(access) > 0 {
		al = access[0]
	}
	if al.Sample <= 0 {
		al.Sample = defaultSample
	}
	var seen atomic.Int64 // the requests that could be sampled
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		outer := r.Context() // the line below names the request id itself
		st := &state{id: rand.Text()[:16]}
		id := st.id
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, st))
		rw := &responseWriter{ResponseWriter: w, status: http.StatusOK}
		rw.Header().Set("X-Request-Id", id)
		defer func() {
			aborted := false
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					// The response was cut on purpose (a blob that cannot be finished): its
					// line is still written, then the connection is closed.
					aborted = true
					defer panic(p)
				} else {
					SetCause(r.Context(), fmt.Errorf("panic: %v", p))
					if !rw.wrote {
						http.Error(rw, "internal server error", http.StatusInternalServerError)
					}
				}
			}
			st.mu.Lock()
			name := st.route
			st.mu.Unlock()
			if name == "" {
				name = route(r)
			}
			elapsed := time.Since(start)
			k := seriesKey{route: name, method: methodLabel(r.Method), code: rw.status}
			if aborted {
				k.code = -1
			}
			ser := m.of(k)
			ser.requests.Inc()
			ser.latency.Observe(elapsed.Seconds())
			ser.served.Add(float64(rw.bytes))
			if rw.status < 400 && !aborted {
				switch al.Mode {
				case AccessErrors:
					return
				case AccessSample:
					if seen.Add(1)%int64(al.Sample) != 1%int64(al.Sample) {
						return
					}
				}
			}
			level, msg := slog.LevelInfo, "request"
			attrs := []slog.Attr{
				slog.String("request_id", id),
				slog.String("remote", r.RemoteAddr),
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.String("query", r.URL.RawQuery), // registry queries carry no secrets: digests, n, last, ns
				slog.String("route", name),
				slog.Int("status", rw.status),
				slog.Int64("bytes", rw.bytes),
				slog.Duration("duration", elapsed),
				slog.String("user_agent", r.UserAgent()),
			}
			if cs := rw.Header().Get("Cache-Status"); cs != "" {
				// Where a registry answer came from (the mirror's RFC 9211 header).
				attrs = append(attrs, slog.String("cache", cs))
			}
			if rw.status >= 500 {
				level, msg = slog.LevelError, "request failed"
				attrs = append(attrs, slog.String("cause", st.causeText()))
			}
			if aborted {
				level, msg = slog.LevelWarn, "request cut"
				attrs = append(attrs, slog.Bool("aborted", true))
			}
			log.LogAttrs(outer, level, msg, attrs...)
			if level > slog.LevelInfo && al.Flush != nil {
				_ = al.Flush()
			}
		}()
		next.ServeHTTP(rw, r)
	})
}

// responseWriter records status and body size. It forwards ReadFrom so that sendfile keeps
// working for blobs, and Unwrap so http.ResponseController reaches the connection.
type responseWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (w *responseWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status = code
		w.wrote = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	w.wrote = true
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *responseWriter) ReadFrom(r io.Reader) (int64, error) {
	w.wrote = true
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(w.ResponseWriter, r)
	}
	w.bytes += n
	return n, err
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
