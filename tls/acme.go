package tls

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// newACME manages certificates for cfg.Domains from an ACME CA with certmagic's lower-level API:
// its own cache and config, storage under Dir/acme, HTTP-01 answered on the caller's plain-HTTP
// listener and TLS-ALPN-01 on its HTTPS listener (certmagic finds those ports taken and leaves the
// answers to them). Renewal runs in the background; Renew forces one.
func newACME(ctx context.Context, cfg Config) (*Setup, error) {
	if len(cfg.Domains) == 0 {
		return nil, fmt.Errorf("tls acme mode needs tls.domains")
	}
	var magic *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		Logger:           zap.NewNop(),
	})
	magic = certmagic.New(cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: filepath.Join(cfg.Dir, "acme")},
		Logger:  zap.NewNop(),
	})
	issuer := certmagic.ACMEIssuer{
		CA:             cfg.ACMECA,
		Email:          cfg.Email,
		Agreed:         true,
		AltHTTPPort:    cfg.HTTPPort,
		AltTLSALPNPort: cfg.HTTPSPort,
		Logger:         zap.NewNop(),
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
	magic.Issuers = []certmagic.Issuer{acme}
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
		challenge: func(next http.Handler) http.Handler { return acme.HTTPChallengeHandler(next) },
		stop:      cache.Stop,
	}, nil
}
