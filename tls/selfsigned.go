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
	if err := mkdirAll(dir, (*os.File).Sync); err != nil {
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
	info, err := certificateOf(&pair)
	if err != nil {
		return nil, fmt.Errorf("self-signed server certificate: %w", err)
	}
	return &Setup{
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{pair}},
		CAFile:       caFile,
		certificates: func() []Certificate { return []Certificate{info} },
	}, nil
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

// syncFunc flushes a file or a directory to stable storage: (*os.File).Sync, or in tests a fake
// that records the order of the calls or fails.
type syncFunc func(*os.File) error

// writeFile writes b to path durably, so that a crash leaves the old file or the new one, whole:
// a CA that vanished or came back empty after a power cut would be made anew, and every client
// trusting the old one would refuse cove.
func writeFile(path string, b []byte, mode os.FileMode) error {
	return writeDurably(path, b, mode, (*os.File).Sync)
}

// writeDurably writes b to a temporary file beside path, fsyncs it, renames it over path, then
// fsyncs the directory so that the rename itself survives a crash. On error the temporary file is
// removed and path is left as it was (unless the rename was done and only the directory's fsync
// failed).
func writeDurably(path string, b []byte, mode os.FileMode, sync syncFunc) (err error) {
	tmp := path + ".tmp"
	// A temporary file left by a crash goes, so that the new one is created with mode.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := sync(f); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path), sync)
}

// mkdirAll creates dir and its missing parents, fsyncing the parent of each directory it creates:
// otherwise a crash could lose the directory, and the files durably written in it with it.
func mkdirAll(dir string, sync syncFunc) error {
	if info, err := os.Stat(dir); err == nil {
		if !info.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAll(parent, sync); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return err
	}
	return syncDir(parent, sync)
}

func syncDir(dir string, sync syncFunc) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := sync(d); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
