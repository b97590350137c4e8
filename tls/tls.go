// Package tls gives cove's listeners their certificates: from files (reloaded when they change),
// self-signed (a CA and a server certificate generated under the data directory), or from an ACME
// CA through certmagic's lower-level API (not certmagic.HTTPS, whose fixed timeouts would cut
// large blobs). It starts no servers: the caller serves HTTPS with TLSConfig, and on its plain
// HTTP listener serves HTTPHandler, which answers ACME HTTP-01 challenges and redirects everything
// else to HTTPS.
//
// Nothing fails silently: certmagic's logs (renewals, failed ones included) and failed reloads of
// certificate files go to Config.Logger, and Certificates tells how long each served certificate
// has left, for monitoring. cove never prompts on the terminal, even for an ACME email.
package tls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Mode is how the listener is secured.
type Mode string

// The modes of the tls.mode key.
const (
	ModeOff        Mode = "off"
	ModeFiles      Mode = "files"
	ModeSelfSigned Mode = "self-signed"
	ModeACME       Mode = "acme"
)

// ErrModeUnknown means the mode is not one of the four.
var ErrModeUnknown = errors.New("unknown TLS mode")

// Config configures the certificates.
type Config struct {
	Mode Mode
	// Dir keeps what cove generates or obtains (data/tls): the self-signed CA, ACME account and
	// certificates.
	Dir string
	// CertFile and KeyFile are PEM files for ModeFiles.
	CertFile, KeyFile string
	// Domains are the names the certificate is for (ModeACME; ModeSelfSigned adds localhost and the
	// loopback addresses).
	Domains []string
	// Email is the ACME account's contact.
	Email string
	// ACMECA is the ACME directory URL (Let's Encrypt when empty); ACMECARoot is a PEM bundle to
	// trust for reaching it (a private CA such as step-ca or pebble).
	ACMECA, ACMECARoot string
	// HTTPSPort and HTTPPort are the ports the caller serves on: challenges are answered there.
	HTTPSPort, HTTPPort int
	// Logger receives the package's lines and certmagic's, with component=tls (nil: discarded).
	Logger *slog.Logger
}

// Setup is what the caller serves with.
type Setup struct {
	// TLSConfig is for the HTTPS listener: TLS 1.2 or later, HTTP/2 and HTTP/1.1 (and ACME's
	// TLS-ALPN-01). Nil when TLS is off.
	TLSConfig *tls.Config
	// CAFile is the self-signed CA clients must trust (ModeSelfSigned).
	CAFile string
	// renew, when set, forces an ACME renewal now.
	renew func(ctx context.Context) error
	// start, when set, obtains the certificates (ACME) once the caller serves.
	start func(ctx context.Context) error
	// challenge wraps the plain-HTTP handler with the ACME HTTP-01 answers.
	challenge func(http.Handler) http.Handler
	// certificates lists the certificates served now.
	certificates func() []Certificate
	stop         func()
}

// Certificate is a certificate in service, for monitoring its expiry.
type Certificate struct {
	// Name is the ACME domain, or for files and self-signed the certificate's first DNS name
	// (its subject's common name when it has none).
	Name     string
	NotAfter time.Time
}

// New prepares the certificates of cfg. With ModeACME the caller serves first (so that challenges
// are answered), then calls Start, which obtains them; renewal then runs in the background until
// Stop.
func New(ctx context.Context, cfg Config) (*Setup, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = cfg.Logger.With("component", "tls")
	var (
		s   *Setup
		err error
	)
	switch cfg.Mode {
	case ModeOff, "":
		return &Setup{}, nil
	case ModeFiles:
		s, err = newFiles(cfg)
	case ModeSelfSigned:
		s, err = newSelfSigned(cfg)
	case ModeACME:
		s, err = newACME(ctx, cfg)
	default:
		return nil, fmt.Errorf("%w: %q", ErrModeUnknown, cfg.Mode)
	}
	if err != nil {
		return nil, err
	}
	s.TLSConfig.MinVersion = tls.VersionTLS12
	s.TLSConfig.NextProtos = append([]string{"h2", "http/1.1"}, s.TLSConfig.NextProtos...)
	return s, nil
}

// Start obtains what must be obtained (ACME certificates); the caller serves before it and is
// ready after it.
func (s *Setup) Start(ctx context.Context) error {
	if s.start == nil {
		return nil
	}
	return s.start(ctx)
}

// Enabled reports whether the setup serves TLS.
func (s *Setup) Enabled() bool { return s.TLSConfig != nil }

// Renew forces the renewal of ACME certificates now; other modes have nothing to renew.
func (s *Setup) Renew(ctx context.Context) error {
	if s.renew == nil {
		return errors.New("no ACME certificate to renew")
	}
	return s.renew(ctx)
}

// Certificates lists the certificates served now, one per name: with files, the certificate last
// loaded (a reload happens at a handshake after the files change); with ACME, one per domain
// that has one. It is safe for concurrent use.
func (s *Setup) Certificates() []Certificate {
	if s.certificates == nil {
		return nil
	}
	return s.certificates()
}

// certificateOf describes a loaded certificate.
func certificateOf(c *tls.Certificate) (Certificate, error) {
	leaf := c.Leaf
	if leaf == nil {
		if len(c.Certificate) == 0 {
			return Certificate{}, errors.New("no certificate in the chain")
		}
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return Certificate{}, err
		}
	}
	name := leaf.Subject.CommonName
	if len(leaf.DNSNames) > 0 {
		name = leaf.DNSNames[0]
	}
	return Certificate{Name: name, NotAfter: leaf.NotAfter}, nil
}

// Stop ends background renewal.
func (s *Setup) Stop() {
	if s.stop != nil {
		s.stop()
	}
}

// HTTPHandler is the handler of the plain-HTTP listener: ACME HTTP-01 challenges are answered,
// every other request is redirected to the same path on HTTPS (at httpsPort, or publicURL's base
// when given).
func (s *Setup) HTTPHandler(httpsPort int, publicURL string) http.Handler {
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := publicURL
		if target == "" {
			host := r.Host
			if h, _, err := net.SplitHostPort(r.Host); err == nil {
				host = h
			}
			target = "https://" + net.JoinHostPort(host, strconv.Itoa(httpsPort))
		}
		http.Redirect(w, r, target+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
	if s.challenge != nil {
		return s.challenge(redirect)
	}
	return redirect
}
