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
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

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
	// Writable, when set, is asked before every write to the index: an error (a full disk, a
	// read-only start) refuses the write with it, since badger's files must never meet a full
	// disk. The audit log has its own (Audit.SetWritable).
	Writable func() error
}

// Service authenticates requests and authorizes them against projects. It is safe for concurrent use.
type Service struct {
	db        kv.DB
	log       *slog.Logger
	publicURL string
	service   string
	issuer    string
	tokenTTL  time.Duration
	keys      *keystore
	now       func() time.Time
	cost      int
	writable  func() error
	reserved  map[string]bool
	settings  settingsCache
	limiter   *limiter
	audit     *Audit
	ldap      *ldapDirectory
	key       []byte // HMAC key of the credential cache, random per process
	dummy     []byte // a bcrypt hash compared against for unknown users

	mu sync.Mutex
	// verified maps a user name to the HMAC of its last verified password; gen counts the
	// changes to each user (see forget). Both guarded by mu.
	verified map[string]verifiedCred
	gen      map[string]uint64
	// wrong holds, per user, the HMACs of passwords found wrong within credTTL, with their
	// expiry; wrongN counts them (bounded by maxWrongRemembered). Guarded by mu.
	wrong  map[string]map[string]time.Time
	wrongN int
}

type verifiedCred struct {
	mac     []byte
	expires time.Time
	who     Principal
}

// New returns a Service over db. At the first start with cfg.AdminPassword it creates the admin
// with that password; without one, EnsureAdmin generates it later.
func New(ctx context.Context, db kv.DB, cfg Config) (s *Service, err error) {
	s = &Service{
		db: db, log: cfg.Logger, publicURL: strings.TrimSuffix(cfg.PublicURL, "/"), service: cfg.Service,
		tokenTTL: cfg.TokenTTL, now: cfg.Now, verified: map[string]verifiedCred{}, gen: map[string]uint64{},
		wrong: map[string]map[string]time.Time{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "auth")
	if s.now == nil {
		s.now = time.Now
	}
	s.limiter = newLimiter(s.now)
	anonymous := "none"
	if cfg.AnonymousMirrorPull {
		anonymous = "mirror"
	}
	s.audit = cfg.Audit
	if cfg.LDAP != nil {
		if s.ldap, err = newLDAPDirectory(*cfg.LDAP); err != nil {
			return nil, err
		}
		if strings.HasPrefix(cfg.LDAP.URL, "ldap://") && !cfg.LDAP.StartTLS {
			s.log.Warn("LDAP without TLS: passwords cross the network in clear; use ldaps:// or start_tls")
		}
	}
	if err := s.loadSettings(Settings{SelfRegistration: cfg.SelfRegistration, AnonymousPull: anonymous, ProjectCreation: cfg.ProjectCreation}); err != nil {
		return nil, err
	}
	s.reserved = map[string]bool{}
	for _, n := range cfg.ReservedNames {
		s.reserved[n] = true
		if n == "docker.io" {
			// Docker Hub's official images: docker pull alpine asks for library/alpine.
			s.reserved["library"] = true
		}
	}
	s.writable = cfg.Writable
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
	switch {
	case cfg.SharedKeys:
		if s.keys, err = loadSharedKeystore(ctx, db, s.now); err != nil {
			return nil, err
		}
	case cfg.KeyDir == "":
		return nil, errors.New("auth: a key directory is required")
	default:
		if s.keys, err = loadKeystore(cfg.KeyDir, s.now); err != nil {
			return nil, err
		}
	}
	s.key = make([]byte, 32)
	if _, err := rand.Read(s.key); err != nil {
		return nil, err
	}
	if s.dummy, err = bcrypt.GenerateFromPassword([]byte(rand.Text()), s.cost); err != nil {
		return nil, err
	}
	if err := s.ensureAdmin(cfg.AdminPassword); err != nil {
		return nil, err
	}
	return s, nil
}

// ensureAdmin creates the admin with password at first start (Harbor's harbor_admin_password
// works so): once the admin exists, its stored hash is kept, whatever the configuration says,
// so that a password changed through the API or `cove admin reset-password` survives restarts.
func (s *Service) ensureAdmin(password string) error {
	var rec userRecord
	err := s.readUser(AdminName, &rec)
	switch {
	case err == nil:
		if password != "" && bcrypt.CompareHashAndPassword(rec.Hash, []byte(password)) != nil {
			s.log.Info("auth.admin_password applies at first start only: the admin's stored password is kept " +
				"(change it on the admin page, or offline with cove admin reset-password admin)")
		}
		return nil
	case !errors.Is(err, kv.ErrNotFound):
		return fmt.Errorf("read admin: %w", err)
	case password == "":
		return nil // EnsureAdmin generates one once cove is up
	}
	if err := s.createAdmin(password); errors.Is(err, ErrConflict) {
		return nil // another node of the fleet created it at the same moment
	} else if err != nil {
		return err
	}
	s.log.Info("admin created with the password of auth.admin_password")
	return nil
}

// EnsureAdmin makes sure the admin exists. At the first start without auth.admin_password it
// generates a password, hands it to show, and stores its hash only once show succeeded (so the
// password is never lost: a start that fails before, or cannot show it, leaves no admin, and the
// next start generates one again). It reports whether it generated one. cmd calls it once cove
// is listening. The name "admin" is reserved meanwhile: no user, self-registered or from LDAP,
// can take it (see CreateUser and checkPassword).
func (s *Service) EnsureAdmin(ctx context.Context, show func(password string) error) (generated bool, err error) {
	var rec userRecord
	err = s.readUser(AdminName, &rec)
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, kv.ErrNotFound) {
		return false, fmt.Errorf("read admin: %w", err)
	}
	// Stored first, then shown, and taken back when it cannot be shown: of nodes of a fleet
	// that start at once, only the one that stored the admin shows a password (the others
	// showed one that did not work, and died of the conflict).
	password := GeneratePassword()
	if err := s.createAdmin(password); errors.Is(err, ErrConflict) {
		s.log.Info("the admin was created by another node at the same moment: its password is in that node's output")
		return false, nil
	} else if err != nil {
		return false, err
	}
	if err := show(password); err != nil {
		if derr := s.removeAdmin(); derr != nil {
			return false, fmt.Errorf("show the generated admin password: %w; and taking the admin back failed: %v (reset it with cove admin reset-password admin)", err, derr)
		}
		return false, fmt.Errorf("show the generated admin password: %w (nothing was kept; the next start generates one again)", err)
	}
	s.log.Info("admin created with a generated password")
	return true, nil
}

