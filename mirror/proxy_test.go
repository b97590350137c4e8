package mirror_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"

	"cove/auth"
	"cove/cache"
	"cove/mirror"

	"cove/internal/kv"
)

// fakeUpstream is go-containerregistry's in-memory registry behind a handler that counts requests
// and can be told to misbehave.
type fakeUpstream struct {
	srv *httptest.Server
	reg http.Handler

	mu     sync.Mutex
	counts map[string]int // "METHOD kind" → requests, kind being manifests, blobs, tags, ping
	fault  func(w http.ResponseWriter, r *http.Request) bool
	wrap   func(next http.Handler) http.Handler
}

func newFakeUpstream(t testing.TB) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{reg: registry.New(registry.Logger(log.New(io.Discard, "", 0))), counts: map[string]int{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	kind := "ping"
	for _, k := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if strings.Contains(r.URL.Path, k) {
			kind = strings.Trim(k, "/")
		}
	}
	f.mu.Lock()
	f.counts[r.Method+" "+kind]++
	fault, wrap := f.fault, f.wrap
	f.mu.Unlock()
	if fault != nil && fault(w, r) {
		return
	}
	if wrap != nil {
		wrap(f.reg).ServeHTTP(w, r)
		return
	}
	f.reg.ServeHTTP(w, r)
}

func (f *fakeUpstream) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[key]
}

func (f *fakeUpstream) setFault(fn func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	f.fault = fn
	f.mu.Unlock()
}

// seed pushes img (a v1.Image or a v1.ImageIndex) to repo:tag on the upstream, bypassing the
// counting and faults.
func (f *fakeUpstream) seed(t *testing.T, repoTag string, img any) {
	t.Helper()
	srv := httptest.NewServer(f.reg)
	defer srv.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://")+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	switch img := img.(type) {
	case v1.ImageIndex:
		err = remote.WriteIndex(ref, img)
	case v1.Image:
		err = remote.Write(ref, img)
	default:
		t.Fatalf("seed %T", img)
	}
	if err != nil {
		t.Fatal(err)
	}
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type mirrorEnv struct {
	*env
	clock *clock
	reg   *prometheus.Registry
}

// newMirrorEnv serves cove with the given upstreams; the first is the default.
func newMirrorEnv(t testing.TB, ups []mirror.Upstream, opts ...func(*mirror.Config)) *mirrorEnv {
	t.Helper()
	me := &mirrorEnv{clock: &clock{now: time.Unix(1_800_000_000, 0)}, reg: prometheus.NewRegistry()}
	me.env = newEnv(t, append([]func(*mirror.Config){func(c *mirror.Config) {
		c.Upstreams = ups
		c.Default = ups[0].Name
		c.TagTTL = time.Minute
		c.RevalidateTimeout = 500 * time.Millisecond
		c.FetchTimeout = 5 * time.Second
		c.Now = me.clock.Now
		c.Metrics = mirror.NewMetrics(me.reg)
	}}, opts...)...)
	return me
}

func (me *mirrorEnv) pull(t *testing.T, ref string, opts ...remote.Option) (v1.Image, error) {
	t.Helper()
	r, err := name.ParseReference(me.host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, opts...)
	if err != nil {
		return nil, err
	}
	// Read every blob, as a client pulling the image does.
	if _, err := img.RawConfigFile(); err != nil {
		return nil, err
	}
	return img, remoteLayersReadable(img)
}

