package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/crypto/bcrypt"

	"cove/auth"

	"cove/internal/kv"
)

type secEnv struct {
	srv   *httptest.Server
	auth  *auth.Service
	audit *auth.Audit
}

func newSecEnv(t *testing.T, selfRegistration bool) *secEnv {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(t.TempDir(), "index")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	audit := auth.NewAudit(kv.NewBadger(db), 0, nil)
	as, err := auth.New(context.Background(), kv.NewBadger(db), auth.Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir(), Audit: audit, SelfRegistration: selfRegistration, AnonymousMirrorPull: true, ReservedNames: []string{"docker.io"}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Auth: as, Audit: audit, Repos: &fakeRepos{}, Browse: &fakeRepos{}, Evict: &fakeRepos{}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &secEnv{srv: srv, auth: as, audit: audit}
}

func (e *secEnv) call(t *testing.T, method, path, body, user, pass string) (int, string) {
	t.Helper()
	resp, b := call(t, e.srv, method, path, body, user, pass)
	return resp.StatusCode, b
}

const strong = "Str0ngPassw0rd"

// TestMemberRolesThroughTheAPI: users, a project, members of every role; each role may manage
// members or not, and the API refuses what the role does not allow.
func TestMemberRolesThroughTheAPI(t *testing.T) {
	e := newSecEnv(t, false)
	ctx := context.Background()
	roles := map[string]auth.Role{
		"padmin": auth.RoleProjectAdmin, "maint": auth.RoleMaintainer, "dev": auth.RoleDeveloper,
		"guest": auth.RoleGuest, "limited": auth.RoleLimitedGuest, "outsider": auth.RoleNone,
	}
	for name := range roles {
		code, b := e.call(t, "POST", "/api/v2.0/users", fmt.Sprintf(`{"username":%q,"email":"%s@example.org","password":%q}`, name, name, strong), "admin", "pw")
		if code != 201 {
			t.Fatalf("create user %s = %d %s", name, code, b)
		}
	}
	if code, _ := e.call(t, "POST", "/api/v2.0/projects", `{"project_name":"team"}`, "padmin", strong); code != 403 {
		t.Errorf("a user creates a project with project_creation_restriction adminonly = %d, want 403", code)
	}
	e.call(t, "PUT", "/api/v2.0/configurations", `{"project_creation_restriction":"everyone"}`, "admin", "pw")
	if code, b := e.call(t, "POST", "/api/v2.0/projects", `{"project_name":"team"}`, "padmin", strong); code != 201 {
		t.Fatalf("a user creates a project = %d %s", code, b)
	}
	if code, _ := e.call(t, "POST", "/api/v2.0/projects", `{"project_name":"library"}`, "admin", "pw"); code != 400 {
		t.Errorf("a project named library (Docker Hub's official images) = %d, want 400", code)
	}
	if code, b := e.call(t, "POST", "/api/v2.0/robots", `{"name":"matrix","duration":-1,"level":"project","permissions":[{"kind":"project","namespace":"team","access":[{"resource":"repository","action":"pull"}]}]}`, "padmin", strong); code != 201 {
		t.Fatalf("create a robot = %d %s", code, b)
	}
	// The creator is its project admin, and adds the others.
	for name, role := range roles {
		if role == auth.RoleNone || role == auth.RoleProjectAdmin {
			continue
		}
		code, b := e.call(t, "POST", "/api/v2.0/projects/team/members", fmt.Sprintf(`{"role_id":%d,"member_user":{"username":%q}}`, role, name), "padmin", strong)
		if code != 201 {
			t.Fatalf("add %s = %d %s", name, code, b)
		}
	}
	for name, role := range roles {
		p := auth.Principal{Name: name}
		if got := e.auth.Policy.RoleOf(ctx, p, "team"); got != role {
			t.Errorf("%s: role %q, want %q", name, got.Name(), role.Name())
		}
		// Managing members: only the project admin (and system admins).
		code, _ := e.call(t, "POST", "/api/v2.0/projects/team/members", `{"role_id":3,"member_group":{"group_name":"g-`+name+`"}}`, name, strong)
		want := map[bool]int{true: 201, false: 403}[role == auth.RoleProjectAdmin]
		if role == auth.RoleNone {
			want = 404 // a private project the outsider cannot see
		}
		if code != want {
			t.Errorf("%s adds a member = %d, want %d", name, code, want)
		}
		// Reading the members, the project's log and its robots: every role but limitedGuest, as
		// Harbor (a limited guest sees neither the others nor their addresses).
		for _, path := range []string{"/api/v2.0/projects/team/members", "/api/v2.0/projects/team/logs", "/api/v2.0/robots?project=team"} {
			code, body := e.call(t, "GET", path, "", name, strong)
			reads := role != auth.RoleNone && role != auth.RoleLimitedGuest
			if path == "/api/v2.0/robots?project=team" {
				// The robot list is filtered, never refused: an empty list for who may not read.
				if code != 200 || (strings.Contains(body, "robot$team+matrix") != reads) {
					t.Errorf("%s lists robots = %d %s; want them listed: %v", name, code, body, reads)
				}
				continue
			}
			if (code == 200) != reads {
				t.Errorf("%s reads %s = %d %s, want it allowed: %v", name, path, code, body, reads)
			}
		}
	}
	// A member id of another project is not found through this one.
	e.call(t, "POST", "/api/v2.0/projects", `{"project_name":"other"}`, "admin", "pw")
	m, _ := e.auth.Policy.AddMember(ctx, "other", auth.MemberUser, "dev", auth.RoleGuest)
	if code, _ := e.call(t, "DELETE", fmt.Sprintf("/api/v2.0/projects/team/members/%d", m.ID), "", "padmin", strong); code != 404 {
		t.Errorf("deleting another project's member through team = %d, want 404", code)
	}
	if _, err := e.auth.Policy.MemberByID(ctx, "other", m.ID); err != nil {
		t.Errorf("the other project's member is gone: %v", err)
	}
}

func TestUsersAPI(t *testing.T) {
	e := newSecEnv(t, true)
	// Self-registration: allowed, and never makes an admin.
	code, b := e.call(t, "POST", "/api/v2.0/users", `{"username":"eve","email":"e@x.org","password":"`+strong+`","sysadmin_flag":true}`, "", "")
	if code != 201 {
		t.Fatalf("self-registration = %d %s", code, b)
	}
	if u, _ := e.auth.Identity.User(context.Background(), "eve"); u.Admin {
		t.Error("self-registration made an admin")
	}
	if code, _ := e.call(t, "POST", "/api/v2.0/users", `{"username":"weak","password":"short"}`, "", ""); code != 400 {
		t.Errorf("weak password = %d, want 400", code)
	}
	code, b = e.call(t, "GET", "/api/v2.0/users/current", "", "eve", strong)
	var cur user
	json.Unmarshal([]byte(b), &cur)
	if code != 200 || cur.Username != "eve" || strings.Contains(b, "hash") || strings.Contains(b, "password") {
		t.Errorf("current user = %d %s", code, b)
	}
	// A user may read itself, not others; only admins list users.
	if code, _ := e.call(t, "GET", fmt.Sprintf("/api/v2.0/users/%d", cur.UserID), "", "eve", strong); code != 200 {
		t.Errorf("eve reads herself = %d", code)
	}
	if code, _ := e.call(t, "GET", "/api/v2.0/users/1", "", "eve", strong); code != 403 {
		t.Errorf("eve reads the admin = %d, want 403", code)
	}
	if code, _ := e.call(t, "GET", "/api/v2.0/users", "", "eve", strong); code != 403 {
		t.Errorf("eve lists users = %d, want 403", code)
	}
	if code, _ := e.call(t, "PUT", fmt.Sprintf("/api/v2.0/users/%d/sysadmin", cur.UserID), `{"sysadmin_flag":true}`, "eve", strong); code != 403 {
		t.Errorf("eve makes herself admin = %d, want 403", code)
	}
	// Password change: the old one is needed for one's own.
	if code, _ := e.call(t, "PUT", fmt.Sprintf("/api/v2.0/users/%d/password", cur.UserID), `{"old_password":"wrong","new_password":"N3wPassword"}`, "eve", strong); code != 403 {
		t.Errorf("password change with a wrong old password = %d, want 403", code)
	}
	if code, b := e.call(t, "PUT", fmt.Sprintf("/api/v2.0/users/%d/password", cur.UserID), `{"old_password":"`+strong+`","new_password":"N3wPassword"}`, "eve", strong); code != 200 {
		t.Errorf("password change = %d %s", code, b)
	}
	if code, _ := e.call(t, "GET", "/api/v2.0/users/current", "", "eve", strong); code != 401 {
		t.Errorf("old password after the change = %d, want 401", code)
	}
	if code, _ := e.call(t, "DELETE", fmt.Sprintf("/api/v2.0/users/%d", cur.UserID), "", "admin", "pw"); code != 200 {
		t.Errorf("admin deletes eve = %d", code)
	}
	if code, _ := e.call(t, "GET", "/api/v2.0/users/current", "", "eve", "N3wPassword"); code != 401 {
		t.Errorf("deleted user = %d, want 401", code)
	}
}

func TestRobotsAPI(t *testing.T) {
	e := newSecEnv(t, false)
	e.call(t, "POST", "/api/v2.0/projects", `{"project_name":"team"}`, "admin", "pw")
	e.call(t, "POST", "/api/v2.0/projects", `{"project_name":"other"}`, "admin", "pw")
	code, b := e.call(t, "POST", "/api/v2.0/robots", `{"name":"ci","duration":30,"level":"project","permissions":[{"kind":"project","namespace":"team","access":[{"resource":"repository","action":"pull"},{"resource":"repository","action":"push"}]}]}`, "admin", "pw")
	var rb robot
	json.Unmarshal([]byte(b), &rb)
	if code != 201 || rb.Name != "robot$team+ci" || rb.Secret == "" || rb.ExpiresAt <= 0 {
		t.Fatalf("create robot = %d %s", code, b)
	}
	// The secret is shown once.
	if code, b := e.call(t, "GET", fmt.Sprintf("/api/v2.0/robots/%d", rb.ID), "", "admin", "pw"); code != 200 || strings.Contains(b, rb.Secret) || strings.Contains(b, `"secret"`) {
		t.Errorf("get robot = %d %s: the secret must not show again", code, b)
	}
	ctx := context.Background()
	p, err := e.auth.Identity.CheckPassword(ctx, rb.Name, rb.Secret)
	if err != nil || !p.Robot {
		t.Fatalf("robot login: %v", err)
	}
	for _, tc := range []struct {
		repo   string
		action auth.Action
		ok     bool
	}{
		{"team/app", auth.ActionPull, true}, {"team/app", auth.ActionPush, true}, {"team/app", auth.ActionDelete, false},
		{"other/app", auth.ActionPull, false},
	} {
		if err := e.auth.Policy.Authorize(ctx, p, tc.repo, tc.action); (err == nil) != tc.ok {
			t.Errorf("robot %s on %s = %v, want allowed=%v", tc.action, tc.repo, err, tc.ok)
		}
	}
	// A robot cannot use the API to make more of itself.
	if code, _ := e.call(t, "POST", "/api/v2.0/robots", `{"name":"x","permissions":[{"kind":"project","namespace":"team","access":[{"resource":"repository","action":"pull"}]}]}`, rb.Name, rb.Secret); code != 403 {
		t.Errorf("a robot creates a robot = %d, want 403", code)
	}
	if code, _ := e.call(t, "DELETE", fmt.Sprintf("/api/v2.0/robots/%d", rb.ID), "", "admin", "pw"); code != 200 {
		t.Errorf("delete robot = %d", code)
	}
	if _, err := e.auth.Identity.CheckPassword(ctx, rb.Name, rb.Secret); err == nil {
		t.Error("a deleted robot still logs in")
	}
}

func TestAuditLogAPI(t *testing.T) {
	e := newSecEnv(t, false)
	e.call(t, "POST", "/api/v2.0/projects", `{"project_name":"team"}`, "admin", "pw")
	e.call(t, "POST", "/api/v2.0/projects", `{"project_name":"two"}`, "admin", "wrong")
	e.call(t, "POST", "/api/v2.0/users", `{"username":"bob","password":"`+strong+`"}`, "admin", "pw")
	code, b := e.call(t, "GET", "/api/v2.0/audit-logs?q=operation=create,resource_type=project&page_size=5", "", "admin", "pw")
	var events []auth.Event
	json.Unmarshal([]byte(b), &events)
	if code != 200 || len(events) != 1 || events[0].Resource != "team" || events[0].Username != "admin" || events[0].Address == "" {
		t.Errorf("audit query = %d %s", code, b)
	}
	_, b = e.call(t, "GET", "/api/v2.0/audit-logs?q=operation=create,result=failure,resource=/api/v2.0/projects", "", "admin", "pw")
	json.Unmarshal([]byte(b), &events)
	if len(events) != 1 {
		t.Errorf("the refused project creation (wrong password) is not audited as a failure: %s", b)
	}
	code, b = e.call(t, "GET", "/api/v2.0/audit-logs?q=operation=login,result=failure", "", "admin", "pw")
	json.Unmarshal([]byte(b), &events)
	if code != 200 || len(events) != 1 || events[0].Username != "admin" {
		t.Errorf("failed logins = %d %s", code, b)
	}
	for _, bad := range []string{"q=nonsense", "q=op_time=[x~y]", "q=color=blue"} {
		if code, _ := e.call(t, "GET", "/api/v2.0/audit-logs?"+bad, "", "admin", "pw"); code != 400 {
			t.Errorf("%s = %d, want 400", bad, code)
		}
	}
	if code, _ := e.call(t, "GET", "/api/v2.0/audit-logs", "", "bob", strong); code != 403 {
		t.Errorf("non-admin reads the audit log = %d, want 403", code)
	}
	// No secret in any record.
	_, all := e.call(t, "GET", "/api/v2.0/audit-logs?page_size=100", "", "admin", "pw")
	for _, secret := range []string{strong, `"pw"`, "wrong"} {
		if strings.Contains(all, secret) {
			t.Errorf("the audit log contains %q", secret)
		}
	}
}

func TestFailedLoginsAreLimited(t *testing.T) {
	e := newSecEnv(t, false)
	for i := range 10 { // ten guesses (a repeated wrong secret is no new guess)
		e.call(t, "GET", "/api/v2.0/users/current", "", "admin", fmt.Sprintf("wrong%d", i))
	}
	// Now even the right password is refused for a while.
	if code, _ := e.call(t, "GET", "/api/v2.0/users/current", "", "admin", "pw"); code != 429 {
		t.Errorf("right password after 10 failures = %d, want 429", code)
	}
}

func TestSettingsAPI(t *testing.T) {
	e := newSecEnv(t, false)
	if code, _ := e.call(t, "POST", "/api/v2.0/users", `{"username":"eve","password":"`+strong+`"}`, "", ""); code != 401 {
		t.Errorf("sign-up with self-registration off = %d, want 401", code)
	}
	if code, b := e.call(t, "PUT", "/api/v2.0/configurations", `{"self_registration":true}`, "admin", "pw"); code != 200 {
		t.Fatalf("turn self-registration on = %d %s", code, b)
	}
	if code, _ := e.call(t, "POST", "/api/v2.0/users", `{"username":"eve","password":"`+strong+`"}`, "", ""); code != 201 {
		t.Errorf("sign-up with self-registration on = %d, want 201", code)
	}
	for _, bad := range []string{`{"anonymous_pull":"sometimes"}`, `{"self_registation":true}`} {
		if code, _ := e.call(t, "PUT", "/api/v2.0/configurations", bad, "admin", "pw"); code != 400 {
			t.Errorf("PUT %s = %d, want 400", bad, code)
		}
	}
	if code, _ := e.call(t, "PUT", "/api/v2.0/configurations", `{"anonymous_pull":"none"}`, "eve", strong); code != 403 {
		t.Errorf("a non-admin changes settings = %d, want 403", code)
	}
	code, b := e.call(t, "GET", "/api/v2.0/configurations", "", "admin", "pw")
	if code != 200 || !strings.Contains(b, `"self_registration":{"value":true`) {
		t.Errorf("settings = %d %s", code, b)
	}
	if err := e.auth.Policy.AuthorizeMirror(context.Background(), auth.Principal{}, "library/alpine", auth.ActionPull); err != nil {
		t.Errorf("anonymous mirror pull before turning it off: %v", err)
	}
	e.call(t, "PUT", "/api/v2.0/configurations", `{"anonymous_pull":"none"}`, "admin", "pw")
	if err := e.auth.Policy.AuthorizeMirror(context.Background(), auth.Principal{}, "library/alpine", auth.ActionPull); err == nil {
		t.Error("anonymous mirror pull after anonymous_pull: none")
	}
	if code, _ := e.call(t, "POST", "/api/v2.0/system/token-key/rotate", "", "eve", strong); code != 403 {
		t.Errorf("a non-admin rotates the token key = %d, want 403", code)
	}
	if code, b := e.call(t, "POST", "/api/v2.0/system/token-key/rotate", "", "admin", "pw"); code != 200 || !strings.Contains(b, `"kid"`) {
		t.Errorf("rotate the token key = %d %s", code, b)
	}
	_, logs := e.call(t, "GET", "/api/v2.0/audit-logs?q=resource_type=settings", "", "admin", "pw")
	if !strings.Contains(logs, "anonymous_pull=none") {
		t.Errorf("settings changes not audited: %s", logs)
	}
}
