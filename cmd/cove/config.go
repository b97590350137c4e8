package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"cove/internal/blobstore"
	"cove/internal/mail"
)

// Config is cove's whole configuration: docs/DESIGN.md's contract. Every key is optional; defaults come
// from DefaultConfig. Load order: defaults → YAML file (strict) → COVE_* environment → flags.
type Config struct {
	Listen    string `yaml:"listen"`     // address to serve on; default ":5000"
	Data      string `yaml:"data"`       // data directory; default "./data"
	PublicURL string `yaml:"public_url"` // how clients reach cove; used in the token realm
	// MetricsListen serves /metrics on this address instead of the registry port (where it is
	// then not served): e.g. 127.0.0.1:9090 for a Prometheus on the host.
	MetricsListen string `yaml:"metrics_listen"`
	// TrustedProxies are the reverse proxies (addresses or CIDR networks) whose X-Forwarded-For
	// is believed: requests through them count as the client's address for failed-login limits,
	// the audit log and the access log. Default none: every peer is the client.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// AccessLog says which requests get an access-log line: all (default), errors (4xx, 5xx
	// and cut answers), or sample (those, and one in AccessLogSample of the others).
	AccessLog       string        `yaml:"access_log"`
	AccessLogSample int           `yaml:"access_log_sample"` // default 100
	Mirror          MirrorConfig  `yaml:"mirror"`
	Storage         StorageConfig `yaml:"storage"`
	Auth            AuthConfig    `yaml:"auth"`
	TLS             TLSConfig     `yaml:"tls"`
	// Cluster makes the node one of a fleet (storage.metadata.kind postgres with
	// storage.blobs.kind s3): see README, "Run a fleet".
	Cluster ClusterConfig `yaml:"cluster"`
	// Webhooks configures the deliveries of webhook policies.
	Webhooks WebhooksConfig `yaml:"webhooks"`
	// Email is the SMTP server cove sends mail through (password reset links); keys set through
	// PUT /api/v2.0/configurations win over these, key by key.
	Email EmailConfig `yaml:"email"`
	// Scrub checks every stored blob's bytes, manifest and tag in the background (cove scrub
	// does it offline): see README, "Scrub".
	Scrub ScrubConfig `yaml:"scrub"`
}

// ScrubConfig is the server's scheduled scrub.
type ScrubConfig struct {
	// Interval is the time between two scrubs (once per fleet); default 0: no scheduled scrub.
	Interval Duration `yaml:"interval"`
	// Repair makes the scheduled scrub drop the records of damaged pushed blobs and the tags
	// that name no manifest, as cove scrub --repair; default false. Damaged bytes are never
	// served either way.
	Repair bool `yaml:"repair"`
	// Rate bounds the bytes a scrub reads per second, so that clients keep the disk; default
	// 0: no bound.
	Rate ByteSize `yaml:"rate"`
}

// WebhooksConfig configures webhook deliveries.
type WebhooksConfig struct {
	// AllowPrivateTargets lets policies send to loopback and private addresses (a receiver on
	// the same network); link-local ones (cloud metadata services) are refused whatever it says.
	AllowPrivateTargets bool `yaml:"allow_private_targets"`
}

// EmailConfig is the SMTP server of cove's mail. Without a server, cove sends none.
type EmailConfig struct {
	Server   string `yaml:"server"`   // host name or address, without port; default none
	Port     int    `yaml:"port"`     // default 25, or 465 with ssl
	Username string `yaml:"username"` // default none: no authentication
	Password string `yaml:"password"` // also COVE_EMAIL_PASSWORD
	From     string `yaml:"from"`     // the sender, e.g. "cove <cove@example.org>"; needed with server
	SSL      bool   `yaml:"ssl"`      // TLS from the first byte (SMTPS, port 465); default false
	// StartTLS upgrades the connection with STARTTLS and refuses to send when the server does
	// not offer it; default true, unless ssl is set (the two exclude each other).
	StartTLS           *bool `yaml:"starttls"`
	InsecureSkipVerify bool  `yaml:"insecure_skip_verify"` // accept any server certificate; default false
}

// mail is the configuration of package mail.
func (e EmailConfig) mail() mail.Config {
	starttls := !e.SSL
	if e.StartTLS != nil {
		starttls = *e.StartTLS
	}
	return mail.Config{Server: e.Server, Port: e.Port, Username: e.Username, Password: e.Password, From: e.From,
		SSL: e.SSL, StartTLS: starttls, InsecureSkipVerify: e.InsecureSkipVerify}
}

