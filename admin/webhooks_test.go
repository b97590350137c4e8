package admin

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/crypto/bcrypt"

	"cove/auth"
	"cove/internal/kv"
	"cove/internal/webhook"
)

// Webhook policies belong to their project: project admins manage them, maintainers read them,
// developers neither; another project's admin reaches none of them, not even by id; the
// system's are the system admins'; a secret is never answered.
func TestWebhookPoliciesAccess(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(t.TempDir(), "index")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	audit := auth.NewAudit(kv.NewBadger(db), 0, nil)
	as, err := auth.New(ctx, kv.NewBadger(db), auth.Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir(), Audit: audit})
	if err != nil {
		t.Fatal(err)
	}
	d, err := webhook.New(webhook.Config{DB: kv.NewBadger(db), Project: func(ctx context.Context, name string) (int64, bool, error) {
		p, err := as.Policy.Project(ctx, name)
		return p.ID, p.Public, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	s, err := New(Config{Auth: as, Audit: audit, Repos: &fakeRepos{}, Browse: &fakeRepos{}, Evict: &fakeRepos{}, Webhooks: d.Policies(), Events: d})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	for _, u := range []string{"alice", "mia", "dev", "bob"} {
		if _, err := as.Identity.CreateUser(ctx, auth.User{Name: u}, strong); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"a", "b"} {
		if _, err := as.Policy.CreateProject(ctx, p, false, "admin"); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []struct {
		project, user string
		role          auth.Role
	}{{"a", "alice", auth.RoleProjectAdmin}, {"a", "mia", auth.RoleMaintainer}, {"a", "dev", auth.RoleDeveloper}, {"b", "bob", auth.RoleProjectAdmin}} {
		if _, err := as.Policy.AddMember(ctx, m.project, auth.MemberUser, m.user, m.role); err != nil {
			t.Fatal(err)
		}
	}
	body := `{"name":"ci","enabled":true,"secret":"hush","event_types":["PUSH_ARTIFACT"],"targets":[{"address":"https://ci.example.com/hook"}]}`
	as_ := func(user, method, path, body string) (int, string) {
		pass := strong
		if user == "admin" {
			pass = "pw"
		}
		resp, b := call(t, srv, method, path, body, user, pass)
		return resp.StatusCode, b
	}
	if code, b := as_("alice", "POST", "/api/v2.0/projects/a/webhook/policies", body); code != 201 {
		t.Fatalf("a project admin creates = %d %s", code, b)
	}
	if code, b := as_("bob", "POST", "/api/v2.0/projects/b/webhook/policies", strings.Replace(body, `"ci"`, `"bobs"`, 1)); code != 201 {
		t.Fatalf("b's admin creates = %d %s", code, b)
	}
	listB, _ := d.Policies().List(ctx, mustProjectID(t, as, "b"))
	idB := listB[0].ID
	for _, c := range []struct {
		user, method, path, body string
		want                     int
	}{
		{"mia", "GET", "/api/v2.0/projects/a/webhook/policies", "", 200},
		{"mia", "POST", "/api/v2.0/projects/a/webhook/policies", strings.Replace(body, `"ci"`, `"m"`, 1), 403},
		{"dev", "GET", "/api/v2.0/projects/a/webhook/policies", "", 403},
		{"dev", "POST", "/api/v2.0/projects/a/webhook/policies", strings.Replace(body, `"ci"`, `"d"`, 1), 403},
		{"bob", "GET", "/api/v2.0/projects/a/webhook/policies", "", 404},
		{"alice", "GET", fmt.Sprintf("/api/v2.0/projects/a/webhook/policies/%d", idB), "", 404},
		{"alice", "DELETE", fmt.Sprintf("/api/v2.0/projects/a/webhook/policies/%d", idB), "", 404},
		{"alice", "GET", fmt.Sprintf("/api/v2.0/projects/a/webhook/policies/%d/executions", idB), "", 404},
		{"alice", "GET", "/api/v2.0/system/webhook/policies", "", 403},
		{"alice", "POST", "/api/v2.0/system/webhook/policies", body, 403},
		{"", "GET", "/api/v2.0/projects/a/webhook/policies", "", 401},
		{"admin", "POST", "/api/v2.0/system/webhook/policies", body, 201},
		{"alice", "POST", "/api/v2.0/projects/a/webhook/policies", body, 409},
	} {
		if code, b := as_(c.user, c.method, c.path, c.body); code != c.want {
			t.Errorf("%s %s %s = %d %s, want %d", c.user, c.method, c.path, code, b, c.want)
		}
	}
	if _, b := as_("alice", "GET", "/api/v2.0/projects/a/webhook/policies", ""); strings.Contains(b, "hush") || strings.Contains(b, "secret") {
		t.Errorf("the list shows the secret: %s", b)
	}
	if list, _ := d.Policies().List(ctx, mustProjectID(t, as, "b")); len(list) != 1 {
		t.Errorf("b's policies = %+v, want its one, untouched", list)
	}
}

func mustProjectID(t *testing.T, as *auth.Service, name string) int64 {
	t.Helper()
	p, err := as.Policy.Project(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return p.ID
}
