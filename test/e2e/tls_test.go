package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pebble is Debian's ACME test CA, with challenge validation switched off by its test setting.
type pebbleCA struct {
	dir     string // https://127.0.0.1:port/dir
	caFile  string // trust for reaching pebble's own HTTPS
	rootPEM []byte // the root that signs the certificates it issues
}

func startPebble(t *testing.T) *pebbleCA { return startPebbleValidating(t, 0, 0) }

// startPebbleValidating starts pebble; with ports, it really validates challenges, connecting to
// httpPort for HTTP-01 and to tlsPort for TLS-ALPN-01.
func startPebbleValidating(t *testing.T, httpPort, tlsPort int) *pebbleCA {
	t.Helper()
	validate := httpPort != 0
	if !validate {
		httpPort, tlsPort = freePort(t), freePort(t)
	}
	bin := requireTool(t, "pebble")
	dir := t.TempDir()
	caFile, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	writeTestCA(t, caFile, cert, key)
	port, mgmt := freePort(t), freePort(t)
	conf := fmt.Sprintf(`{"pebble": {"listenAddress": "127.0.0.1:%d", "managementListenAddress": "127.0.0.1:%d",
  "certificate": %q, "privateKey": %q, "httpPort": %d, "tlsPort": %d, "ocspResponderURL": "",
  "externalAccountBindingRequired": false}}`, port, mgmt, cert, key, httpPort, tlsPort)
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "pebble.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := execCommand(bin, "-config", cfgFile)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	if !validate {
		cmd.Env = append(cmd.Env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); log.Close() })
	client := trustingClient(t, readFile(t, caFile))
	p := &pebbleCA{dir: fmt.Sprintf("https://127.0.0.1:%d/dir", port), caFile: caFile}
	waitFor(t, 20*time.Second, "pebble to serve its root", func() bool {
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmt))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		p.rootPEM, _ = io.ReadAll(resp.Body)
		return resp.StatusCode == 200
	})
	return p
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// trustingClient is an HTTP client that trusts only the PEM roots given.
func trustingClient(t *testing.T, rootPEM []byte) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootPEM) {
		t.Fatal("no certificate in the root PEM")
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
}

// certDir writes a root as a containers-style certificate directory (ca.crt).
func certDir(t *testing.T, rootPEM []byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), rootPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serverCert returns the serial of the certificate cove presents at addr now.
func serverCert(t *testing.T, addr string, rootPEM []byte) string {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootPEM)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	st := conn.ConnectionState()
	if st.Version < tls.VersionTLS12 {
		t.Errorf("TLS version %x, want 1.2 or later", st.Version)
	}
	return st.PeerCertificates[0].SerialNumber.String()
}