func TestMirrorPullsThroughOnceAndServesFromCache(t *testing.T) {
	up := newFakeUpstream(t)
	img := must(random.Image(50_000, 3))
	up.seed(t, "library/alpine:latest", img)
	up.seed(t, "owner/img:v1", img)
	ghcr := newFakeUpstream(t)
	ghcr.seed(t, "owner/tool:v2", img)
	me := newMirrorEnv(t, []mirror.Upstream{
		{Name: "docker.io", URL: up.srv.URL},
		{Name: "ghcr.io", URL: ghcr.srv.URL},
	})

	// The version check sends the anonymous to the token service, whose anonymous token passes it.
	resp, _ := me.do(t, "GET", "/v2/", nil, false)
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
		t.Errorf("anonymous /v2/ = %d %q, want a Bearer challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	want, _ := img.Digest()
	for _, ref := range []string{"alpine:latest", "library/alpine:latest", "docker.io/library/alpine:latest", "owner/img:v1"} {
		got, err := me.pull(t, ref)
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		if d, _ := got.Digest(); d != want {
			t.Errorf("pull %s: digest %s, want %s", ref, d, want)
		}
	}
	// Four blobs (config and three layers), each fetched once although two repositories share them?
	// No: a digest alone is not a capability, so owner/img's copies were confirmed with a HEAD.
	if n := up.count("GET blobs"); n != 4 {
		t.Errorf("upstream blob GETs = %d, want 4 (each blob once)", n)
	}
	if n := up.count("HEAD blobs"); n != 4 {
		t.Errorf("upstream blob HEADs = %d, want 4 (owner/img confirmed the shared blobs)", n)
	}
	before := up.count("GET manifests") + up.count("HEAD manifests")
	if _, err := me.pull(t, "alpine:latest"); err != nil {
		t.Fatal(err)
	}
	if after := up.count("GET manifests") + up.count("HEAD manifests"); after != before || up.count("GET blobs") != 4 {
		t.Errorf("a second pull within the tag TTL went upstream: manifests %d → %d, blobs %d", before, after, up.count("GET blobs"))
	}

	// A path prefix selects another upstream; so does containerd's ?ns=.
	if _, err := me.pull(t, "ghcr.io/owner/tool:v2"); err != nil {
		t.Errorf("pull through ghcr.io prefix: %v", err)
	}
	resp, b := me.do(t, "GET", "/v2/owner/tool/manifests/v2?ns=ghcr.io", nil, false, "Accept", "application/vnd.docker.distribution.manifest.v2+json")
	_ = b
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != want.String() {
		t.Errorf("?ns=ghcr.io = %d %s", resp.StatusCode, b)
	}
	resp, _ = me.do(t, "GET", "/v2/owner/tool/manifests/v2?ns=evil.example", nil, false)
	if resp.StatusCode != 404 {
		t.Errorf("?ns= naming no configured upstream = %d, want 404", resp.StatusCode)
	}

	if v := testutil.ToFloat64(metric(t, me.reg, "cove_mirror_hits_total", "kind", "blob")); v < 4 {
		t.Errorf("blob hits = %v", v)
	}
}

// metric finds one series of a counter or gauge vector in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string, labelValue ...string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := true
			for i := 0; i+1 < len(labelValue); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labelValue[i] && lp.GetValue() == labelValue[i+1] {
						found = true
					}
				}
				match = match && found
			}
			if match {
				v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
				return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x"}, func() float64 { return v })
			}
		}
	}
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x"}, func() float64 { return -1 })
}

func TestLocalProjectNeverFallsThrough(t *testing.T) {
	up := newFakeUpstream(t)
	up.seed(t, "priv/app:v1", must(random.Image(100, 1)))
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	resp, b := me.do(t, "GET", "/v2/priv/app/manifests/v1", nil, true)
	if resp.StatusCode != 404 || errCode(b) != "MANIFEST_UNKNOWN" {
		t.Errorf("local miss = %d %s, want 404 MANIFEST_UNKNOWN", resp.StatusCode, b)
	}
	if n := up.count("GET manifests") + up.count("HEAD manifests"); n != 0 {
		t.Errorf("a local project's name reached the upstream %d times", n)
	}
	// Pushing to a mirrored name is refused, clearly.
	resp, b = me.do(t, "POST", "/v2/docker.io/library/alpine/blobs/uploads/", nil, true)
	if resp.StatusCode != 403 || errCode(b) != "DENIED" || !strings.Contains(string(b), "read-only mirror of docker.io") {
		t.Errorf("push to a mirrored name = %d %s", resp.StatusCode, b)
	}
	resp, _ = me.do(t, "DELETE", "/v2/docker.io/library/alpine/manifests/latest", nil, true)
	if resp.StatusCode != 403 {
		t.Errorf("delete on a mirrored name = %d, want 403", resp.StatusCode)
	}
	// A push to a name that selects no upstream and no project: the project does not exist.
	for _, tc := range []struct{ method, path, say string }{
		{"POST", "/v2/nosuch/app/blobs/uploads/", "project nosuch does not exist: create it"},
		{"PUT", "/v2/nosuch/app/manifests/v1", "project nosuch does not exist: create it"},
		{"DELETE", "/v2/nosuch/app/manifests/v1", "project nosuch does not exist: create it"},
		{"POST", "/v2/alpine/blobs/uploads/", "repositories of local projects are named <project>/<repository>"},
	} {
		resp, b := me.do(t, tc.method, tc.path, nil, true)
		if code, msg := errEntry(b); resp.StatusCode != 404 || code != "NAME_UNKNOWN" || !strings.Contains(msg, tc.say) {
			t.Errorf("%s %s = %d %s, want 404 NAME_UNKNOWN saying %q", tc.method, tc.path, resp.StatusCode, b, tc.say)
		}
	}
	if n := up.count("GET manifests") + up.count("HEAD manifests"); n != 0 {
		t.Errorf("pushes reached the upstream %d times", n)
	}
}

