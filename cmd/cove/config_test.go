package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse(strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":5000" || cfg.Data != "./data" || cfg.Mirror.Default != "docker.io" || cfg.Mirror.MaxSize != 50<<30 ||
		time.Duration(cfg.Mirror.TagTTL) != 5*time.Minute || cfg.Auth.Mode != "db" || cfg.TLS.Mode != "off" {
		t.Errorf("defaults = %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestParseFile(t *testing.T) {
	in := `
listen: 127.0.0.1:6000
data: /var/lib/cove
mirror:
  max_size: 512MiB
  tag_ttl: 30s
  upstreams:
    ghcr.io:
      url: https://ghcr.io
auth:
  admin_password: hunter2
  self_registration: true
tls:
  domains: [a.example, b.example]
`
	cfg, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:6000" || cfg.Mirror.MaxSize != 512<<20 || time.Duration(cfg.Mirror.TagTTL) != 30*time.Second ||
		cfg.Auth.AdminPassword != "hunter2" || !cfg.Auth.SelfRegistration || len(cfg.TLS.Domains) != 2 {
		t.Errorf("parsed = %+v", cfg)
	}
	if cfg.Mirror.Upstreams["ghcr.io"].URL != "https://ghcr.io" || cfg.Mirror.Upstreams["docker.io"].URL == "" || time.Duration(cfg.Mirror.Timeout) != 10*time.Second {
		t.Errorf("upstreams = %v: want ghcr.io added beside docker.io", cfg.Mirror.Upstreams)
	}
}

func TestParseErrorsNameTheKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"lisen: :5000", "lisen: unknown key"},
		{"mirror:\n  tag_tl: 5m", "mirror.tag_tl: unknown key"},
		{"mirror:\n  upstreams:\n    q.io:\n      uri: x", "mirror.upstreams.q.io.uri: unknown key"},
		{"mirror:\n  tag_ttl: soon", "mirror.tag_ttl: want a duration"},
		{"mirror:\n  max_size: lots", "mirror.max_size: want a size"},
		{"auth:\n  self_registration: perhaps", "auth.self_registration: want a bool"},
		{"tls:\n  domains: 5\n", "tls.domains"},
		{"auth: [1, 2]", "auth: want a mapping"},
		{"listen: [", "not valid YAML"},
		{"mirror:\n  upstreams:\n    docker.io:\n      url: http://x\n  upstreams:\n    a.io: {url: http://y}", "mirror.upstreams: key given twice (line 5)"},
		{"mirror:\n  timeout: 0s", "mirror.timeout: must be positive"},
		{"storage:\n  min_free: 0", "storage.min_free: must be above 0"},
		{"storage:\n  min_free: 5 percent", "storage.min_free: want a size"},
		{"listen: 127.0.0.1:5000\nmetrics_listen: 127.0.0.1:5000", "metrics_listen: must differ from listen"},
		{"access_log: some", "access_log: want one of all, errors, sample"},
		{"access_log: sample\naccess_log_sample: -2", "access_log_sample: must not be negative"},
		{"mirror:\n  negative_ttl: -1s", "mirror.negative_ttl: must not be negative"},
		{"mirror:\n  upstreams:\n    docker.io:\n      ratelimit_reserve: ten", "mirror.upstreams.docker.io.ratelimit_reserve: want a count"},
		{"mirror:\n  upstreams:\n    docker.io:\n      timeout: -1s", "mirror.upstreams.docker.io.timeout: must not be negative"},
		{"trusted_proxies: [10.0.0.0/8, proxy.example]", "trusted_proxies: want addresses or networks"},
		{"storage:\n  blobs:\n    kind: s3\n    s3:\n      endpoint: s3.example.com\n      bucket: b", "storage.blobs.s3.endpoint"},
		{"storage:\n  blobs:\n    kind: s3\n    s3:\n      endpoint: http://s3.example.com", "storage.blobs.s3.bucket"},
		{"storage:\n  blobs:\n    kind: nfs", "storage.blobs.kind"},
		{"storage:\n  metadata:\n    kind: postgres\n    postgres:\n      dsn: postgres://x@db/cove\n  blobs:\n    kind: s3\n    s3:\n      endpoint: http://s3.example.com\n      bucket: b", "cluster.advertise"},
		{"storage:\n  metadata:\n    kind: postgres\n    postgres:\n      dsn: postgres://x@db/cove\n  blobs:\n    kind: s3\n    s3:\n      endpoint: http://s3.example.com\n      bucket: b\ncluster:\n  advertise: http://10.0.0.1:5000\n  secret: short", "cluster.secret"},
		{"cluster:\n  advertise: http://10.0.0.1:5000", "cluster: is for fleet nodes only"},
	}
	for _, tt := range tests {
		cfg, err := Parse(strings.NewReader(tt.in))
		if err == nil {
			err = cfg.Validate()
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "nonsense"
	cfg.Auth.Mode = "kerberos"
	cfg.Mirror.Default = "quay.io"
	cfg.PublicURL = "ftp://user:topsecret@x"
	err := cfg.Validate()
	if err != nil && strings.Contains(err.Error(), "topsecret") {
		t.Errorf("Validate() prints a password: %v", err)
	}
	for _, key := range []string{"listen:", "auth.mode:", "mirror.default:", "public_url:"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate() = %v, want a problem naming %s", err, key)
		}
	}
}