// removeAdmin takes back an admin whose generated password could not be shown.
func (s *Service) removeAdmin() error {
	var rec userRecord
	if err := s.readUser(AdminName, &rec); err != nil {
		return err
	}
	defer s.forget(AdminName)
	return s.update(func(txn kv.Txn) error {
		if err := txn.Delete([]byte(keyUserID + strconv.FormatInt(rec.ID, 10))); err != nil {
			return err
		}
		return txn.Delete([]byte(keyUser + AdminName))
	})
}

// GeneratePassword returns a random password (about 150 bits) that meets the password policy.
func GeneratePassword() string {
	for {
		// rand.Text is upper-case letters and digits; half of it lower-cased gives all three kinds.
		p := strings.ToLower(rand.Text()[:16]) + rand.Text()[:16]
		if CheckPasswordPolicy(p) == nil {
			return p
		}
	}
}

// ResetAdminPassword sets the admin's password, creating the admin when it does not exist yet
// (cove admin reset-password admin, for a password lost before it was read).
func (s *Service) ResetAdminPassword(ctx context.Context, password string) error {
	if err := CheckPasswordPolicy(password); err != nil {
		return err
	}
	if _, err := s.User(ctx, AdminName); errors.Is(err, ErrNotFound) {
		return s.createAdmin(password)
	}
	if err := s.SetPassword(ctx, AdminName, password); err != nil {
		return err
	}
	return s.SetAdmin(ctx, AdminName, true)
}