func TestTagRevalidationAndStaleIfError(t *testing.T) {
	up := newFakeUpstream(t)
	img1 := must(random.Image(1000, 1))
	up.seed(t, "library/app:latest", img1)
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	d1, _ := img1.Digest()
	digestOf := func() (int, string) {
		resp, _ := me.do(t, "GET", "/v2/app/manifests/latest", nil, false)
		return resp.StatusCode, resp.Header.Get("Docker-Content-Digest")
	}
	if code, d := digestOf(); code != 200 || d != d1.String() {
		t.Fatalf("first pull = %d %s", code, d)
	}
	gets := up.count("GET manifests")

	// Past the TTL a HEAD confirms the tag; no GET.
	me.clock.Add(2 * time.Minute)
	if code, d := digestOf(); code != 200 || d != d1.String() {
		t.Fatalf("revalidated pull = %d %s", code, d)
	}
	if up.count("HEAD manifests") != 1 || up.count("GET manifests") != gets {
		t.Errorf("revalidation: %d HEADs, %d GETs (before %d); want one HEAD and no GET", up.count("HEAD manifests"), up.count("GET manifests"), gets)
	}

	// The tag moves upstream: after the TTL the new manifest is fetched.
	img2 := must(random.Image(1000, 1))
	d2, _ := img2.Digest()
	up.seed(t, "library/app:latest", img2)
	me.clock.Add(2 * time.Minute)
	if code, d := digestOf(); code != 200 || d != d2.String() {
		t.Errorf("after the tag moved = %d %s, want %s", code, d, d2)
	}

	// Upstream failing, limiting, or too slow: the cached tag is served.
	release := make(chan struct{})
	defer close(release)
	faults := map[string]func(w http.ResponseWriter, r *http.Request) bool{
		"503": func(w http.ResponseWriter, r *http.Request) bool { w.WriteHeader(503); return true },
		"429": func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Retry-After", "60")
			w.WriteHeader(429)
			return true
		},
		"slow": func(w http.ResponseWriter, r *http.Request) bool {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return true
		},
	}
	for name, fault := range faults {
		up.setFault(fault)
		me.clock.Add(2 * time.Minute)
		start := time.Now()
		if code, d := digestOf(); code != 200 || d != d2.String() {
			t.Errorf("upstream %s: pull = %d %s, want the cached %s", name, code, d, d2)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("upstream %s: stale serve took %s", name, el)
		}
	}
	if v := testutil.ToFloat64(metric(t, me.reg, "cove_mirror_stale_serves_total", "upstream", "docker.io")); v != 3 {
		t.Errorf("stale serves = %v, want 3", v)
	}
}

