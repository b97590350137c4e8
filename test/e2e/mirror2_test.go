package e2e

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// upstreamStatus is one upstream of GET /api/v2.0/mirror/status.
type upstreamStatus struct {
	Name       string `json:"name"`
	Down       bool   `json:"down"`
	DownReason string `json:"down_reason"`
	RateLimit  *struct {
		Limit, Remaining int64
		Saving           bool
		Reset            time.Time
		Source           string
	} `json:"ratelimit"`
}

func mirrorStatus(t *testing.T, s *server) upstreamStatus {
	t.Helper()
	resp, b := s.do("GET", "/api/v2.0/mirror/status", nil, true)
	var st struct{ Upstreams []upstreamStatus }
	if resp.StatusCode != 200 || json.Unmarshal(b, &st) != nil || len(st.Upstreams) == 0 {
		t.Fatalf("mirror status = %d %s", resp.StatusCode, b)
	}
	return st.Upstreams[0]
}

// TestMirrorFailsFast: with Debian's docker-registry behind a proxy that can hang, limit or
// answer. An upstream that accepts and never answers costs one pull its time budget (504), then is
// marked down: uncached pulls fail at once, cached tags are served stale at once, and the status
// says so; Docker Hub's pull-limit headers are kept and shown, under the reserve cached tags are
// served without asking, and a pull-limit 429 holds every request back until its Retry-After.
func TestMirrorFailsFast(t *testing.T) {
	reg := startRegistry(t, "", nil)
	img := testImage(t)
	reg.seed(t, "library/app:1", img)
	want, _ := img.Digest()
	proxy := newFaultProxy(t, reg.url)
	s := startMirror(t, t.TempDir(), mirrorConfig(proxy.srv.URL, "      timeout: 1s\n      ratelimit_reserve: \"10%\"\n  tag_ttl: 1ms\n"))
	if got, err := pullAll(t, s, "app:1"); err != nil || got != want {
		t.Fatalf("first pull = %s, %v", got, err)
	}

	t.Run("upstream accepts and never answers", func(t *testing.T) {
		release := make(chan struct{})
		var once sync.Once
		stop := func() { once.Do(func() { close(release) }) }
		defer stop()
		proxy.setFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
			if strings.Contains(r.URL.Path, "/manifests/") {
				select {
				case <-release:
				case <-r.Context().Done():
				}
				return true
			}
			return false
		})
		defer proxy.setFault(nil)
		start := time.Now()
		resp, b := s.do("GET", "/v2/library/uncached/manifests/1", nil, false)
		if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(b), `"errors"`) {
			t.Errorf("uncached from a hung upstream = %d %s, want 504 with the OCI error body", resp.StatusCode, b)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("the hung upstream took %v, want its 1s budget", d)
		}
		if st := mirrorStatus(t, s); !st.Down || st.DownReason != "upstream-timeout" {
			t.Errorf("status after a timeout = %+v, want down for upstream-timeout", st)
		}
		start = time.Now()
		sent := proxy.count("GET", "/manifests/") + proxy.count("HEAD", "/manifests/")
		resp, b = s.do("GET", "/v2/library/other/manifests/1", nil, false)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("uncached with the upstream marked down = %d %s", resp.StatusCode, b)
		}
		if got, err := pullAll(t, s, "app:1"); err != nil || got != want {
			t.Errorf("a cached tag with the upstream marked down = %s, %v", got, err)
		}
		resp, _ = s.do("GET", "/v2/app/manifests/1", nil, false)
		if cs := resp.Header.Get("Cache-Status"); cs != "cove; fwd=stale; detail=upstream-timeout" {
			t.Errorf("Cache-Status of a stale tag = %q", cs)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("answers with the upstream marked down took %v, want at once (not the 1s budget each)", d)
		}
		if n := proxy.count("GET", "/manifests/") + proxy.count("HEAD", "/manifests/") - sent; n != 0 {
			t.Errorf("%d requests reached an upstream marked down", n)
		}
		stop()
		proxy.setFault(nil)
		waitFor(t, 15*time.Second, "the upstream to be marked up after its back-off", func() bool {
			// The probe, once the back-off is over: the tag revalidated, the upstream up.
			resp, _ := s.do("GET", "/v2/app/manifests/1", nil, false)
			return resp.Header.Get("Cache-Status") == "cove; fwd=stale; fwd-status=200" && !mirrorStatus(t, s).Down
		})
	})

	t.Run("Docker Hub's pull limit", func(t *testing.T) {
		var mu sync.Mutex
		remaining, limited := 50, false
		proxy.setFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
			if !strings.Contains(r.URL.Path, "/manifests/") {
				return false
			}
			mu.Lock()
			rem, lim := remaining, limited
			mu.Unlock()
			w.Header().Set("Ratelimit-Limit", "100;w=21600")
			w.Header().Set("Ratelimit-Remaining", strconv.Itoa(rem)+";w=21600")
			w.Header().Set("Docker-Ratelimit-Source", "198.51.100.4")
			if lim {
				w.Header().Set("Retry-After", "300")
				w.WriteHeader(http.StatusTooManyRequests)
				w.Write([]byte(`{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit"}]}`))
				return true
			}
			return false
		})
		defer proxy.setFault(nil)
		heads := proxy.count("HEAD", "/manifests/")
		waitFor(t, 10*time.Second, "the cached tag revalidated above the reserve", func() bool {
			// A pull within the 1ms tag_ttl of the last check is a plain hit: the next one checks.
			resp, _ := s.do("GET", "/v2/app/manifests/1", nil, false)
			return resp.Header.Get("Cache-Status") == "cove; fwd=stale; fwd-status=200"
		})
		if proxy.count("HEAD", "/manifests/") == heads {
			t.Error("above the reserve the cached tag was not revalidated")
		}
		st := mirrorStatus(t, s)
		if st.RateLimit == nil || st.RateLimit.Limit != 100 || st.RateLimit.Remaining != 50 || st.RateLimit.Source != "198.51.100.4" || st.RateLimit.Reset.IsZero() {
			t.Errorf("status's rate limit = %+v", st.RateLimit)
		}
		mu.Lock()
		remaining = 4
		mu.Unlock()
		waitFor(t, 10*time.Second, "an answer that says 4 are left", func() bool {
			s.do("GET", "/v2/app/manifests/1", nil, false) // revalidated, once tag_ttl (1ms) is over
			st := mirrorStatus(t, s)
			return st.RateLimit != nil && st.RateLimit.Saving
		})
		sent := proxy.count("HEAD", "/manifests/") + proxy.count("GET", "/manifests/")
		reserved := 0
		for i := 0; reserved < 3 && i < 1000; i++ {
			resp, _ := s.do("GET", "/v2/app/manifests/1", nil, false)
			switch cs := resp.Header.Get("Cache-Status"); {
			case resp.StatusCode != 200:
				t.Fatalf("under the reserve = %d", resp.StatusCode)
			case cs == "cove; hit; detail=ratelimit-reserve":
				reserved++
			case cs != "cove; hit": // within the 1ms tag_ttl of the last check
				t.Fatalf("under the reserve: Cache-Status %q", cs)
			}
		}
		if n := proxy.count("HEAD", "/manifests/") + proxy.count("GET", "/manifests/") - sent; n != 0 {
			t.Errorf("under the reserve, %d requests revalidated a cached tag", n)
		}
		if v := metricValue(t, s, `cove_mirror_reserve_serves_total{upstream="docker.io"}`); reserved == 0 || v != float64(reserved) {
			t.Errorf("reserve serves = %v, %d answers said so; want them equal, and some", v, reserved)
		}
		// A cold pull still goes upstream: then the pull limit's 429.
		mu.Lock()
		remaining, limited = 0, true
		mu.Unlock()
		if resp, _ := s.do("GET", "/v2/library/cold/manifests/1", nil, false); resp.StatusCode != 429 {
			t.Errorf("a cold pull at the pull limit = %d, want 429", resp.StatusCode)
		}
		sent = proxy.count("GET", "/manifests/")
		resp, b := s.do("GET", "/v2/library/colder/manifests/1", nil, false)
		if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != 429 || ra < 290 || ra > 300 || !strings.Contains(string(b), "pull limit") || proxy.count("GET", "/manifests/") != sent {
			t.Errorf("within the pull limit's Retry-After = %d %s (Retry-After %q); want 429 at once, unsent", resp.StatusCode, b, resp.Header.Get("Retry-After"))
		}
		if got, err := pullAll(t, s, "app:1"); err != nil || got != want {
			t.Errorf("a cached image at the pull limit = %s, %v", got, err)
		}
		if !strings.Contains(s.log(), "pull limit is used up") {
			t.Error("the log does not say the pull limit was reached")
		}
		if st := mirrorStatus(t, s); !st.Down || st.DownReason != "pull-limit" {
			t.Errorf("status at the pull limit = %+v", st)
		}
	})
}

