package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// mirrorConfig is a cove configuration whose docker.io is the given upstream.
func mirrorConfig(upstreamURL, extra string) string {
	return fmt.Sprintf("mirror:\n  upstreams:\n    docker.io:\n      url: %s\n%s", upstreamURL, extra)
}

// pullAll pulls ref from cove anonymously and reads every blob; it returns the image digest.
func pullAll(t *testing.T, s *server, ref string) (v1.Hash, error) {
	t.Helper()
	r, err := name.ParseReference(s.addr+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(r)
	if err != nil {
		return v1.Hash{}, err
	}
	var imgs []v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return v1.Hash{}, err
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return v1.Hash{}, err
		}
		for _, d := range m.Manifests {
			img, err := idx.Image(d.Digest)
			if err != nil {
				return v1.Hash{}, err
			}
			imgs = append(imgs, img)
		}
	} else {
		img, err := desc.Image()
		if err != nil {
			return v1.Hash{}, err
		}
		imgs = append(imgs, img)
	}
	for _, img := range imgs {
		if _, err := img.RawConfigFile(); err != nil {
			return v1.Hash{}, err
		}
		layers, err := img.Layers()
		if err != nil {
			return v1.Hash{}, err
		}
		for _, l := range layers {
			rc, err := l.Compressed() // go-containerregistry checks the digest as it reads
			if err != nil {
				return v1.Hash{}, err
			}
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				return v1.Hash{}, err
			}
		}
	}
	return desc.Digest, nil
}

// TestMirrorUpstreamAuth pulls through cove from docker-registry upstreams: open, behind htpasswd
// (cove's upstream credentials), and behind a Docker-Hub-like token service on another host, whose
// realm receives cove's credentials only when it is one of the upstream's token_realms.
func TestMirrorUpstreamAuth(t *testing.T) {
	img := testImage(t)
	want, _ := img.Digest()
	issuer := newTokenIssuer(t)
	cases := []struct {
		name      string
		regAuth   string
		seedAuth  authn.Authenticator
		cfg       string
		realmCred int // token requests that must carry credentials: -1 none, 1 at least one
	}{
		{"open", "", nil, "", 0},
		{"htpasswd", htpasswdAuth(t, "bob", "upstream-pw"), &authn.Basic{Username: "bob", Password: "upstream-pw"},
			"      username: bob\n      password: upstream-pw\n", 0},
		{"token, realm not allowed", issuer.authSection(), nil,
			"      username: bob\n      password: upstream-pw\n      token_realms: []\n", -1},
		{"token, realm allowed", issuer.authSection(), nil,
			"      username: bob\n      password: upstream-pw\n      token_realms: [localhost]\n", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := startRegistry(t, tc.regAuth, tc.seedAuth)
			reg.seed(t, "library/app:1.0", img)
			before, _ := issuer.credentialed()
			s := startMirror(t, t.TempDir(), mirrorConfig(reg.url, tc.cfg))
			got, err := pullAll(t, s, "app:1.0")
			if err != nil {
				t.Fatalf("pull through cove: %v", err)
			}
			if got != want {
				t.Errorf("digest %s, want %s", got, want)
			}
			with, _ := issuer.credentialed()
			switch {
			case tc.realmCred < 0 && with != before:
				t.Errorf("the token realm received cove's credentials although it is not allowed")
			case tc.realmCred > 0 && with == before:
				t.Errorf("the allowed token realm never received cove's credentials")
			}
			if strings.Contains(s.log(), "upstream-pw") {
				t.Error("the upstream password appears in cove's log")
			}
		})
	}
}