// ClusterConfig is a fleet node's identity among the others.
type ClusterConfig struct {
	NodeName  string `yaml:"node_name"` // default: the host name
	Advertise string `yaml:"advertise"` // the URL the other nodes reach this node at, e.g. http://10.0.0.5:5000
	Secret    string `yaml:"secret"`    // the same on every node, 32 bytes or more: authenticates node-to-node requests
}

// fleet says whether the configuration makes a fleet node.
func (c Config) fleet() bool {
	return c.Storage.Metadata.Kind == "postgres" && c.Storage.Blobs.Kind == "s3"
}

// MirrorConfig configures the pull-through mirror.
type MirrorConfig struct {
	Default string   `yaml:"default"`  // upstream of names that name none; default docker.io
	MaxSize ByteSize `yaml:"max_size"` // mirrored bytes kept; default 50GiB
	TagTTL  Duration `yaml:"tag_ttl"`  // how long a mirrored tag is trusted; default 5m
	Timeout Duration `yaml:"timeout"`  // time budget of an upstream: no answer or no bytes for this long cuts it; default 10s
	// NegativeTTL is how long an upstream's "manifest unknown" is remembered; default 30s, 0: never.
	NegativeTTL Duration `yaml:"negative_ttl"`
	// MaxBlobSize bounds an upstream blob sent without a Content-Length; zero: only storage.min_free.
	MaxBlobSize ByteSize                  `yaml:"max_blob_size"`
	Upstreams   map[string]UpstreamConfig `yaml:"upstreams"` // by name; docker.io is predefined
	// Warm lists images to keep warm: pulled into the cache on a schedule (issue #14).
	Warm WarmConfig `yaml:"warm"`
}

// WarmConfig is the scheduled pre-warm: every Every, one node of a fleet pulls Images (of an
// index, the Platforms asked) into the cache, as POST /api/v2.0/mirror/warm does. The first run
// is at start, unless the last one (kept in the metadata store) is more recent than Every.
type WarmConfig struct {
	Every     Duration `yaml:"every"`     // 0 (default): no scheduled warm
	Platforms []string `yaml:"platforms"` // os/architecture[/variant], e.g. linux/amd64; empty: every platform
	Images    []string `yaml:"images"`    // references as clients write them: alpine:3.20, ghcr.io/owner/image:tag
}

// minWarmEvery bounds mirror.warm.every from below: a warm asks the upstream for every tag.
const minWarmEvery = time.Minute

// StorageConfig configures the data directory's use of its disk.
type StorageConfig struct {
	// MinFree is the free-space floor: a size ("1GiB") or a share of the disk ("5%"); default
	// the smaller of 1 GiB and 5 %. Fills evict mirrored content to stay above it; pushes that
	// cannot fit get 507.
	MinFree string `yaml:"min_free"`
	// Metadata is where cove keeps its records (everything but blob files): the embedded badger
	// index under data/index (default), or a PostgreSQL database.
	Metadata MetadataConfig `yaml:"metadata"`
	// Blobs is where blobs live: the data directory (default), or an S3-compatible bucket shared
	// by a fleet, with the data directory as this node's hot tier.
	Blobs BlobsConfig `yaml:"blobs"`
	// HotTierMaxSize bounds the local copies of blobs kept with blobs.kind s3, least recently
	// used dropped first; default 20GiB.
	HotTierMaxSize ByteSize `yaml:"hot_tier_max_size"`
}

// BlobsConfig chooses the blob store.
type BlobsConfig struct {
	Kind string   `yaml:"kind"` // filesystem | s3; default filesystem
	S3   S3Config `yaml:"s3"`
}

// S3Config is the bucket of storage.blobs.kind s3.
type S3Config struct {
	Endpoint  string `yaml:"endpoint"` // the S3 API's URL with its scheme: http://127.0.0.1:9000, https://s3.example.com
	Bucket    string `yaml:"bucket"`
	Region    string `yaml:"region"` // default us-east-1
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
	Prefix    string `yaml:"prefix"`     // put before every object name, e.g. cove/
	PathStyle bool   `yaml:"path_style"` // bucket in the path (most S3-compatible servers); default true
	// Redirect answers blob GETs with a 307 to a presigned URL of the bucket (for a CDN-backed
	// bucket), as Distribution does; default false: cove serves the bytes.
	Redirect bool `yaml:"redirect"`
}

