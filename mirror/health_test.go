package mirror_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"cove/mirror"
)

// syncBuffer is a log buffer the server writes to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// An upstream that hangs opens its circuit: the first request pays the budget (504), the next
// ones fail at once without being sent (503 with Retry-After) and a cached tag is served at once;
// once the back-off is over one probe goes out; the back-off doubles while the upstream stays
// down, and an answer closes the circuit.
func TestCircuitBreaker(t *testing.T) {
	up := newFakeUpstream(t)
	up.seed(t, "library/cached:1", must(random.Image(100, 1)))
	var hang sync.Mutex // held: manifests hang until the test ends
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hanging := false
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		hang.Lock()
		h := hanging
		hang.Unlock()
		if h && strings.Contains(r.URL.Path, "/manifests/") {
			<-release
			return true
		}
		return false
	})
	setHang := func(v bool) { hang.Lock(); hanging = v; hang.Unlock() }
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL, Timeout: 300 * time.Millisecond}})
	if resp, b := me.do(t, "GET", "/v2/cached/manifests/1", nil, false); resp.StatusCode != 200 {
		t.Fatalf("first pull = %d %s", resp.StatusCode, b)
	}
	me.clock.Add(time.Minute) // the cached tag is past its TTL: a pull asks the upstream
	setHang(true)
	start := time.Now()
	if resp, b := me.do(t, "GET", "/v2/library/a/manifests/1", nil, false); resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("hung upstream = %d %s, want 504", resp.StatusCode, b)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the hung upstream took %v, want its 300ms budget", d)
	}
	sent := up.count("GET manifests") + up.count("HEAD manifests")
	start = time.Now()
	resp, b := me.do(t, "GET", "/v2/library/b/manifests/1", nil, false)
	if resp.StatusCode != http.StatusServiceUnavailable || errCode(b) != "UNAVAILABLE" || resp.Header.Get("Retry-After") != "2" ||
		!strings.Contains(string(b), "marked down") {
		t.Errorf("with the circuit open = %d %s (Retry-After %q), want 503 saying it is marked down, Retry-After 2", resp.StatusCode, b, resp.Header.Get("Retry-After"))
	}
	if got := resp.Header.Get("Cache-Status"); got != "cove; fwd=miss; detail=upstream-timeout" {
		t.Errorf("Cache-Status = %q", got)
	}
	// A cached tag past its TTL is served at once, stale.
	resp, _ = me.do(t, "GET", "/v2/cached/manifests/1", nil, false)
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Status") != "cove; fwd=stale; detail=upstream-timeout" {
		t.Errorf("a cached tag with the circuit open = %d, Cache-Status %q", resp.StatusCode, resp.Header.Get("Cache-Status"))
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("with the circuit open the answers took %v, want at once (each would pay the 300ms budget, 600ms for the two)", d)
	}
	if n := up.count("GET manifests") + up.count("HEAD manifests") - sent; n != 0 {
		t.Errorf("%d requests went to an upstream marked down", n)
	}
	// Past the back-off one probe goes out; it fails, and the circuit opens for twice as long.
	me.clock.Add(3 * time.Second)
	if resp, _ := me.do(t, "GET", "/v2/cached/manifests/1", nil, false); resp.StatusCode != 200 {
		t.Errorf("a cached tag while the probe fails = %d", resp.StatusCode)
	}
	if n := up.count("GET manifests") + up.count("HEAD manifests") - sent; n != 1 {
		t.Errorf("past the back-off %d requests went out, want one probe", n)
	}
	st := me.Status(t)
	if !st.Down || st.DownReason != "upstream-timeout" || st.DownUntil.Sub(me.clock.Now()) != 4*time.Second {
		t.Errorf("status = down %v (%s) until %v after now, want down 4s for upstream-timeout", st.Down, st.DownReason, st.DownUntil.Sub(me.clock.Now()))
	}
	setHang(false)
	me.clock.Add(5 * time.Second)
	if resp, b := me.do(t, "GET", "/v2/library/c/manifests/1", nil, false); resp.StatusCode != 404 {
		t.Errorf("the probe once the upstream answers = %d %s, want its 404", resp.StatusCode, b)
	}
	if st := me.Status(t); st.Down {
		t.Errorf("the circuit stays open after an answer: %+v", st)
	}
}

// Status returns the status of the env's first upstream.
func (me *mirrorEnv) Status(t *testing.T) mirror.UpstreamStatus {
	t.Helper()
	st := me.mirror.Status()
	if len(st.Upstreams) == 0 {
		t.Fatal("no upstream in the status")
	}
	return st.Upstreams[0]
}

