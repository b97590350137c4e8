package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"cove/internal/kv"
	"golang.org/x/crypto/bcrypt"
)

const (
	keyUser = "auth/user/"
	// AdminName is the name of the built-in administrator.
	AdminName = "admin"
	// credTTL is how long a verified password is remembered, so a pull storm does not run one
	// bcrypt comparison per request.
	credTTL = time.Minute
)

// Config configures a Service.
type Config struct {
	// AdminPassword is the admin's password. When empty, the stored hash is kept, and at first
	// start a password is generated and returned by New.
	AdminPassword string
	// PublicURL is how clients reach cove (the token realm is <PublicURL>/service/token); when
	// empty, the realm is derived from each request's Host.
	PublicURL string
	// Service names the registry in tokens (the audience) and challenges; default "cove".
	Service string
	// TokenTTL is the lifetime of access tokens; default 5 minutes.
	TokenTTL time.Duration
	// KeyDir holds the token signing key, generated at first start.
	KeyDir string
	// Logger receives lifecycle messages; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ReservedNames may not name a project: the configured upstreams, whose names select them in
	// a repository path (DESIGN.md, "How a pull flows").
	ReservedNames []string
	// AnonymousMirrorPull lets anonymous callers pull mirrored content (auth.anonymous_pull: mirror).
	AnonymousMirrorPull bool
	// BcryptCost is the cost of new password hashes; zero means bcrypt.DefaultCost. Tests lower it.
	BcryptCost int
}

// Service authenticates requests and authorizes them against projects. It is safe for concurrent use.
type Service struct {
	db         *badger.DB
	log        *slog.Logger
	publicURL  string
	service    string
	issuer     string
	tokenTTL   time.Duration
	keys       *keystore
	now        func() time.Time
	cost       int
	reserved   map[string]bool
	anonMirror bool
	key        []byte // HMAC key of the credential cache, random per process
	dummy      []byte // a bcrypt hash compared against for unknown users

	mu sync.Mutex
	// verified maps a user name to the HMAC of its last verified password; guarded by mu.
	verified map[string]verifiedCred
}

type verifiedCred struct {
	mac     []byte
	expires time.Time
}

type userRecord struct {
	Name    string    `json:"name"`
	Hash    []byte    `json:"hash"`
	Admin   bool      `json:"admin"`
	Created time.Time `json:"created"`
}

// New returns a Service over db. It makes sure the admin identity exists: with cfg.AdminPassword
// when given, else with the stored hash, else with a generated password, which it returns once
// (generated is empty otherwise) so that the caller can print it.
func New(ctx context.Context, db *badger.DB, cfg Config) (s *Service, generated string, err error) {
	s = &Service{
		db: db, log: cfg.Logger, publicURL: strings.TrimSuffix(cfg.PublicURL, "/"), service: cfg.Service,
		tokenTTL: cfg.TokenTTL, now: cfg.Now, verified: map[string]verifiedCred{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "auth")
	if s.now == nil {
		s.now = time.Now
	}
	s.anonMirror = cfg.AnonymousMirrorPull
	s.reserved = map[string]bool{}
	for _, n := range cfg.ReservedNames {
		s.reserved[n] = true
	}
	s.cost = cfg.BcryptCost
	if s.cost == 0 {
		s.cost = bcrypt.DefaultCost
	}
	if s.service == "" {
		s.service = "cove"
	}
	s.issuer = s.service + "-token-service"
	if s.tokenTTL <= 0 {
		s.tokenTTL = 5 * time.Minute
	}
	if cfg.KeyDir == "" {
		return nil, "", errors.New("auth: a key directory is required")
	}
	if s.keys, err = loadKeystore(cfg.KeyDir); err != nil {
		return nil, "", err
	}
	s.key = make([]byte, 32)
	if _, err := rand.Read(s.key); err != nil {
		return nil, "", err
	}
	if s.dummy, err = bcrypt.GenerateFromPassword([]byte(rand.Text()), s.cost); err != nil {
		return nil, "", err
	}
	generated, err = s.ensureAdmin(cfg.AdminPassword)
	if err != nil {
		return nil, "", err
	}
	return s, generated, nil
}

func (s *Service) ensureAdmin(password string) (string, error) {
	var rec userRecord
	err := s.db.View(func(txn *badger.Txn) error { return kv.GetJSON(txn, []byte(keyUser+AdminName), &rec) })
	switch {
	case err == nil && password == "":
		return "", nil
	case err == nil && bcrypt.CompareHashAndPassword(rec.Hash, []byte(password)) == nil:
		return "", nil
	case err != nil && !errors.Is(err, badger.ErrKeyNotFound):
		return "", fmt.Errorf("read admin: %w", err)
	}
	generated := ""
	if password == "" {
		password = rand.Text()
		generated = password
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
	if err != nil {
		return "", fmt.Errorf("hash admin password: %w", err)
	}
	created := rec.Created
	if created.IsZero() {
		created = s.now().UTC()
	}
	rec = userRecord{Name: AdminName, Hash: hash, Admin: true, Created: created}
	err = s.db.Update(func(txn *badger.Txn) error { return kv.PutJSON(txn, []byte(keyUser+AdminName), rec) })
	if err != nil {
		return "", fmt.Errorf("store admin: %w", err)
	}
	s.log.Info("admin password set", "source", map[bool]string{true: "generated", false: "configuration"}[generated != ""])
	return generated, nil
}

// Authenticate returns who r comes from: a bearer token's principal, a Basic user, the zero
// Principal when it carries no credentials, ErrBadCredentials when it carries wrong ones.
func (s *Service) Authenticate(ctx context.Context, r *http.Request) (Principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return Principal{}, nil
	}
	if scheme, raw, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
		return s.principalFromToken(ctx, strings.TrimSpace(raw))
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return Principal{}, ErrBadCredentials
	}
	if user == "" && pass == "" {
		// Clients without credentials answer a Basic challenge with empty ones (containers/image
		// does): that claims no identity, so it is anonymous, not a failed login.
		return Principal{}, nil
	}
	return s.CheckPassword(ctx, user, pass)
}

