package main

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"cove/auth"
	"cove/cache"
	"cove/internal/blobstore"
	"cove/internal/telemetry"
	"cove/mirror"

	"github.com/jackc/pgx/v5"
)

// Validate: what a configuration must be, each problem named by its key.

// Validate checks values that decode but make no sense, reporting every problem at once.
func (c *Config) Validate() error {
	var p []string
	bad := func(key, format string, args ...any) { p = append(p, key+": "+fmt.Sprintf(format, args...)) }
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "want host:port such as :5000, got %q", c.Listen)
	}
	if c.Data == "" {
		bad("data", "must not be empty")
	}
	if c.PublicURL != "" && !httpURL(c.PublicURL) {
		bad("public_url", "want an absolute http(s) URL, got %q", redact(c.PublicURL))
	}
	if _, ok := c.Mirror.Upstreams[c.Mirror.Default]; !ok {
		bad("mirror.default", "%q is not one of mirror.upstreams", c.Mirror.Default)
	}
	if c.Scrub.Interval < 0 {
		bad("scrub.interval", "must not be negative (0: no scheduled scrub)")
	}
	if c.Mirror.MaxSize <= 0 {
		bad("mirror.max_size", "must be positive")
	}
	if c.Mirror.TagTTL < 0 {
		bad("mirror.tag_ttl", "must not be negative")
	}
	if c.Mirror.Timeout <= 0 {
		bad("mirror.timeout", "must be positive")
	}
	if c.Mirror.NegativeTTL < 0 {
		bad("mirror.negative_ttl", "must not be negative (0: never remembered)")
	}
	if c.Mirror.MaxBlobSize < 0 {
		bad("mirror.max_blob_size", "must not be negative")
	}
	if _, _, err := c.Storage.minFree(); err != nil {
		bad("storage.min_free", "%v", err)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			bad("metrics_listen", "want host:port such as 127.0.0.1:9090, got %q", c.MetricsListen)
		} else if c.MetricsListen == c.Listen {
			bad("metrics_listen", "must differ from listen (%s); leave it empty to serve /metrics on the registry's port", c.Listen)
		}
	}
	if _, err := telemetry.ParseProxies(c.TrustedProxies); err != nil {
		bad("trusted_proxies", "want addresses or networks such as 10.0.0.0/8: %v", err)
	}
	c.validateWarm(bad)
	for name, u := range c.Mirror.Upstreams {
		if !httpURL(u.URL) {
			bad("mirror.upstreams."+name+".url", "want an absolute http(s) URL, got %q", redact(u.URL))
		}
		if u.KeepDays < 0 {
			bad("mirror.upstreams."+name+".keep_days", "must not be negative (0: no limit but mirror.max_size)")
		}
		if u.Timeout < 0 {
			bad("mirror.upstreams."+name+".timeout", "must not be negative")
		}
		if _, err := mirror.ParseReserve(u.RateLimitReserve); err != nil {
			bad("mirror.upstreams."+name+".ratelimit_reserve", "%v", err)
		}
	}
	oneOf := func(key, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		bad(key, "want one of %s, got %q", strings.Join(allowed, ", "), v)
	}
	oneOf("access_log", c.AccessLog, "all", "errors", "sample")
	if c.AccessLogSample < 0 {
		bad("access_log_sample", "must not be negative (0: the default, one in 100)")
	}
	oneOf("auth.mode", c.Auth.Mode, "db", "ldap")
	oneOf("auth.anonymous_pull", c.Auth.AnonymousPull, "mirror", "none")
	oneOf("auth.project_creation", c.Auth.ProjectCreation, "adminonly", "everyone")
	if c.Auth.Mode == "ldap" && c.Auth.SelfRegistration {
		bad("auth.self_registration", "must be false with auth.mode ldap: local accounts could take directory users' names")
	}
	oneOf("tls.mode", c.TLS.Mode, "off", "files", "self-signed", "acme")
	oneOf("storage.metadata.kind", c.Storage.Metadata.Kind, "badger", "postgres")
	oneOf("storage.blobs.kind", c.Storage.Blobs.Kind, "filesystem", "s3")
	if c.fleet() {
		if !httpURL(c.Cluster.Advertise) {
			bad("cluster.advertise", "a fleet node (metadata in postgres, blobs in s3) needs the URL the other nodes reach it at, such as http://10.0.0.5:5000; got %q", c.Cluster.Advertise)
		}
		if len(c.Cluster.Secret) < 32 {
			bad("cluster.secret", "a fleet node needs the fleet's shared secret, 32 bytes or more (e.g. from openssl rand -hex 32); got %d bytes", len(c.Cluster.Secret))
		}
	} else if c.Cluster.Advertise != "" || c.Cluster.Secret != "" {
		bad("cluster", "is for fleet nodes only: set storage.metadata.kind postgres and storage.blobs.kind s3, or leave cluster out")
	}
	if c.Storage.Blobs.Kind == "s3" {
		if _, err := blobstore.NewS3(c.Storage.Blobs.S3.blobstore()); err != nil {
			bad("storage.blobs.s3", "%v", err)
		}
		if c.Storage.HotTierMaxSize < 0 {
			bad("storage.hot_tier_max_size", "must not be negative")
		}
	}
	if c.Storage.Metadata.Kind == "postgres" {
		if c.Storage.Metadata.Postgres.DSN == "" {
			bad("storage.metadata.postgres.dsn", "must be set with storage.metadata.kind postgres")
		} else if _, err := pgx.ParseConfig(c.Storage.Metadata.Postgres.DSN); err != nil {
			bad("storage.metadata.postgres.dsn", "not a PostgreSQL connection string or URL (the value is not shown: it may hold a password)")
		}
	}
	if c.Auth.TokenTTL <= 0 {
		bad("auth.token_ttl", "must be positive")
	}
	if c.Auth.Mode == "ldap" {
		if !strings.HasPrefix(c.Auth.LDAP.URL, "ldap://") && !strings.HasPrefix(c.Auth.LDAP.URL, "ldaps://") {
			bad("auth.ldap.url", "want ldap:// or ldaps://, got %q", redact(c.Auth.LDAP.URL))
		}
		if c.Auth.LDAP.BaseDN == "" {
			bad("auth.ldap.base_dn", "must not be empty with auth.mode ldap")
		}
		if strings.Count(c.Auth.LDAP.UserFilter, "%s") != 1 {
			bad("auth.ldap.user_filter", "want exactly one %%s, got %q", c.Auth.LDAP.UserFilter)
		}
		if strings.Count(c.Auth.LDAP.GroupFilter, "%s") != 1 {
			bad("auth.ldap.group_filter", "want exactly one %%s, got %q", c.Auth.LDAP.GroupFilter)
		}
	}
	if c.Auth.AdminPassword != "" {
		if err := auth.CheckPasswordPolicy(c.Auth.AdminPassword); err != nil {
			// The password itself is never printed.
			bad("auth.admin_password", "breaks the password policy: at least 8 characters and at most %d bytes, with an upper-case letter, a lower-case letter and a digit", auth.MaxPasswordBytes)
		}
	}
	if c.Auth.AuditRetention <= 0 {
		bad("auth.audit_retention", "must be positive")
	}
	for _, pr := range c.Email.mail().Validate() {
		bad("email."+pr.Key, "%s", pr.Msg)
	}
	switch c.TLS.Mode {
	case "files":
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			bad("tls.cert_file", "tls.mode files needs tls.cert_file and tls.key_file")
		}
	case "acme":
		if len(c.TLS.Domains) == 0 {
			bad("tls.domains", "tls.mode acme needs at least one domain")
		}
		if c.TLS.ACMECA != "" && !httpURL(c.TLS.ACMECA) {
			bad("tls.acme_ca", "want the https URL of an ACME directory, got %q", redact(c.TLS.ACMECA))
		}
	}
	if c.TLS.Mode != "off" {
		if _, _, err := net.SplitHostPort(c.TLS.HTTPListen); err != nil {
			bad("tls.http_listen", "want host:port such as :80, got %q", c.TLS.HTTPListen)
		}
	}
	if p != nil {
		return &ConfigError{Problems: p}
	}
	return nil
}

