package tls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

func TestCertificatesReportNotAfter(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, err := makeCert(nil, nil, pkixName("test CA"), nil, 48*time.Hour, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	leaf, _, err := makeCert(ca, caKey, pkixName("cn.example"), []string{"registry.example", "127.0.0.1"}, 50*time.Hour, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	selfDir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
		want func() []Certificate
	}{
		{"off", Config{Mode: ModeOff}, func() []Certificate { return nil }},
		{"files", Config{Mode: ModeFiles, CertFile: certFile, KeyFile: keyFile},
			func() []Certificate { return []Certificate{{Name: "registry.example", NotAfter: leaf.NotAfter}} }},
		{"self-signed", Config{Mode: ModeSelfSigned, Dir: selfDir, Domains: []string{"registry.example"}},
			func() []Certificate {
				c := readCert(t, filepath.Join(selfDir, "self-signed", "server.pem"))
				return []Certificate{{Name: "localhost", NotAfter: c.NotAfter}}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(context.Background(), tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := s.Certificates(), tc.want(); !slices.Equal(got, want) {
				t.Errorf("Certificates() = %v, want %v", got, want)
			}
		})
	}
}

// TestACMECertificatesPerDomain: one entry per domain that has a certificate in the cache, the
// one expiring first when two could be served; none for a domain without one.
func TestACMECertificatesPerDomain(t *testing.T) {
	dir := t.TempDir()
	var magic *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		Logger:           zap.NewNop(),
	})
	t.Cleanup(cache.Stop)
	magic = certmagic.New(cache, certmagic.Config{Storage: &certmagic.FileStorage{Path: dir}, Logger: zap.NewNop()})
	ca, caKey, err := makeCert(nil, nil, pkixName("test CA"), nil, 48*time.Hour, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	var leaves []*x509.Certificate
	for i, life := range []time.Duration{90 * time.Hour, 60 * time.Hour} {
		certFile, keyFile := filepath.Join(dir, "c"+string(rune('0'+i))), filepath.Join(dir, "k"+string(rune('0'+i)))
		leaf, _, err := makeCert(ca, caKey, pkixName("registry.example"), []string{"registry.example"}, life, certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := magic.CacheUnmanagedTLSCertificate(context.Background(), pair, nil); err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, leaf)
	}
	// Names are matched as certmagic normalises them, and reported as configured.
	got := cachedCertificates(cache, []string{"Registry.Example", "other.example"})
	want := []Certificate{{Name: "Registry.Example", NotAfter: leaves[1].NotAfter}}
	if !slices.Equal(got, want) {
		t.Errorf("cachedCertificates = %v, want %v", got, want)
	}
}
