package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"
)

// upstreamRegistry is Debian's docker-registry (CNCF distribution) on a temp dir, the upstream
// that cove mirrors in these tests.
type upstreamRegistry struct {
	url  string // http://127.0.0.1:port
	host string
	auth authn.Authenticator // what seeding needs
	cmd  *exec.Cmd
	log  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freePort returns a loopback port that was free a moment ago (docker-registry needs a fixed one).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRegistry starts docker-registry with extra configuration (an auth: section) appended.
func startRegistry(t *testing.T, extra string, seedAuth authn.Authenticator) *upstreamRegistry {
	t.Helper()
	bin := requireTool(t, "docker-registry")
	dir := t.TempDir()
	port := freePort(t)
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: 127.0.0.1:%d
  secret: e2e-secret
%s`, filepath.Join(dir, "data"), port, extra)
	path := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &upstreamRegistry{url: fmt.Sprintf("http://127.0.0.1:%d", port), host: fmt.Sprintf("127.0.0.1:%d", port), auth: seedAuth, log: &syncBuffer{}}
	if r.auth == nil {
		r.auth = authn.Anonymous
	}
	r.cmd = exec.Command(bin, "serve", path)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	waitFor(t, 20*time.Second, "docker-registry to listen", func() bool {
		c, err := net.Dial("tcp", r.host)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return r
}

func (r *upstreamRegistry) stop() {
	if r.cmd.ProcessState == nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
	}
}

// seed pushes img (a v1.Image or v1.ImageIndex) to repo:tag on the registry.
func (r *upstreamRegistry) seed(t *testing.T, repoTag string, img any) {
	t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	switch v := img.(type) {
	case v1.Image:
		err = remote.Write(ref, v, remote.WithAuth(r.auth))
	case v1.ImageIndex:
		err = remote.WriteIndex(ref, v, remote.WithAuth(r.auth))
	}
	if err != nil {
		t.Fatalf("seed %s: %v", repoTag, err)
	}
}

// htpasswdAuth writes an htpasswd file for user:pass and returns docker-registry's auth section.
func htpasswdAuth(t *testing.T, user, pass string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("auth:\n  htpasswd:\n    realm: upstream\n    path: %s\n", path)
}

// tokenIssuer is a small Docker-style token service, like Docker Hub's auth.docker.io: it grants
// what is asked (anonymous pulls included) and records the Authorization of every request.
type tokenIssuer struct {
	srv      *httptest.Server
	realm    string // on "localhost": another host than the registry's 127.0.0.1
	key      *rsa.PrivateKey
	certDER  []byte
	certFile string

	mu    sync.Mutex
	auths []string
}

func newTokenIssuer(t *testing.T) *tokenIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e token issuer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ti := &tokenIssuer{key: key, certDER: der, certFile: filepath.Join(t.TempDir(), "issuer.pem")}
	if err := os.WriteFile(ti.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	ti.srv = httptest.NewServer(http.HandlerFunc(ti.serve))
	t.Cleanup(ti.srv.Close)
	ti.realm = strings.Replace(ti.srv.URL, "127.0.0.1", "localhost", 1) + "/token"
	return ti
}

func (ti *tokenIssuer) serve(w http.ResponseWriter, r *http.Request) {
	ti.mu.Lock()
	ti.auths = append(ti.auths, r.Header.Get("Authorization"))
	ti.mu.Unlock()
	_ = r.ParseForm()
	var access []map[string]any
	for _, scope := range r.Form["scope"] {
		parts := strings.Split(scope, ":")
		if len(parts) == 3 {
			access = append(access, map[string]any{"type": parts[0], "name": parts[1], "actions": strings.Split(parts[2], ",")})
		}
	}
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": "e2e-issuer", "sub": "someone", "aud": r.Form.Get("service"),
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti": base64.RawURLEncoding.EncodeToString(ti.certDER[:8]) + fmt.Sprint(now.UnixNano()), "access": access,
	})
	tok.Header["x5c"] = []string{base64.StdEncoding.EncodeToString(ti.certDER)}
	signed, err := tok.SignedString(ti.key)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": signed, "access_token": signed, "expires_in": 300})
}

// credentialed reports how many token requests carried credentials.
func (ti *tokenIssuer) credentialed() (with, total int) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	for _, a := range ti.auths {
		if a != "" {
			with++
		}
	}
	return with, len(ti.auths)
}

func (ti *tokenIssuer) authSection() string {
	return fmt.Sprintf("auth:\n  token:\n    realm: %s\n    service: e2e-registry\n    issuer: e2e-issuer\n    rootcertbundle: %s\n", ti.realm, ti.certFile)
}

// faultProxy sits between cove and the upstream: it counts requests and can misbehave.
type faultProxy struct {
	srv *httptest.Server

	mu     sync.Mutex
	counts map[string]int // "METHOD /path" → requests
	fault  func(w http.ResponseWriter, r *http.Request, next http.Handler) bool
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	p := &faultProxy{counts: map[string]int{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.counts[r.Method+" "+r.URL.Path]++
		fault := p.fault
		p.mu.Unlock()
		if fault != nil && fault(w, r, rp) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *faultProxy) count(method, pathPart string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for k, v := range p.counts {
		if strings.HasPrefix(k, method+" ") && strings.Contains(k, pathPart) {
			n += v
		}
	}
	return n
}

// upstreamRequests counts every GET and HEAD the proxy passed on or answered.
func upstreamRequests(p *faultProxy) int { return p.count("GET", "/") + p.count("HEAD", "/") }

func (p *faultProxy) setFault(f func(w http.ResponseWriter, r *http.Request, next http.Handler) bool) {
	p.mu.Lock()
	p.fault = f
	p.mu.Unlock()
}

// startMirror starts cove with the given YAML configuration (listen and data come from flags).
func startMirror(t *testing.T, dir, config string) *server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cove.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return startCove(t, dir, "COVE_CONFIG="+path)
}

// writeTestCA writes a CA certificate, and a server certificate and key for 127.0.0.1 signed by
// it, as PEM files.
func writeTestCA(t *testing.T, caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(path, typ string, b []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(caFile, "CERTIFICATE", caDER)
	write(certFile, "CERTIFICATE", der)
	write(keyFile, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
}
