package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"cove/internal/kv"
)

// The Docker registry token flow (https://distribution.github.io/distribution/spec/auth/token/):
// /v2 answers 401 with a Bearer challenge naming cove's own /service/token; the client asks there,
// with its credentials or none, for the scopes it needs; cove grants the intersection of what was
// asked and what the caller may do, in a short-lived JWT signed with a key of its own keystore.

// Access is one grant of a token: actions on a resource ("repository", name) or the catalog
// ("registry", "catalog").
type Access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
	// Refused lists what was asked and not granted: cove's own addition to Distribution's
	// claim, so that the registry answers a refused push with 403 DENIED at once (docker
	// retries a 401 for a minute) and knows a push is under way.
	Refused []string `json:"refused,omitempty"`
}

type tokenClaims struct {
	jwt.RegisteredClaims
	Access []Access `json:"access"`
	// Kind is "refresh" for refresh tokens, which are never accepted as access tokens.
	Kind string `json:"kind,omitempty"`
	// UID and Epoch bind a token (access or refresh) to one account as it was: a password or
	// admin change, or the account's deletion (even if the name comes back), ends it.
	UID   int64  `json:"uid,omitempty"`
	Epoch uint64 `json:"epoch,omitempty"`
}

// tokenLeeway is the clock skew allowed on exp, nbf and iat (docs/SECURITY.md 7: small).
const tokenLeeway = 30 * time.Second

// refreshTTL is how long a refresh token (docker login's "identity token") lives.
const refreshTTL = 30 * 24 * time.Hour

// keystore holds the token signing key: ES256 on P-256, generated at first start and kept in a
// file of its own under the data directory (docs/SECURITY.md 6: no default secrets). Rotation retires
// the current key to keys/retired/<kid>.pem; a retired key keeps verifying until every token it can
// have signed has expired (refreshTTL), then it is deleted. It is safe for concurrent use.
type keystore struct {
	dir string
	now func() time.Time
	// db, when set, holds the keys instead of dir: a fleet's shared store (sharedkeys.go).
	db kv.DB

	mu sync.RWMutex
	// key, kid and verify are guarded by mu.
	key    *ecdsa.PrivateKey
	kid    string
	verify map[string]*ecdsa.PublicKey // by kid: the current key and the retired ones still valid
	// loaded and missed are when the shared keys were last read, and last asked for a kid
	// unknown here; guarded by mu.
	loaded, missed time.Time
}

func loadKeystore(dir string, now func() time.Time) (*keystore, error) {
	if err := os.MkdirAll(filepath.Join(dir, "retired"), 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	ks := &keystore{dir: dir, now: now, verify: map[string]*ecdsa.PublicKey{}}
	path := filepath.Join(dir, "token-signing.pem")
	key, err := readKey(path)
	if errors.Is(err, os.ErrNotExist) {
		key, err = newKey(path)
	}
	if err != nil {
		return nil, err
	}
	ks.key, ks.kid = key, keyID(key)
	ks.verify[ks.kid] = &key.PublicKey
	retired, err := os.ReadDir(filepath.Join(dir, "retired"))
	if err != nil {
		return nil, err
	}
	for _, e := range retired {
		p := filepath.Join(dir, "retired", e.Name())
		info, err := e.Info()
		if err != nil {
			return nil, err
		}
		if now().Sub(info.ModTime()) > refreshTTL+tokenLeeway {
			_ = os.Remove(p) // every token it signed has expired
			continue
		}
		old, err := readKey(p)
		if err != nil {
			return nil, err
		}
		ks.verify[keyID(old)] = &old.PublicKey
	}
	return ks, nil
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("read %s: no PEM block", path)
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return key, nil
}

// newKey generates a key and writes it to path durably: a temporary file (made anew, so 0600
// even over one a crash left), fsynced, renamed over path, then the directory fsynced. A crash
// leaves the old file or the new one whole; a key lost after tokens were signed with it would
// end them all.
func newKey(path string) (*ecdsa.PrivateKey, error) {
	pemBytes, err := newKeyPEM()
	if err != nil {
		return nil, err
	}
	key, err := parseKeyPEM(pemBytes)
	if err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	err = func() error {
		if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = f.Write(pemBytes)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		d, err := os.Open(filepath.Dir(path))
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}()
	if err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("write token key: %w", err)
	}
	return key, nil
}

