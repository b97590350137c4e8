package auth

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

type testClock struct{ now time.Time }

func (c *testClock) Now() time.Time { return c.now }

func tokenService(t *testing.T) (*Service, *testClock) {
	t.Helper()
	clock := &testClock{now: time.Unix(1_800_000_000, 0)}
	s, err := New(context.Background(), openDB(t), Config{
		AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir(), Now: clock.Now,
		AnonymousMirrorPull: true, ReservedNames: []string{"docker.io"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Policy.CreateProject(context.Background(), "team", false, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Policy.CreateProject(context.Background(), "open", true, "admin"); err != nil {
		t.Fatal(err)
	}
	return s, clock
}

func scopes(t *testing.T, ss ...string) []Scope {
	t.Helper()
	var out []Scope
	for _, s := range ss {
		sc, err := ParseScope(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sc)
	}
	return out
}

func bearer(tok string) *http.Request {
	r := httptest.NewRequest("GET", "/v2/", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return r
}

func TestTokenGrantsTheIntersection(t *testing.T) {
	ctx := context.Background()
	s, _ := tokenService(t)
	admin := accountOf(t, s, "admin")
	tests := []struct {
		name  string
		who   Principal
		scope string
		want  string // granted actions, comma-separated
	}{
		{"admin asks push and pull", admin, "repository:team/app:pull,push", "pull,push"},
		{"admin asks all", admin, "repository:team/app:*", "pull,push,delete"},
		{"anonymous asks push on public", Principal{}, "repository:open/app:pull,push", "pull"},
		{"anonymous asks private", Principal{}, "repository:team/app:pull", ""},
		{"anonymous asks mirror pull", Principal{}, "repository:library/alpine:pull", "pull"},
		{"admin asks push on a mirror", admin, "repository:docker.io/library/alpine:pull,push", "pull"},
		{"unknown action", admin, "repository:team/app:frobnicate", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, _, _, err := s.Tokens.IssueToken(ctx, tt.who, "cove", scopes(t, tt.scope))
			if err != nil {
				t.Fatal(err)
			}
			p, err := s.Tokens.Authenticate(ctx, bearer(tok))
			if err != nil {
				t.Fatalf("verify own token: %v", err)
			}
			sc, _ := ParseScope(tt.scope)
			if got := strings.Join(p.access["repository:"+sc.Name], ","); got != tt.want {
				t.Errorf("granted %q, want %q", got, tt.want)
			}
			if !p.Asked("repository", sc.Name) {
				t.Error("the token does not record the scope asked for")
			}
		})
	}
}

func TestTokenForOneRepositoryOnly(t *testing.T) {
	ctx := context.Background()
	s, _ := tokenService(t)
	tok, _, _, _ := s.Tokens.IssueToken(ctx, accountOf(t, s, "admin"), "cove", scopes(t, "repository:team/a:pull"))
	p, err := s.Tokens.Authenticate(ctx, bearer(tok))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Policy.Authorize(ctx, p, "team/a", ActionPull); err != nil {
		t.Errorf("pull on team/a with its token: %v", err)
	}
	if err := s.Policy.Authorize(ctx, p, "team/b", ActionPull); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("a token for team/a used on team/b = %v, want refused", err)
	}
	if err := s.Policy.Authorize(ctx, p, "team/a", ActionPush); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("push with a pull token = %v, want refused", err)
	}
}

// TestForgedTokensAreRefused: every classic JWT attack fails verification.
func TestForgedTokensAreRefused(t *testing.T) {
	ctx := context.Background()
	s, clock := tokenService(t)
	good, _, _, _ := s.Tokens.IssueToken(ctx, accountOf(t, s, "admin"), "cove", scopes(t, "repository:team/app:pull"))
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	json.Unmarshal(payload, &claims)
	encode := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	// A payload granting push, under the original signature.
	claims["access"] = []map[string]any{{"type": "repository", "name": "team/app", "actions": []string{"pull", "push"}}}
	modified := parts[0] + "." + encode(claims) + "." + parts[2]
	// alg none.
	_, curKid := s.Tokens.keys.signer()
	none := encode(map[string]string{"alg": "none", "typ": "JWT", "kid": curKid}) + "." + encode(claims) + "."
	// HS256 keyed with the public key (the algorithm-confusion attack).
	key, kid := s.Tokens.keys.signer()
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims))
	hs.Header["kid"] = kid
	hsToken, _ := hs.SignedString(pub)
	// A key named in the token header instead of cove's keystore.
	foreign := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims(claims))
	foreign.Header["kid"] = "someone-elses"
	other, _ := tokenService(t)
	otherKey, _ := other.Tokens.keys.signer()
	foreignToken, _ := foreign.SignedString(otherKey)
	// Another audience, signed with the right key.
	aud := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": s.Tokens.issuer, "sub": "admin", "aud": "another-registry", "exp": clock.now.Add(time.Minute).Unix(),
		"nbf": clock.now.Unix(), "iat": clock.now.Unix(), "access": claims["access"],
	})
	aud.Header["kid"] = kid
	audToken, _ := aud.SignedString(key)
	// A refresh token is not an access token.
	refresh, _ := s.Tokens.IssueRefreshToken(ctx, Principal{Name: "admin"})

	for name, tok := range map[string]string{
		"modified payload": modified, "alg none": none, "HS256 with the public key": hsToken,
		"foreign key": foreignToken, "other audience": audToken, "refresh as access": refresh, "garbage": "abc.def.ghi",
	} {
		if _, err := s.Tokens.Authenticate(ctx, bearer(tok)); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("%s: Authenticate = %v, want ErrBadCredentials", name, err)
		}
	}
	// Expired: past exp and the leeway.
	clock.now = clock.now.Add(s.Tokens.tokenTTL + tokenLeeway + time.Second)
	if _, err := s.Tokens.Authenticate(ctx, bearer(good)); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("expired token: %v, want ErrBadCredentials", err)
	}
}

