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
	"strconv"
	"strings"
	"sync"
	"time"

	"cove/internal/kv"
	"golang.org/x/crypto/bcrypt"
)

const (
	// AdminName is the name of the built-in administrator.
	AdminName = "admin"
	// credTTL is how long a verified password is remembered, so a pull storm does not run one
	// bcrypt comparison per request.
	credTTL = time.Minute
)

// Identity answers "who is this?": it keeps the users (user.go) and robot accounts (robot.go)
// with their password hashes, checks passwords locally or against the LDAP directory (ldap.go),
// keeps the admin page's sessions (session.go), creates the built-in admin, and limits failed
// logins (ratelimit.go). Bearer tokens are Tokens' to verify; what an identity may do is Policy's
// to decide. It is safe for concurrent use.
type Identity struct {
	records
	log     *slog.Logger
	now     func() time.Time
	cost    int
	ldap    *ldapDirectory // nil: every password is checked locally
	limiter *limiter
	events  events
	key     []byte // HMAC key of the credential cache, random per process
	dummy   []byte // a bcrypt hash compared against for unknown users

	mu sync.Mutex
	// verified maps a user name to the HMAC of its last verified password; gen counts the
	// changes to each user (see forget). Both guarded by mu.
	verified map[string]verifiedCred
	gen      map[string]uint64
	// wrong holds, per user, the HMACs of passwords found wrong within credTTL, with their
	// expiry; wrongN counts them (bounded by maxWrongRemembered). Guarded by mu.
	wrong  map[string]map[string]time.Time
	wrongN int

	resetMu sync.Mutex
	// resetSent holds the times of this node's reset mails within ResetWindow (reset.go);
	// guarded by resetMu.
	resetSent []time.Time
}

type verifiedCred struct {
	mac     []byte
	expires time.Time
	who     Principal
}

// newIdentity returns the Identity of cfg over db; it creates no admin (ensureAdmin does).
func newIdentity(db kv.DB, cfg Config, log *slog.Logger, now func() time.Time) (i *Identity, err error) {
	i = &Identity{
		records: records{db: db, writable: cfg.Writable}, log: log, now: now, cost: cfg.BcryptCost,
		limiter: newLimiter(now), events: events{audit: cfg.Audit, log: log},
		verified: map[string]verifiedCred{}, gen: map[string]uint64{}, wrong: map[string]map[string]time.Time{},
	}
	if cfg.LDAP != nil {
		if i.ldap, err = newLDAPDirectory(*cfg.LDAP); err != nil {
			return nil, err
		}
		if strings.HasPrefix(cfg.LDAP.URL, "ldap://") && !cfg.LDAP.StartTLS {
			i.log.Warn("LDAP without TLS: passwords cross the network in clear; use ldaps:// or start_tls")
		}
	}
	if i.cost == 0 {
		i.cost = bcrypt.DefaultCost
	}
	i.key = make([]byte, 32)
	if _, err := rand.Read(i.key); err != nil {
		return nil, err
	}
	if i.dummy, err = bcrypt.GenerateFromPassword([]byte(rand.Text()), i.cost); err != nil {
		return nil, err
	}
	return i, nil
}

// usesDirectory reports whether passwords are checked against an LDAP directory (auth.mode: ldap).
func (i *Identity) usesDirectory() bool { return i.ldap != nil }

// ensureAdmin creates the admin with password at first start (Harbor's harbor_admin_password
// works so): once the admin exists, its stored hash is kept, whatever the configuration says,
// so that a password changed through the API or `cove admin reset-password` survives restarts.
func (i *Identity) ensureAdmin(password string) error {
	var rec userRecord
	err := i.readUser(AdminName, &rec)
	switch {
	case err == nil:
		if password != "" && bcrypt.CompareHashAndPassword(rec.Hash, []byte(password)) != nil {
			i.log.Info("auth.admin_password applies at first start only: the admin's stored password is kept " +
				"(change it on the admin page, or offline with cove admin reset-password admin)")
		}
		return nil
	case !errors.Is(err, kv.ErrNotFound):
		return fmt.Errorf("read admin: %w", err)
	case password == "":
		return nil // EnsureAdmin generates one once cove is up
	}
	if err := i.createAdmin(password); errors.Is(err, ErrConflict) {
		return nil // another node of the fleet created it at the same moment
	} else if err != nil {
		return err
	}
	i.log.Info("admin created with the password of auth.admin_password")
	return nil
}

// EnsureAdmin makes sure the admin exists. At the first start without auth.admin_password it
// generates a password, hands it to show, and stores its hash only once show succeeded (so the
// password is never lost: a start that fails before, or cannot show it, leaves no admin, and the
// next start generates one again). It reports whether it generated one. cmd calls it once cove
// is listening. The name "admin" is reserved meanwhile: no user, self-registered or from LDAP,
// can take it (see CreateUser and checkPassword).
func (i *Identity) EnsureAdmin(ctx context.Context, show func(password string) error) (generated bool, err error) {
	var rec userRecord
	err = i.readUser(AdminName, &rec)
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
	if err := i.createAdmin(password); errors.Is(err, ErrConflict) {
		i.log.Info("the admin was created by another node at the same moment: its password is in that node's output")
		return false, nil
	} else if err != nil {
		return false, err
	}
	if err := show(password); err != nil {
		if derr := i.removeAdmin(); derr != nil {
			return false, fmt.Errorf("show the generated admin password: %w; and taking the admin back failed: %v (reset it with cove admin reset-password admin)", err, derr)
		}
		return false, fmt.Errorf("show the generated admin password: %w (nothing was kept; the next start generates one again)", err)
	}
	i.log.Info("admin created with a generated password")
	return true, nil
}

