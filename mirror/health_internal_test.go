package mirror

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder answers every request 200 and remembers the scheme of each.
type recorder struct {
	mu      sync.Mutex
	schemes []string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.schemes = append(r.schemes, req.URL.Scheme)
	r.mu.Unlock()
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("{}")), Request: req}, nil
}

// An http:// upstream is never tried over https (go-containerregistry's ping would try https
// first on an "insecure" registry).
func TestConfiguredSchemeOnly(t *testing.T) {
	rec := &recorder{}
	u, err := newUpstream(Upstream{Name: "docker.io", URL: "http://127.0.0.1:5999"}, rec, slog.New(slog.DiscardHandler), NewMetrics(nil), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.client(context.Background(), "library/x"); err != nil {
		t.Fatal(err)
	}
	if len(rec.schemes) == 0 {
		t.Fatal("no request went out")
	}
	for _, s := range rec.schemes {
		if s != "http" {
			t.Errorf("a request went out over %s to an http:// upstream", s)
		}
	}
}

func TestRateValue(t *testing.T) {
	for _, c := range []struct {
		in     string
		n      int64
		window time.Duration
		ok     bool
	}{
		{"100;w=21600", 100, 6 * time.Hour, true},
		{"76", 76, 0, true},
		{" 0 ; w=60", 0, time.Minute, true},
		{"", 0, 0, false},
		{"1;w=99999999999", 1, maxWindow, true}, // no overflow into the past
		{"-1", 0, 0, false},
		{"many", 0, 0, false},
	} {
		n, w, ok := rateValue(c.in)
		if n != c.n || w != c.window || ok != c.ok {
			t.Errorf("rateValue(%q) = %d, %v, %v; want %d, %v, %v", c.in, n, w, ok, c.n, c.window, c.ok)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{"999999", maxRetryAfter, true},
		{"9300000000", maxRetryAfter, true}, // would overflow time.Duration
		{"18446744073", maxRetryAfter, true},
		{"", 0, false},
		{"soon", 0, false},
	} {
		got, ok := retryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestParseReserve(t *testing.T) {
	for _, c := range []struct {
		in    string
		limit int64
		want  int64
	}{{"", 100, 10}, {"10%", 200, 20}, {"25", 100, 25}, {"0", 100, 0}, {"2.5%", 1000, 25}} {
		f, err := ParseReserve(c.in)
		if err != nil {
			t.Errorf("ParseReserve(%q): %v", c.in, err)
		} else if got := f(c.limit); got != c.want {
			t.Errorf("ParseReserve(%q)(%d) = %d; want %d", c.in, c.limit, got, c.want)
		}
	}
	for _, bad := range []string{"ten", "-5", "150%", "%"} {
		if _, err := ParseReserve(bad); err == nil {
			t.Errorf("ParseReserve(%q) took it", bad)
		}
	}
}

// Headers without a window get Docker Hub's, so that saving pulls ends with it; a reset header
// past any sense is bounded.
func TestPullLimitWindow(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	reserve, _ := ParseReserve("")
	p := &pullLimit{pl: PullLimit{Limit: -1, Remaining: -1}, reserve: reserve}
	p.observe(http.Header{"Ratelimit-Limit": {"100"}, "Ratelimit-Remaining": {"3"}}, now)
	if pl := p.get(); pl.Window != defaultWindow || !pl.Reset.Equal(now.Add(defaultWindow)) || !p.low(now) {
		t.Errorf("without a window: %+v, low %v", pl, p.low(now))
	}
	if p.low(now.Add(defaultWindow + time.Second)) {
		t.Error("saving pulls outlives the window")
	}
	p.observe(http.Header{"Ratelimit-Remaining": {"3"}, "Ratelimit-Reset": {"9300000000"}}, now)
	if pl := p.get(); pl.Reset.After(now.Add(maxWindow)) {
		t.Errorf("reset = %v, want at most %v", pl.Reset, now.Add(maxWindow))
	}
}