// Docker Hub's pull limit: the headers are kept; under the reserve a cached tag is served without
// asking the upstream (counted), and a cold pull still goes; a pull-limit 429 opens the circuit
// until its Retry-After and says so in the log, which tells it from a plain throttle.
func TestPullLimit(t *testing.T) {
	up := newFakeUpstream(t)
	up.seed(t, "library/app:1", must(random.Image(100, 1)))
	up.seed(t, "library/cold:1", must(random.Image(100, 1)))
	var mu sync.Mutex
	remaining := 50
	status := 0 // a fault: 429 and its body
	body := ""
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Ratelimit-Limit", "100;w=21600")
		w.Header().Set("Ratelimit-Remaining", strconv.Itoa(remaining)+";w=21600")
		w.Header().Set("Docker-Ratelimit-Source", "192.0.2.7")
		if status != 0 {
			w.Header().Set("Retry-After", "600")
			w.WriteHeader(status)
			w.Write([]byte(body))
			return true
		}
		return false
	})
	set := func(rem, st int, b string) { mu.Lock(); remaining, status, body = rem, st, b; mu.Unlock() }
	logs := &syncBuffer{}
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL, RateLimitReserve: "10%"}}, func(c *mirror.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	if resp, b := me.do(t, "GET", "/v2/app/manifests/1", nil, false); resp.StatusCode != 200 {
		t.Fatalf("first pull = %d %s", resp.StatusCode, b)
	}
	st := me.Status(t)
	if st.PullLimit.Limit != 100 || st.PullLimit.Remaining != 50 || st.PullLimit.Window != 6*time.Hour ||
		st.PullLimit.Source != "192.0.2.7" || st.PullLimit.Reset.Sub(me.clock.Now()) != 6*time.Hour || st.Saving {
		t.Errorf("pull limit = %+v saving %v", st.PullLimit, st.Saving)
	}
	// Above the reserve, a tag past its TTL is revalidated.
	me.clock.Add(2 * time.Minute)
	heads := up.count("HEAD manifests")
	if resp, _ := me.do(t, "GET", "/v2/app/manifests/1", nil, false); resp.Header.Get("Cache-Status") != "cove; fwd=stale; fwd-status=200" {
		t.Errorf("above the reserve: Cache-Status %q, want revalidated", resp.Header.Get("Cache-Status"))
	}
	if up.count("HEAD manifests") != heads+1 {
		t.Errorf("above the reserve the tag was not revalidated")
	}
	// Under it (9 < 10 % of 100): served without asking, counted.
	set(9, 0, "")
	if resp, _ := me.do(t, "GET", "/v2/cold/manifests/1", nil, false); resp.StatusCode != 200 {
		t.Fatalf("a cold pull under the reserve = %d, want it to go upstream", resp.StatusCode)
	}
	if !me.Status(t).Saving {
		t.Error("under the reserve, the status does not say so")
	}
	me.clock.Add(2 * time.Minute)
	heads = up.count("HEAD manifests") + up.count("GET manifests")
	resp, _ := me.do(t, "GET", "/v2/app/manifests/1", nil, false)
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Status") != "cove; hit; detail=ratelimit-reserve" {
		t.Errorf("under the reserve = %d, Cache-Status %q", resp.StatusCode, resp.Header.Get("Cache-Status"))
	}
	if n := up.count("HEAD manifests") + up.count("GET manifests") - heads; n != 0 {
		t.Errorf("under the reserve, %d requests revalidated a cached tag", n)
	}
	if v := testutil.ToFloat64(metric(t, me.reg, "cove_mirror_reserve_serves_total", "upstream", "docker.io")); v != 1 {
		t.Errorf("reserve serves = %v, want 1", v)
	}
	// The pull limit's 429: the circuit opens until its Retry-After; the log says which 429.
	set(0, 429, `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit. You may increase the limit by authenticating and upgrading"}]}`)
	if resp, _ := me.do(t, "GET", "/v2/library/new/manifests/1", nil, false); resp.StatusCode != 429 {
		t.Errorf("the pull limit's 429 = %d", resp.StatusCode)
	}
	sent := up.count("GET manifests")
	resp, b := me.do(t, "GET", "/v2/library/other/manifests/1", nil, false)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "600" || !strings.Contains(string(b), "pull limit") || up.count("GET manifests") != sent {
		t.Errorf("within the pull limit's Retry-After = %d %s (Retry-After %q)", resp.StatusCode, b, resp.Header.Get("Retry-After"))
	}
	if st := me.Status(t); !st.Down || st.DownReason != "pull-limit" {
		t.Errorf("status after the pull limit's 429 = %+v", st)
	}
	if !strings.Contains(logs.String(), "pull limit is used up") {
		t.Errorf("the log does not name the pull limit:\n%s", logs.String())
	}
	// A throttle's 429 is another story in the log.
	me.clock.Add(11 * time.Minute)
	set(40, 429, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`)
	me.do(t, "GET", "/v2/library/third/manifests/1", nil, false)
	if st := me.Status(t); st.DownReason != "throttled" || !strings.Contains(logs.String(), "not the pull limit") {
		t.Errorf("a throttle's 429: status %+v, log:\n%s", st, logs.String())
	}
}

// The upstream's "manifest unknown" is remembered for negative_ttl: a client asking again does
// not reach the upstream; a 401, a 429, a 5xx or a timeout is never remembered.
func TestNegativeCache(t *testing.T) {
	up := newFakeUpstream(t)
	var mu sync.Mutex
	fault := 0
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if fault != 0 && strings.Contains(r.URL.Path, "/manifests/") {
			w.WriteHeader(fault)
			return true
		}
		return false
	})
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}}, func(c *mirror.Config) { c.NegativeTTL = 30 * time.Second })
	ask := func(ref string) (*http.Response, int) {
		before := up.count("GET manifests")
		resp, _ := me.do(t, "GET", "/v2/library/missing/manifests/"+ref, nil, false)
		return resp, up.count("GET manifests") - before
	}
	if resp, n := ask("nope"); resp.StatusCode != 404 || n != 1 || resp.Header.Get("Cache-Status") != "cove; fwd=miss; fwd-status=404" {
		t.Fatalf("first ask = %d, %d upstream requests, Cache-Status %q", resp.StatusCode, n, resp.Header.Get("Cache-Status"))
	}
	resp, n := ask("nope")
	if resp.StatusCode != 404 || n != 0 || resp.Header.Get("Cache-Status") != "cove; hit; detail=negative" {
		t.Errorf("asked again within negative_ttl = %d, %d upstream requests, Cache-Status %q", resp.StatusCode, n, resp.Header.Get("Cache-Status"))
	}
	me.clock.Add(31 * time.Second)
	if _, n := ask("nope"); n != 1 {
		t.Errorf("after negative_ttl: %d upstream requests, want 1", n)
	}
	for i, code := range []int{http.StatusUnauthorized, http.StatusInternalServerError, http.StatusTooManyRequests} {
		mu.Lock()
		fault = code
		mu.Unlock()
		ref := "f" + strconv.Itoa(i)
		ask(ref)
		me.clock.Add(10 * time.Minute) // past a 429's circuit
		mu.Lock()
		fault = 0
		mu.Unlock()
		if _, n := ask(ref); n != 1 {
			t.Errorf("after a %d: the next ask made %d upstream requests, want 1 (never remembered)", code, n)
		}
	}
}

// Cache-Status says where each answer came from: a miss stored, a hit, a revalidated tag, a local
// project's content (bypass); the metric counts the same.
func TestCacheStatus(t *testing.T) {
	up := newFakeUpstream(t)
	img := must(random.Image(1000, 1))
	up.seed(t, "library/app:1", img)
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	ld := must(must(img.Layers())[0].Digest()).String()
	for _, c := range []struct{ path, want string }{
		{"/v2/app/manifests/1", "cove; fwd=miss; fwd-status=200; stored"},
		{"/v2/app/manifests/1", "cove; hit"},
		{"/v2/app/blobs/" + ld, "cove; fwd=miss; fwd-status=200; stored"},
		{"/v2/app/blobs/" + ld, "cove; hit"},
		{"/v2/pub/app/manifests/1", "cove; fwd=bypass"},
	} {
		resp, _ := me.do(t, "GET", c.path, nil, false)
		if got := resp.Header.Get("Cache-Status"); got != c.want {
			t.Errorf("GET %s: Cache-Status %q, want %q", c.path, got, c.want)
		}
		if strings.Contains(c.path, "/blobs/") {
			// The fill commits just after its last bytes reach the client; until then, a
			// client joins it (collapsed).
			for i := 0; i < 500 && !me.store.HasBlob(context.Background(), digest.Digest(ld)); i++ {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	me.clock.Add(2 * time.Minute)
	if resp, _ := me.do(t, "GET", "/v2/app/manifests/1", nil, false); resp.Header.Get("Cache-Status") != "cove; fwd=stale; fwd-status=200" {
		t.Errorf("a revalidated tag: Cache-Status %q", resp.Header.Get("Cache-Status"))
	}
	for kind, want := range map[string]map[string]float64{
		"manifest": {"miss": 1, "hit": 1, "revalidated": 1, "bypass": 1},
		"blob":     {"miss": 1, "hit": 1},
	} {
		for oc, n := range want {
			if v := testutil.ToFloat64(metric(t, me.reg, "cove_mirror_cache_status_total", "kind", kind, "outcome", oc)); v != n {
				t.Errorf("cove_mirror_cache_status_total{%s,%s} = %v, want %v", kind, oc, v, n)
			}
		}
	}
}

// A first path element that looks like a registry host and is no configured upstream is
// NAME_UNKNOWN at once, naming the key that would configure it; it never reaches Docker Hub.
func TestUnconfiguredRegistryHost(t *testing.T) {
	up := newFakeUpstream(t)
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	before := up.count("GET manifests")
	resp, b := me.do(t, "GET", "/v2/quay.io/org/img/manifests/1", nil, false)
	if resp.StatusCode != 404 || errCode(b) != "NAME_UNKNOWN" || !strings.Contains(string(b), `mirror.upstreams.\"quay.io\".url`) {
		t.Errorf("an unconfigured registry host = %d %s", resp.StatusCode, b)
	}
	if up.count("GET manifests") != before {
		t.Error("an unconfigured registry host's name went to the default upstream")
	}
	// containerd names the upstream with ?ns=: the same rule for Docker Hub.
	resp, b = me.do(t, "GET", "/v2/quay.io/org/img/manifests/1?ns=docker.io", nil, false)
	if resp.StatusCode != 404 || errCode(b) != "NAME_UNKNOWN" || up.count("GET manifests") != before {
		t.Errorf("?ns=docker.io with a registry host = %d %s", resp.StatusCode, b)
	}
	// A Docker Hub namespace, without a dot, still goes there.
	if resp, _ := me.do(t, "GET", "/v2/someorg/img/manifests/1", nil, false); resp.StatusCode != 404 || up.count("GET manifests") != before+1 {
		t.Errorf("a namespace of the default upstream: %d, %d requests", resp.StatusCode, up.count("GET manifests")-before)
	}
}

