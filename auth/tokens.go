package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
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

// Tokens is the Docker token service: it signs access and refresh tokens with the keys of its
// keystore (keystore.go, sharedkeys.go), with the grants Policy allows of what a client asks,
// serves /service/token (tokenhttp.go), verifies the tokens it issued, and authenticates
// requests by them, or by what Identity says of a session or a password. It is safe for
// concurrent use.
type Tokens struct {
	log       *slog.Logger
	now       func() time.Time
	writable  func() error // asked before a key rotation (Config.Writable)
	publicURL string
	service   string
	issuer    string
	tokenTTL  time.Duration
	keys      *keystore
	events    events
	// identity checks the passwords traded for tokens and says whether a token's account is
	// still the one it was issued to; policy decides what a token grants.
	identity *Identity
	policy   *Policy
}

// newTokens returns the Tokens of cfg, with its keys in cfg.KeyDir or, with cfg.SharedKeys, in db.
func newTokens(ctx context.Context, db kv.DB, cfg Config, identity *Identity, policy *Policy, log *slog.Logger, now func() time.Time) (ts *Tokens, err error) {
	ts = &Tokens{
		log: log, now: now, writable: cfg.Writable, publicURL: strings.TrimSuffix(cfg.PublicURL, "/"), service: cfg.Service,
		tokenTTL: cfg.TokenTTL, events: events{audit: cfg.Audit, log: log}, identity: identity, policy: policy,
	}
	if ts.service == "" {
		ts.service = "cove"
	}
	ts.issuer = ts.service + "-token-service"
	if ts.tokenTTL <= 0 {
		ts.tokenTTL = 5 * time.Minute
	}
	switch {
	case cfg.SharedKeys:
		if ts.keys, err = loadSharedKeystore(ctx, db, now); err != nil {
			return nil, err
		}
	case cfg.KeyDir == "":
		return nil, errors.New("auth: a key directory is required")
	default:
		if ts.keys, err = loadKeystore(cfg.KeyDir, now); err != nil {
			return nil, err
		}
	}
	return ts, nil
}

// Authenticate returns who r comes from: a bearer token's principal, else the admin page's
// session or a Basic user (Identity): the zero Principal when it carries no credentials,
// ErrBadCredentials when it carries wrong ones.
func (ts *Tokens) Authenticate(ctx context.Context, r *http.Request) (Principal, error) {
	if scheme, raw, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		return ts.principalFromToken(ctx, strings.TrimSpace(raw))
	}
	return ts.identity.authenticate(ctx, r)
}