// metricValue reads one sample from cove's /metrics.
func metricValue(t *testing.T, s *server, series string) float64 {
	t.Helper()
	_, body := s.do("GET", "/metrics", nil, false)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(string(body))
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestHerdOfClientsOneDownload: 32 clients ask at once for one uncached 200 MiB blob; the upstream
// serves it once, and every client gets the right bytes.
func TestHerdOfClientsOneDownload(t *testing.T) {
	reg := startRegistry(t, "", nil)
	big, err := random.Layer(200<<20, "application/vnd.oci.image.layer.v1.tar")
	if err != nil {
		t.Fatal(err)
	}
	img := ociImage(t, 0, 0, nil)
	img = must(mutateAppend(img, big))
	reg.seed(t, "library/big:1", img)
	proxy := newFaultProxy(t, reg.url)
	s := startMirror(t, t.TempDir(), mirrorConfig(proxy.srv.URL, ""))
	ld, _ := big.Digest()

	const clients = 32
	var wg sync.WaitGroup
	results := make(chan string, clients)
	for range clients {
		wg.Go(func() {
			resp, err := http.Get(s.url + "/v2/big/blobs/" + ld.String())
			if err != nil {
				results <- err.Error()
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			if _, err := io.Copy(h, resp.Body); err != nil {
				results <- err.Error()
				return
			}
			results <- "sha256:" + hex.EncodeToString(h.Sum(nil))
		})
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r != ld.String() {
			t.Errorf("a client got %s, want %s", r, ld)
		}
	}
	if n := proxy.count("GET", "/blobs/"+ld.String()); n != 1 {
		t.Errorf("upstream served the blob %d times to %d clients, want once", n, clients)
	}
	// Memory does not grow with the blob or the clients: 32 × 200 MiB went through a few buffers.
	rss := metricValue(t, s, "process_resident_memory_bytes")
	t.Logf("herd: %d clients, one upstream download; coalesced %v; cove's resident memory %.0f MiB",
		clients, metricValue(t, s, "cove_mirror_coalesced_total"), rss/(1<<20))
	if rss > 64<<20 {
		t.Errorf("cove's resident memory is %.0f MiB after streaming a 200 MiB blob to %d clients", rss/(1<<20), clients)
	}
}

// TestMirrorFaults: a cached tag survives its upstream stopping or limiting; corrupt and truncated
// blobs reach no client complete and are not kept; a client hanging up does not break the others.
func TestMirrorFaults(t *testing.T) {
	reg := startRegistry(t, "", nil)
	img := testImage(t)
	reg.seed(t, "library/app:1", img)
	want, _ := img.Digest()
	proxy := newFaultProxy(t, reg.url)
	s := startMirror(t, t.TempDir(), mirrorConfig(proxy.srv.URL, "  tag_ttl: 1ms\n"))
	if got, err := pullAll(t, s, "app:1"); err != nil || got != want {
		t.Fatalf("first pull = %s, %v", got, err)
	}

	t.Run("upstream answers 429", func(t *testing.T) {
		proxy.setFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
			return true
		})
		if got, err := pullAll(t, s, "app:1"); err != nil || got != want {
			t.Errorf("pull of a cached tag while upstream limits = %s, %v", got, err)
		}
		// The 429 opened the upstream's circuit until its Retry-After: cove answers for it.
		sent := proxy.count("GET", "/manifests/")
		resp, _ := s.do("GET", "/v2/never-cached/manifests/1", nil, false)
		if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != 429 || ra < 1 || ra > 3 || proxy.count("GET", "/manifests/") != sent {
			t.Errorf("uncached while upstream limits = %d (Retry-After %q, %d sent), want 429 with what is left of the upstream's Retry-After, none sent",
				resp.StatusCode, resp.Header.Get("Retry-After"), proxy.count("GET", "/manifests/")-sent)
		}
		proxy.setFault(nil)
		waitFor(t, 10*time.Second, "the circuit to close after the Retry-After", func() bool {
			resp, _ := s.do("GET", "/v2/app/manifests/1", nil, false)
			return resp.StatusCode == 200 && !strings.Contains(resp.Header.Get("Cache-Status"), "fwd=stale; detail")
		})
	})

	// Corrupt and truncated blobs: a second image whose big layer the proxy spoils.
	img2 := testImage(t)
	reg.seed(t, "library/spoiled:1", img2)
	layers, _ := img2.Layers()
	bigDigest, _ := layers[len(layers)-1].Digest()
	for _, spoil := range []string{"corrupt", "truncate"} {
		t.Run(spoil, func(t *testing.T) {
			proxy.setFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
				if r.Method != "GET" || !strings.HasSuffix(r.URL.Path, bigDigest.String()) {
					return false
				}
				rec := &spoiler{ResponseWriter: w, mode: spoil}
				next.ServeHTTP(rec, r)
				if spoil == "truncate" {
					panic(http.ErrAbortHandler) // cut the connection mid-body
				}
				return true
			})
			before := proxy.count("GET", bigDigest.String())
			if _, err := pullAll(t, s, "spoiled:1"); err == nil {
				t.Fatalf("%s blob: the pull succeeded", spoil)
			}
			proxy.setFault(nil)
			if _, err := pullAll(t, s, "spoiled:1"); err != nil {
				t.Errorf("pull after the upstream healed: %v", err)
			}
			if n := proxy.count("GET", bigDigest.String()) - before; n != 2 {
				t.Errorf("upstream GETs of the spoiled blob = %d, want 2: the bad copy must not be kept", n)
			}
			// Forget the good copy for the next case: a fresh cove on another directory would do,
			// but evicting is what the cache offers; instead seed a new image per case.
			img2 = testImage(t)
			reg.seed(t, "library/spoiled:1", img2)
			layers, _ = img2.Layers()
			bigDigest, _ = layers[len(layers)-1].Digest()
		})
	}

	t.Run("client hangs up mid-download", func(t *testing.T) {
		img3 := testImage(t)
		reg.seed(t, "library/shared:1", img3)
		layers, _ := img3.Layers()
		ld, _ := layers[len(layers)-1].Digest()
		release := make(chan struct{})
		proxy.setFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
			if r.Method == "GET" && strings.HasSuffix(r.URL.Path, ld.String()) {
				w.Header().Set("Content-Length", strconv.FormatInt(must(layers[len(layers)-1].Size()), 10))
				w.WriteHeader(200)
				rc, _ := layers[len(layers)-1].Compressed()
				defer rc.Close()
				io.CopyN(w, rc, 1<<20)
				w.(http.Flusher).Flush()
				<-release
				io.Copy(w, rc)
				return true
			}
			return false
		})
		defer proxy.setFault(nil)
		quitter, err := http.Get(s.url + "/v2/shared/blobs/" + ld.String())
		if err != nil {
			t.Fatal(err)
		}
		io.CopyN(io.Discard, quitter.Body, 100_000)
		quitter.Body.Close() // hangs up
		done := make(chan string, 1)
		go func() {
			resp, err := http.Get(s.url + "/v2/shared/blobs/" + ld.String())
			if err != nil {
				done <- err.Error()
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			io.Copy(h, resp.Body)
			done <- "sha256:" + hex.EncodeToString(h.Sum(nil))
		}()
		waitFor(t, 10*time.Second, "the second client to join", func() bool {
			return metricValue(t, s, "cove_mirror_coalesced_total") >= 1
		})
		close(release)
		if got := <-done; got != ld.String() {
			t.Errorf("the remaining client got %s, want %s", got, ld)
		}
		if n := proxy.count("GET", ld.String()); n != 1 {
			t.Errorf("upstream GETs = %d, want 1", n)
		}
	})

	t.Run("upstream stopped", func(t *testing.T) {
		reg.stop()
		if got, err := pullAll(t, s, "app:1"); err != nil || got != want {
			t.Errorf("pull of a cached tag with the upstream down = %s, %v", got, err)
		}
		if v := metricValue(t, s, `cove_mirror_stale_serves_total{upstream="docker.io"}`); v < 1 {
			t.Errorf("stale serves = %v", v)
		}
		start := time.Now()
		resp, _ := s.do("GET", "/v2/never-cached/manifests/1", nil, false)
		if resp.StatusCode < 500 || time.Since(start) > 10*time.Second {
			t.Errorf("uncached with the upstream down = %d after %s, want a fast 5xx", resp.StatusCode, time.Since(start))
		}
	})
}

