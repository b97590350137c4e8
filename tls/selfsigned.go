package tls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// newSelfSigned makes (once) a CA and a server certificate signed by it under Dir/self-signed, for
// the configured domains, localhost and the loopback addresses. Clients trust the CA (CAFile).
// The server certificate is made again when it nears its end or its names change.
func newSelfSigned(cfg Config) (*Setup, error) {
	dir := filepath.Join(cfg.Dir, "self-signed")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caFile, caKeyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	ca, caKey, err := loadPair(caFile, caKeyFile)
	if errors.Is(err, os.ErrNotExist) {
		ca, caKey, err = makeCert(nil, nil, pkix.Name{CommonName: "cove self-signed CA"}, nil, 10*365*24*time.Hour, caFile, caKeyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("self-signed CA: %w", err)
	}
	names := append([]string{"localhost", "127.0.0.1", "::1"}, cfg.Domains...)
	if host, err := os.Hostname(); err == nil {
		names = append(names, host)
	}
	cert, _, err := loadPair(certFile, keyFile)
	if err != nil || time.Until(cert.NotAfter) < 30*24*time.Hour || !covers(cert, names) || cert.CheckSignatureFrom(ca) != nil {
		if _, _, err := makeCert(ca, caKey, pkix.Name{CommonName: names[0]}, names, 365*24*time.Hour, certFile, keyFile); err != nil {
			return nil, fmt.Errorf("self-signed server certificate: %w", err)
		}
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &Setup{TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}}, CAFile: caFile}, nil
}

func covers(cert *x509.Certificate, names []string) bool {
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(cert.DNSNames, n) {
			return false
		}
	}
	return true
}

func loadPair(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	cblock, _ := pem.Decode(cb)
	kblock, _ := pem.Decode(kb)
	if cblock == nil || kblock == nil {
		return nil, nil, fmt.Errorf("%s or %s holds no PEM block", certFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cblock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kblock.Bytes)
	return cert, key, err
}

// makeCert makes a certificate for names signed by parent (a CA when parent is nil) and writes it
// and its key.
func makeCert(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, subject pkix.Name, names []string, life time.Duration, certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(life),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
	}
	if parent == nil {
		tmpl.IsCA, tmpl.KeyUsage = true, tmpl.KeyUsage|x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, n := range names {
			if ip := net.ParseIP(n); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, n)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	if err := writeFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, nil, err
	}
	if err := writeFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// writeFile writes through a temporary file and a rename, so no reader sees half a file.
func writeFile(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