// MetadataConfig chooses the metadata store.
type MetadataConfig struct {
	Kind     string         `yaml:"kind"` // badger | postgres; default badger
	Postgres PostgresConfig `yaml:"postgres"`
}

// PostgresConfig is the PostgreSQL of storage.metadata.kind postgres.
type PostgresConfig struct {
	DSN string `yaml:"dsn"` // e.g. postgres://cove:secret@db.example:5432/cove?sslmode=verify-full
}

// blobstore is the S3 configuration for the blob store.
func (c S3Config) blobstore() blobstore.S3Config {
	return blobstore.S3Config{Endpoint: c.Endpoint, Bucket: c.Bucket, Region: c.Region, AccessKey: c.AccessKey,
		SecretKey: c.SecretKey, Prefix: c.Prefix, PathStyle: c.PathStyle}
}

// minFree reads storage.min_free: bytes, or a percentage of the disk; both zero for the default.
func (s StorageConfig) minFree() (bytes int64, percent float64, err error) {
	v := strings.TrimSpace(s.MinFree)
	switch {
	case v == "":
		return 0, 0, nil
	case strings.HasSuffix(v, "%"):
		p, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(v, "%")), 64)
		if err != nil || p <= 0 || p >= 100 {
			return 0, 0, fmt.Errorf("want a size such as 1GiB or a share such as 5%%, got %q", s.MinFree)
		}
		return 0, p, nil
	}
	var b ByteSize
	if err := b.UnmarshalYAML(&yaml.Node{Kind: yaml.ScalarNode, Value: v}); err != nil {
		return 0, 0, fmt.Errorf("want a size such as 1GiB or a share such as 5%%, got %q", s.MinFree)
	}
	if b <= 0 {
		return 0, 0, fmt.Errorf("must be above 0: the floor keeps the index's memory-mapped files from a full disk (leave it empty for the default)")
	}
	return int64(b), 0, nil
}

// UpstreamConfig is one upstream registry.
type UpstreamConfig struct {
	URL         string   `yaml:"url"`
	Username    string   `yaml:"username"`
	Password    string   `yaml:"password"`
	TokenRealms []string `yaml:"token_realms"` // hosts besides url's own that may receive the credentials
	Timeout     Duration `yaml:"timeout"`      // this upstream's time budget; default mirror.timeout
	KeepDays    int      `yaml:"keep_days"`    // cached images neither cached nor pulled for this many days go; 0: only max_size bounds them
	// RateLimitReserve is how many of Docker Hub's pulls are kept for cold pulls: a count ("20")
	// or a share of ratelimit-limit ("10%", the default). Under it, cached tags are served
	// without revalidation.
	RateLimitReserve string `yaml:"ratelimit_reserve"`
}

// AuthConfig configures identities and access.
type AuthConfig struct {
	Mode             string     `yaml:"mode"`              // db | ldap; default db
	AdminPassword    string     `yaml:"admin_password"`    // the admin's password at first start only; generated and printed once when empty
	AnonymousPull    string     `yaml:"anonymous_pull"`    // mirror | none; default mirror
	SelfRegistration bool       `yaml:"self_registration"` // default false
	ProjectCreation  string     `yaml:"project_creation"`  // adminonly | everyone; default adminonly
	TokenTTL         Duration   `yaml:"token_ttl"`         // default 5m
	AuditRetention   Duration   `yaml:"audit_retention"`   // how long audit records are kept; default 90 days
	LDAP             LDAPConfig `yaml:"ldap"`
}

// LDAPConfig configures the LDAP directory used when auth.mode is ldap.
type LDAPConfig struct {
	URL          string   `yaml:"url"`
	BaseDN       string   `yaml:"base_dn"`
	UserFilter   string   `yaml:"user_filter"`
	BindDN       string   `yaml:"bind_dn"`
	BindPassword string   `yaml:"bind_password"`
	GroupBaseDN  string   `yaml:"group_base_dn"`
	GroupFilter  string   `yaml:"group_filter"` // default (member=%s), %s being the user's DN
	AdminGroup   string   `yaml:"admin_group"`
	CAFile       string   `yaml:"ca_file"`   // CA bundle for ldaps:// and StartTLS
	StartTLS     bool     `yaml:"start_tls"` // upgrade ldap:// with StartTLS
	Timeout      Duration `yaml:"timeout"`   // per LDAP operation; default 10s
}