// CheckPassword verifies a user's password. An empty password never matches.
func (s *Service) CheckPassword(ctx context.Context, user, pass string) (Principal, error) {
	if user == "" || pass == "" {
		return Principal{}, ErrBadCredentials
	}
	mac := s.mac(user, pass)
	s.mu.Lock()
	v, ok := s.verified[user]
	s.mu.Unlock()
	var rec userRecord
	err := s.readUser(user, &rec)
	if errors.Is(err, badger.ErrKeyNotFound) {
		// Spend the same time as a real comparison, so response times do not tell which users exist.
		_ = bcrypt.CompareHashAndPassword(s.dummy, []byte(pass))
		return Principal{}, ErrBadCredentials
	}
	if err != nil {
		return Principal{}, fmt.Errorf("read user: %w", err)
	}
	if ok && s.now().Before(v.expires) && subtle.ConstantTimeCompare(v.mac, mac) == 1 {
		return Principal{Name: rec.Name, Admin: rec.Admin}, nil
	}
	if bcrypt.CompareHashAndPassword(rec.Hash, []byte(pass)) != nil {
		return Principal{}, ErrBadCredentials
	}
	s.mu.Lock()
	s.verified[user] = verifiedCred{mac: mac, expires: s.now().Add(credTTL)}
	s.mu.Unlock()
	return Principal{Name: rec.Name, Admin: rec.Admin}, nil
}

func (s *Service) mac(user, pass string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(pass))
	return m.Sum(nil)
}

func (s *Service) readUser(name string, rec *userRecord) error {
	return s.db.View(func(txn *badger.Txn) error { return kv.GetJSON(txn, []byte(keyUser+name), rec) })
}

// Authorize decides whether p may do action on repo, a local repository: by the token's grants
// for a token principal, else by the project's policy (see decide).
func (s *Service) Authorize(ctx context.Context, p Principal, repo string, action Action) error {
	if p.Token {
		return tokenDecision(p, repo, action)
	}
	return s.authorizeLocal(ctx, p, repo, action)
}

// tokenDecision: a token grants what it says and nothing else. Lacking a grant is a 401 — the
// client asks the token service for the scope, as the token spec has it.
func tokenDecision(p Principal, name string, action Action) error {
	if p.Granted("repository", name, string(action)) {
		return nil
	}
	return ErrUnauthenticated
}

func (s *Service) authorizeLocal(ctx context.Context, p Principal, repo string, action Action) error {
	if !strings.Contains(repo, "/") {
		// A one-element name is in no project (it is not the project's own repository).
		if err := decide(p, nil, action); !errors.Is(err, ErrProjectUnknown) {
			return err
		}
		return ErrNoProject
	}
	proj, err := s.Project(ctx, ProjectOf(repo))
	if errors.Is(err, ErrProjectUnknown) {
		return decide(p, nil, action)
	}
	if err != nil {
		return err
	}
	return decide(p, &proj, action)
}

// AuthorizeMirror decides whether p may do action on name, a mirrored repository: by the token's
// grants for a token principal; else pull only, for every identity, and for the anonymous when the
// configuration allows it. Mirrors are read-only.
func (s *Service) AuthorizeMirror(ctx context.Context, p Principal, name string, action Action) error {
	if p.Token {
		return tokenDecision(p, name, action)
	}
	return s.authorizeMirror(p, action)
}

func (s *Service) authorizeMirror(p Principal, action Action) error {
	switch {
	case action != ActionPull:
		return ErrDenied
	case p.Anonymous() && !s.anonMirror:
		return ErrUnauthenticated
	}
	return nil
}

// ProjectExists reports whether the project name exists.
func (s *Service) ProjectExists(ctx context.Context, name string) bool {
	_, err := s.Project(ctx, name)
	return err == nil
}

// Challenge returns the WWW-Authenticate value that sends a client to the token service for the
// scopes it needs ("repository:team/app:pull,push"; none for the version check).
func (s *Service) Challenge(r *http.Request, scopes ...string) string {
	c := fmt.Sprintf("Bearer realm=%q,service=%q", s.Realm(r), s.service)
	if len(scopes) > 0 {
		c += fmt.Sprintf(",scope=%q", strings.Join(scopes, " "))
	}
	return c
}

// RepositoryScope writes a repository scope for a challenge.
func RepositoryScope(repo string, actions ...Action) string {
	names := make([]string, len(actions))
	for i, a := range actions {
		names[i] = string(a)
	}
	return "repository:" + repo + ":" + strings.Join(names, ",")
}

// Asked reports whether a token principal's token has an entry for the resource, granted or not:
// the client asked for it.
func (p Principal) Asked(typ, name string) bool {
	_, ok := p.access[typ+":"+name]
	return ok
}

// Realm is the token endpoint's absolute URL: on cove's own host and port, which clients such as
// crane require of a loopback or private address.
func (s *Service) Realm(r *http.Request) string {
	if s.publicURL != "" {
		return s.publicURL + TokenPath
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + TokenPath
}

// TokenPath is where the token service answers.
const TokenPath = "/service/token"
