package bench

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// upstream is the registry the mirrors pull from: blobs are files served with sendfile, manifests
// are kept in memory. It counts the blob GETs it serves, by digest. Shaped, it answers as a
// registry across a WAN would: a round trip late, and blob bodies at a bounded rate.
type upstream struct {
	dir   string
	srv   *http.Server
	url   string
	shape Shaping

	mu        sync.Mutex
	manifests map[string]manifest // "repo:ref" → manifest
	blobGets  map[string]int
	blobBytes map[string]int64 // bytes of each blob sent in answers to GETs
	allGets   int              // blob GETs of any blob

	requests atomic.Int64
}

type manifest struct {
	mediaType string
	body      []byte
	digest    string
}

// startUpstream serves the upstream on ln, which it closes when closed.
func startUpstream(dir string, ln net.Listener, shape Shaping) (*upstream, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		ln.Close()
		return nil, err
	}
	u := &upstream{dir: dir, shape: shape, manifests: map[string]manifest{}, blobGets: map[string]int{}, blobBytes: map[string]int64{}}
	u.url = baseURL(ln.Addr().String())
	u.srv = &http.Server{Handler: http.HandlerFunc(u.serve), ReadHeaderTimeout: 10 * time.Second}
	if shape.Latency > 0 {
		ln = shapedListener{Listener: ln, rtt: shape.Latency}
	}
	go u.srv.Serve(ln)
	return u, nil
}

func (u *upstream) close() { u.srv.Close() }

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.requests.Add(1)
	if !wait(r.Context(), u.shape.Latency) {
		return // the client went away
	}
	path := strings.TrimPrefix(r.URL.Path, "/v2/")
	if path == "" || r.URL.Path == "/v2" {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		w.Write([]byte("{}"))
		return
	}
	if i := strings.LastIndex(path, "/blobs/"); i >= 0 {
		dgst := path[i+len("/blobs/"):]
		f, err := os.Open(u.blobPath(dgst))
		if err != nil {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}`, http.StatusNotFound)
			return
		}
		defer f.Close()
		if r.Method == http.MethodGet {
			u.mu.Lock()
			u.blobGets[dgst]++
			u.allGets++
			u.mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Docker-Content-Digest", dgst)
		cw := &countingWriter{ResponseWriter: w}
		var bw http.ResponseWriter = cw
		if u.shape.Rate > 0 {
			bw = &pacedWriter{ResponseWriter: cw, p: newPacer(r.Context(), cw, u.shape.Rate)}
		}
		http.ServeContent(bw, r, "", time.Time{}, f)
		u.mu.Lock()
		u.blobBytes[dgst] += cw.n
		u.mu.Unlock()
		return
	}
	if strings.HasSuffix(path, "/tags/list") {
		// No tag lists: a mirror answers with the tags it has (cove bench --scale measures
		// cove's own listing that way). 501 is no status a client retries.
		http.Error(w, `{"errors":[{"code":"UNSUPPORTED","message":"no tag lists"}]}`, http.StatusNotImplemented)
		return
	}
	if i := strings.LastIndex(path, "/manifests/"); i >= 0 {
		key := path[:i] + ":" + path[i+len("/manifests/"):]
		u.mu.Lock()
		m, ok := u.manifests[key]
		u.mu.Unlock()
		if !ok {
			http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", m.mediaType)
		w.Header().Set("Docker-Content-Digest", m.digest)
		w.Header().Set("Content-Length", fmt.Sprint(len(m.body)))
		if r.Method == http.MethodGet {
			w.Write(m.body)
		}
		return
	}
	http.NotFound(w, r)
}

func (u *upstream) blobPath(dgst string) string {
	return filepath.Join(u.dir, strings.ReplaceAll(dgst, ":", "_"))
}

// countingWriter counts the body bytes written; ReadFrom keeps sendfile.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.ResponseWriter.(io.ReaderFrom).ReadFrom(r)
	c.n += n
	return n, err
}

// blobBytesOf is how many bytes of the blob the upstream sent.
func (u *upstream) blobBytesOf(dgst string) int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.blobBytes[dgst]
}

// blobGetsAll is how many blob GETs the upstream answered, of any blob.
func (u *upstream) blobGetsAll() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.allGets
}

// blobGetsOf is how many times the upstream served the blob.
func (u *upstream) blobGetsOf(dgst string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.blobGets[dgst]
}

// addBlob writes size pseudo-random bytes (seeded, so runs are alike) and returns their digest.
func (u *upstream) addBlob(size int64, seed uint64) (string, error) {
	f, err := os.CreateTemp(u.dir, "gen-*")
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), 'c', 'o', 'v', 'e'})
	if _, err := io.CopyN(io.MultiWriter(f, h), rng, size); err != nil {
		return "", err
	}
	// Written back before anything is measured: the kernel flushing a fresh gigabyte of the
	// generator's output would slow whatever writes next, cove's fill or the peer's.
	if err := f.Sync(); err != nil {
		return "", err
	}
	dgst := "sha256:" + hex.EncodeToString(h.Sum(nil))
	return dgst, os.Rename(f.Name(), u.blobPath(dgst))
}

// addImage makes an OCI image of layers blobs under repo:tag and returns the manifest's digest and
// the layers' digests.
func (u *upstream) addImage(repo, tag string, layerSizes []int64, seed uint64) (string, []string, error) {
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"seed":%d}`, seed))
	cfgDigest := "sha256:" + hexSum(cfg)
	if err := os.WriteFile(u.blobPath(cfgDigest), cfg, 0o644); err != nil {
		return "", nil, err
	}
	var layers []string
	var descs []string
	for i, size := range layerSizes {
		d, err := u.addBlob(size, seed*1000+uint64(i))
		if err != nil {
			return "", nil, err
		}
		layers = append(layers, d)
		descs = append(descs, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}`, d, size))
	}
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[%s]}`,
		cfgDigest, len(cfg), strings.Join(descs, ",")))
	m := manifest{mediaType: "application/vnd.oci.image.manifest.v1+json", body: body, digest: "sha256:" + hexSum(body)}
	u.mu.Lock()
	u.manifests[repo+":"+tag] = m
	u.manifests[repo+":"+m.digest] = m
	u.mu.Unlock()
	return m.digest, layers, nil
}

// manifest returns the manifest the upstream has under key ("repo:ref").
func (u *upstream) manifest(key string) manifest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.manifests[key]
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