func keyID(key *ecdsa.PrivateKey) string {
	spki, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	sum := sha256.Sum256(spki)
	return hex.EncodeToString(sum[:8])
}

// signer returns the current key and its id.
func (ks *keystore) signer() (*ecdsa.PrivateKey, string) {
	ks.freshen()
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return ks.key, ks.kid
}

// lookup returns the public key of kid, if it is cove's and still valid.
func (ks *keystore) lookup(kid string) (*ecdsa.PublicKey, bool) {
	ks.mu.RLock()
	k, ok := ks.verify[kid]
	ks.mu.RUnlock()
	if !ok && ks.db != nil {
		return ks.lookupShared(kid)
	}
	return k, ok
}

// rotate retires the current key and starts signing with a new one.
func (ks *keystore) rotate() (string, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	// The new key is written whole first, under a name of its own: until it replaces the current
	// one at the end, every failure (a full disk, say) leaves the current key as it was.
	cur := filepath.Join(ks.dir, "token-signing.pem")
	next := cur + ".next"
	_ = os.Remove(cur + ".tmp") // a torn temporary file a crash left: never reused
	key, err := newKey(next)
	if err != nil {
		return "", err
	}
	retired := filepath.Join(ks.dir, "retired", ks.kid+".pem")
	err = func() error {
		// A second name for the current key (no data to write), then its time, which decides when
		// it is deleted, and its directory entry are made durable.
		if err := os.Link(cur, retired); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		now := ks.now()
		_ = os.Chtimes(retired, now, now)
		for _, p := range []string{retired, filepath.Join(ks.dir, "retired")} {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			err = f.Sync()
			_ = f.Close()
			if err != nil {
				return err
			}
		}
		if err := os.Rename(next, cur); err != nil {
			return err
		}
		d, err := os.Open(ks.dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}()
	if err != nil {
		_ = os.Remove(next)
		return "", fmt.Errorf("rotate the token key (the current one stays): %w", err)
	}
	ks.key, ks.kid = key, keyID(key)
	ks.verify[ks.kid] = &key.PublicKey
	return ks.kid, nil
}

// RotateTokenKey starts signing tokens with a new key. Tokens signed with the old one keep
// verifying until they expire.
func (s *Service) RotateTokenKey(ctx context.Context) (string, error) {
	if s.writable != nil {
		if err := s.writable(); err != nil {
			return "", err // a full disk or a read-only start: nothing is touched
		}
	}
	if s.keys.db != nil {
		return s.keys.rotateShared(ctx)
	}
	return s.keys.rotate()
}

// Scope is one scope a client asks for: "repository:team/app:pull,push", "registry:catalog:*".
type Scope struct {
	Type, Name string
	Actions    []string
}

// A token request names at most MaxScopes scopes, and a token is at most maxTokenBytes long: one
// anonymous request could ask for thousands of scopes, and get a token (and make an audit record)
// of hundreds of kilobytes. A pull or push asks for one or two scopes; docker build with many
// sources a few more.
const (
	MaxScopes = 32
	// maxTokenBytes holds MaxScopes scopes of the longest names with every action (about 15 KiB;
	// TestTokenSizeIsBounded).
	maxTokenBytes = 16 << 10
)

// ErrTooManyScopes means a token request asks for more than MaxScopes scopes.
var ErrTooManyScopes = fmt.Errorf("%w: at most %d scopes per token request", ErrInvalid, MaxScopes)

var (
	// repoName is the OCI distribution spec's repository name grammar (at most maxRepoName bytes).
	repoName = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	// resourceType is the token spec's resource type grammar: "repository", "repository(plugin)".
	resourceType = regexp.MustCompile(`^[a-z0-9]{1,32}(?:\([a-z0-9]{1,32}\))?$`)
)

const maxRepoName = 255

// ValidRepositoryName reports whether name is a repository name by the OCI distribution spec's
// grammar, at most 255 bytes.
func ValidRepositoryName(name string) bool {
	return len(name) <= maxRepoName && repoName.MatchString(name)
}

// ParseScope reads a scope parameter. The name may itself contain ":" (a registry host with a
// port), so the type is the first field and the actions the last. The type follows the token
// spec's grammar; a registry scope names the catalog, every other a repository by the OCI name
// grammar. The actions kept are those cove knows (pull, push, delete and "*"), each once; others
// grant nothing and are left out.
func ParseScope(s string) (Scope, error) {
	first := strings.Index(s, ":")
	last := strings.LastIndex(s, ":")
	if first < 0 || first == last {
		return Scope{}, fmt.Errorf("%w: scope %q is not type:name:actions", ErrInvalid, clip(s, 300))
	}
	sc := Scope{Type: s[:first], Name: s[first+1 : last]}
	switch {
	case sc.Name == "":
		return Scope{}, fmt.Errorf("%w: scope %q names nothing", ErrInvalid, clip(s, 300))
	case !resourceType.MatchString(sc.Type):
		return Scope{}, fmt.Errorf("%w: scope %q: %q is not a resource type", ErrInvalid, clip(s, 300), clip(sc.Type, 40))
	case sc.Type == "registry" && sc.Name != "catalog":
		return Scope{}, fmt.Errorf("%w: scope %q: the registry resource is catalog", ErrInvalid, clip(s, 300))
	case sc.Type != "registry" && !ValidRepositoryName(sc.Name):
		return Scope{}, fmt.Errorf("%w: scope %q: not a repository name (lower-case letters and digits, separated by '.', '_', '__', '-' or '/'; at most %d bytes)",
			ErrInvalid, clip(s, 300), maxRepoName)
	}
	known := []string{string(ActionPull), string(ActionPush), string(ActionDelete), "*"}
	if sc.Type == "registry" {
		known = []string{"*"}
	}
	for _, a := range strings.Split(s[last+1:], ",") {
		if a = strings.TrimSpace(a); slices.Contains(known, a) && !slices.Contains(sc.Actions, a) {
			sc.Actions = append(sc.Actions, a)
		}
	}
	return sc, nil
}

// ParseScopes reads the scope parameters of a token request, each a space-separated list: at
// most MaxScopes in all, the same resource asked twice counted once, its actions merged.
func ParseScopes(params []string) ([]Scope, error) {
	var out []Scope
	for _, raw := range params {
		for _, one := range strings.Fields(raw) {
			sc, err := ParseScope(one)
			if err != nil {
				return nil, err
			}
			i := slices.IndexFunc(out, func(o Scope) bool { return o.Type == sc.Type && o.Name == sc.Name })
			if i < 0 {
				if len(out) == MaxScopes {
					return nil, ErrTooManyScopes
				}
				out = append(out, sc)
				continue
			}
			for _, a := range sc.Actions {
				if !slices.Contains(out[i].Actions, a) {
					out[i].Actions = append(out[i].Actions, a)
				}
			}
		}
	}
	return out, nil
}

// grant computes what p may do of what sc asks: never more than asked, never more than allowed.
func (s *Service) grant(ctx context.Context, p Principal, sc Scope) []string {
	var granted []string
	switch sc.Type {
	case "repository":
		for _, a := range sc.Actions {
			var actions []Action
			switch Action(a) {
			case ActionPull, ActionPush, ActionDelete:
				actions = []Action{Action(a)}
			case "*":
				actions = []Action{ActionPull, ActionPush, ActionDelete}
			}
			for _, act := range actions {
				if s.allowed(ctx, p, sc.Name, act) && !slices.Contains(granted, string(act)) {
					granted = append(granted, string(act))
				}
			}
		}
	case "registry":
		// The catalog is filtered per caller when listed; asking for it grants the listing.
		if sc.Name == "catalog" && slices.Contains(sc.Actions, "*") {
			granted = []string{"*"}
		}
	}
	return granted
}

// allowed decides one action on a repository name for a principal authenticated by password (or
// none): the local project's policy when the name is in a project, else the mirror's.
func (s *Service) allowed(ctx context.Context, p Principal, name string, action Action) bool {
	first, _, nested := strings.Cut(name, "/")
	if nested && !s.reserved[first] {
		exists, err := s.ProjectExists(ctx, first)
		if err != nil {
			// Unknown whether the name is a private project's: nothing is granted, rather
			// than a mirror's pull on what may be a private name.
			return false
		}
		if exists {
			return s.authorizeLocal(ctx, p, name, action) == nil
		}
	}
	return s.authorizeMirror(p, action) == nil
}

// IssueToken signs an access token for p with the grants of scopes, for the given service. It
// returns what the token grants, one entry per scope asked for (with no actions when none is).
func (s *Service) IssueToken(ctx context.Context, p Principal, service string, scopes []Scope) (token string, issued time.Time, access []Access, err error) {
	if service != s.service {
		return "", time.Time{}, nil, fmt.Errorf("%w: unknown service %q (this registry is %q)", ErrInvalid, clip(service, 100), s.service)
	}
	if len(scopes) > MaxScopes {
		return "", time.Time{}, nil, ErrTooManyScopes
	}
	// Every scope asked for has its entry, with no actions when none is granted: the registry
	// then knows the client asked and was refused, as Distribution's tokens have it.
	for _, sc := range scopes {
		g := s.grant(ctx, p, sc)
		if g == nil {
			g = []string{}
		}
		access = append(access, Access{Type: sc.Type, Name: sc.Name, Actions: g, Refused: refusedOf(sc, g)})
	}
	issued = s.now().UTC().Truncate(time.Second)
	token, err = s.signClaims(p.Name, s.service, issued, s.tokenTTL, access, func(c *tokenClaims) { c.UID, c.Epoch = p.uid, p.epoch })
	if err == nil && len(token) > maxTokenBytes {
		// Not with scopes from ParseScope; a caller of its own could make one.
		return "", time.Time{}, nil, fmt.Errorf("%w: the token would be %d bytes, more than %d: ask for fewer scopes", ErrInvalid, len(token), maxTokenBytes)
	}
	return token, issued, access, err
}

// refusedOf is what sc asks that granted lacks; "*" on a repository stands for pull, push and
// delete.
func refusedOf(sc Scope, granted []string) []string {
	var no []string
	for _, a := range sc.Actions {
		asked := []string{a}
		if a == "*" && sc.Type == "repository" {
			asked = []string{string(ActionPull), string(ActionPush), string(ActionDelete)}
		}
		for _, one := range asked {
			if !slices.Contains(granted, one) && !slices.Contains(granted, "*") && !slices.Contains(no, one) {
				no = append(no, one)
			}
		}
	}
	return no
}

// grantSummary writes what a token grants and what it refuses of what was asked, for the audit
// log: "repository:team/app:pull,push", and "repository:team/app:delete" refused.
func grantSummary(access []Access) (granted, refused string) {
	var g, r []string
	for _, a := range access {
		prefix := a.Type + ":" + a.Name + ":"
		if len(a.Actions) > 0 {
			g = append(g, prefix+strings.Join(a.Actions, ","))
		}
		if len(a.Refused) > 0 {
			r = append(r, prefix+strings.Join(a.Refused, ","))
		}
	}
	return strings.Join(g, " "), strings.Join(r, " ")
}

// IssueRefreshToken signs a long-lived token that stands for p's password at the token endpoint
// only (OAuth2 refresh_token grant, docker login's identity token).
func (s *Service) IssueRefreshToken(ctx context.Context, p Principal) (string, error) {
	if p.Anonymous() || p.Robot {
		return "", fmt.Errorf("%w: no refresh token without a user", ErrInvalid)
	}
	var rec userRecord
	if err := s.readUser(p.Name, &rec); err != nil {
		return "", fmt.Errorf("%w: user %s", ErrNotFound, p.Name)
	}
	return s.signClaims(p.Name, s.service+"-refresh", s.now().UTC().Truncate(time.Second), refreshTTL, nil,
		func(c *tokenClaims) { c.Kind, c.UID, c.Epoch = "refresh", rec.ID, rec.Epoch })
}

func (s *Service) signClaims(sub, aud string, issued time.Time, ttl time.Duration, access []Access, more func(*tokenClaims)) (string, error) {
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: s.issuer, Subject: sub, Audience: jwt.ClaimStrings{aud},
			ExpiresAt: jwt.NewNumericDate(issued.Add(ttl)), NotBefore: jwt.NewNumericDate(issued),
			IssuedAt: jwt.NewNumericDate(issued), ID: hex.EncodeToString(jti),
		},
		Access: access,
	}
	more(&claims)
	if access == nil {
		claims.Access = []Access{}
	}
	key, kid := s.keys.signer()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = kid
	return tok.SignedString(key)
}

