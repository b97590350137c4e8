package tls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOffAndUnknownModes(t *testing.T) {
	s, err := New(context.Background(), Config{Mode: ModeOff})
	if err != nil || s.Enabled() {
		t.Errorf("off = %v, enabled %v", err, s != nil && s.Enabled())
	}
	if _, err := New(context.Background(), Config{Mode: "bogus"}); !errors.Is(err, ErrModeUnknown) {
		t.Errorf("bogus mode = %v", err)
	}
	if _, err := New(context.Background(), Config{Mode: ModeFiles}); err == nil {
		t.Error("files mode without files succeeded")
	}
	if _, err := New(context.Background(), Config{Mode: ModeACME}); err == nil {
		t.Error("acme mode without domains succeeded")
	}
}

// serveTLS serves a test handler with the setup and returns a client that trusts caFile.
func serveTLS(t *testing.T, s *Setup, caFile string) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(r.Proto)) }))
	srv.TLS = s.TLSConfig
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	return srv, client
}

func TestSelfSigned(t *testing.T) {
	dir := t.TempDir()
	s, err := New(context.Background(), Config{Mode: ModeSelfSigned, Dir: dir, Domains: []string{"registry.example"}})
	if err != nil {
		t.Fatal(err)
	}
	srv, client := serveTLS(t, s, s.CAFile)
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatalf("a client trusting the printed CA: %v", err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.TLS.Version < tls.VersionTLS12 {
		t.Errorf("proto %s, TLS %x: want HTTP/2 over TLS 1.2+", resp.Proto, resp.TLS.Version)
	}
	// A second start keeps the CA.
	ca1, _ := os.ReadFile(s.CAFile)
	s2, err := New(context.Background(), Config{Mode: ModeSelfSigned, Dir: dir, Domains: []string{"registry.example"}})
	if err != nil {
		t.Fatal(err)
	}
	ca2, _ := os.ReadFile(s2.CAFile)
	if string(ca1) != string(ca2) {
		t.Error("the self-signed CA changed at restart")
	}
	// TLS 1.1 is refused.
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}}}
	if _, err := old.Get(srv.URL); err == nil {
		t.Error("a TLS 1.1 client was served")
	}
}

func TestFilesAreReloaded(t *testing.T) {
	dir := t.TempDir()
	// Two self-signed setups stand in for two certificate generations.
	gen := func(sub string) (string, string, string) {
		s, err := New(context.Background(), Config{Mode: ModeSelfSigned, Dir: filepath.Join(dir, sub)})
		if err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(dir, sub, "self-signed")
		return filepath.Join(d, "server.pem"), filepath.Join(d, "server.key"), s.CAFile
	}
	cert1, key1, ca1 := gen("one")
	cert2, key2, ca2 := gen("two")
	live := filepath.Join(dir, "live")
	os.MkdirAll(live, 0o700)
	copyFile := func(from, to string) {
		b, _ := os.ReadFile(from)
		if err := writeFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	certFile, keyFile := filepath.Join(live, "cert.pem"), filepath.Join(live, "key.pem")
	copyFile(cert1, certFile)
	copyFile(key1, keyFile)
	s, err := New(context.Background(), Config{Mode: ModeFiles, CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	srv, client1 := serveTLS(t, s, ca1)
	// By name, so that the handshake carries SNI and reaches GetCertificate (httptest adds a
	// certificate of its own for clients that send none).
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	if _, err := client1.Get(url); err != nil {
		t.Fatalf("first certificate: %v", err)
	}
	copyFile(key2, keyFile)
	copyFile(cert2, certFile)
	_, client2 := serveTLS(t, &Setup{TLSConfig: s.TLSConfig}, ca2)
	deadline := time.Now().Add(10 * time.Second)
	for {
		client2.CloseIdleConnections()
		_, err := client2.Get(url)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new certificate was never served: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHTTPHandlerRedirects(t *testing.T) {
	s := &Setup{}
	rec := httptest.NewRecorder()
	s.HTTPHandler(5443, "").ServeHTTP(rec, httptest.NewRequest("GET", "http://reg.example:8080/v2/x?y=1", nil))
	if rec.Code != http.StatusPermanentRedirect || rec.Header().Get("Location") != "https://reg.example:5443/v2/x?y=1" {
		t.Errorf("redirect = %d %q", rec.Code, rec.Header().Get("Location"))
	}
	rec = httptest.NewRecorder()
	s.HTTPHandler(5443, "https://registry.example.com").ServeHTTP(rec, httptest.NewRequest("GET", "http://x/v2/", nil))
	if rec.Header().Get("Location") != "https://registry.example.com/v2/" {
		t.Errorf("redirect with public_url = %q", rec.Header().Get("Location"))
	}
}