func TestUncachedAndUpstreamUnavailableFailsFast(t *testing.T) {
	up := newFakeUpstream(t)
	up.seed(t, "library/app:latest", must(random.Image(100, 1)))
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	// Open the repository upstream first (ping and token), so the faults hit the manifest GET.
	me.do(t, "GET", "/v2/app/tags/list", nil, false)
	tests := []struct {
		name   string
		fault  func(w http.ResponseWriter, r *http.Request) bool
		status int
		code   string
		retry  string
	}{
		{"t500", func(w http.ResponseWriter, r *http.Request) bool { w.WriteHeader(500); return true }, 502, "UNAVAILABLE", ""},
		{"t404", func(w http.ResponseWriter, r *http.Request) bool { w.WriteHeader(404); return true }, 404, "MANIFEST_UNKNOWN", ""},
		{"t429", func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(429)
			return true
		}, 429, "TOOMANYREQUESTS", "120"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up.setFault(tt.fault)
			resp, b := me.do(t, "GET", "/v2/app/manifests/"+tt.name, nil, false)
			if resp.StatusCode != tt.status || errCode(b) != tt.code || resp.Header.Get("Retry-After") != tt.retry {
				t.Errorf("= %d %s (Retry-After %q), want %d %s %q", resp.StatusCode, b, resp.Header.Get("Retry-After"), tt.status, tt.code, tt.retry)
			}
		})
	}
	// The 429 opened the circuit until its Retry-After: the next request fails at once, unsent.
	up.setFault(nil)
	before := up.count("GET manifests")
	resp, b := me.do(t, "GET", "/v2/app/manifests/latest", nil, false)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "120" || up.count("GET manifests") != before {
		t.Errorf("within the 429's Retry-After = %d %s (Retry-After %q), %d requests sent; want 429, none sent",
			resp.StatusCode, b, resp.Header.Get("Retry-After"), up.count("GET manifests")-before)
	}
	me.clock.Add(121 * time.Second)
	if resp, b := me.do(t, "GET", "/v2/app/manifests/latest", nil, false); resp.StatusCode != 200 {
		t.Errorf("after the Retry-After = %d %s, want 200", resp.StatusCode, b)
	}
	// Upstream gone altogether: a quick 503, not a hang.
	up.srv.Close()
	start := time.Now()
	resp, b = me.do(t, "GET", "/v2/other/manifests/latest", nil, false)
	if resp.StatusCode != 503 || errCode(b) != "UNAVAILABLE" || time.Since(start) > 5*time.Second {
		t.Errorf("upstream down = %d %s after %s", resp.StatusCode, b, time.Since(start))
	}
}

func TestBlobFetchedOnceForConcurrentClients(t *testing.T) {
	up := newFakeUpstream(t)
	img := must(random.Image(4<<20, 1))
	up.seed(t, "library/big:latest", img)
	layer := must(img.Layers())[0]
	ld, _ := layer.Digest()
	gate := make(chan struct{})
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == "GET" && strings.Contains(r.URL.Path, ld.String()) {
			<-gate // hold the one download until every client has asked
		}
		return false
	})
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	const clients = 8
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range clients {
		wg.Go(func() {
			resp, err := http.Get(me.srv.URL + "/v2/big/blobs/" + ld.String())
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			if _, err := io.Copy(h, resp.Body); err != nil || resp.StatusCode != 200 {
				t.Errorf("client: %d %v", resp.StatusCode, err)
				return
			}
			if "sha256:"+hex.EncodeToString(h.Sum(nil)) == ld.String() {
				ok.Add(1)
			}
		})
	}
	waitUntil(t, func() bool { return testutil.ToFloat64(metric(t, me.reg, "cove_mirror_coalesced_total")) == clients-1 })
	close(gate)
	wg.Wait()
	if ok.Load() != clients {
		t.Errorf("%d of %d clients got the right blob", ok.Load(), clients)
	}
	if n := up.count("GET blobs"); n != 1 {
		t.Errorf("upstream served the blob %d times, want 1", n)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCorruptBlobIsNeverServedOrKept(t *testing.T) {
	up := newFakeUpstream(t)
	img := must(random.Image(300_000, 1))
	up.seed(t, "library/app:latest", img)
	layer := must(img.Layers())[0]
	ld, _ := layer.Digest()
	size, _ := layer.Size()
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == "GET" && strings.Contains(r.URL.Path, "/blobs/"+ld.String()) {
			// The right length, the wrong bytes: only the digest check at the end can tell.
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			w.Write(make([]byte, size))
			return true
		}
		return false
	})
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	if _, err := me.pull(t, "app:latest"); err == nil {
		t.Fatal("a pull of a corrupted blob succeeded")
	}
	up.setFault(nil) // the upstream heals
	if _, err := me.pull(t, "app:latest"); err != nil {
		t.Errorf("pull after the upstream healed: %v", err)
	}
	if n := up.count("GET blobs"); n < 3 {
		t.Errorf("upstream blob GETs = %d: the corrupt copy must not have been kept", n)
	}
}

