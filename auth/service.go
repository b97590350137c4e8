package auth

import (
	"context"
	"log/slog"
	"time"

	"cove/internal/kv"
	"cove/internal/mail"
)

// Config configures a Service: its Identity, Policy and Tokens.
type Config struct {
	// AdminPassword is the admin's password at first start (when no admin exists yet); later
	// starts keep the stored hash. When empty, EnsureAdmin generates one.
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
	// SharedKeys keeps the token signing keys in the metadata store instead of KeyDir, so that a
	// token signed by one node of a fleet verifies on all (storage.metadata.kind postgres).
	SharedKeys bool
	// Logger receives lifecycle messages; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ReservedNames may not name a project: the configured upstreams, whose names select them in
	// a repository path (docs/DESIGN.md, "How a pull flows").
	ReservedNames []string
	// AnonymousMirrorPull lets anonymous callers pull mirrored content (auth.anonymous_pull: mirror).
	AnonymousMirrorPull bool
	// Audit receives the audit events of logins, tokens and changes; nil records nothing.
	Audit *Audit
	// SelfRegistration lets anyone create a (non-admin) account; never with LDAP.
	SelfRegistration bool
	// ProjectCreation is who may create projects: adminonly (default) or everyone.
	ProjectCreation string
	// LDAP, when set, checks the passwords of every user but the local ones (auth.mode: ldap).
	LDAP *LDAPConfig
	// BcryptCost is the cost of new password hashes; zero means bcrypt.DefaultCost. Tests lower it.
	BcryptCost int
	// Email is the configuration file's e-mail settings; those set through the API win over
	// them key by key (Policy.EmailSettings).
	Email mail.Config
	// Writable, when set, is asked before every write to the index: an error (a full disk, a
	// read-only start) refuses the write with it, since badger's files must never meet a full
	// disk. The audit log has its own (Audit.SetWritable).
	Writable func() error
}

// Service is auth's parts, built together over one database by New. Each part keeps its own
// state and asks only the parts below it: Policy asks Identity, Tokens asks both. The operations
// of a lower part that need a higher one (DeleteUser, CreateRobot: Identity's records, Policy's
// say) are Service's. Callers use the part they need: s.Identity.Login,
// s.Policy.AuthorizeProject, s.Tokens.ServeToken. It is safe for concurrent use.
type Service struct {
	// Identity answers who a user or robot is: accounts, passwords, sessions.
	Identity *Identity
	// Policy answers what a principal may do: projects, members, roles, settings.
	Policy *Policy
	// Tokens is the Docker token service, and authenticates requests.
	Tokens *Tokens
	// Audit is Config.Audit, which Identity and Tokens write to; nil when none was given.
	Audit *Audit
}

// New returns a Service over db. At the first start with cfg.AdminPassword it creates the admin
// with that password; without one, Identity.EnsureAdmin generates it later.
func New(ctx context.Context, db kv.DB, cfg Config) (*Service, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "auth")
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	var counted *kv.Counted
	if !cfg.SharedKeys { // one node's index: what is read may be memoized (Policy.Project)
		counted = kv.NewCounted(db)
		db = counted
	}
	identity, err := newIdentity(db, cfg, log, now)
	if err != nil {
		return nil, err
	}
	policy, err := newPolicy(db, cfg, identity, now)
	if err != nil {
		return nil, err
	}
	if counted != nil {
		policy.projects = &projectMemo{db: counted, known: map[string]projectSeen{}}
	}
	tokens, err := newTokens(ctx, db, cfg, identity, policy, log, now)
	if err != nil {
		return nil, err
	}
	// The admin last: a start that fails above leaves no admin behind.
	if err := identity.ensureAdmin(cfg.AdminPassword); err != nil {
		return nil, err
	}
	return &Service{Identity: identity, Policy: policy, Tokens: tokens, Audit: cfg.Audit}, nil
}

// DeleteUser removes a user (Identity) and its memberships in every project (Policy).
func (s *Service) DeleteUser(ctx context.Context, name string) error {
	return s.Identity.deleteUser(ctx, name, func() error { return s.Policy.removeUser(ctx, name) })
}

// CreateRobot creates a robot account (Identity) in project, which must exist (Policy), and
// returns it with its secret, which is shown this once and stored only as a hash.
func (s *Service) CreateRobot(ctx context.Context, project, name string, actions []Action, ttl time.Duration, description string) (Robot, string, error) {
	return s.Identity.createRobot(ctx, project, name, actions, ttl, description, func() error {
		_, err := s.Policy.Project(ctx, project)
		return err
	})
}