// Challenge returns the WWW-Authenticate value that sends a client to the token service for the
// scopes it needs ("repository:team/app:pull,push"; none for the version check).
func (ts *Tokens) Challenge(r *http.Request, scopes ...string) string {
	c := fmt.Sprintf("Bearer realm=%q,service=%q", ts.Realm(r), ts.service)
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

// Realm is the token endpoint's absolute URL: on cove's own host and port, which clients such as
// crane require of a loopback or private address.
func (ts *Tokens) Realm(r *http.Request) string {
	if ts.publicURL != "" {
		return ts.publicURL + TokenPath
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + TokenPath
}

// TokenPath is where the token service answers.
const TokenPath = "/service/token"

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
func (ts *Tokens) grant(ctx context.Context, p Principal, sc Scope) []string {
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
				if ts.policy.allowed(ctx, p, sc.Name, act) && !slices.Contains(granted, string(act)) {
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

// IssueToken signs an access token for p with the grants of scopes, for the given service. It
// returns what the token grants, one entry per scope asked for (with no actions when none is).
func (ts *Tokens) IssueToken(ctx context.Context, p Principal, service string, scopes []Scope) (token string, issued time.Time, access []Access, err error) {
	if service != ts.service {
		return "", time.Time{}, nil, fmt.Errorf("%w: unknown service %q (this registry is %q)", ErrInvalid, clip(service, 100), ts.service)
	}
	if len(scopes) > MaxScopes {
		return "", time.Time{}, nil, ErrTooManyScopes
	}
	// Every scope asked for has its entry, with no actions when none is granted: the registry
	// then knows the client asked and was refused, as Distribution's tokens have it.
	for _, sc := range scopes {
		g := ts.grant(ctx, p, sc)
		if g == nil {
			g = []string{}
		}
		access = append(access, Access{Type: sc.Type, Name: sc.Name, Actions: g, Refused: refusedOf(sc, g)})
	}
	issued = ts.now().UTC().Truncate(time.Second)
	token, err = ts.signClaims(p.Name, ts.service, issued, ts.tokenTTL, access, func(c *tokenClaims) { c.UID, c.Epoch = p.uid, p.epoch })
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
func (ts *Tokens) IssueRefreshToken(ctx context.Context, p Principal) (string, error) {
	if p.Anonymous() || p.Robot {
		return "", fmt.Errorf("%w: no refresh token without a user", ErrInvalid)
	}
	var rec userRecord
	if err := ts.identity.readUser(p.Name, &rec); err != nil {
		return "", fmt.Errorf("%w: user %s", ErrNotFound, p.Name)
	}
	return ts.signClaims(p.Name, ts.service+"-refresh", ts.now().UTC().Truncate(time.Second), refreshTTL, nil,
		func(c *tokenClaims) { c.Kind, c.UID, c.Epoch = "refresh", rec.ID, rec.Epoch })
}

func (ts *Tokens) signClaims(sub, aud string, issued time.Time, ttl time.Duration, access []Access, more func(*tokenClaims)) (string, error) {
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: ts.issuer, Subject: sub, Audience: jwt.ClaimStrings{aud},
			ExpiresAt: jwt.NewNumericDate(issued.Add(ttl)), NotBefore: jwt.NewNumericDate(issued),
			IssuedAt: jwt.NewNumericDate(issued), ID: hex.EncodeToString(jti),
		},
		Access: access,
	}
	more(&claims)
	if access == nil {
		claims.Access = []Access{}
	}
	key, kid := ts.keys.signer()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = kid
	return tok.SignedString(key)
}

// verify checks a token: ES256 only, a key from cove's own keystore only (never one named in the
// token), cove's issuer, the audience given, exp and nbf with a small leeway.
func (ts *Tokens) verify(raw, audience, kind string) (*tokenClaims, error) {
	var claims tokenClaims
	_, err := jwt.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		key, ok := ts.keys.lookup(kid)
		if !ok {
			return nil, fmt.Errorf("unknown signing key %q", kid)
		}
		return key, nil
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithIssuer(ts.issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(tokenLeeway),
		jwt.WithTimeFunc(ts.now),
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
func (ts *Tokens) principalFromToken(ctx context.Context, raw string) (Principal, error) {
	claims, err := ts.verify(raw, ts.service, "")
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
		err := ts.identity.readRobot(p.Name, &rec)
		if errors.Is(err, kv.ErrUnavailable) {
			return Principal{}, err // the database is down: not the token's fault (503)
		}
		if err != nil || rec.ID != claims.UID {
			return Principal{}, fmt.Errorf("%w: token subject %q is gone", ErrBadCredentials, p.Name)
		}
		rp := robotPrincipal(rec.Robot)
		p.Robot, p.robotProject, p.robotActions, p.uid = true, rp.robotProject, rp.robotActions, rp.uid
	case p.Name != "":
		var rec userRecord
		err := ts.identity.readUser(p.Name, &rec)
		if errors.Is(err, kv.ErrUnavailable) {
			return Principal{}, err
		}
		if err != nil || rec.ID != claims.UID || rec.Epoch != claims.Epoch {
			return Principal{}, fmt.Errorf("%w: the account of token subject %q changed or is gone", ErrBadCredentials, p.Name)
		}
		who := rec.principal()
		p.Admin, p.Groups, p.uid, p.epoch = who.Admin, who.Groups, who.uid, who.epoch
	}
	return p, nil
}

// PrincipalFromRefreshToken verifies a refresh token and returns its user.
func (ts *Tokens) PrincipalFromRefreshToken(ctx context.Context, raw string) (Principal, error) {
	claims, err := ts.verify(raw, ts.service+"-refresh", "refresh")
	if err != nil {
		return Principal{}, err
	}
	if isRobot(claims.Subject) {
		return Principal{}, fmt.Errorf("%w: robots log in with their secret", ErrBadCredentials)
	}
	var rec userRecord
	err = ts.identity.readUser(claims.Subject, &rec)
	if errors.Is(err, kv.ErrUnavailable) {
		return Principal{}, err
	}
	if err != nil || rec.ID != claims.UID || rec.Epoch != claims.Epoch {
		return Principal{}, fmt.Errorf("%w: the account of this refresh token changed or is gone", ErrBadCredentials)
	}
	// Who the account is now: a directory user is looked up again (Identity.refresh).
	return ts.identity.refresh(ctx, rec)
}

// RotateTokenKey starts signing tokens with a new key. Tokens signed with the old one keep
// verifying until they expire.
func (ts *Tokens) RotateTokenKey(ctx context.Context) (string, error) {
	if ts.writable != nil {
		if err := ts.writable(); err != nil {
			return "", err // a full disk or a read-only start: nothing is touched
		}
	}
	if ts.keys.db != nil {
		return ts.keys.rotateShared(ctx)
	}
	return ts.keys.rotate()
}