func TestUpstreamCredentialsStayWithTheirHosts(t *testing.T) {
	// The token service: records whether credentials reached it.
	var realmAuth atomic.Value
	realm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		realmAuth.Store(r.Header.Get("Authorization"))
		fmt.Fprint(w, `{"token":"good-token"}`)
	}))
	defer realm.Close()
	// go-containerregistry refuses realms at loopback IP literals other than the registry's own
	// host:port; a name is fine, and makes the realm another host than the upstream.
	realmURL := strings.Replace(realm.URL, "127.0.0.1", "localhost", 1)
	// A CDN that blob GETs are redirected to: records any Authorization.
	var cdnAuth atomic.Value
	cdnAuth.Store("")
	img := must(random.Image(1000, 1))
	ld, _ := must(img.Layers())[0].Digest()
	up := newFakeUpstream(t)
	up.seed(t, "library/app:latest", img)
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cdnAuth.Store(r.Header.Get("Authorization"))
		up.reg.ServeHTTP(w, r)
	}))
	defer cdn.Close()
	up.mu.Lock()
	up.wrap = func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer good-token" {
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test"`, realmURL))
				w.WriteHeader(401)
				return
			}
			if strings.Contains(r.URL.Path, "/blobs/"+ld.String()) && r.Method == "GET" {
				http.Redirect(w, r, cdn.URL+r.URL.Path, http.StatusTemporaryRedirect)
				return
			}
			w.Header().Set("Ratelimit-Remaining", "42;w=21600")
			next.ServeHTTP(w, r)
		})
	}
	up.mu.Unlock()

	for _, tc := range []struct {
		name   string
		realms []string
		want   bool // credentials reach the realm
	}{
		{"realm not configured", nil, false},
		{"realm configured", []string{strings.TrimPrefix(realmURL, "http://")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			realmAuth.Store("")
			me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL, Username: "bob", Password: "upstream-secret", TokenRealms: tc.realms}})
			if _, err := me.pull(t, "app:latest"); err != nil {
				t.Fatalf("pull: %v", err)
			}
			got := realmAuth.Load().(string)
			if tc.want != strings.HasPrefix(got, "Basic ") {
				t.Errorf("realm received Authorization %q; want credentials: %v", got, tc.want)
			}
			if a := cdnAuth.Load().(string); a != "" {
				t.Errorf("the CDN received Authorization %q", a)
			}
			if v := testutil.ToFloat64(metric(t, me.reg, "cove_mirror_upstream_ratelimit_remaining", "upstream", "docker.io")); v != 42 {
				t.Errorf("ratelimit remaining = %v, want 42", v)
			}
		})
	}
}

func TestUpstreamBasicAuth(t *testing.T) {
	up := newFakeUpstream(t)
	up.seed(t, "library/app:latest", must(random.Image(1000, 1)))
	up.mu.Lock()
	up.wrap = func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != "bob" || p != "pw" {
				w.Header().Set("WWW-Authenticate", `Basic realm="up"`)
				w.WriteHeader(401)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	up.mu.Unlock()
	good := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL, Username: "bob", Password: "pw"}})
	if _, err := good.pull(t, "app:latest"); err != nil {
		t.Errorf("pull with upstream credentials: %v", err)
	}
	bad := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	resp, b := bad.do(t, "GET", "/v2/app/manifests/latest", nil, false)
	if resp.StatusCode != 403 || errCode(b) != "DENIED" {
		t.Errorf("pull without upstream credentials = %d %s, want 403 DENIED", resp.StatusCode, b)
	}
}

