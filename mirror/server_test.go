package mirror_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"

	"cove/auth"
	"cove/cache"
	"cove/internal/kv"
	"cove/mirror"
)

const password = "s3cret-for-tests"

type env struct {
	srv   *httptest.Server
	dir   string
	store *cache.Store
	host  string
	admin authn.Authenticator
	auth  *auth.Service
	// finished receives "METHOD /path" each time a request's handler returns.
	finished chan string
	mirror   *mirror.Server
}

// newEnv serves a registry with two projects: "priv" (private) and "pub" (public).
func newEnv(t testing.TB, opts ...func(*mirror.Config)) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := cache.OpenDB(filepath.Join(dir, "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := cache.Open(ctx, cache.Config{Dir: dir, DB: kv.NewBadger(db)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	as, err := auth.New(ctx, kv.NewBadger(db), auth.Config{AdminPassword: password, BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir(), AnonymousMirrorPull: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		name   string
		public bool
	}{{"priv", false}, {"pub", true}} {
		if _, err := as.Policy.CreateProject(ctx, p.name, p.public, "admin"); err != nil {
			t.Fatal(err)
		}
	}
	cfg := mirror.Config{Store: store, Auth: as.Tokens, Policy: as.Policy, Logger: slog.New(slog.DiscardHandler)}
	var h http.Handler
	for _, o := range opts {
		o(&cfg)
	}
	m, err := mirror.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h = m
	if ts, ok := cfg.Auth.(interface {
		ServeToken(http.ResponseWriter, *http.Request)
	}); ok {
		mux := http.NewServeMux()
		mux.HandleFunc(auth.TokenPath, ts.ServeToken)
		mux.Handle("/", m)
		h = mux
	}
	e := &env{dir: dir, store: store, admin: &authn.Basic{Username: "admin", Password: password}, auth: as, finished: make(chan string, 100), mirror: m}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			select {
			case e.finished <- r.Method + " " + r.URL.Path:
			default: // nobody listens in this test
			}
		}()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	e.srv, e.host = srv, strings.TrimPrefix(srv.URL, "http://")
	return e
}