// TestMirrorCacheStatusAndNames: every manifest and blob answer says where it came from
// (Cache-Status: hit, miss, local bypass); a missing tag asked again and again reaches the
// upstream once per negative_ttl; a registry host that is no configured upstream is
// NAME_UNKNOWN at once, with the key that would configure it.
func TestMirrorCacheStatusAndNames(t *testing.T) {
	reg := startRegistry(t, "", nil)
	img := testImage(t)
	reg.seed(t, "library/app:1", img)
	proxy := newFaultProxy(t, reg.url)
	s := startMirror(t, t.TempDir(), mirrorConfig(proxy.srv.URL, "  negative_ttl: 1m\n"))
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	for i, c := range []struct {
		path, want string
		admin      bool
	}{
		{"/v2/app/manifests/1", "cove; fwd=miss; fwd-status=200; stored", false},
		{"/v2/app/manifests/1", "cove; hit", false},
		{"/v2/app/blobs/" + ld.String(), "cove; fwd=miss; fwd-status=200; stored", false},
		{"/v2/team/own/manifests/1", "cove; fwd=bypass", true},
		{"/v2/team/own/blobs/" + ld.String(), "cove; fwd=bypass", true},
	} {
		if i == 3 {
			s.createProject("team", false)
			if err := remote.Write(s.ref(t, "team/own:1"), img, adminAuth); err != nil {
				t.Fatal(err)
			}
		}
		resp, b := s.do("GET", c.path, nil, c.admin)
		if resp.StatusCode != 200 || resp.Header.Get("Cache-Status") != c.want {
			t.Errorf("GET %s = %d %.100s, Cache-Status %q; want 200, %q", c.path, resp.StatusCode, b, resp.Header.Get("Cache-Status"), c.want)
		}
	}
	waitFor(t, 10*time.Second, "the blob's fill to be stored", func() bool {
		resp, _ := s.do("HEAD", "/v2/app/blobs/"+ld.String(), nil, false)
		return resp.Header.Get("Cache-Status") == "cove; hit"
	})
	if resp, _ := s.do("GET", "/v2/app/blobs/"+ld.String(), nil, false); resp.Header.Get("Cache-Status") != "cove; hit" {
		t.Errorf("a cached blob: Cache-Status %q", resp.Header.Get("Cache-Status"))
	}
	// Access-log lines are written within a millisecond (in batches).
	waitFor(t, 10*time.Second, "the access log to carry the Cache-Status", func() bool { return strings.Contains(s.log(), `"cache":"cove; hit"`) })
	if v := metricValue(t, s, `cove_mirror_cache_status_total{kind="manifest",outcome="bypass"}`); v < 1 {
		t.Errorf("cove_mirror_cache_status_total{manifest,bypass} = %v", v)
	}

	// The negative cache.
	before := proxy.count("GET", "/manifests/")
	for range 5 {
		if resp, _ := s.do("GET", "/v2/app/manifests/missing", nil, false); resp.StatusCode != 404 {
			t.Errorf("a missing tag = %d, want 404", resp.StatusCode)
		}
	}
	if n := proxy.count("GET", "/manifests/") - before; n != 1 {
		t.Errorf("a missing tag asked 5 times reached the upstream %d times, want 1", n)
	}

	// A registry host that is no configured upstream.
	before = proxy.count("GET", "")
	resp, b := s.do("GET", "/v2/quay.io/org/img/manifests/1", nil, false)
	if resp.StatusCode != 404 || !strings.Contains(string(b), "NAME_UNKNOWN") || !strings.Contains(string(b), `mirror.upstreams.\"quay.io\".url`) {
		t.Errorf("an unconfigured registry host = %d %s", resp.StatusCode, b)
	}
	if n := proxy.count("GET", "") - before; n != 0 {
		t.Errorf("an unconfigured registry host's name reached the default upstream (%d requests)", n)
	}
}