// TestACME: pebble issues cove its certificate; skopeo and crane push and pull over HTTPS trusting
// pebble's root; a forced renewal changes the certificate without dropping a transfer in
// progress; the plain-HTTP listener redirects to HTTPS and the token realm is https.
func TestACME(t *testing.T) {
	requireTool(t, "skopeo")
	crane := os.Getenv("E2E_CRANE_BIN")
	if crane == "" {
		crane = requireTool(t, "crane")
	}
	ca := startPebble(t)
	s := startMirror(t, t.TempDir(), fmt.Sprintf(`tls:
  mode: acme
  domains: [localhost]
  email: ops@example.org
  acme_ca: %s
  acme_ca_root: %s
  http_listen: 127.0.0.1:0
`, ca.dir, ca.caFile))
	_, port, _ := net.SplitHostPort(s.addr)
	host := "localhost:" + port
	client := trustingClient(t, ca.rootPEM)

	// HTTPS, HTTP/2, the realm on https; plain HTTP redirects.
	resp, err := client.Get("https://" + host + "/v2/")
	if err != nil {
		t.Fatalf("GET /v2/ over HTTPS with pebble's root: %v", err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `realm="https://`+host+`/service/token"`) {
		t.Errorf("proto %s, challenge %q", resp.Proto, resp.Header.Get("WWW-Authenticate"))
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.Get("http://" + s.httpAddr + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect || !strings.HasPrefix(resp.Header.Get("Location"), "https://") {
		t.Errorf("plain HTTP = %d %q, want a redirect to https", resp.StatusCode, resp.Header.Get("Location"))
	}

	// skopeo pushes and pulls, trusting pebble's root.
	s.createProjectTLS(client, "https://"+host, "team")
	img := ociImage(t, 1, 24<<20, nil)
	src := writeLayout(t, img, newOCIIndex(t))
	certs := certDir(t, ca.rootPEM)
	creds := "admin:" + adminPassword
	skopeo(t, "copy", "--dest-cert-dir", certs, "--dest-creds", creds, "oci:"+src+":v1", "docker://"+host+"/team/app:v1")
	skopeo(t, "inspect", "--cert-dir", certs, "--creds", creds, "docker://"+host+"/team/app:v1")

	// crane, with the root as its only trust and its own login.
	rootFile := filepath.Join(certs, "ca.crt")
	craneEnv := []string{"SSL_CERT_FILE=" + rootFile, "DOCKER_CONFIG=" + t.TempDir()}
	if out, err := run(t, time.Minute, craneEnv, crane, "auth", "login", host, "-u", "admin", "-p", adminPassword); err != nil {
		t.Fatalf("crane auth login: %v\n%s", err, out)
	}
	if out, err := run(t, 2*time.Minute, craneEnv, crane, "copy", host+"/team/app:v1", host+"/team/app:crane"); err != nil {
		t.Fatalf("crane copy (pull and push): %v\n%s", err, out)
	}
	out, err := run(t, time.Minute, craneEnv, crane, "digest", host+"/team/app:crane")
	if err != nil || strings.TrimSpace(out) != must(img.Digest()).String() {
		t.Errorf("crane digest = %q, %v; want %s", strings.TrimSpace(out), err, must(img.Digest()))
	}

	// A forced renewal while a 24 MiB blob streams: the transfer finishes, new handshakes get the
	// new certificate.
	layer := must(img.Layers())[0]
	ld := must(layer.Digest())
	req, _ := http.NewRequest("GET", "https://"+host+"/v2/team/app/blobs/"+ld.String(), nil)
	req.SetBasicAuth("admin", adminPassword)
	stream, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, stream.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	before := serverCert(t, s.addr, ca.rootPEM)
	renew, _ := http.NewRequest("POST", "https://"+host+"/api/v2.0/system/tls/renew", nil)
	renew.SetBasicAuth("admin", adminPassword)
	resp, err = client.Do(renew)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("forced renewal = %d", resp.StatusCode)
	}
	waitFor(t, 20*time.Second, "the renewed certificate to be served", func() bool {
		return serverCert(t, s.addr, ca.rootPEM) != before
	})
	if _, err := io.Copy(h, stream.Body); err != nil {
		t.Fatalf("the transfer in progress broke at the renewal: %v", err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != ld.String() {
		t.Errorf("blob streamed across the renewal hashes to %s, want %s", got, ld)
	}
}

func (s *server) createProjectTLS(c *http.Client, base, name string) {
	s.t.Helper()
	req, _ := http.NewRequest("POST", base+"/api/v2.0/projects", strings.NewReader(fmt.Sprintf(`{"project_name":%q}`, name)))
	req.SetBasicAuth("admin", adminPassword)
	resp, err := c.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		s.t.Fatalf("create project over HTTPS = %d", resp.StatusCode)
	}
}

// TestSelfSignedTLS: cove makes its own CA, prints how to trust it, and skopeo and podman work
// with it.
func TestSelfSignedTLS(t *testing.T) {
	requireTool(t, "skopeo")
	podman := requireTool(t, "podman")
	dir := t.TempDir()
	s := startMirror(t, dir, "tls:\n  mode: self-signed\n  http_listen: 127.0.0.1:0\n")
	caFile := filepath.Join(dir, "tls", "self-signed", "ca.pem")
	if !strings.Contains(s.out.String(), caFile) || !strings.Contains(s.out.String(), "/etc/docker/certs.d/") {
		t.Errorf("no trust hint naming %s printed:\n%s", caFile, s.out.String())
	}
	ca := readFile(t, caFile)
	_, port, _ := net.SplitHostPort(s.addr)
	host := "localhost:" + port
	s.createProjectTLS(trustingClient(t, ca), "https://"+host, "team")
	certs := certDir(t, ca)
	img := ociImage(t, 1, 256<<10, nil)
	src := writeLayout(t, img, newOCIIndex(t))
	skopeo(t, "copy", "--dest-cert-dir", certs, "--dest-creds", "admin:"+adminPassword, "oci:"+src+":v1", "docker://"+host+"/team/app:v1")
	d := shortDir(t, "ps")
	args := []string{"--root", filepath.Join(d, "root"), "--runroot", filepath.Join(d, "run"), "--storage-driver", "vfs",
		"pull", "--cert-dir", certs, "--creds", "admin:" + adminPassword, host + "/team/app:v1"}
	if out, err := run(t, 3*time.Minute, nil, podman, args...); err != nil {
		t.Fatalf("podman pull with the printed CA: %v\n%s", err, out)
	}
	// Without the CA, verification fails.
	if out, err := run(t, time.Minute, nil, requireTool(t, "skopeo"), "inspect", "--creds", "admin:"+adminPassword, "docker://"+host+"/team/app:v1"); err == nil {
		t.Errorf("skopeo trusted the self-signed certificate without the CA:\n%s", out)
	}
}

// TestTLSFilesSwap: in files mode, replacing the certificate files changes what cove serves,
// without a restart.
func TestTLSFilesSwap(t *testing.T) {
	dir := t.TempDir()
	caA, certA, keyA := filepath.Join(dir, "a-ca.pem"), filepath.Join(dir, "a.pem"), filepath.Join(dir, "a.key")
	caB, certB, keyB := filepath.Join(dir, "b-ca.pem"), filepath.Join(dir, "b.pem"), filepath.Join(dir, "b.key")
	writeTestCA(t, caA, certA, keyA)
	writeTestCA(t, caB, certB, keyB)
	live, liveKey := filepath.Join(dir, "live.pem"), filepath.Join(dir, "live.key")
	swap := func(cert, key string) {
		for from, to := range map[string]string{cert: live, key: liveKey} {
			if err := os.WriteFile(to+".tmp", readFile(t, from), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(to+".tmp", to); err != nil {
				t.Fatal(err)
			}
		}
	}
	swap(certA, keyA)
	s := startMirror(t, t.TempDir(), fmt.Sprintf("tls:\n  mode: files\n  cert_file: %s\n  key_file: %s\n  http_listen: 127.0.0.1:0\n", live, liveKey))
	get := func(ca string) error {
		c := trustingClient(t, readFile(t, ca))
		resp, err := c.Get("https://" + s.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(caA); err != nil {
		t.Fatalf("first certificate: %v", err)
	}
	swap(certB, keyB)
	waitFor(t, 10*time.Second, "the swapped certificate to be served", func() bool { return get(caB) == nil })
	if err := get(caA); err == nil {
		t.Error("the old certificate is still served after the swap")
	}
}

// TestACMEChallengesValidated: with pebble really validating, cove answers the HTTP-01 challenge
// on its plain listener or TLS-ALPN-01 on its HTTPS listener, and gets its certificate.
func TestACMEChallengesValidated(t *testing.T) {
	httpPort, httpsPort := freePort(t), freePort(t)
	ca := startPebbleValidating(t, httpPort, httpsPort)
	s := startCoveArgs(t, t.TempDir(), []string{"--listen", fmt.Sprintf("127.0.0.1:%d", httpsPort)},
		"COVE_TLS_MODE=acme", "COVE_TLS_DOMAINS=localhost", "COVE_TLS_ACME_CA="+ca.dir, "COVE_TLS_ACME_CA_ROOT="+ca.caFile,
		fmt.Sprintf("COVE_TLS_HTTP_LISTEN=127.0.0.1:%d", httpPort))
	client := trustingClient(t, ca.rootPEM)
	resp, err := client.Get(fmt.Sprintf("https://localhost:%d/healthz", httpsPort))
	if err != nil {
		t.Fatalf("HTTPS with a certificate from a validating CA: %v", err)
	}
	resp.Body.Close()
	if !strings.Contains(s.log(), "certificates managed") {
		t.Error("no certificate was obtained")
	}
}