func TestAnonymousMirrorPullCanBeTurnedOff(t *testing.T) {
	up := newFakeUpstream(t)
	up.seed(t, "library/app:latest", must(random.Image(100, 1)))
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}}, func(c *mirror.Config) {
		as, err := auth.New(context.Background(), kv.NewBadger(mustDB(t)), auth.Config{AdminPassword: password, BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		c.Auth, c.Policy = as.Tokens, as.Policy // AnonymousMirrorPull off
	})
	resp, _ := me.do(t, "GET", "/v2/app/manifests/latest", nil, false)
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("anonymous mirror pull with anonymous_pull: none = %d", resp.StatusCode)
	}
	if resp, _ := me.do(t, "GET", "/v2/", nil, false); resp.StatusCode != 401 {
		t.Errorf("anonymous /v2/ with anonymous_pull: none = %d, want 401", resp.StatusCode)
	}
	if resp, _ := me.do(t, "GET", "/v2/app/manifests/latest", nil, true); resp.StatusCode != 200 {
		t.Errorf("authenticated mirror pull = %d", resp.StatusCode)
	}
	if _, err := me.pull(t, "app:latest", remote.WithAuth(&authn.Basic{Username: "admin", Password: password})); err != nil {
		t.Errorf("authenticated pull: %v", err)
	}
}

func mustDB(t *testing.T) *badger.DB {
	t.Helper()
	db, err := cache.OpenDB(filepath.Join(t.TempDir(), "index"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// auditLog is an Auditor that keeps what it is given.
type auditLog struct {
	mu     sync.Mutex
	events []auth.Event
}

func (a *auditLog) Record(ctx context.Context, e auth.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
	return nil
}

func (a *auditLog) failures() []auth.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []auth.Event
	for _, e := range a.events {
		if e.Result == "failure" {
			out = append(out, e)
		}
	}
	return out
}

// A refused push or delete leaves a failure record saying who, what and why; the anonymous
// first request of a push (answered with a challenge) does not.
func TestRefusedWritesAreAudited(t *testing.T) {
	up := newFakeUpstream(t)
	log := &auditLog{}
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}}, func(c *mirror.Config) { c.Audit = log })
	if resp, _ := me.do(t, "POST", "/v2/priv/app/blobs/uploads/", nil, false); resp.StatusCode != 401 {
		t.Fatalf("anonymous push = %d, want 401", resp.StatusCode)
	}
	if f := log.failures(); len(f) != 0 {
		t.Errorf("an anonymous challenge was audited as a failure: %+v", f)
	}
	me.do(t, "DELETE", "/v2/docker.io/library/alpine/manifests/latest", nil, true)
	me.do(t, "PUT", "/v2/nosuch/app/manifests/v1", strings.NewReader("{}"), true)
	f := log.failures()
	if len(f) != 2 {
		t.Fatalf("failure records = %+v, want 2", f)
	}
	for i, want := range []struct{ op, resource, detail string }{
		{"delete", "docker.io/library/alpine", "403 DENIED"},
		{"push", "nosuch/app", "404 NAME_UNKNOWN"},
	} {
		if f[i].Username != "admin" || f[i].Operation != want.op || f[i].Resource != want.resource || !strings.HasPrefix(f[i].Detail, want.detail) {
			t.Errorf("failure record %d = %+v, want admin %s %s %s", i, f[i], want.op, want.resource, want.detail)
		}
	}
}

// lyingWriter replaces the Docker-Content-Digest header of what it writes.
type lyingWriter struct {
	http.ResponseWriter
	lie   string
	wrote bool
}

func (w *lyingWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		w.Header().Set("Docker-Content-Digest", w.lie)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *lyingWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// An upstream whose Docker-Content-Digest lies about a manifest: the digest comes from the body,
// the answer is a 502, and nothing is cached under either digest.
func TestUpstreamDigestHeaderThatLiesIsRefused(t *testing.T) {
	up := newFakeUpstream(t)
	img := must(random.Image(1000, 1))
	up.seed(t, "library/alpine:latest", img)
	truth := must(img.Digest())
	lie := digest.FromString("another manifest").String()
	up.mu.Lock()
	up.wrap = func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/manifests/") {
				w = &lyingWriter{ResponseWriter: w, lie: lie}
			}
			next.ServeHTTP(w, r)
		})
	}
	up.mu.Unlock()
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	resp, b := me.do(t, "GET", "/v2/library/alpine/manifests/latest", nil, false, "Accept", string(types.DockerManifestSchema2))
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("manifest with a lying digest header = %d %s, want 502", resp.StatusCode, b)
	}
	for _, d := range []string{lie, truth.String()} {
		if resp, _ := me.do(t, "GET", "/v2/library/alpine/manifests/"+d, nil, false); resp.StatusCode == 200 && d == lie {
			t.Errorf("the lie %s was cached", d)
		}
	}
	// Once the upstream tells the truth, the manifest is served under the digest of its body.
	up.mu.Lock()
	up.wrap = nil
	up.mu.Unlock()
	resp, b = me.do(t, "GET", "/v2/library/alpine/manifests/latest", nil, false, "Accept", string(types.DockerManifestSchema2))
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != truth.String() || digest.FromBytes(b).String() != truth.String() {
		t.Errorf("after the upstream mended: %d, digest %q, want 200 and %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), truth)
	}
}