// TLSConfig configures the listener's TLS.
type TLSConfig struct {
	Mode       string   `yaml:"mode"` // off | files | self-signed | acme; default off
	CertFile   string   `yaml:"cert_file"`
	KeyFile    string   `yaml:"key_file"`
	Domains    []string `yaml:"domains"`
	Email      string   `yaml:"email"`
	ACMECA     string   `yaml:"acme_ca"`
	ACMECARoot string   `yaml:"acme_ca_root"`
	HTTPListen string   `yaml:"http_listen"` // default ":80"
}

// DefaultConfig is the embedded default: a Docker Hub mirror on :5000 with data in ./data.
func DefaultConfig() Config {
	return Config{
		Listen:    ":5000",
		Data:      "./data",
		AccessLog: "all",
		Mirror: MirrorConfig{
			Default:     "docker.io",
			MaxSize:     50 << 30,
			TagTTL:      Duration(5 * time.Minute),
			Timeout:     Duration(10 * time.Second),
			NegativeTTL: Duration(30 * time.Second),
			Upstreams: map[string]UpstreamConfig{
				"docker.io": {URL: "https://registry-1.docker.io", TokenRealms: []string{"auth.docker.io"}},
			},
		},
		Auth: AuthConfig{
			Mode:            "db",
			AnonymousPull:   "mirror",
			ProjectCreation: "adminonly",
			TokenTTL:        Duration(5 * time.Minute),
			AuditRetention:  Duration(90 * 24 * time.Hour),
			LDAP:            LDAPConfig{URL: "ldap://127.0.0.1:389", BaseDN: "dc=example,dc=org", UserFilter: "(uid=%s)", GroupFilter: "(member=%s)", Timeout: Duration(10 * time.Second)},
		},
		TLS: TLSConfig{Mode: "off", HTTPListen: ":80"},
		Storage: StorageConfig{Metadata: MetadataConfig{Kind: "badger"},
			Blobs:          BlobsConfig{Kind: "filesystem", S3: S3Config{Region: "us-east-1", PathStyle: true}},
			HotTierMaxSize: 20 << 30},
	}
}

// Duration is a time.Duration written as "5m", "30s".
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration such as 30s or 5m, got %q", n.Value)
	}
	*d = Duration(v)
	return nil
}

// ByteSize is a size in bytes written as "50GiB", "512MB" or a plain number.
type ByteSize int64

var sizeRE = regexp.MustCompile(`^([0-9]+)\s*([KMGT]i?B?|B)?$`)

// UnmarshalYAML reads a size with an optional unit (K, M, G, T; KiB-style and KB-style both
// taken as powers of 1024).
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(n.Value))
	if m == nil || n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a size such as 512MiB or 50GiB, got %q", n.Value)
	}
	v, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return fmt.Errorf("size %q: %v", n.Value, err)
	}
	shift := map[byte]uint{'K': 10, 'M': 20, 'G': 30, 'T': 40}
	if m[2] != "" && m[2] != "B" {
		v <<= shift[m[2][0]]
	}
	*b = ByteSize(v)
	return nil
}

// ConfigError lists every problem found in a configuration; each names its key.
type ConfigError struct{ Problems []string }

func (e *ConfigError) Error() string {
	return "invalid configuration:\n  " + strings.Join(e.Problems, "\n  ")
}

// Parse reads a YAML configuration over the defaults. Unknown keys and values of the wrong type
// are errors that name the key.
func Parse(r io.Reader) (Config, error) {
	cfg := DefaultConfig()
	var doc yaml.Node
	if err := yaml.NewDecoder(r).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return cfg, &ConfigError{Problems: []string{"not valid YAML: " + err.Error()}}
	}
	var problems []string
	if len(doc.Content) > 0 {
		decodeNode(doc.Content[0], reflect.ValueOf(&cfg).Elem(), "", &problems)
	}
	if problems != nil {
		return cfg, &ConfigError{Problems: problems}
	}
	return cfg, nil
}