// verify checks a token: ES256 only, a key from cove's own keystore only (never one named in the
// token), cove's issuer, the audience given, exp and nbf with a small leeway.
func (s *Service) verify(raw, audience, kind string) (*tokenClaims, error) {
	var claims tokenClaims
	_, err := jwt.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		key, ok := s.keys.lookup(kid)
		if !ok {
			return nil, fmt.Errorf("unknown signing key %q", kid)
		}
		return key, nil
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithIssuer(s.issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(tokenLeeway),
		jwt.WithTimeFunc(s.now),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCredentials, err)
	}
	if claims.Kind != kind || claims.NotBefore == nil {
		return nil, fmt.Errorf("%w: not a %q token", ErrBadCredentials, kind)
	}
	return &claims, nil
}

// principalFromToken verifies an access token and returns who it stands for, with its grants.
func (s *Service) principalFromToken(ctx context.Context, raw string) (Principal, error) {
	claims, err := s.verify(raw, s.service, "")
	if err != nil {
		return Principal{}, err
	}
	p := Principal{Name: claims.Subject, Token: true, access: map[string][]string{}, refused: map[string][]string{}, tokenIssued: claims.IssuedAt.Time}
	for _, a := range claims.Access {
		key := a.Type + ":" + a.Name
		for _, act := range a.Actions { // the same resource twice: the grants add up
			if !slices.Contains(p.access[key], act) {
				p.access[key] = append(p.access[key], act)
			}
		}
		if p.access[key] == nil {
			p.access[key] = []string{}
		}
		p.refused[key] = append(p.refused[key], a.Refused...)
	}
	// The token stands for the account as it was when it was issued: a password or admin change,
	// or the account's deletion (even if the name comes back), ends it.
	switch {
	case isRobot(p.Name):
		var rec robotRecord
		if err := s.db.View(context.Background(), func(txn kv.Txn) error { return kv.Get(txn, []byte(keyRobot+p.Name), &rec) }); err != nil || rec.ID != claims.UID {
			return Principal{}, fmt.Errorf("%w: token subject %q is gone", ErrBadCredentials, p.Name)
		}
		rp := robotPrincipal(rec.Robot)
		p.Robot, p.robotProject, p.robotActions, p.uid = true, rp.robotProject, rp.robotActions, rp.uid
	case p.Name != "":
		var rec userRecord
		if err := s.readUser(p.Name, &rec); err != nil || rec.ID != claims.UID || rec.Epoch != claims.Epoch {
			return Principal{}, fmt.Errorf("%w: the account of token subject %q changed or is gone", ErrBadCredentials, p.Name)
		}
		who := rec.principal()
		p.Admin, p.Groups, p.uid, p.epoch = who.Admin, who.Groups, who.uid, who.epoch
	}
	return p, nil
}

