package tls

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// newACME manages certificates for cfg.Domains from an ACME CA with certmagic's lower-level API:
// its own cache and config, storage under Dir/acme, HTTP-01 answered on the caller's plain-HTTP
// listener and TLS-ALPN-01 on its HTTPS listener (certmagic finds those ports taken and leaves the
// answers to them). Renewal runs in the background; Renew forces one.
func newACME(ctx context.Context, cfg Config) (*Setup, error) {
	if len(cfg.Domains) == 0 {
		return nil, fmt.Errorf("tls acme mode needs tls.domains")
	}
	// certmagic logs renewals, failed ones included, only through these loggers.
	log := zapLogger(cfg.Logger.Handler())
	var magic *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		Logger:           log,
	})
	magic = certmagic.New(cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: filepath.Join(cfg.Dir, "acme")},
		Logger:  log,
	})
	issuer := certmagic.ACMEIssuer{
		CA:             cfg.ACMECA,
		Email:          cfg.Email,
		Agreed:         true,
		AltHTTPPort:    cfg.HTTPPort,
		AltTLSALPNPort: cfg.HTTPSPort,
		Logger:         log,
	}
	if issuer.CA == "" {
		issuer.CA = certmagic.LetsEncryptProductionCA
	}
	if cfg.ACMECARoot != "" {
		pem, err := os.ReadFile(cfg.ACMECARoot)
		if err != nil {
			return nil, fmt.Errorf("tls.acme_ca_root: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.acme_ca_root %s: no certificate in it", cfg.ACMECARoot)
		}
		issuer.TrustedRoots = pool
	}
	acme := certmagic.NewACMEIssuer(magic, issuer)
	magic.Issuers = []certmagic.Issuer{issuerOf(acme)}
	if cfg.Email == "" {
		cfg.Logger.Warn("tls.email is not set: the ACME account has no contact, so the CA cannot warn of certificate problems", "ca", issuer.CA)
	}
	return &Setup{
		TLSConfig: magic.TLSConfig(),
		// Obtaining happens once the caller serves: the challenges are answered by its listeners.
		start: func(ctx context.Context) error {
			if err := magic.ManageSync(ctx, cfg.Domains); err != nil {
				return fmt.Errorf("obtain certificates from %s: %w", issuer.CA, err)
			}
			cfg.Logger.Info("certificates managed", "domains", cfg.Domains, "ca", issuer.CA)
			return nil
		},
		// A forced renewal: obtain anew, put the new certificate in the cache, then drop the old
		// one. Connections already open keep theirs; new handshakes get the new one.
		renew: func(ctx context.Context) error {
			for _, d := range cfg.Domains {
				var old []string
				for _, c := range cache.AllMatchingCertificates(d) {
					old = append(old, c.Hash())
				}
				if err := magic.RenewCertSync(ctx, d, true); err != nil {
					return err
				}
				fresh, err := magic.CacheManagedCertificate(ctx, d)
				if err != nil {
					return err
				}
				old = slices.DeleteFunc(old, func(h string) bool { return h == fresh.Hash() })
				cache.Remove(old)
			}
			return nil
		},
		challenge:    func(next http.Handler) http.Handler { return acme.HTTPChallengeHandler(next) },
		certificates: func() []Certificate { return cachedCertificates(cache, cfg.Domains) },
		stop:         cache.Stop,
	}, nil
}

// issuerOf is the issuer cove gives certmagic. With no email configured certmagic asks for one
// on stdin ("Email address:") whenever it obtains or renews in the foreground (ManageSync at
// start, RenewCertSync from the API), and it has no setting to turn that off: the wrapper makes
// every pre-check non-interactive, so cove never prompts and the account simply has no contact.
// With an email nothing can prompt, and the issuer is left as it is: certmagic recognises a bare
// *ACMEIssuer to send ARI's "replaces" hint on renewal (RFC 9773), which the wrapper would hide.
func issuerOf(acme *certmagic.ACMEIssuer) certmagic.Issuer {
	if acme.Email != "" {
		return acme
	}
	return quietIssuer{acme}
}

// quietIssuer is an ACMEIssuer that never prompts.
type quietIssuer struct{ *certmagic.ACMEIssuer }

// PreCheck checks names as the ACMEIssuer does, never interactively.
func (q quietIssuer) PreCheck(ctx context.Context, names []string, _ bool) error {
	return q.ACMEIssuer.PreCheck(ctx, names, false)
}

// cachedCertificates lists, for each domain, the certificate the cache serves for it; when more
// than one could be served (during a renewal), the one that expires first. A domain without a
// certificate yet is left out.
func cachedCertificates(cache *certmagic.Cache, domains []string) []Certificate {
	var out []Certificate
	for _, d := range domains {
		var first time.Time
		// The cache keys names as certmagic normalises them.
		for _, c := range cache.AllMatchingCertificates(strings.ToLower(strings.TrimSpace(d))) {
			if c.Leaf != nil && (first.IsZero() || c.Leaf.NotAfter.Before(first)) {
				first = c.Leaf.NotAfter
			}
		}
		if !first.IsZero() {
			out = append(out, Certificate{Name: d, NotAfter: first})
		}
	}
	return out
}

var (
	_ certmagic.Issuer     = quietIssuer{}
	_ certmagic.PreChecker = quietIssuer{}
	_ certmagic.Revoker    = quietIssuer{}

	_ certmagic.RenewalInfoGetter = quietIssuer{}
)