func TestTokenEndpoint(t *testing.T) {
	s, _ := tokenService(t)
	srv := httptest.NewServer(http.HandlerFunc(s.Tokens.ServeToken))
	defer srv.Close()
	get := func(query string, user, pass string) (int, map[string]any) {
		req, _ := http.NewRequest("GET", srv.URL+"?"+query, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	code, body := get("service=cove&scope=repository:team/app:pull,push&offline_token=true", "admin", "pw")
	if code != 200 || body["token"] == "" || body["token"] != body["access_token"] || body["expires_in"] != float64(300) || body["refresh_token"] == nil || body["issued_at"] == nil {
		t.Errorf("GET with credentials = %d %v", code, body)
	}
	if code, _ := get("service=cove&scope=repository:team/app:pull", "admin", "wrong"); code != 401 {
		t.Errorf("wrong password = %d, want 401", code)
	}
	if code, _ := get("service=elsewhere&scope=repository:team/app:pull", "", ""); code != 400 {
		t.Errorf("unknown service = %d, want 400", code)
	}
	if code, _ := get("service=cove&scope=nonsense", "", ""); code != 400 {
		t.Errorf("malformed scope = %d, want 400", code)
	}
	code, body = get("service=cove&scope=repository:open/app:pull", "", "")
	if code != 200 || body["refresh_token"] != nil {
		t.Errorf("anonymous = %d %v", code, body)
	}
	// The OAuth2 form: password grant, then refresh grant.
	post := func(form url.Values) (int, map[string]any) {
		resp, err := http.PostForm(srv.URL, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	code, body = post(url.Values{"grant_type": {"password"}, "username": {"admin"}, "password": {"pw"}, "service": {"cove"},
		"scope": {"repository:team/app:pull repository:team/b:push"}, "access_type": {"offline"}, "client_id": {"test"}})
	refresh, _ := body["refresh_token"].(string)
	if code != 200 || refresh == "" {
		t.Fatalf("password grant = %d %v", code, body)
	}
	if code, body = post(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "service": {"cove"}, "scope": {"repository:team/app:pull"}}); code != 200 || body["access_token"] == nil {
		t.Errorf("refresh grant = %d %v", code, body)
	}
	if code, _ = post(url.Values{"grant_type": {"password"}, "username": {"admin"}, "password": {""}, "service": {"cove"}}); code != 401 {
		t.Errorf("empty password = %d, want 401", code)
	}
}

func TestRotatedKeyVerifiesUntilItsTokensExpire(t *testing.T) {
	ctx := context.Background()
	clock := &testClock{now: time.Unix(1_800_000_000, 0)}
	db := openDB(t)
	keys := t.TempDir()
	cfg := Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: keys, Now: clock.Now}
	s, err := New(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	admin := accountOf(t, s, "admin")
	old, _, _, _ := s.Tokens.IssueToken(ctx, admin, "cove", nil)
	refresh, _ := s.Tokens.IssueRefreshToken(ctx, admin)
	_, oldKid := s.Tokens.keys.signer()
	newKid, err := s.Tokens.RotateTokenKey(ctx)
	if err != nil || newKid == oldKid {
		t.Fatalf("RotateTokenKey = %s, %v", newKid, err)
	}
	if _, err := s.Tokens.Authenticate(ctx, bearer(old)); err != nil {
		t.Errorf("a token of the retired key no longer verifies: %v", err)
	}
	fresh, _, _, _ := s.Tokens.IssueToken(ctx, admin, "cove", nil)
	if p, err := s.Tokens.Authenticate(ctx, bearer(fresh)); err != nil || p.Name != "admin" {
		t.Errorf("a token of the new key: %v", err)
	}
	// A restart keeps the retired key while tokens it signed may live.
	s2, err := New(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Tokens.PrincipalFromRefreshToken(ctx, refresh); err != nil {
		t.Errorf("after a restart, a refresh token of the retired key: %v", err)
	}
	// Once all its tokens have expired, the retired key is gone at the next start.
	clock.now = clock.now.Add(refreshTTL + time.Hour)
	s3, err := New(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s3.Tokens.keys.lookup(oldKid); ok {
		t.Error("the retired key outlived every token it signed")
	}
}

func TestRefreshTokensEndWithTheAccount(t *testing.T) {
	ctx := context.Background()
	s, _ := tokenService(t)
	u, err := s.Identity.CreateUser(ctx, User{Name: "alice"}, "Passw0rdAlice")
	if err != nil {
		t.Fatal(err)
	}
	refresh, err := s.Tokens.IssueRefreshToken(ctx, Principal{Name: u.Name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tokens.PrincipalFromRefreshToken(ctx, refresh); err != nil {
		t.Fatalf("fresh refresh token: %v", err)
	}
	if err := s.Identity.SetPassword(ctx, "alice", "N3wPassw0rd"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tokens.PrincipalFromRefreshToken(ctx, refresh); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("refresh token after a password change = %v, want refused", err)
	}
	// Deleted and made again under the same name: the old token is not the new account's.
	refresh, _ = s.Tokens.IssueRefreshToken(ctx, Principal{Name: "alice"})
	if err := s.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Identity.CreateUser(ctx, User{Name: "alice"}, "Passw0rdAlice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tokens.PrincipalFromRefreshToken(ctx, refresh); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("refresh token of a deleted account = %v, want refused", err)
	}
	// The refresh grant does not hand out another refresh token.
	srv := httptest.NewServer(http.HandlerFunc(s.Tokens.ServeToken))
	defer srv.Close()
	refresh, _ = s.Tokens.IssueRefreshToken(ctx, Principal{Name: "alice"})
	resp, err := http.PostForm(srv.URL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "service": {"cove"}, "access_type": {"offline"}})
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 200 || body["refresh_token"] != nil {
		t.Errorf("refresh grant = %d %v: no new refresh token expected", resp.StatusCode, body)
	}
}

func TestParallelGuessesCannotOutrunTheLimit(t *testing.T) {
	ctx := context.Background()
	s, _ := tokenService(t)
	results := make(chan error, 40)
	for i := range 40 {
		// Distinct guesses: the same wrong secret again is refused unchecked (knownWrong), and a
		// goroutine late to start would count as checked.
		go func() {
			_, err := s.Identity.Login(ctx, "admin", fmt.Sprintf("guess-%d", i), "192.0.2.1")
			results <- err
		}()
	}
	checked := 0
	for range 40 {
		if err := <-results; errors.Is(err, ErrBadCredentials) {
			checked++
		} else if !errors.Is(err, ErrTooManyAttempts) {
			t.Errorf("Login = %v", err)
		}
	}
	if checked > pairFailures {
		t.Errorf("%d guesses were checked, want at most %d", checked, pairFailures)
	}
}

// Many hosts logging in at once with one account's right password — a fleet pulling with one
// robot — are not refused, even while someone else's guesses have locked their address out; a
// new guess from that address is still refused.
func TestParallelRightPasswordsAreNotLimited(t *testing.T) {
	ctx := context.Background()
	s, _ := tokenService(t)
	if _, err := s.Identity.CreateUser(ctx, User{Name: "fleet"}, "Passw0rdFleet"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Identity.Login(ctx, "fleet", "Passw0rdFleet", "192.0.2.7"); err != nil {
		t.Fatal(err)
	}
	for i := range pairFailures + 1 {
		s.Identity.Login(ctx, "fleet", fmt.Sprintf("guess%d", i), "198.51.100.1")
	}
	results := make(chan error, 64)
	for range 64 {
		go func() { _, err := s.Identity.Login(ctx, "fleet", "Passw0rdFleet", "192.0.2.7"); results <- err }()
	}
	for range 64 {
		if err := <-results; err != nil {
			t.Errorf("a right password, logged in with a minute ago: %v", err)
		}
	}
	if _, err := s.Identity.Login(ctx, "fleet", "another-guess", "198.51.100.1"); !errors.Is(err, ErrTooManyAttempts) {
		t.Errorf("another guess from the locked-out address = %v, want ErrTooManyAttempts", err)
	}
}

func TestDeletedProjectTakesItsMembersAndRobots(t *testing.T) {
	ctx := context.Background()
	s, _ := tokenService(t)
	if _, err := s.Identity.CreateUser(ctx, User{Name: "bob"}, "Passw0rdBob"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Policy.AddMember(ctx, "team", MemberUser, "bob", RoleMaintainer); err != nil {
		t.Fatal(err)
	}
	rb, secret, err := s.CreateRobot(ctx, "team", "ci", []Action{ActionPush}, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Identity.CheckPassword(ctx, rb.Name, secret); err != nil {
		t.Fatal(err)
	}
	if err := s.Policy.DeleteProject(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Policy.CreateProject(ctx, "team", false, "admin"); err != nil {
		t.Fatal(err)
	}
	if role := s.Policy.RoleOf(ctx, Principal{Name: "bob"}, "team"); role != RoleNone {
		t.Errorf("bob kept role %q in the re-created project", role.Name())
	}
	if _, err := s.Identity.CheckPassword(ctx, rb.Name, secret); err == nil {
		t.Error("the old project's robot still logs in")
	}
}

// docker login asks for a refresh token (offline_token=true); a robot gets none, and the token
// request still succeeds: 200 with an access token (it was a 500).
func TestRobotLoginWithOfflineToken(t *testing.T) {
	ctx := context.Background()
	s, _ := tokenService(t)
	robot, secret, err := s.CreateRobot(ctx, "team", "ci", []Action{ActionPull, ActionPush}, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(s.Tokens.ServeToken))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"?service=cove&scope=repository:team/app:pull,push&offline_token=true&client_id=docker", nil)
	req.SetBasicAuth(robot.Name, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != 200 || body["token"] == nil {
		t.Fatalf("robot token with offline_token = %d %v, want 200 with a token", resp.StatusCode, body)
	}
	if _, ok := body["refresh_token"]; ok {
		t.Errorf("a robot got a refresh token: %v", body)
	}
	p, err := s.Tokens.principalFromToken(ctx, body["token"].(string))
	if err != nil || !p.Granted("repository", "team/app", "push") {
		t.Errorf("the robot's token = %+v, %v; want push on team/app", p, err)
	}
	// The OAuth2 form with access_type=offline likewise.
	resp, err = http.PostForm(srv.URL, url.Values{"grant_type": {"password"}, "username": {robot.Name}, "password": {secret},
		"service": {"cove"}, "scope": {"repository:team/app:pull"}, "access_type": {"offline"}, "client_id": {"test"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("robot password grant with access_type=offline = %d, want 200", resp.StatusCode)
	}
}

// The audit record of a token says what it grants and what it refuses, not what was asked.
func TestTokenAuditRecordsGrants(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	audit := NewAudit(db, 0, nil)
	defer audit.Close()
	s, err := New(ctx, db, Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir(), Audit: audit, AnonymousMirrorPull: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Policy.CreateProject(ctx, "open", true, "admin"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(s.Tokens.ServeToken))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "?service=cove&scope=repository:open/app:pull,push,delete&scope=repository:open/b:*")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	events, _, err := audit.Query(ctx, Filter{Operation: "token"}, 1, 10)
	if err != nil || len(events) != 1 {
		t.Fatalf("token records = %v, %v", events, err)
	}
	e := events[0]
	if e.Resource != "repository:open/app:pull repository:open/b:pull" {
		t.Errorf("token record resource = %q, want what was granted", e.Resource)
	}
	if e.Detail != "refused: repository:open/app:push,delete repository:open/b:push,delete" {
		t.Errorf("token record detail = %q, want what was refused", e.Detail)
	}
}

// accountOf is the principal of a user as a password check makes it: with its id and epoch.
func accountOf(t *testing.T, s *Service, name string) Principal {
	t.Helper()
	var rec userRecord
	if err := s.Identity.readUser(name, &rec); err != nil {
		t.Fatalf("read user %s: %v", name, err)
	}
	return rec.principal()
}

// Sessions and access tokens stand for the account as it was: a password change, an admin
// change or a deletion ends them, and a user re-created under the same name inherits nothing.
func TestCredentialsEndWithTheAccount(t *testing.T) {
	ctx := context.Background()
	s, _ := tokenService(t)
	changes := []struct {
		name   string
		change func(t *testing.T)
	}{
		{"password change", func(t *testing.T) {
			if err := s.Identity.SetPassword(ctx, "eve", "Another-pw2"); err != nil {
				t.Fatal(err)
			}
		}},
		{"admin change", func(t *testing.T) {
			if err := s.Identity.SetAdmin(ctx, "eve", true); err != nil {
				t.Fatal(err)
			}
		}},
		{"deleted and re-created", func(t *testing.T) {
			if err := s.DeleteUser(ctx, "eve"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Identity.CreateUser(ctx, User{Name: "eve"}, "Eve-password1"); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			_ = s.DeleteUser(ctx, "eve")
			if _, err := s.Identity.CreateUser(ctx, User{Name: "eve"}, "Eve-password1"); err != nil {
				t.Fatal(err)
			}
			eve, err := s.Identity.CheckPassword(ctx, "eve", "Eve-password1")
			if err != nil {
				t.Fatal(err)
			}
			tok, _, _, err := s.Tokens.IssueToken(ctx, eve, "cove", scopes(t, "repository:open/app:pull"))
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			if err := s.Identity.NewSession(ctx, rec, httptest.NewRequest("POST", "/login", nil), eve); err != nil {
				t.Fatal(err)
			}
			cookie := rec.Result().Cookies()[0]
			withCookie := func() *http.Request {
				r := httptest.NewRequest("GET", "/api/v2.0/users/current", nil)
				r.AddCookie(cookie)
				return r
			}
			if p, err := s.Tokens.Authenticate(ctx, withCookie()); err != nil || p.Name != "eve" {
				t.Fatalf("the session before the change = %+v, %v", p, err)
			}
			if p, err := s.Tokens.Authenticate(ctx, bearer(tok)); err != nil || p.Name != "eve" {
				t.Fatalf("the token before the change = %+v, %v", p, err)
			}
			c.change(t)
			if p, err := s.Tokens.Authenticate(ctx, withCookie()); err != nil || !p.Anonymous() {
				t.Errorf("after a %s the session still stands for %+v (%v)", c.name, p, err)
			}
			if p, err := s.Tokens.Authenticate(ctx, bearer(tok)); !errors.Is(err, ErrBadCredentials) {
				t.Errorf("after a %s the access token still stands for %+v (%v)", c.name, p, err)
			}
		})
	}
}

// /service/token takes Basic credentials, a refresh token or nothing: never the admin page's
// session cookie, which a browser sends to cove by itself.
func TestTokenEndpointIgnoresTheSessionCookie(t *testing.T) {
	ctx := context.Background()
	s, _ := tokenService(t)
	admin, err := s.Identity.CheckPassword(ctx, "admin", "pw")
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	if err := s.Identity.NewSession(ctx, rec, httptest.NewRequest("POST", "/login", nil), admin); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(s.Tokens.ServeToken))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"?service=cove&scope=repository:team/app:pull,push", nil)
	req.AddCookie(rec.Result().Cookies()[0])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&body)
	p, err := s.Tokens.Authenticate(ctx, bearer(body.Token))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "" || p.Granted("repository", "team/app", "push") || p.Granted("repository", "team/app", "pull") {
		t.Errorf("a token minted from the session cookie: subject %q, grants %v", p.Name, p.access)
	}
}

// A token asked for an action and refused it: a named account gets 403 (asking again changes
// nothing, and docker retries a 401 for a minute); the anonymous, and a token never asked for
// the action, get 401 (log in, or ask for the scope).
func TestRefusedGrantIsDeniedNotUnauthenticated(t *testing.T) {
	ctx := context.Background()
	s, _ := tokenService(t)
	if _, err := s.Identity.CreateUser(ctx, User{Name: "gina"}, "Gina-password1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Policy.AddMember(ctx, "team", MemberUser, "gina", RoleGuest); err != nil {
		t.Fatal(err)
	}
	gina, _ := s.Identity.CheckPassword(ctx, "gina", "Gina-password1")
	for _, tc := range []struct {
		name  string
		who   Principal
		scope string
		want  error
	}{
		{"guest asked push", gina, "repository:team/app:pull,push", ErrDenied},
		{"guest never asked push", gina, "repository:team/app:pull", ErrUnauthenticated},
		{"anonymous asked push", Principal{}, "repository:open/app:pull,push", ErrUnauthenticated},
	} {
		tok, _, _, err := s.Tokens.IssueToken(ctx, tc.who, "cove", scopes(t, tc.scope))
		if err != nil {
			t.Fatal(err)
		}
		p, err := s.Tokens.Authenticate(ctx, bearer(tok))
		if err != nil {
			t.Fatal(err)
		}
		if !p.Granted("repository", strings.Split(tc.scope, ":")[1], "pull") && tc.who.Name != "" {
			t.Errorf("%s: pull not granted", tc.name)
		}
		repo := strings.Split(tc.scope, ":")[1]
		if err := s.Policy.Authorize(ctx, p, repo, ActionPush); !errors.Is(err, tc.want) {
			t.Errorf("%s: Authorize(push) = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestTokenKeysAreWrittenWhole: the signing key and a retired one are whole files of mode 0600 that
// parse, no temporary file stays, and a temporary file a crash left (here 0644 and torn) is not
// reused. That the writes are fsynced cannot be seen from here: newKey takes only a path.
func TestTokenKeysAreWrittenWhole(t *testing.T) {
	dir := t.TempDir()
	clock := &testClock{now: time.Unix(1_800_000_000, 0)}
	ks, err := loadKeystore(dir, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	cur := filepath.Join(dir, "token-signing.pem")
	if err := os.WriteFile(cur+".tmp", []byte("-----BEGIN EC PRI"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, oldKid := ks.signer()
	newKid, err := ks.rotate()
	if err != nil {
		t.Fatalf("rotate = %v", err)
	}
	retired := filepath.Join(dir, "retired", oldKid+".pem")
	for path, kid := range map[string]string{cur: newKid, retired: oldKid} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatalf("Stat(%q) = %v", path, err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("Stat(%q) mode = %v, want 0600", path, info.Mode().Perm())
		}
		key, err := readKey(path)
		if err != nil {
			t.Errorf("readKey(%q) = %v", path, err)
		} else if keyID(key) != kid {
			t.Errorf("readKey(%q) has kid %s, want %s", path, keyID(key), kid)
		}
	}
	if info, err := os.Stat(retired); err == nil && !info.ModTime().Equal(clock.now) {
		t.Errorf("retired key time = %v, want %v (its deletion is counted from it)", info.ModTime(), clock.now)
	}
	for _, d := range []string{dir, filepath.Join(dir, "retired")} {
		tmps, _ := filepath.Glob(filepath.Join(d, "*.tmp"))
		if len(tmps) > 0 {
			t.Errorf("temporary files left: %v", tmps)
		}
	}
}

// A rotation that cannot finish (a full disk, a read-only start) leaves the current key signing:
// the key was once renamed away first and lost.
func TestFailedRotationKeepsTheKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := New(ctx, openDB(t), Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, kid := s.Tokens.keys.signer()
	// The retired directory is not one: linking the old key there fails, as a full disk would.
	if err := os.RemoveAll(filepath.Join(dir, "retired")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "retired"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tokens.RotateTokenKey(ctx); err == nil {
		t.Fatal("the rotation succeeded without its retired directory")
	}
	key, err := readKey(filepath.Join(dir, "token-signing.pem"))
	if err != nil || keyID(key) != kid {
		t.Fatalf("after a failed rotation the key file = %v, %v; want the current key %s", key, err, kid)
	}
	if _, now := s.Tokens.keys.signer(); now != kid {
		t.Errorf("signing with %s after a failed rotation, want %s", now, kid)
	}
	// With the index refusing writes, nothing is touched at all.
	full := errors.New("disk full")
	s.Tokens.writable = func() error { return full }
	if _, err := s.Tokens.RotateTokenKey(ctx); !errors.Is(err, full) {
		t.Errorf("RotateTokenKey on a full disk = %v, want its error", err)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*.next")); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
}

// In a fleet the signing keys are shared: a token signed by one node verifies on another, also
// after a rotation on the first; the old key's tokens keep verifying, and the other node signs
// with the new key once it has read it again.
func TestSharedKeysAcrossNodes(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	clock := &testClock{now: time.Unix(1_800_000_000, 0)}
	node := func() *Service {
		s, err := New(ctx, db, Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, SharedKeys: true, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := node(), node()
	if _, ka := a.Tokens.keys.signer(); ka != func() string { _, k := b.Tokens.keys.signer(); return k }() {
		t.Fatal("two nodes starting on one store made two keys")
	}
	admin := accountOf(t, a, "admin")
	tokA, _, _, err := a.Tokens.IssueToken(ctx, admin, "cove", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Tokens.Authenticate(ctx, bearer(tokA)); err != nil {
		t.Errorf("node B refuses node A's token: %v", err)
	}
	if _, err := a.Tokens.RotateTokenKey(ctx); err != nil {
		t.Fatal(err)
	}
	clock.now = clock.now.Add(2 * time.Second) // past the once-a-second bound on asking the store
	tokA2, _, _, _ := a.Tokens.IssueToken(ctx, admin, "cove", nil)
	if _, err := b.Tokens.Authenticate(ctx, bearer(tokA2)); err != nil {
		t.Errorf("node B refuses a token of A's new key: %v", err)
	}
	if _, err := b.Tokens.Authenticate(ctx, bearer(tokA)); err != nil {
		t.Errorf("a token of the retired key stopped verifying: %v", err)
	}
	clock.now = clock.now.Add(sharedKeysRefresh)
	_, kidA := a.Tokens.keys.signer()
	if _, kidB := b.Tokens.keys.signer(); kidB != kidA {
		t.Errorf("node B signs with %s after the refresh, want the new key %s", kidB, kidA)
	}
	// A key that is no one's is refused, and asking the store for it is bounded.
	if _, ok := b.Tokens.keys.lookup("nosuchkid"); ok {
		t.Error("an unknown kid verified")
	}
}