// spoiler corrupts (flips a byte in the middle) or truncates (stops half way) a response body.
type spoiler struct {
	http.ResponseWriter
	mode    string
	written int64
}

func (s *spoiler) Write(p []byte) (int, error) {
	if s.mode == "truncate" && s.written > 1<<20 {
		return len(p), nil
	}
	if s.mode == "corrupt" && s.written <= 4<<20 && s.written+int64(len(p)) > 4<<20 {
		q := append([]byte{}, p...)
		q[4<<20-s.written] ^= 0xff
		p = q
	}
	s.written += int64(len(p))
	return s.ResponseWriter.Write(p)
}

// TestMirrorEviction: with a small mirror.max_size, mirrored bytes stay under the cap after several
// pulls, and an evicted blob is fetched again on demand.
func TestMirrorEviction(t *testing.T) {
	reg := startRegistry(t, "", nil)
	proxy := newFaultProxy(t, reg.url)
	s := startMirror(t, t.TempDir(), mirrorConfig(proxy.srv.URL, "  max_size: 20MiB\n"))
	var first v1.Image
	for i := range 4 {
		img := testImage(t) // about 8.1 MiB each
		if i == 0 {
			first = img
		}
		reg.seed(t, fmt.Sprintf("library/img%d:1", i), img)
		if _, err := pullAll(t, s, fmt.Sprintf("img%d:1", i)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "eviction to settle", func() bool {
			return metricValue(t, s, "cove_mirror_bytes_stored") <= 20<<20
		})
	}
	if v := metricValue(t, s, "cove_mirror_evictions_total"); v < 1 {
		t.Errorf("evictions = %v, want some", v)
	}
	layers, _ := first.Layers()
	ld, _ := layers[len(layers)-1].Digest()
	before := proxy.count("GET", ld.String())
	if _, err := pullAll(t, s, "img0:1"); err != nil {
		t.Fatalf("pull of an evicted image: %v", err)
	}
	if proxy.count("GET", ld.String()) != before+1 {
		t.Errorf("the evicted layer was not fetched again from upstream")
	}
}