func TestApplyEnv(t *testing.T) {
	cfg := DefaultConfig()
	err := ApplyEnv(&cfg, []string{"COVE_LISTEN=127.0.0.1:7000", "COVE_MIRROR_TAG_TTL=1m", "COVE_AUTH_SELF_REGISTRATION=true",
		"COVE_TLS_DOMAINS=a.example, b.example", "COVE_CONFIG=/ignored", "PATH=/bin"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:7000" || time.Duration(cfg.Mirror.TagTTL) != time.Minute || !cfg.Auth.SelfRegistration ||
		strings.Join(cfg.TLS.Domains, ",") != "a.example,b.example" {
		t.Errorf("after env: %+v", cfg)
	}
	// The fleet's secrets come from the environment as the README says.
	err = ApplyEnv(&cfg, []string{"COVE_STORAGE_BLOBS_S3_SECRET_KEY=s3-secret", "COVE_CLUSTER_SECRET=fleet-secret",
		"COVE_STORAGE_METADATA_POSTGRES_DSN=postgres://x@db/cove", "COVE_STORAGE_HOT_TIER_MAX_SIZE=1GiB", "COVE_TRUSTED_PROXIES=10.0.0.0/8,192.0.2.7"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Storage.Blobs.S3.SecretKey != "s3-secret" || cfg.Cluster.Secret != "fleet-secret" || cfg.Storage.Metadata.Postgres.DSN != "postgres://x@db/cove" ||
		cfg.Storage.HotTierMaxSize != 1<<30 || strings.Join(cfg.TrustedProxies, " ") != "10.0.0.0/8 192.0.2.7" {
		t.Errorf("after the fleet's env: %+v", cfg)
	}
	err = ApplyEnv(&cfg, []string{"COVE_LISTN=x", "COVE_MIRROR_MAX_SIZE=huge"})
	for _, want := range []string{"COVE_LISTN: unknown environment variable", "COVE_MIRROR_MAX_SIZE: want a size"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ApplyEnv = %v, want %q", err, want)
		}
	}
}

func TestLoadOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cove.yaml")
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:1\ndata: /from/file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path, []string{"COVE_LISTEN=127.0.0.1:2", "COVE_DATA=/from/env"}, map[string]string{"data": "/from/flag"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:2" || cfg.Data != "/from/flag" {
		t.Errorf("listen %q (want env), data %q (want flag)", cfg.Listen, cfg.Data)
	}
}

func TestRunExitsTwoOnBadConfiguration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cove.yaml")
	if err := os.WriteFile(path, []byte("mirror:\n  tag_ttl: forever\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"serve", "--config", path},
		{"serve", "--listen", "no-port"},
		{"serve", "--no-such-flag"},
		{"frobnicate"},
		{},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, nil, nil, &stdout, &stderr); code != 2 {
			t.Errorf("run(%q) = %d, want 2; stderr: %s", args, code, stderr.String())
		}
	}
	var stderr bytes.Buffer
	run(context.Background(), []string{"serve", "--config", path}, nil, nil, &bytes.Buffer{}, &stderr)
	if !strings.Contains(stderr.String(), "mirror.tag_ttl") {
		t.Errorf("error does not name the key: %s", stderr.String())
	}
}

func TestWarmConfig(t *testing.T) {
	in := `
mirror:
  upstreams:
    ghcr.io: {url: https://ghcr.io}
  warm:
    every: 6h
    platforms: [linux/amd64, linux/arm64/v8]
    images: [alpine:3.20, ghcr.io/o/i:tag]
`
	cfg, err := Parse(strings.NewReader(in))
	if err == nil {
		err = cfg.Validate()
	}
	w := cfg.Mirror.Warm
	if err != nil || time.Duration(w.Every) != 6*time.Hour || strings.Join(w.Platforms, " ") != "linux/amd64 linux/arm64/v8" || strings.Join(w.Images, " ") != "alpine:3.20 ghcr.io/o/i:tag" {
		t.Fatalf("mirror.warm = %+v, %v", w, err)
	}
	cfg = DefaultConfig()
	if err := ApplyEnv(&cfg, []string{"COVE_MIRROR_WARM_EVERY=1h", "COVE_MIRROR_WARM_IMAGES=alpine:3.20, busybox", "COVE_MIRROR_WARM_PLATFORMS=linux/amd64"}); err != nil {
		t.Fatal(err)
	}
	if w := cfg.Mirror.Warm; time.Duration(w.Every) != time.Hour || strings.Join(w.Images, " ") != "alpine:3.20 busybox" || strings.Join(w.Platforms, " ") != "linux/amd64" {
		t.Errorf("mirror.warm from the environment = %+v", w)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
	// Images without a schedule are no error: every 0 turns the schedule off.
	cfg.Mirror.Warm.Every = 0
	if err := cfg.Validate(); err != nil {
		t.Errorf("images with every 0: Validate() = %v", err)
	}

	for _, tt := range []struct{ in, want string }{
		{"mirror:\n  warm:\n    every: 6h", "mirror.warm.images: mirror.warm.every is set: list the images"},
		{"mirror:\n  warm:\n    every: -1h\n    images: [alpine]", "mirror.warm.every: must not be negative"},
		{"mirror:\n  warm:\n    every: 10s\n    images: [alpine]", "mirror.warm.every: must be at least 1m0s"},
		{"mirror:\n  warm:\n    every: often", "mirror.warm.every: want a duration"},
		{"mirror:\n  warm:\n    every: 6h\n    images: [quay.io/o/i:1]", `mirror.warm.images: image "quay.io/o/i:1": no upstream named "quay.io" is configured (mirror.upstreams."quay.io".url)`},
		{"mirror:\n  warm:\n    every: 6h\n    images: [Alpine]", `mirror.warm.images: image "Alpine": invalid repository name`},
		{"mirror:\n  warm:\n    every: 6h\n    images: [alpine]\n    platforms: [amd64]", `mirror.warm.platforms: platform "amd64"`},
		{"mirror:\n  warm:\n    image: alpine", "mirror.warm.image: unknown key"},
	} {
		cfg, err := Parse(strings.NewReader(tt.in))
		if err == nil {
			err = cfg.Validate()
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}

// TestEmailConfig: the email: keys, their defaults (port 25, or 465 with ssl; starttls unless
// ssl), COVE_EMAIL_* from the environment, and problems that name the key (never the password).
func TestEmailConfig(t *testing.T) {
	in := `
email:
  server: smtp.example.org
  username: cove
  password: file-secret
  from: "cove <cove@example.org>"
`
	cfg, err := Parse(strings.NewReader(in))
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.Email.mail(); m.Server != "smtp.example.org" || m.Addr() != "smtp.example.org:25" || !m.StartTLS || m.SSL || m.Password != "file-secret" {
		t.Errorf("email = %+v", m)
	}
	if err := ApplyEnv(&cfg, []string{"COVE_EMAIL_PASSWORD=env-secret", "COVE_EMAIL_SSL=true", "COVE_EMAIL_PORT=2465"}); err != nil {
		t.Fatal(err)
	}
	if m := cfg.Email.mail(); m.Password != "env-secret" || !m.SSL || m.StartTLS || m.Addr() != "smtp.example.org:2465" {
		t.Errorf("email after the environment = %+v: want ssl without starttls", m)
	}
	if err := ApplyEnv(&cfg, []string{"COVE_EMAIL_STARTTLS=false", "COVE_EMAIL_SSL=false"}); err != nil {
		t.Fatal(err)
	}
	if m := cfg.Email.mail(); m.SSL || m.StartTLS {
		t.Errorf("email with starttls false = %+v", m)
	}
	if m := (EmailConfig{Server: "s", SSL: true}).mail(); m.Addr() != "s:465" || m.StartTLS {
		t.Errorf("ssl's defaults = %+v (%s), want port 465 without starttls", m, m.Addr())
	}
	for _, tt := range []struct{ in, want string }{
		{"email:\n  server: smtp.example.org", "email.from: must be set with server"},
		{"email:\n  server: smtp.example.org:587\n  from: c@example.org", "email.server: want the host alone"},
		{"email:\n  server: s\n  from: c@example.org\n  ssl: true\n  starttls: true", "email.starttls: ssl and starttls exclude each other"},
		{"email:\n  server: s\n  from: c@example.org\n  port: 99999", "email.port"},
		{"email:\n  server: s\n  from: not-an-address", "email.from: not an e-mail address"},
		{"email:\n  server: s\n  from: c@example.org\n  password: secret-pw", "email.password: is set without username"},
		{"email:\n  host: s", "email.host: unknown key"},
		{"email:\n  starttls: maybe", "email.starttls: want a"},
	} {
		cfg, err := Parse(strings.NewReader(tt.in))
		if err == nil {
			err = cfg.Validate()
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret-pw") {
			t.Errorf("Parse(%q) prints the password: %v", tt.in, err)
		}
	}
	path := filepath.Join(t.TempDir(), "cove.yaml")
	if err := os.WriteFile(path, []byte("email:\n  server: s\n  from: c@example.org\n  ssl: true\n  starttls: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A cancelled context and a temporary port and directory: a configuration wrongly taken
	// starts and stops at once instead of serving on.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stderr bytes.Buffer
	args := []string{"serve", "--config", path, "--listen", "127.0.0.1:0", "--data", t.TempDir()}
	if code := run(ctx, args, nil, nil, &bytes.Buffer{}, &stderr); code != 2 || !strings.Contains(stderr.String(), "email.starttls") {
		t.Errorf("run with ssl and starttls = %d, %s; want 2 naming email.starttls", code, stderr.String())
	}
}
