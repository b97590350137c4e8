package tls

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// fileCert serves a certificate from files and reloads it when either file changes. The check is
// made at a handshake, at most once per second, so no goroutine watches the files; a pair that
// fails to load (half written, say) leaves the previous certificate in service.
type fileCert struct {
	certFile, keyFile string

	mu sync.Mutex
	// cert, stamp and checked are guarded by mu.
	cert    *tls.Certificate
	stamp   string // the files' sizes and modification times when loaded
	checked time.Time
}

func newFiles(cfg Config) (*Setup, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, fmt.Errorf("tls files mode needs cert_file and key_file")
	}
	fc := &fileCert{certFile: cfg.CertFile, keyFile: cfg.KeyFile}
	if err := fc.load(); err != nil {
		return nil, err
	}
	return &Setup{TLSConfig: &tls.Config{GetCertificate: fc.get}}, nil
}

func (fc *fileCert) stampNow() string {
	var st string
	for _, f := range []string{fc.certFile, fc.keyFile} {
		if info, err := os.Stat(f); err == nil {
			st += fmt.Sprintf("%d/%d;", info.Size(), info.ModTime().UnixNano())
		}
	}
	return st
}

func (fc *fileCert) load() error {
	stamp := fc.stampNow()
	cert, err := tls.LoadX509KeyPair(fc.certFile, fc.keyFile)
	if err != nil {
		return fmt.Errorf("load certificate files: %w", err)
	}
	fc.mu.Lock()
	fc.cert, fc.stamp, fc.checked = &cert, stamp, time.Now()
	fc.mu.Unlock()
	return nil
}

func (fc *fileCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	fc.mu.Lock()
	due := time.Since(fc.checked) >= time.Second
	if due {
		fc.checked = time.Now()
	}
	stamp, cert := fc.stamp, fc.cert
	fc.mu.Unlock()
	if due && fc.stampNow() != stamp {
		if err := fc.load(); err == nil {
			fc.mu.Lock()
			cert = fc.cert
			fc.mu.Unlock()
		}
	}
	return cert, nil
}