func (e *env) ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(e.host+"/"+s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// do sends a request with optional admin credentials and returns the response with its body read.
func (e *env) do(t *testing.T, method, path string, body io.Reader, asAdmin bool, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if asAdmin {
		req.SetBasicAuth("admin", password)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

// errCode returns the first OCI error code of a response body.
func errCode(b []byte) string {
	code, _ := errEntry(b)
	return code
}

// errEntry is the code and message of an OCI error body's first error.
func errEntry(b []byte) (code, message string) {
	var body struct {
		Errors []struct{ Code, Message string }
	}
	_ = json.Unmarshal(b, &body)
	if len(body.Errors) == 0 {
		return "", ""
	}
	return body.Errors[0].Code, body.Errors[0].Message
}

func TestPushPullImageAndIndex(t *testing.T) {
	e := newEnv(t)
	img, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(e.ref(t, "priv/app:v1"), img, remote.WithAuth(e.admin)); err != nil {
		t.Fatalf("push image: %v", err)
	}
	got, err := remote.Image(e.ref(t, "priv/app:v1"), remote.WithAuth(e.admin))
	if err != nil {
		t.Fatalf("pull image: %v", err)
	}
	wantDigest, _ := img.Digest()
	if d, _ := got.Digest(); d != wantDigest {
		t.Errorf("pulled digest %s, want %s", d, wantDigest)
	}
	layers, _ := got.Layers()
	srcLayers, _ := img.Layers()
	for i, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		h, n, err := v1.SHA256(rc)
		rc.Close()
		want, _ := srcLayers[i].Digest()
		wantSize, _ := srcLayers[i].Size()
		if err != nil || h != want || n != wantSize {
			t.Errorf("layer %d: read %s (%d bytes, %v), want %s", i, h, n, err, want)
		}
	}

	idx, err := random.Index(2048, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(e.ref(t, "priv/multi:latest"), idx, remote.WithAuth(e.admin)); err != nil {
		t.Fatalf("push index: %v", err)
	}
	gotIdx, err := remote.Index(e.ref(t, "priv/multi:latest"), remote.WithAuth(e.admin))
	if err != nil {
		t.Fatalf("pull index: %v", err)
	}
	wantIdx, _ := idx.Digest()
	if d, _ := gotIdx.Digest(); d != wantIdx {
		t.Errorf("pulled index %s, want %s", d, wantIdx)
	}
	im, _ := gotIdx.IndexManifest()
	for _, desc := range im.Manifests {
		child, err := gotIdx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := child.Layers(); err != nil {
			t.Errorf("child %s: %v", desc.Digest, err)
		}
		if err := remoteLayersReadable(child); err != nil {
			t.Errorf("child %s: %v", desc.Digest, err)
		}
	}

	// Anonymous: the private project asks for a login; the public one serves.
	if _, err := remote.Image(e.ref(t, "priv/app:v1")); err == nil {
		t.Error("anonymous pull from a private project succeeded")
	}
	if err := remote.Write(e.ref(t, "pub/app:v1"), img, remote.WithAuth(e.admin)); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Image(e.ref(t, "pub/app:v1")); err != nil {
		t.Errorf("anonymous pull from a public project: %v", err)
	}
}

func remoteLayersReadable(img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func TestAccessControl(t *testing.T) {
	e := newEnv(t)
	if err := remote.Write(e.ref(t, "priv/app:v1"), must(random.Image(100, 1)), remote.WithAuth(e.admin)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path string
		admin              bool
		wrongPassword      bool
		status             int
		code               string
	}{
		{"ping anonymous asks to log in", "GET", "/v2/", false, false, 401, "UNAUTHORIZED"},
		{"ping as admin", "GET", "/v2/", true, false, 200, ""},
		{"ping with wrong password", "GET", "/v2/", false, true, 401, "UNAUTHORIZED"},
		{"anonymous pull private", "GET", "/v2/priv/app/manifests/v1", false, false, 401, "UNAUTHORIZED"},
		{"wrong password pull public", "GET", "/v2/pub/app/tags/list", false, true, 401, "UNAUTHORIZED"},
		{"anonymous push public", "POST", "/v2/pub/app/blobs/uploads/", false, false, 401, "UNAUTHORIZED"},
		{"anonymous delete", "DELETE", "/v2/priv/app/manifests/v1", false, false, 401, "UNAUTHORIZED"},
		{"anonymous push to a missing project", "POST", "/v2/nope/app/blobs/uploads/", false, false, 401, "UNAUTHORIZED"},
		{"admin push to a missing project", "POST", "/v2/nope/app/blobs/uploads/", true, false, 404, "NAME_UNKNOWN"},
		{"admin pull", "GET", "/v2/priv/app/manifests/v1", true, false, 200, ""},
		{"unsupported method", "PATCH", "/v2/priv/app/manifests/v1", true, false, 405, "UNSUPPORTED"},
		// An upload session belongs to a push from start to end, whatever the method.
		{"anonymous upload status, public project", "GET", "/v2/pub/app/blobs/uploads/SOMEID", false, false, 401, "UNAUTHORIZED"},
		{"anonymous upload cancel, public project", "DELETE", "/v2/pub/app/blobs/uploads/SOMEID", false, false, 401, "UNAUTHORIZED"},
		{"admin push to a one-element name", "POST", "/v2/pub/blobs/uploads/", true, false, 404, "NAME_UNKNOWN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, e.srv.URL+tt.path, nil)
			if tt.admin {
				req.SetBasicAuth("admin", password)
			}
			if tt.wrongPassword {
				req.SetBasicAuth("admin", "wrong")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || errCode(b) != tt.code {
				t.Errorf("%s %s = %d %s, want %d %s", tt.method, tt.path, resp.StatusCode, b, tt.status, tt.code)
			}
			if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Bearer realm="`+e.srv.URL+`/service/token",service="cove"`) {
				t.Errorf("401 without a challenge: %q", resp.Header.Get("WWW-Authenticate"))
			}
			if tt.code == "NAME_UNKNOWN" && !strings.Contains(string(b), "project") {
				t.Errorf("missing-project error does not say so: %s", b)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestBadInputLeavesNothing sends malformed requests: each gets the spec's error, and afterwards
// the repository holds exactly what it held before, with no temporary file left.
func TestBadInputLeavesNothing(t *testing.T) {
	e := newEnv(t)
	blob := []byte("layer bytes")
	bd := digest.FromBytes(blob)
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	cd := digest.FromBytes(cfg)
	for _, b := range [][]byte{blob, cfg} {
		resp, body := e.do(t, "POST", "/v2/priv/app/blobs/uploads/?digest="+digest.FromBytes(b).String(), bytes.NewReader(b), true)
		if resp.StatusCode != 201 {
			t.Fatalf("monolithic upload = %d %s", resp.StatusCode, body)
		}
	}
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`, cd, len(cfg), bd, len(blob))
	missingBlob := strings.Replace(manifest, bd.String(), digest.FromString("absent").String(), 1)
	ctOCI := "application/vnd.oci.image.manifest.v1+json"
	id := startUpload(t, e)

	tests := []struct {
		name, method, path string
		body               string
		hdr                []string
		status             int
		code               string
	}{
		{"upper-case name", "GET", "/v2/priv/App/tags/list", "", nil, 400, "NAME_INVALID"},
		{"name with a double dot", "GET", "/v2/priv/a..b/tags/list", "", nil, 400, "NAME_INVALID"},
		{"malformed blob digest", "GET", "/v2/priv/app/blobs/sha256:xyz", "", nil, 400, "DIGEST_INVALID"},
		{"unknown blob", "GET", "/v2/priv/app/blobs/" + digest.FromString("x").String(), "", nil, 404, "BLOB_UNKNOWN"},
		{"monolithic with wrong digest", "POST", "/v2/priv/app/blobs/uploads/?digest=" + digest.FromString("x").String(), "not x", nil, 400, "DIGEST_INVALID"},
		{"monolithic with md5", "POST", "/v2/priv/app/blobs/uploads/?digest=md5:d41d8cd98f00b204e9800998ecf8427e", "x", nil, 400, "DIGEST_INVALID"},
		{"manifest not JSON", "PUT", "/v2/priv/app/manifests/bad", "{not json", []string{"Content-Type", ctOCI}, 400, "MANIFEST_INVALID"},
		{"manifest type mismatch", "PUT", "/v2/priv/app/manifests/bad", manifest, []string{"Content-Type", "application/vnd.oci.image.index.v1+json"}, 400, "MANIFEST_INVALID"},
		{"manifest schema 1", "PUT", "/v2/priv/app/manifests/bad", `{"schemaVersion":1,"name":"x"}`, []string{"Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws"}, 400, "MANIFEST_INVALID"},
		{"manifest with missing blob", "PUT", "/v2/priv/app/manifests/bad", missingBlob, []string{"Content-Type", ctOCI}, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"manifest digest mismatch", "PUT", "/v2/priv/app/manifests/" + digest.FromString("x").String(), manifest, []string{"Content-Type", ctOCI}, 400, "DIGEST_INVALID"},
		{"invalid tag", "PUT", "/v2/priv/app/manifests/-bad", manifest, []string{"Content-Type", ctOCI}, 400, "TAG_INVALID"},
		{"oversized manifest", "PUT", "/v2/priv/app/manifests/big", `{"x":"` + strings.Repeat("a", cache.MaxManifestSize) + `"}`, []string{"Content-Type", ctOCI}, 413, "SIZE_INVALID"},
		{"unknown upload", "PATCH", "/v2/priv/app/blobs/uploads/NOSUCHID", "abc", nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{"upload of another repo", "PATCH", "/v2/priv/other/blobs/uploads/" + id, "abc", nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{"malformed Content-Range", "PATCH", "/v2/priv/app/blobs/uploads/" + id, "abc", []string{"Content-Range", "zero-two"}, 400, "BLOB_UPLOAD_INVALID"},
		{"Content-Range beyond the upload", "PATCH", "/v2/priv/app/blobs/uploads/" + id, "abc", []string{"Content-Range", "10-12"}, 416, "BLOB_UPLOAD_INVALID"},
		{"Content-Range disagrees with length", "PATCH", "/v2/priv/app/blobs/uploads/" + id, "abc", []string{"Content-Range", "0-9"}, 400, "BLOB_UPLOAD_INVALID"},
		{"finish without digest", "PUT", "/v2/priv/app/blobs/uploads/" + id, "", nil, 400, "DIGEST_INVALID"},
		{"tags list with bad n", "GET", "/v2/priv/app/tags/list?n=-1", "", nil, 400, "UNSUPPORTED"},
		{"referrers of a bad digest", "GET", "/v2/priv/app/referrers/sha256:zz", "", nil, 400, "DIGEST_INVALID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := e.do(t, tt.method, tt.path, strings.NewReader(tt.body), true, tt.hdr...)
			if resp.StatusCode != tt.status || errCode(b) != tt.code {
				t.Errorf("%s %s = %d %.200s, want %d %s", tt.method, tt.path, resp.StatusCode, b, tt.status, tt.code)
			}
			if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Errorf("error Content-Type = %q", resp.Header.Get("Content-Type"))
			}
		})
	}

	// Nothing was left behind: no tag, no blob, no manifest, and only the open upload in tmp/.
	resp, b := e.do(t, "GET", "/v2/priv/app/tags/list", nil, true)
	if resp.StatusCode != 200 || string(b) != `{"name":"priv/app","tags":[]}` {
		t.Errorf("tags after bad input = %d %s, want none", resp.StatusCode, b)
	}
	if resp, _ := e.do(t, "GET", "/v2/priv/app/blobs/"+digest.FromString("not x").String(), nil, true); resp.StatusCode != 404 {
		t.Errorf("a refused blob is readable: %d", resp.StatusCode)
	}
	if resp, _ := e.do(t, "GET", "/v2/priv/other/tags/list", nil, true); resp.StatusCode != 404 {
		t.Errorf("a refused request created repository priv/other: %d", resp.StatusCode)
	}
	ents, _ := os.ReadDir(filepath.Join(e.dir, "tmp"))
	if len(ents) != 1 {
		t.Errorf("tmp/ holds %d files, want only the open upload", len(ents))
	}
	// The upload survived the refused chunks: its range is still empty and it accepts a good one.
	resp, _ = e.do(t, "PATCH", "/v2/priv/app/blobs/uploads/"+id, strings.NewReader("abc"), true, "Content-Range", "0-2")
	if resp.StatusCode != 202 || resp.Header.Get("Range") != "0-2" {
		t.Errorf("good chunk after refused ones = %d, Range %q", resp.StatusCode, resp.Header.Get("Range"))
	}
}

func startUpload(t *testing.T, e *env) string {
	t.Helper()
	resp, b := e.do(t, "POST", "/v2/priv/app/blobs/uploads/", nil, true)
	if resp.StatusCode != 202 {
		t.Fatalf("start upload = %d %s", resp.StatusCode, b)
	}
	loc := resp.Header.Get("Location")
	return loc[strings.LastIndex(loc, "/")+1:]
}

func TestBlobRangeAndHead(t *testing.T) {
	e := newEnv(t)
	blob := []byte("0123456789")
	d := digest.FromBytes(blob)
	e.do(t, "POST", "/v2/pub/app/blobs/uploads/?digest="+d.String(), bytes.NewReader(blob), true)
	resp, b := e.do(t, "GET", "/v2/pub/app/blobs/"+d.String(), nil, false, "Range", "bytes=2-5")
	if resp.StatusCode != 206 || string(b) != "2345" || resp.Header.Get("Content-Range") != "bytes 2-5/10" {
		t.Errorf("range GET = %d %q %q", resp.StatusCode, b, resp.Header.Get("Content-Range"))
	}
	resp, b = e.do(t, "HEAD", "/v2/pub/app/blobs/"+d.String(), nil, false)
	if resp.StatusCode != 200 || len(b) != 0 || resp.Header.Get("Content-Length") != "10" || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Errorf("HEAD = %d, body %q, headers %v", resp.StatusCode, b, resp.Header)
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("blob served as active content: %v", resp.Header)
	}
	// A suffix of zero bytes is unsatisfiable (RFC 9110): 416, not an empty 206; in a set with
	// satisfiable ranges it is left out, and those are served.
	for _, rng := range []string{"bytes=-0", "bytes= -00", "bytes=-0,-00"} {
		resp, b = e.do(t, "GET", "/v2/pub/app/blobs/"+d.String(), nil, false, "Range", rng)
		if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Content-Range") != "bytes */10" || len(b) != 0 {
			t.Errorf("Range %q = %d %q, Content-Range %q; want 416 bytes */10", rng, resp.StatusCode, b, resp.Header.Get("Content-Range"))
		}
	}
	for _, rng := range []string{"bytes=0-1,-0", "bytes=-0, 0-1"} {
		resp, b = e.do(t, "GET", "/v2/pub/app/blobs/"+d.String(), nil, false, "Range", rng)
		if resp.StatusCode != 206 || string(b) != "01" || resp.Header.Get("Content-Range") != "bytes 0-1/10" {
			t.Errorf("Range %q = %d %q, Content-Range %q; want 206 of bytes 0-1", rng, resp.StatusCode, b, resp.Header.Get("Content-Range"))
		}
	}
	resp, b = e.do(t, "GET", "/v2/pub/app/blobs/"+d.String(), nil, false, "Range", "bytes=-3")
	if resp.StatusCode != 206 || string(b) != "789" {
		t.Errorf("Range bytes=-3 = %d %q", resp.StatusCode, b)
	}
}

// Manifests must be UTF-8 (JSON is): invalid bytes are refused, not stored.
func TestManifestWithInvalidUTF8IsRefused(t *testing.T) {
	e := newEnv(t)
	cfg := []byte("{}")
	cd := digest.FromBytes(cfg)
	e.do(t, "POST", "/v2/pub/app/blobs/uploads/?digest="+cd.String(), bytes.NewReader(cfg), true)
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + cd.String() + `","size":2},"layers":[],"annotations":{"x":"` + "\xff\xfe" + `"}}`)
	resp, b := e.do(t, "PUT", "/v2/pub/app/manifests/v1", bytes.NewReader(body), true, "Content-Type", "application/vnd.oci.image.manifest.v1+json")
	if code, msg := errEntry(b); resp.StatusCode != 400 || code != "MANIFEST_INVALID" || !strings.Contains(msg, "UTF-8") {
		t.Errorf("manifest with invalid UTF-8 = %d %s, want 400 MANIFEST_INVALID", resp.StatusCode, b)
	}
	if resp, _ := e.do(t, "GET", "/v2/pub/app/manifests/"+digest.FromBytes(body).String(), nil, true); resp.StatusCode != 404 {
		t.Errorf("the refused manifest is stored: %d", resp.StatusCode)
	}
}

func TestCatalogPaginationAndVisibility(t *testing.T) {
	e := newEnv(t)
	img := must(random.Image(64, 1))
	for _, r := range []string{"pub/a", "pub/b", "pub/c", "priv/secret"} {
		if err := remote.Write(e.ref(t, r+":v1"), img, remote.WithAuth(e.admin)); err != nil {
			t.Fatal(err)
		}
	}
	resp, b := e.do(t, "GET", "/v2/_catalog?n=2", nil, true)
	if string(b) != `{"repositories":["priv/secret","pub/a"]}` || resp.Header.Get("Link") != `</v2/_catalog?last=pub%2Fa&n=2>; rel="next"` {
		t.Errorf("catalog page 1 = %s, Link %q", b, resp.Header.Get("Link"))
	}
	resp, b = e.do(t, "GET", "/v2/_catalog?n=2&last=pub/a", nil, true)
	if string(b) != `{"repositories":["pub/b","pub/c"]}` || resp.Header.Get("Link") != "" {
		t.Errorf("catalog page 2 = %s, Link %q", b, resp.Header.Get("Link"))
	}
	_, b = e.do(t, "GET", "/v2/_catalog", nil, false)
	if string(b) != `{"repositories":["pub/a","pub/b","pub/c"]}` {
		t.Errorf("anonymous catalog = %s: it must list only public repositories", b)
	}
}

func TestCrossMountNeedsReadAccess(t *testing.T) {
	e := newEnv(t)
	blob := []byte("shared layer")
	d := digest.FromBytes(blob)
	e.do(t, "POST", "/v2/priv/src/blobs/uploads/?digest="+d.String(), bytes.NewReader(blob), true)
	resp, _ := e.do(t, "POST", "/v2/priv/dst/blobs/uploads/?mount="+d.String()+"&from=priv/src", nil, true)
	if resp.StatusCode != 201 || resp.Header.Get("Location") != "/v2/priv/dst/blobs/"+d.String() {
		t.Errorf("mount = %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// Without a source, from a repository that lacks the blob, or with a malformed digest: an
	// upload session, not a mount (the spec's "SHOULD return a 202").
	for _, q := range []string{"?mount=" + d.String(), "?mount=" + d.String() + "&from=priv/none", "?mount=sha256:zz&from=priv/src"} {
		resp, _ = e.do(t, "POST", "/v2/priv/other/blobs/uploads/"+q, nil, true)
		if resp.StatusCode != 202 {
			t.Errorf("mount %s = %d, want 202 (upload session)", q, resp.StatusCode)
		}
	}
	if resp, _ := e.do(t, "HEAD", "/v2/priv/other/blobs/"+d.String(), nil, true); resp.StatusCode != 404 {
		t.Errorf("blob readable in priv/other without a mount: %d", resp.StatusCode)
	}
}

// A mount asked by someone who may push to the target but not read the source is an ordinary
// upload session (202), and the blob stays unreadable in the target, with Basic credentials and
// with tokens alike.
func TestCrossMountWithoutReadAccessIsAnUpload(t *testing.T) {
	e := newEnv(t)
	as := e.auth
	ctx := context.Background()
	if _, err := as.Policy.CreateProject(ctx, "team", false, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := as.Identity.CreateUser(ctx, auth.User{Name: "dev"}, "Dev-password1"); err != nil {
		t.Fatal(err)
	}
	if _, err := as.Policy.AddMember(ctx, "team", auth.MemberUser, "dev", auth.RoleDeveloper); err != nil {
		t.Fatal(err)
	}
	blob := []byte("a private layer")
	d := digest.FromBytes(blob)
	if resp, b := e.do(t, "POST", "/v2/priv/src/blobs/uploads/?digest="+d.String(), bytes.NewReader(blob), true); resp.StatusCode != 201 {
		t.Fatalf("upload = %d %s", resp.StatusCode, b)
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("dev:Dev-password1"))
	dev, err := as.Identity.CheckPassword(ctx, "dev", "Dev-password1")
	if err != nil {
		t.Fatal(err)
	}
	tok, _, _, err := as.Tokens.IssueToken(ctx, dev, "cove",
		[]auth.Scope{{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}}, {Type: "repository", Name: "priv/src", Actions: []string{"pull"}}})
	if err != nil {
		t.Fatal(err)
	}
	for name, authz := range map[string]string{"basic": basic, "token": "Bearer " + tok} {
		resp, b := e.do(t, "POST", "/v2/team/app/blobs/uploads/?mount="+d.String()+"&from=priv/src", nil, false, "Authorization", authz)
		if resp.StatusCode != 202 || resp.Header.Get("Location") == "" {
			t.Errorf("%s: mount without read access to the source = %d %s, want 202 and an upload session", name, resp.StatusCode, b)
		}
		if resp, _ := e.do(t, "HEAD", "/v2/team/app/blobs/"+d.String(), nil, true); resp.StatusCode != 404 {
			t.Errorf("%s: the blob became readable in team/app: %d", name, resp.StatusCode)
		}
	}
}

// TestStalledClientsAreCut: an upload whose body stops arriving and a download whose client stops
// reading are both ended after the idle timeout, and the upload leaves nothing behind.
func TestStalledClientsAreCut(t *testing.T) {
	e := newEnv(t, func(c *mirror.Config) { c.IdleTimeout = 300 * time.Millisecond })
	big := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB: more than socket buffers hold
	d := digest.FromBytes(big)
	if resp, b := e.do(t, "POST", "/v2/pub/app/blobs/uploads/?digest="+d.String(), bytes.NewReader(big), true); resp.StatusCode != 201 {
		t.Fatalf("upload = %d %s", resp.StatusCode, b)
	}
	<-e.finished

	// Upload: send the headers and a little of the body, then nothing.
	conn, err := net.Dial("tcp", e.host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v2/pub/app/blobs/uploads/?digest=%s HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\nContent-Length: 1000000\r\n\r\nsome bytes",
		digest.FromString("x"), base64.StdEncoding.EncodeToString([]byte("admin:"+password)))
	select {
	case got := <-e.finished:
		if !strings.HasPrefix(got, "POST") {
			t.Fatalf("finished %s, want the stalled POST", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a stalled upload was not cut")
	}
	if ents, _ := os.ReadDir(filepath.Join(e.dir, "tmp")); len(ents) != 0 {
		t.Errorf("a cut upload left %d files in tmp/", len(ents))
	}

	// Download: ask for the blob and never read the answer.
	conn2, err := net.Dial("tcp", e.host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	conn2.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn2, "GET /v2/pub/app/blobs/%s HTTP/1.1\r\nHost: x\r\n\r\n", d)
	select {
	case got := <-e.finished:
		if !strings.HasPrefix(got, "GET") {
			t.Fatalf("finished %s, want the stalled GET", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a download whose client stopped reading was not cut")
	}
}

// TestShortChunkIsTheClientsFault: a chunk whose body ends before its Content-Range does is a
// 400 BLOB_UPLOAD_INVALID (not a server error), and the upload is rolled back to before it.
func TestShortChunkIsTheClientsFault(t *testing.T) {
	e := newEnv(t)
	id := startUpload(t, e)
	conn, err := net.Dial("tcp", e.host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PATCH /v2/priv/app/blobs/uploads/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\nContent-Range: 0-99\r\nContent-Length: 100\r\n\r\nonly ten b",
		id, base64.StdEncoding.EncodeToString([]byte("admin:"+password)))
	conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || errCode(b) != "BLOB_UPLOAD_INVALID" {
		t.Errorf("short chunk = %d %s, want 400 BLOB_UPLOAD_INVALID", resp.StatusCode, b)
	}
	resp2, _ := e.do(t, "GET", "/v2/priv/app/blobs/uploads/"+id, nil, true)
	if resp2.StatusCode != 204 || resp2.Header.Get("Range") != "0-0" {
		t.Errorf("upload after a short chunk = %d, Range %q; want it empty and open", resp2.StatusCode, resp2.Header.Get("Range"))
	}
}

// auditSpy records which way each event was recorded.
type auditSpy struct {
	mu               sync.Mutex
	records, limited []auth.Event
}

func (a *auditSpy) Record(_ context.Context, e auth.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.records = append(a.records, e)
	return nil
}

func (a *auditSpy) RecordLimited(_ context.Context, e auth.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.limited = append(a.limited, e)
	return nil
}

// Anonymous pulls are recorded through the audit log's per-caller and overall bounds (a flood of
// them from thousands of addresses wrote a record each); signed-in pulls are all recorded.
func TestAnonymousPullsAreRecordedLimited(t *testing.T) {
	spy := &auditSpy{}
	e := newEnv(t, func(c *mirror.Config) { c.Audit = spy })
	cfg := []byte("{}")
	cd := digest.FromBytes(cfg)
	e.do(t, "POST", "/v2/pub/app/blobs/uploads/?digest="+cd.String(), bytes.NewReader(cfg), true)
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + cd.String() + `","size":2},"layers":[]}`)
	if resp, b := e.do(t, "PUT", "/v2/pub/app/manifests/v1", bytes.NewReader(body), true, "Content-Type", "application/vnd.oci.image.manifest.v1+json"); resp.StatusCode != 201 {
		t.Fatalf("push = %d %s", resp.StatusCode, b)
	}
	for range 5 {
		if resp, _ := e.do(t, "GET", "/v2/pub/app/manifests/v1", nil, false); resp.StatusCode != 200 {
			t.Fatalf("anonymous pull = %d", resp.StatusCode)
		}
	}
	for range 2 {
		e.do(t, "GET", "/v2/pub/app/manifests/v1", nil, true)
	}
	spy.mu.Lock()
	defer spy.mu.Unlock()
	pulls := func(es []auth.Event) (anon, named int) {
		for _, ev := range es {
			if ev.Operation == "pull" {
				if ev.Username == "" {
					anon++
				} else {
					named++
				}
			}
		}
		return
	}
	if anon, named := pulls(spy.limited); anon != 5 || named != 0 {
		t.Errorf("limited records: %d anonymous pulls, %d signed-in; want 5 and 0", anon, named)
	}
	if anon, named := pulls(spy.records); anon != 0 || named != 2 {
		t.Errorf("plain records: %d anonymous pulls, %d signed-in; want 0 and 2", anon, named)
	}
}