// PrincipalFromRefreshToken verifies a refresh token and returns its user.
func (s *Service) PrincipalFromRefreshToken(ctx context.Context, raw string) (Principal, error) {
	claims, err := s.verify(raw, s.service+"-refresh", "refresh")
	if err != nil {
		return Principal{}, err
	}
	if isRobot(claims.Subject) {
		return Principal{}, fmt.Errorf("%w: robots log in with their secret", ErrBadCredentials)
	}
	var rec userRecord
	if err := s.readUser(claims.Subject, &rec); err != nil || rec.ID != claims.UID || rec.Epoch != claims.Epoch {
		return Principal{}, fmt.Errorf("%w: the account of this refresh token changed or is gone", ErrBadCredentials)
	}
	if rec.LDAP && s.ldap != nil {
		// The directory decides again: a user removed there, or from a group, loses it here.
		return s.ldapRefresh(ctx, rec.Name)
	}
	return rec.principal(), nil
}

// AskedFor reports whether a token principal's token was asked for action on the resource,
// granted or not.
func (p Principal) AskedFor(typ, name string, action string) bool {
	return p.Granted(typ, name, action) || slices.Contains(p.refused[typ+":"+name], action)
}

// Granted reports whether a token principal's grants include action on the resource.
func (p Principal) Granted(typ, name string, action string) bool {
	return slices.Contains(p.access[typ+":"+name], action) || slices.Contains(p.access[typ+":"+name], "*")
}