// removeAdmin takes back an admin whose generated password could not be shown.
func (i *Identity) removeAdmin() error {
	var rec userRecord
	if err := i.readUser(AdminName, &rec); err != nil {
		return err
	}
	defer i.forget(AdminName)
	return i.update(func(txn kv.Txn) error {
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
func (i *Identity) ResetAdminPassword(ctx context.Context, password string) error {
	if err := CheckPasswordPolicy(password); err != nil {
		return err
	}
	if _, err := i.User(ctx, AdminName); errors.Is(err, ErrNotFound) {
		return i.createAdmin(password)
	}
	if err := i.SetPassword(ctx, AdminName, password); err != nil {
		return err
	}
	return i.SetAdmin(ctx, AdminName, true)
}

func (i *Identity) createAdmin(password string) error {
	hash, err := bcrypt.GenerateFromPassword([]byte(password), i.cost)
	if err != nil {
		return fmt.Errorf("hash admin password: %w", err)
	}
	if _, err := i.insertUser(User{Name: AdminName, Admin: true}, hash); err != nil {
		return fmt.Errorf("store admin: %w", err)
	}
	return nil
}

// authenticate returns who r comes from by the admin page's session or by Basic credentials (a
// bearer token is Tokens' to verify: Tokens.Authenticate): the zero Principal when it carries no
// credentials, ErrBadCredentials when it carries wrong ones.
func (i *Identity) authenticate(ctx context.Context, r *http.Request) (Principal, error) {
	if r.Header.Get("Authorization") == "" {
		// The admin page's session, if any; a stale cookie is simply anonymous.
		if c, err := r.Cookie(SessionCookie); err == nil {
			if p, err := i.sessionPrincipal(ctx, c.Value); err == nil {
				return p, nil
			}
		}
		return Principal{}, nil
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
	return i.Login(ctx, user, pass, RemoteHost(r))
}

// Login checks a user's (or robot's) credentials presented from addr. Failed logins are limited
// per (account, address), per account and per address as ratelimit.go describes: nobody can lock
// out someone else. Every login that reaches a password check is audited, success or not; the
// failures and the refusals at most refusalBurst a minute per caller (Audit.RecordRefusal).
func (i *Identity) Login(ctx context.Context, user, pass, addr string) (Principal, error) {
	// A password that was checked right within credTTL is no guess: it neither waits for nor
	// counts against the limits, so a fleet of hosts pulling with one account at once is not
	// refused.
	if p, ok := i.cachedCheck(user, pass); ok {
		return p, nil
	}
	// A failure's record names the user as sent, clipped: anyone can send any name.
	failure := Event{Username: clip(user, maxFailedUserField), Address: addr, Operation: "login", ResourceType: "user", Resource: clip(user, maxFailedUserField)}
	// The same wrong secret again within the minute is no new guess — a pod with a stale pull
	// secret sends it twice a second — so it is refused as wrong without counting against the
	// limits, which would otherwise lock the right secret out of that address too.
	if i.knownWrong(user, pass) {
		i.events.recordRefusal(ctx, failure)
		return Principal{}, ErrBadCredentials
	}
	at, err := i.limiter.admit(ctx, user, addr)
	if err != nil {
		if errors.Is(err, ErrTooManyAttempts) {
			e := failure
			e.Detail = "refused: " + err.Error()
			if te := (*TooManyAttemptsError)(nil); errors.As(err, &te) && te.spray {
				// A spray's refusals name the address only, so that a name per attempt does not
				// make a record per attempt.
				e.Username = ""
			}
			i.events.recordRefusal(ctx, e)
		}
		return Principal{}, err
	}
	// Admitted after the pair's previous check: a right password checked meanwhile is in the
	// cache, and checkPassword finds it there.
	p, checked, err := i.checkPassword(ctx, user, pass)
	switch {
	case errors.Is(err, ErrBadCredentials):
		at.done(outcomeWrong)
		if checked {
			i.rememberWrong(user, pass)
		}
		if at.spray {
			// A spray's failures name the address only, so that a name per attempt does not
			// make a record per attempt.
			failure.Username = ""
		}
		i.events.recordRefusal(ctx, failure)
		return p, err
	case err == nil:
		at.done(outcomeRight)
		if checked {
			i.events.record(ctx, Event{Username: user, Address: addr, Operation: "login", ResourceType: "user", Resource: user})
		}
		return p, nil
	}
	at.done(outcomeNone)
	return p, err
}

// CheckPassword verifies a user's or robot's password, with no rate limit and no audit record;
// requests go through Login. An empty password never matches.
func (i *Identity) CheckPassword(ctx context.Context, user, pass string) (Principal, error) {
	p, _, err := i.checkPassword(ctx, user, pass)
	return p, err
}

// knownWrong reports whether user's exact password was found wrong within credTTL.
func (i *Identity) knownWrong(user, pass string) bool {
	if user == "" || pass == "" {
		return false
	}
	mac := i.mac(user, pass)
	i.mu.Lock()
	defer i.mu.Unlock()
	exp, ok := i.wrong[user][string(mac)]
	return ok && i.now().Before(exp)
}

// rememberWrong notes that user's exact password was found wrong (as an HMAC, never the
// password), for credTTL; a change to the user forgets it (forget), so a password that becomes
// right is never refused for having been wrong.
func (i *Identity) rememberWrong(user, pass string) {
	mac := string(i.mac(user, pass))
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.wrongN >= maxWrongRemembered {
		i.wrong, i.wrongN = map[string]map[string]time.Time{}, 0 // bounded: start over
	}
	if i.wrong[user] == nil {
		i.wrong[user] = map[string]time.Time{}
	}
	if _, ok := i.wrong[user][mac]; !ok {
		i.wrongN++
	}
	i.wrong[user][mac] = i.now().Add(credTTL)
}

// maxWrongRemembered bounds the wrong secrets remembered.
const maxWrongRemembered = 65536

// cachedCheck reports whether user's exact password was checked right within credTTL.
func (i *Identity) cachedCheck(user, pass string) (Principal, bool) {
	if user == "" || pass == "" {
		return Principal{}, false
	}
	mac := i.mac(user, pass)
	i.mu.Lock()
	v, ok := i.verified[user]
	i.mu.Unlock()
	if ok && i.now().Before(v.expires) && subtle.ConstantTimeCompare(v.mac, mac) == 1 {
		return v.who, true
	}
	return Principal{}, false
}

// checkPassword also reports whether the password was really checked (not found in the cache of
// recent successes, which spares a pull storm one bcrypt or LDAP bind per request and never lets
// a wrong password through: it compares an HMAC of the exact password).
func (i *Identity) checkPassword(ctx context.Context, user, pass string) (Principal, bool, error) {
	if user == "" || pass == "" {
		return Principal{}, false, ErrBadCredentials
	}
	if p, ok := i.cachedCheck(user, pass); ok {
		return p, false, nil
	}
	mac := i.mac(user, pass)
	i.mu.Lock()
	gen := i.gen[user]
	i.mu.Unlock()
	var (
		who   Principal
		until = i.now().Add(credTTL)
	)
	switch {
	case isRobot(user):
		p, hash, expires, err := i.checkRobot(user, pass)
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
		err := i.readUser(user, &rec)
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			return Principal{}, true, fmt.Errorf("read user: %w", err)
		}
		if i.ldap != nil && (err != nil || rec.LDAP) && !strings.EqualFold(user, AdminName) {
			// Every name but the built-in admin's, which stays local even before it exists.
			if !userName.MatchString(user) {
				return Principal{}, true, ErrBadCredentials
			}
			p, err := i.ldapLogin(ctx, strings.ToLower(user), pass)
			if err != nil {
				return Principal{}, true, err
			}
			who = p
			break
		}
		if err != nil {
			// Spend the same time as a real comparison, so response times do not tell which users exist.
			_ = bcrypt.CompareHashAndPassword(i.dummy, []byte(pass))
			return Principal{}, true, ErrBadCredentials
		}
		if bcrypt.CompareHashAndPassword(rec.Hash, []byte(pass)) != nil {
			return Principal{}, true, ErrBadCredentials
		}
		who = rec.principal()
	}
	i.mu.Lock()
	if i.gen[user] == gen { // the user did not change while it was checked
		i.verified[user] = verifiedCred{mac: mac, expires: until, who: who}
	}
	i.mu.Unlock()
	return who, true, nil
}

func (i *Identity) mac(user, pass string) []byte {
	m := hmac.New(sha256.New, i.key)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(pass))
	return m.Sum(nil)
}

func (i *Identity) readUser(name string, rec *userRecord) error {
	return i.db.View(context.Background(), func(txn kv.Txn) error { return kv.Get(txn, []byte(keyUser+name), rec) })
}

// forget drops a user's cached password check after any change to the user, and moves its
// generation on, so that a check still running with the old record does not store its result.
func (i *Identity) forget(name string) {
	i.mu.Lock()
	delete(i.verified, name)
	i.wrongN -= len(i.wrong[name])
	delete(i.wrong, name)
	i.gen[name]++
	i.mu.Unlock()
}

// refresh returns who the account of rec is now, for a refresh token: a directory user as the
// directory says (one removed there, or from a group, loses it here), a local one as recorded.
func (i *Identity) refresh(ctx context.Context, rec userRecord) (Principal, error) {
	if rec.LDAP && i.ldap != nil {
		return i.ldapRefresh(ctx, rec.Name)
	}
	return rec.principal(), nil
}