// A client of another repository joining a fill in progress is served only once the upstream
// confirms its repository has the blob, as before and after the fill (the join skipped it).
func TestJoiningAFillNeedsTheUpstreamsWord(t *testing.T) {
	up := newFakeUpstream(t)
	img := must(random.Image(1<<20, 1))
	up.seed(t, "library/a:latest", img)
	up.seed(t, "library/c:latest", img) // c has it too; b has not
	ld, _ := must(img.Layers())[0].Digest()
	gate := make(chan struct{})
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/v2/library/b/blobs/") {
			// go-containerregistry's registry keeps blobs for all repositories: b's refusal is ours.
			w.WriteHeader(http.StatusNotFound)
			return true
		}
		if r.Method == "GET" && strings.Contains(r.URL.Path, "/blobs/"+ld.String()) {
			<-gate // hold the fill open while the others join
		}
		return false
	})
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	var once sync.Once
	openGate := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(openGate) // before the servers close, whatever failed
	first := make(chan int, 1)
	go func() {
		resp, err := http.Get(me.srv.URL + "/v2/a/blobs/" + ld.String())
		if err != nil {
			first <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	waitUntil(t, func() bool { return up.count("GET blobs") == 1 })
	// b joins the fill of a's blob: the upstream says b has no such blob. (Were b served, its
	// body would wait for the rest of the blob, held at the gate: the client's deadline ends it.)
	bctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	breq, _ := http.NewRequestWithContext(bctx, "GET", me.srv.URL+"/v2/b/blobs/"+ld.String(), nil)
	if resp, err := http.DefaultClient.Do(breq); err != nil {
		t.Errorf("b, which the upstream says lacks the blob: %v", err)
	} else {
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("b, which the upstream says lacks the blob, joined a's fill: %d, %d bytes, %v", resp.StatusCode, len(body), err)
		}
	}
	cancel()
	// c joins too, and is served once the upstream confirms.
	cdone := make(chan []byte, 1)
	go func() {
		resp, err := http.Get(me.srv.URL + "/v2/c/blobs/" + ld.String())
		if err != nil {
			cdone <- nil
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b = nil
		}
		cdone <- b
	}()
	waitUntil(t, func() bool { return up.count("HEAD blobs") >= 2 })
	openGate()
	if code := <-first; code != 200 {
		t.Errorf("a's own pull = %d", code)
	}
	if b := <-cdone; digest.FromBytes(b).String() != ld.String() {
		t.Errorf("c, confirmed by the upstream, did not get the blob (%d bytes)", len(b))
	}
	if n := up.count("GET blobs"); n != 1 {
		t.Errorf("upstream blob GETs = %d, want 1", n)
	}
}

