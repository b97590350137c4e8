package tls

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// fileCert serves a certificate from files and reloads it when either file changes. The check is
// made at a handshake, at most once per second, so no goroutine watches the files; a pair that
// fails to load (half written, say) leaves the previous certificate in service, and the failure
// is logged once per change of the files.
type fileCert struct {
	certFile, keyFile string
	log               *slog.Logger

	mu sync.Mutex
	// cert, info, stamp, failed and checked are guarded by mu.
	cert    *tls.Certificate
	info    Certificate
	stamp   string // the files' sizes and modification times when loaded
	failed  string // the stamp of the files that last failed to load, once logged
	checked time.Time
}

func newFiles(cfg Config) (*Setup, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, fmt.Errorf("tls files mode needs cert_file and key_file")
	}
	fc := &fileCert{certFile: cfg.CertFile, keyFile: cfg.KeyFile, log: cfg.Logger}
	if err := fc.load(); err != nil {
		return nil, err
	}
	return &Setup{TLSConfig: &tls.Config{GetCertificate: fc.get}, certificates: fc.certificates}, nil
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
		return fmt.Errorf("load certificate files %s and %s: %w", fc.certFile, fc.keyFile, err)
	}
	info, err := certificateOf(&cert)
	if err != nil {
		return fmt.Errorf("load certificate file %s: %w", fc.certFile, err)
	}
	fc.mu.Lock()
	fc.cert, fc.info, fc.stamp, fc.failed, fc.checked = &cert, info, stamp, "", time.Now()
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
		fc.reload()
		fc.mu.Lock()
		cert = fc.cert
		fc.mu.Unlock()
	}
	return cert, nil
}

// reload loads the changed files. Failing, it logs (once for the same files) and keeps the
// previous certificate: new handshakes get it until the files are fixed, and it may expire.
func (fc *fileCert) reload() {
	err := fc.load()
	if err == nil {
		fc.mu.Lock()
		info := fc.info
		fc.mu.Unlock()
		fc.log.Info("certificate files reloaded", "cert_file", fc.certFile, "name", info.Name, "not_after", info.NotAfter)
		return
	}
	stamp := fc.stampNow()
	fc.mu.Lock()
	logged := fc.failed == stamp
	fc.failed = stamp
	info := fc.info
	fc.mu.Unlock()
	if !logged {
		fc.log.Error("reload certificate files failed; the previous certificate stays in service",
			"cert_file", fc.certFile, "key_file", fc.keyFile, "err", err, "not_after", info.NotAfter)
	}
}

// certificates lists the certificate last loaded.
func (fc *fileCert) certificates() []Certificate {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return []Certificate{fc.info}
}