// decodeNode decodes n into v, checking every mapping key against v's yaml tags.
func decodeNode(n *yaml.Node, v reflect.Value, path string, problems *[]string) {
	name := func(key string) string {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	if n.Kind == yaml.MappingNode {
		// A key given twice is a mistake (YAML forbids it): the second would silently win.
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if key := n.Content[i].Value; seen[key] {
				*problems = append(*problems, fmt.Sprintf("%s: key given twice (line %d)", name(key), n.Content[i].Line))
			} else {
				seen[key] = true
			}
		}
	}
	switch {
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return
	case v.Kind() == reflect.Struct && v.Type() != reflect.TypeOf(time.Time{}):
		if n.Kind != yaml.MappingNode {
			*problems = append(*problems, fmt.Sprintf("%s: want a mapping of keys", orRoot(path)))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			f, ok := fieldByTag(v, key)
			if !ok {
				*problems = append(*problems, fmt.Sprintf("%s: unknown key", name(key)))
				continue
			}
			decodeNode(n.Content[i+1], f, name(key), problems)
		}
	case v.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			*problems = append(*problems, fmt.Sprintf("%s: want a mapping", path))
			return
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			elem := reflect.New(v.Type().Elem()).Elem()
			if old := v.MapIndex(reflect.ValueOf(key)); old.IsValid() {
				elem.Set(old)
			}
			decodeNode(n.Content[i+1], elem, name(key), problems)
			v.SetMapIndex(reflect.ValueOf(key), elem)
		}
	default:
		if err := n.Decode(v.Addr().Interface()); err != nil {
			msg := err.Error()
			var te *yaml.TypeError
			if errors.As(err, &te) {
				msg = fmt.Sprintf("want a %s, got %q", v.Type(), n.Value)
			}
			*problems = append(*problems, fmt.Sprintf("%s: %s", path, msg))
		}
	}
}

func orRoot(path string) string {
	if path == "" {
		return "configuration"
	}
	return path
}

func fieldByTag(v reflect.Value, key string) (reflect.Value, bool) {
	t := v.Type()
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag == key {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// envPrefix starts every environment variable cove reads.
const envPrefix = "COVE_"

// ApplyEnv overrides cfg with COVE_<KEY> variables, where KEY is a key path of the configuration
// in upper case with "." written "_" (COVE_MIRROR_TAG_TTL). List values are comma-separated.
// Unknown COVE_ variables are errors, so a typo does not pass silently.
func ApplyEnv(cfg *Config, environ []string) error {
	leaves := map[string]reflect.Value{}
	collectLeaves(reflect.ValueOf(cfg).Elem(), "", leaves)
	var problems []string
	for _, kv := range environ {
		k, val, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, envPrefix) || k == envPrefix+"CONFIG" {
			continue
		}
		path := strings.ToLower(strings.TrimPrefix(k, envPrefix))
		f, ok := leaves[path]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: unknown environment variable", k))
			continue
		}
		n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: val}
		if f.Kind() == reflect.Slice {
			n = &yaml.Node{Kind: yaml.SequenceNode}
			for _, item := range strings.Split(val, ",") {
				if item = strings.TrimSpace(item); item != "" {
					n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: item})
				}
			}
		} else if f.Kind() != reflect.String {
			n.Tag = "" // let YAML resolve booleans and numbers
		}
		var p []string
		decodeNode(n, f, k, &p)
		problems = append(problems, p...)
	}
	if problems != nil {
		return &ConfigError{Problems: problems}
	}
	return nil
}

// collectLeaves maps the env-style path (keys joined by "_") of every settable leaf to its field.
// Maps (the upstreams) are set only in the file.
func collectLeaves(v reflect.Value, path string, out map[string]reflect.Value) {
	t := v.Type()
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		p := tag
		if path != "" {
			p = path + "_" + tag
		}
		switch f := v.Field(i); f.Kind() {
		case reflect.Struct:
			collectLeaves(f, p, out)
		case reflect.Map:
		default:
			out[p] = f
		}
	}
}

func loadConfig(path string, environ []string, flags map[string]string) (Config, error) {
	cfg := DefaultConfig()
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return cfg, &ConfigError{Problems: []string{"config file: " + err.Error()}}
		}
		defer f.Close()
		if cfg, err = Parse(f); err != nil {
			return cfg, err
		}
	}
	if err := ApplyEnv(&cfg, environ); err != nil {
		return cfg, err
	}
	if v, ok := flags["listen"]; ok {
		cfg.Listen = v
	}
	if v, ok := flags["data"]; ok {
		cfg.Data = v
	}
	return cfg, cfg.Validate()
}