// The HEADs of a push to a project that does not exist are part of the push: they never reach
// the upstream (they would tell Docker Hub a private image's name and digests), and the push
// is told the project does not exist. A token that asked push and was refused gets 403 at once.
func TestPushToAMissingProjectNeverReachesTheUpstream(t *testing.T) {
	up := newFakeUpstream(t)
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	token := func(scope string) string {
		req, _ := http.NewRequest("GET", me.srv.URL+auth.TokenPath+"?service=cove&scope="+scope, nil)
		req.SetBasicAuth("admin", password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Token string }
		json.NewDecoder(resp.Body).Decode(&body)
		return "Bearer " + body.Token
	}
	push := token("repository:nosuch/app:pull,push")
	d := digest.FromString("a private layer")
	for _, tc := range []struct{ method, path string }{
		{"HEAD", "/v2/nosuch/app/blobs/" + d.String()},
		{"GET", "/v2/nosuch/app/manifests/v1"},
		{"POST", "/v2/nosuch/app/blobs/uploads/"},
	} {
		resp, b := me.do(t, tc.method, tc.path, nil, false, "Authorization", push)
		if resp.StatusCode != 404 || (tc.method != "HEAD" && errCode(b) != "NAME_UNKNOWN") {
			t.Errorf("%s %s in a push = %d %s, want 404 NAME_UNKNOWN", tc.method, tc.path, resp.StatusCode, b)
		}
	}
	if n := up.count("HEAD blobs") + up.count("GET blobs") + up.count("GET manifests") + up.count("HEAD manifests"); n != 0 {
		t.Errorf("a push to a missing project sent %d requests to the upstream", n)
	}
	// The official images' namespace is Docker Hub's: a push there says so.
	resp, b := me.do(t, "POST", "/v2/library/x/blobs/uploads/", nil, false, "Authorization", token("repository:library/x:pull,push"))
	if code, msg := errEntry(b); resp.StatusCode != 403 || code != "DENIED" || !strings.Contains(msg, "push to a project of your own") {
		t.Errorf("push to library/x = %d %s", resp.StatusCode, b)
	}
	// A pull, with a token that asked only pull, still goes to the upstream.
	me.do(t, "HEAD", "/v2/nosuch/app/blobs/"+d.String(), nil, false, "Authorization", token("repository:nosuch/app:pull"))
	if n := up.count("HEAD blobs"); n != 1 {
		t.Errorf("a pull's HEAD reached the upstream %d times, want 1", n)
	}
}

// A stalled upstream cannot hold clients: a blob whose upstream stops sending, or never answers,
// is cut after the upstream's time budget; the client gets an error (a cut body, or 504), and
// the next request starts a new fill, which succeeds once the upstream is well again.
func TestStalledUpstreamIsCut(t *testing.T) {
	up := newFakeUpstream(t)
	img := must(random.Image(256<<10, 1))
	up.seed(t, "library/slow:latest", img)
	ld, _ := must(img.Layers())[0].Digest()
	size, _ := must(img.Layers())[0].Size()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var mode atomic.Int32 // 0: stall mid-body, 1: never answer, 2: well
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != "GET" || !strings.Contains(r.URL.Path, "/blobs/"+ld.String()) {
			return false
		}
		switch mode.Load() {
		case 0:
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			w.WriteHeader(200)
			w.Write(make([]byte, 1000))
			w.(http.Flusher).Flush()
			<-release
			return true
		case 1:
			<-release
			return true
		}
		return false
	})
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL, Timeout: 300 * time.Millisecond}})
	get := func() (int, []byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", me.srv.URL+"/v2/slow/blobs/"+ld.String(), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	start := time.Now()
	if code, b, err := get(); err == nil && code == 200 && int64(len(b)) == size {
		t.Fatal("a stalled upstream's blob was served whole")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the stalled fill took %v to be cut, want about its 300ms budget", d)
	}
	me.clock.Add(time.Minute) // past the circuit's back-off, which the stall opened
	mode.Store(1)
	start = time.Now()
	if code, _, err := get(); err != nil || code != http.StatusGatewayTimeout {
		t.Errorf("an upstream that never answers = %d, %v; want 504", code, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the silent upstream took %v to be given up, want about its budget", d)
	}
	me.clock.Add(time.Minute)
	mode.Store(2)
	if code, b, err := get(); err != nil || code != 200 || digest.FromBytes(b).String() != ld.String() {
		t.Errorf("once the upstream is well: %d, %d bytes, %v", code, len(b), err)
	}
	if n := up.count("GET blobs"); n != 3 {
		t.Errorf("upstream blob GETs = %d, want 3: each request after a cut starts a new fill", n)
	}
}

// An uncached manifest from an upstream that accepts and never answers gets a 504 within the
// upstream's time budget (mirror.upstreams.X.timeout), not after the server's 30 s.
func TestHungUpstreamManifestFailsWithinItsBudget(t *testing.T) {
	up := newFakeUpstream(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/") {
			<-release
			return true
		}
		return false
	})
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL, Timeout: 400 * time.Millisecond}})
	start := time.Now()
	resp, b := me.do(t, "GET", "/v2/library/hung/manifests/latest", nil, false)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("hung upstream = %d %s, want 504", resp.StatusCode, b)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the hung upstream took %v, want its 400ms budget", d)
	}
}