func (s *Service) createAdmin(password string) error {
	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
	if err != nil {
		return fmt.Errorf("hash admin password: %w", err)
	}
	if _, err := s.insertUser(User{Name: AdminName, Admin: true}, hash); err != nil {
		return fmt.Errorf("store admin: %w", err)
	}
	return nil
}

// Authenticate returns who r comes from: a bearer token's principal, a Basic user, the zero
// Principal when it carries no credentials, ErrBadCredentials when it carries wrong ones.
func (s *Service) Authenticate(ctx context.Context, r *http.Request) (Principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		// The admin page's session, if any; a stale cookie is simply anonymous.
		if c, err := r.Cookie(SessionCookie); err == nil {
			if p, err := s.sessionPrincipal(ctx, c.Value); err == nil {
				return p, nil
			}
		}
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
	return s.Login(ctx, user, pass, RemoteHost(r))
}

// RemoteHost is the address a request comes from, without the port.
func RemoteHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// Login checks a user's (or robot's) credentials presented from addr. Failed logins are limited
// per (account, address), per account and per address as ratelimit.go describes: nobody can lock
// out someone else. Every login that reaches a password check is audited, success or not; the
// failures and the refusals at most refusalBurst a minute per caller (Audit.RecordRefusal).
func (s *Service) Login(ctx context.Context, user, pass, addr string) (Principal, error) {
	// A password that was checked right within credTTL is no guess: it neither waits for nor
	// counts against the limits, so a fleet of hosts pulling with one account at once is not
	// refused.
	if p, ok := s.cachedCheck(user, pass); ok {
		return p, nil
	}
	// A failure's record names the user as sent, clipped: anyone can send any name.
	failure := Event{Username: clip(user, maxFailedUserField), Address: addr, Operation: "login", ResourceType: "user", Resource: clip(user, maxFailedUserField)}
	// The same wrong secret again within the minute is no new guess — a pod with a stale pull
	// secret sends it twice a second — so it is refused as wrong without counting against the
	// limits, which would otherwise lock the right secret out of that address too.
	if s.knownWrong(user, pass) {
		s.recordRefusal(ctx, failure)
		return Principal{}, ErrBadCredentials
	}
	at, err := s.limiter.admit(ctx, user, addr)
	if err != nil {
		if errors.Is(err, ErrTooManyAttempts) {
			e := failure
			e.Detail = "refused: " + err.Error()
			if te := (*TooManyAttemptsError)(nil); errors.As(err, &te) && te.spray {
				// A spray's refusals name the address only, so that a name per attempt does not
				// make a record per attempt.
				e.Username = ""
			}
			s.recordRefusal(ctx, e)
		}
		return Principal{}, err
	}
	// Admitted after the pair's previous check: a right password checked meanwhile is in the
	// cache, and checkPassword finds it there.
	p, checked, err := s.checkPassword(ctx, user, pass)
	switch {
	case errors.Is(err, ErrBadCredentials):
		at.done(outcomeWrong)
		if checked {
			s.rememberWrong(user, pass)
		}
		if at.spray {
			// A spray's failures name the address only, so that a name per attempt does not
			// make a record per attempt.
			failure.Username = ""
		}
		s.recordRefusal(ctx, failure)
		return p, err
	case err == nil:
		at.done(outcomeRight)
		if checked {
			s.record(ctx, Event{Username: user, Address: addr, Operation: "login", ResourceType: "user", Resource: user})
		}
		return p, nil
	}
	at.done(outcomeNone)
	return p, err
}

// CheckPassword verifies a user's or robot's password, with no rate limit and no audit record;
// requests go through Login. An empty password never matches.
func (s *Service) CheckPassword(ctx context.Context, user, pass string) (Principal, error) {
	p, _, err := s.checkPassword(ctx, user, pass)
	return p, err
}

