package telemetry

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// lockedBuffer is a bytes.Buffer safe for the LineBuffer's timer and the test to share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	n  int // writes
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	return l.b.Write(p)
}

func (l *lockedBuffer) String() (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String(), l.n
}

// Lines wait in the buffer, are written together within its interval, and at once when it is
// full or flushed.
func TestLineBuffer(t *testing.T) {
	out := &lockedBuffer{}
	b := NewLineBuffer(out, time.Hour)
	for range 10 {
		b.Write([]byte("a line\n"))
	}
	if s, _ := out.String(); s != "" {
		t.Fatalf("written before the interval or a flush: %q", s)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if s, n := out.String(); s != strings.Repeat("a line\n", 10) || n != 1 {
		t.Fatalf("after a flush: %d writes of %q; want one of the ten lines", n, s)
	}
	long := bytes.Repeat([]byte("x"), lineBufferMax)
	b.Write(long)
	if s, _ := out.String(); len(s) != 70+lineBufferMax {
		t.Errorf("a full buffer was not written at once: %d bytes out", len(s))
	}

	timed := &lockedBuffer{}
	b = NewLineBuffer(timed, 10*time.Millisecond)
	b.Write([]byte("soon\n"))
	deadline := time.Now().Add(5 * time.Second)
	for s, _ := timed.String(); s != "soon\n"; s, _ = timed.String() {
		if time.Now().After(deadline) {
			t.Fatal("a line waited past the interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Access-log lines wait for the batch; the line of a 5xx is written at once, with those before it.
func TestAccessLogFlushesErrorsAtOnce(t *testing.T) {
	out := &lockedBuffer{}
	buf := NewLineBuffer(out, time.Hour)
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	h := Middleware(mux, slog.New(slog.NewJSONHandler(buf, nil)), NewMetrics(prometheus.NewRegistry()),
		func(r *http.Request) string { return r.URL.Path[1:] }, AccessLog{Flush: buf.Flush})
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/ok", nil))
	if s, _ := out.String(); s != "" {
		t.Fatalf("an ordinary line was written at once: %q", s)
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/fail", nil))
	if s, _ := out.String(); strings.Count(s, "\n") != 2 || !strings.Contains(s, `"status":500`) {
		t.Errorf("after a 500: %q; want both lines out", s)
	}
}

// A handler that has parsed its route names it: the metrics and the line use that name, and the
// route function is not asked.
func TestHandlerNamesItsRoute(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	asked := false
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { SetRoute(r.Context(), "v2_manifest") }),
		slog.New(slog.DiscardHandler), m, func(*http.Request) string { asked = true; return "web" })
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v2/a/manifests/b", nil))
	if got := testutil.ToFloat64(m.requests.WithLabelValues("v2_manifest", "GET", "200")); got != 1 || asked {
		t.Errorf("requests{v2_manifest} = %v, route function asked: %v", got, asked)
	}
}
