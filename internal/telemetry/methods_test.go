package telemetry

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Any client can send any token as an HTTP method: the method label of the request counter must
// not grow a series per made-up method (an attack review: 3,000 requests with random methods to
// GET-less /v2/ gave cove_http_requests_total 3,000 series, on the unauthenticated /metrics).
func TestMadeUpMethodsDoNotGrowTheSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(405) }),
		slog.New(slog.DiscardHandler), m, func(*http.Request) string { return "v2_base" })
	for i := range 2000 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(fmt.Sprintf("M%06d", i), "/v2/", nil))
	}
	if n := testutil.CollectAndCount(m.requests); n > 50 {
		t.Errorf("2,000 requests with made-up methods made %d series of the request counter", n)
	}
}