// knownWrong reports whether user's exact password was found wrong within credTTL.
func (s *Service) knownWrong(user, pass string) bool {
	if user == "" || pass == "" {
		return false
	}
	mac := s.mac(user, pass)
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.wrong[user][string(mac)]
	return ok && s.now().Before(exp)
}

// rememberWrong notes that user's exact password was found wrong (as an HMAC, never the
// password), for credTTL; a change to the user forgets it (forget), so a password that becomes
// right is never refused for having been wrong.
func (s *Service) rememberWrong(user, pass string) {
	mac := string(s.mac(user, pass))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wrongN >= maxWrongRemembered {
		s.wrong, s.wrongN = map[string]map[string]time.Time{}, 0 // bounded: start over
	}
	if s.wrong[user] == nil {
		s.wrong[user] = map[string]time.Time{}
	}
	if _, ok := s.wrong[user][mac]; !ok {
		s.wrongN++
	}
	s.wrong[user][mac] = s.now().Add(credTTL)
}

// maxWrongRemembered bounds the wrong secrets remembered.
const maxWrongRemembered = 65536

// cachedCheck reports whether user's exact password was checked right within credTTL.
func (s *Service) cachedCheck(user, pass string) (Principal, bool) {
	if user == "" || pass == "" {
		return Principal{}, false
	}
	mac := s.mac(user, pass)
	s.mu.Lock()
	v, ok := s.verified[user]
	s.mu.Unlock()
	if ok && s.now().Before(v.expires) && subtle.ConstantTimeCompare(v.mac, mac) == 1 {
		return v.who, true
	}
	return Principal{}, false
}

// checkPassword also reports whether the password was really checked (not found in the cache of
// recent successes, which spares a pull storm one bcrypt or LDAP bind per request and never lets
// a wrong password through: it compares an HMAC of the exact password).
func (s *Service) checkPassword(ctx context.Context, user, pass string) (Principal, bool, error) {
	if user == "" || pass == "" {
		return Principal{}, false, ErrBadCredentials
	}
	if p, ok := s.cachedCheck(user, pass); ok {
		return p, false, nil
	}
	mac := s.mac(user, pass)
	s.mu.Lock()
	gen := s.gen[user]
	s.mu.Unlock()
	var (
		who   Principal
		until = s.now().Add(credTTL)
	)
	switch {
	case isRobot(user):
		p, hash, expires, err := s.checkRobot(user, pass)
		if err != nil {
			return Principal{}, true, err
		}
		if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
			return Principal{}, true, ErrBadCredentials
		}
		if !expires.IsZero() && expires.Before(until) {
			until = expires // a cached check never outlives the robot
		}
		who = p
	default:
		var rec userRecord
		err := s.readUser(user, &rec)
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			return Principal{}, true, fmt.Errorf("read user: %w", err)
		}
		if s.ldap != nil && (err != nil || rec.LDAP) && !strings.EqualFold(user, AdminName) {
			// Every name but the built-in admin's, which stays local even before it exists.
			if !userName.MatchString(user) {
				return Principal{}, true, ErrBadCredentials
			}
			p, err := s.ldapLogin(ctx, strings.ToLower(user), pass)
			if err != nil {
				return Principal{}, true, err
			}
			who = p
			break
		}
		if err != nil {
			// Spend the same time as a real comparison, so response times do not tell which users exist.
			_ = bcrypt.CompareHashAndPassword(s.dummy, []byte(pass))
			return Principal{}, true, ErrBadCredentials
		}
		if bcrypt.CompareHashAndPassword(rec.Hash, []byte(pass)) != nil {
			return Principal{}, true, ErrBadCredentials
		}
		who = rec.principal()
	}
	s.mu.Lock()
	if s.gen[user] == gen { // the user did not change while it was checked
		s.verified[user] = verifiedCred{mac: mac, expires: until, who: who}
	}
	s.mu.Unlock()
	return who, true, nil
}

func (s *Service) mac(user, pass string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(pass))
	return m.Sum(nil)
}