// A cached tag whose check is slower than the revalidation's own short bound (but within the
// upstream's budget) is served stale, and the upstream is not marked down: it answers, slowly.
func TestSlowRevalidationIsNoOutage(t *testing.T) {
	up := newFakeUpstream(t)
	up.seed(t, "library/app:1", must(random.Image(100, 1)))
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL, Timeout: 5 * time.Second}})
	if resp, _ := me.do(t, "GET", "/v2/app/manifests/1", nil, false); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/") {
			select { // slower than the 500ms revalidation bound, within the 5s budget
			case <-time.After(time.Second):
			case <-release:
			}
		}
		return false
	})
	me.clock.Add(2 * time.Minute)
	resp, _ := me.do(t, "GET", "/v2/app/manifests/1", nil, false)
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Status") != "cove; fwd=stale; detail=upstream-timeout" {
		t.Errorf("a slow check = %d, Cache-Status %q", resp.StatusCode, resp.Header.Get("Cache-Status"))
	}
	if st := me.Status(t); st.Down {
		t.Errorf("a check slower than the revalidation bound marked the upstream down: %+v", st)
	}
}

// A 429 from a host the upstream redirects blobs to (a CDN) is the CDN's: the registry is not
// marked down. A plain throttle's Retry-After holds requests 5 minutes at most.
func TestThrottles(t *testing.T) {
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "21600")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(cdn.Close)
	up := newFakeUpstream(t)
	img := must(random.Image(100, 1))
	up.seed(t, "library/app:1", img)
	var mu sync.Mutex
	mode := "cdn"
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		m := mode
		mu.Unlock()
		switch {
		case m == "cdn" && strings.Contains(r.URL.Path, "/blobs/"):
			http.Redirect(w, r, cdn.URL+r.URL.Path, http.StatusTemporaryRedirect)
			return true
		case m == "throttle" && strings.Contains(r.URL.Path, "/manifests/"):
			w.Header().Set("Retry-After", "21600")
			w.WriteHeader(http.StatusTooManyRequests)
			return true
		}
		return false
	})
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	ld := must(must(img.Layers())[0].Digest()).String()
	if resp, _ := me.do(t, "GET", "/v2/app/blobs/"+ld, nil, false); resp.StatusCode == 200 {
		t.Fatal("the CDN's 429 did not reach the client")
	}
	if st := me.Status(t); st.Down {
		t.Errorf("a CDN's 429 marked the registry down: %+v", st)
	}
	mu.Lock()
	mode = "throttle"
	mu.Unlock()
	resp, _ := me.do(t, "GET", "/v2/library/x/manifests/1", nil, false)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "300" {
		t.Errorf("a throttle's 429 = %d, Retry-After %q; want 429, 300 (cove's, at most 5 minutes)", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if st := me.Status(t); !st.Down || st.DownReason != "throttled" || st.DownUntil.Sub(me.clock.Now()) != 5*time.Minute {
		t.Errorf("status after a throttle's 429 = %+v", st)
	}
}
