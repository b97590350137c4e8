package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMiddleware(t *testing.T) {
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	file := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(file, bytes.Repeat([]byte("x"), 100_000), 0o600); err != nil {
		t.Fatal(err)
	}
	var readFromUsed bool
	mux := http.NewServeMux()
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		_, readFromUsed = w.(io.ReaderFrom)
		if RequestID(r.Context()) == "" {
			t.Error("no request id in the context")
		}
		http.ServeFile(w, r, file)
	})
	mux.HandleFunc("/teapot", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Status", "cove; hit")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "short and stout")
	})
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	route := func(r *http.Request) string { return strings.TrimPrefix(r.URL.Path, "/") }
	srv := httptest.NewServer(Middleware(mux, slog.New(slog.NewJSONHandler(&logs, nil)), m, route))
	defer srv.Close()

	for _, p := range []string{"/file", "/teapot", "/panic"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("%s: no X-Request-Id", p)
		}
		if p == "/panic" && resp.StatusCode != 500 {
			t.Errorf("panic answered %d, want 500", resp.StatusCode)
		}
	}
	if !readFromUsed {
		t.Error("the response writer hides io.ReaderFrom: sendfile is lost")
	}
	if got := testutil.ToFloat64(m.served.WithLabelValues("file")); got != 100_000 {
		t.Errorf("bytes served for /file = %v, want 100000", got)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("teapot", "GET", "418")); got != 1 {
		t.Errorf("requests{teapot,418} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("panic", "GET", "500")); got != 1 {
		t.Errorf("requests{panic,500} = %v, want 1", got)
	}
	lines := 0
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec struct{ Msg, Path, Cache string }
		json.Unmarshal([]byte(l), &rec)
		if rec.Msg == "request" || rec.Msg == "request failed" {
			lines++
		}
		if want := map[string]string{"/teapot": "cove; hit"}[rec.Path]; rec.Cache != want {
			t.Errorf("%s: cache = %q in the access log, want %q (the answer's Cache-Status)", rec.Path, rec.Cache, want)
		}
	}
	if lines != 3 {
		t.Errorf("%d access-log lines for 3 requests:\n%s", lines, logs.String())
	}
}

// Every 5xx is logged at ERROR with its cause and request id; other answers at INFO.
func TestServerErrorsAreLoggedWithCause(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&logs, nil)))
	mux := http.NewServeMux()
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		SetCause(r.Context(), errors.New("disk on fire"))
		SetCause(r.Context(), errors.New("a later, farther cause"))
		log.InfoContext(r.Context(), "inside the handler")
		w.WriteHeader(http.StatusBadGateway)
	})
	mux.HandleFunc("/silent", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { SetCause(r.Context(), errors.New("not a failure")) })
	srv := httptest.NewServer(Middleware(mux, log, NewMetrics(prometheus.NewRegistry()), func(*http.Request) string { return "r" }))
	defer srv.Close()

	ids := map[string]string{}
	for _, p := range []string{"/fail", "/silent", "/panic", "/ok"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		ids[p] = resp.Header.Get("X-Request-Id")
	}
	type line struct {
		Level, Msg, Path, Cause string
		RequestID               string `json:"request_id"`
	}
	byPath := map[string]line{}
	var inside line
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec line
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if rec.Msg == "inside the handler" {
			inside = rec
			continue
		}
		byPath[rec.Path] = rec
	}
	want := map[string]line{
		"/fail":   {Level: "ERROR", Msg: "request failed", Cause: "disk on fire"},
		"/silent": {Level: "ERROR", Msg: "request failed", Cause: "no cause recorded by the handler"},
		"/panic":  {Level: "ERROR", Msg: "request failed", Cause: "panic: boom"},
		"/ok":     {Level: "INFO", Msg: "request"},
	}
	for p, w := range want {
		got := byPath[p]
		if got.Level != w.Level || got.Msg != w.Msg || got.Cause != w.Cause || got.RequestID != ids[p] {
			t.Errorf("%s logged %+v, want %+v with request_id %s", p, got, w, ids[p])
		}
	}
	if inside.RequestID != ids["/fail"] {
		t.Errorf("a line logged with the request's context has request_id %q, want %q", inside.RequestID, ids["/fail"])
	}
}

// A response cut on purpose (http.ErrAbortHandler: a blob that cannot be finished) still gets
// its access-log line, at WARN, and its count; the panic goes on to close the connection.
func TestAbortedRequestIsLogged(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	m := NewMetrics(prometheus.NewRegistry())
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.Write([]byte("part of a blob"))
		panic(http.ErrAbortHandler)
	}), log, m, func(*http.Request) string { return "blob" })
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Errorf("the panic went on as %v, want http.ErrAbortHandler", p)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v2/x/blobs/sha256:00", nil))
	}()
	if !strings.Contains(buf.String(), `"msg":"request cut"`) || !strings.Contains(buf.String(), `"aborted":true`) {
		t.Errorf("no access-log line for the cut request:\n%s", buf.String())
	}
	if n := testutil.ToFloat64(m.requests.WithLabelValues("blob", "GET", "aborted")); n != 1 {
		t.Errorf("cove_http_requests_total{code=aborted} = %v, want 1", n)
	}
}

// The access log's modes: errors logs 4xx, 5xx and cut answers only; sample logs those and one
// in N of the others; the metrics count every request whatever the mode.
func TestAccessLogModes(t *testing.T) {
	for _, c := range []struct {
		access AccessLog
		want   int // lines for 6 answers of 200, one 404, one 500
	}{
		{AccessLog{}, 8},
		{AccessLog{Mode: AccessErrors}, 2},
		{AccessLog{Mode: AccessSample, Sample: 3}, 4},
	} {
		var logs bytes.Buffer
		m := NewMetrics(prometheus.NewRegistry())
		mux := http.NewServeMux()
		mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {})
		mux.HandleFunc("/gone", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(404) })
		mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
		h := Middleware(mux, slog.New(slog.NewJSONHandler(&logs, nil)), m, func(r *http.Request) string { return r.URL.Path[1:] }, c.access)
		for _, p := range []string{"/ok", "/ok", "/ok", "/gone", "/ok", "/ok", "/ok", "/fail"} {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
		}
		if n := strings.Count(logs.String(), "\n"); n != c.want {
			t.Errorf("access log %+v: %d lines, want %d:\n%s", c.access, n, c.want, logs.String())
		}
		if !strings.Contains(logs.String(), `"status":500`) {
			t.Errorf("access log %+v: the 500 is not logged", c.access)
		}
		if got := testutil.ToFloat64(m.requests.WithLabelValues("ok", "GET", "200")); got != 6 {
			t.Errorf("access log %+v: requests{ok,200} = %v, want 6 whatever is logged", c.access, got)
		}
	}
}

// The access log's cost per request: every line, or errors only (what access_log: errors saves).
func BenchmarkMiddleware(b *testing.B) {
	for _, access := range []AccessLog{{Mode: AccessAll}, {Mode: AccessErrors}} {
		b.Run(access.Mode, func(b *testing.B) {
			h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) }),
				slog.New(slog.NewJSONHandler(io.Discard, nil)), NewMetrics(prometheus.NewRegistry()), func(*http.Request) string { return "v2_manifest" }, access)
			req := httptest.NewRequest("GET", "/v2/library/alpine/manifests/latest", nil)
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
}