// update is db.Update once the index may be written (Config.Writable).
func (s *Service) update(fn func(txn kv.Txn) error) error {
	if s.writable != nil {
		if err := s.writable(); err != nil {
			return err
		}
	}
	return kv.Retry(context.Background(), s.db, fn)
}

func (s *Service) readUser(name string, rec *userRecord) error {
	return s.db.View(context.Background(), func(txn kv.Txn) error { return kv.Get(txn, []byte(keyUser+name), rec) })
}

// Authorize decides whether p may do action on repo, a local repository: by the token's grants
// for a token principal, else by the project's policy (see decide).
func (s *Service) Authorize(ctx context.Context, p Principal, repo string, action Action) error {
	if p.Token {
		// A grant made before the project existed was made under another policy (the mirror's,
		// say): it does not carry over to the project.
		if proj, err := s.Project(ctx, ProjectOf(repo)); err == nil && p.tokenIssued.Before(proj.Created.Truncate(time.Second)) {
			return ErrUnauthenticated
		}
		return tokenDecision(p, repo, action)
	}
	return s.authorizeLocal(ctx, p, repo, action)
}

// tokenDecision: a token grants what it says and nothing else. Lacking a grant is a 401 — the
// client asks the token service for the scope, as the token spec has it — unless the token of
// a named account was asked for that very action and refused it: asking again would change
// nothing, so it is a 403 (docker retries a 401 for a minute, and stops at a 403 saying
// "denied").
func tokenDecision(p Principal, name string, action Action) error {
	if p.Granted("repository", name, string(action)) {
		return nil
	}
	if !p.Anonymous() && p.AskedFor("repository", name, string(action)) {
		return ErrDenied
	}
	return ErrUnauthenticated
}

func (s *Service) authorizeLocal(ctx context.Context, p Principal, repo string, action Action) error {
	if !strings.Contains(repo, "/") {
		// A one-element name is in no project (it is not the project's own repository).
		if err := decide(p, nil, RoleNone, action); !errors.Is(err, ErrProjectUnknown) {
			return err
		}
		return ErrNoProject
	}
	return s.AuthorizeProject(ctx, p, ProjectOf(repo), action)
}

// AuthorizeProject decides whether p may do action in project (pull, push, delete, or manage
// members and robots).
func (s *Service) AuthorizeProject(ctx context.Context, p Principal, project string, action Action) error {
	proj, err := s.Project(ctx, project)
	if errors.Is(err, ErrProjectUnknown) {
		return decide(p, nil, RoleNone, action)
	}
	if err != nil {
		return err
	}
	return decide(p, &proj, s.RoleOf(ctx, p, project), action)
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
	case (p.Anonymous() || p.Robot) && s.settings.get().AnonymousPull != "mirror":
		// A robot reaches nothing beyond its project: mirrored content only as the anonymous do.
		if p.Robot {
			return ErrDenied
		}
		return ErrUnauthenticated
	}
	return nil
}

// record writes an audit event, logging (not failing on) a write error.
func (s *Service) record(ctx context.Context, e Event) {
	if s.audit == nil {
		return
	}
	if err := s.audit.Record(ctx, e); err != nil {
		s.log.ErrorContext(ctx, "writing an audit record", "err", err)
	}
}

// recordRefusal writes the audit event of a refusal, at most refusalBurst a minute per caller.
func (s *Service) recordRefusal(ctx context.Context, e Event) {
	e.Result = "failure"
	s.recordLimited(ctx, e)
}

// recordLimited writes an audit event at most refusalBurst a minute per caller (Audit.RecordLimited).
func (s *Service) recordLimited(ctx context.Context, e Event) {
	if s.audit == nil {
		return
	}
	if err := s.audit.RecordLimited(ctx, e); err != nil {
		s.log.ErrorContext(ctx, "writing an audit record", "err", err)
	}
}

// ProjectExists reports whether the project name exists.
func (s *Service) ProjectExists(ctx context.Context, name string) (bool, error) {
	_, err := s.Project(ctx, name)
	if errors.Is(err, ErrProjectUnknown) {
		return false, nil
	}
	return err == nil, err
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