// validateWarm checks mirror.warm: a schedule needs images; every image must name a configured
// upstream (or the default one) and every platform be os/architecture[/variant].
func (c *Config) validateWarm(bad func(key, format string, args ...any)) {
	w := c.Mirror.Warm
	switch {
	case w.Every < 0:
		bad("mirror.warm.every", "must not be negative (0: no scheduled warm)")
	case w.Every > 0 && time.Duration(w.Every) < minWarmEvery:
		bad("mirror.warm.every", "must be at least %s (each warm asks the upstreams for every tag)", minWarmEvery)
	case w.Every > 0 && len(w.Images) == 0:
		bad("mirror.warm.images", "mirror.warm.every is set: list the images to keep warm, such as [alpine:3.20]")
	}
	if len(w.Images) > mirror.MaxWarmImages {
		bad("mirror.warm.images", "%d images; at most %d", len(w.Images), mirror.MaxWarmImages)
	}
	var names []string
	for name := range c.Mirror.Upstreams {
		names = append(names, name)
	}
	for _, im := range w.Images {
		if _, err := mirror.ResolveImage(im, names, c.Mirror.Default); err != nil {
			bad("mirror.warm.images", "%s", strings.TrimPrefix(err.Error(), cache.ErrWarmInvalid.Error()+": "))
		}
	}
	for _, p := range w.Platforms {
		if _, err := mirror.ParsePlatform(p); err != nil {
			bad("mirror.warm.platforms", "%s", strings.TrimPrefix(err.Error(), cache.ErrWarmInvalid.Error()+": "))
		}
	}
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// redact hides a password in a URL before it is printed.
func redact(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return "(unparseable URL)"
}

// loadConfig builds the configuration: defaults, the file at path (when not empty), the
// environment, then the flags that were set.
