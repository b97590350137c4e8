package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"cove/internal/kv"
	"cove/internal/pgtest"
	"golang.org/x/crypto/bcrypt"
)

func openDB(t *testing.T) kv.DB {
	t.Helper()
	if postgresDSN != "" {
		p, err := kv.OpenPostgres(context.Background(), postgresDSN)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Truncate(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(t.TempDir(), "index")).WithLogger(nil).WithInMemory(false))
	if err != nil {
		t.Fatal(err)
	}
	meta := kv.NewBadger(db)
	t.Cleanup(func() { meta.Close(); db.Close() })
	return meta
}

// postgresDSN, when set (by TestServiceOnPostgres), makes openDB a PostgreSQL database.
var postgresDSN string

// TestServiceOnPostgres runs the identity, token and audit tests with their records in
// PostgreSQL, as in a fleet: what passes on badger passes there.
func TestServiceOnPostgres(t *testing.T) {
	srv := pgtest.Start(t)
	postgresDSN = srv.DSN
	defer func() { postgresDSN = "" }()
	for name, test := range map[string]func(*testing.T){
		"AdminPassword":                          TestAdminPassword,
		"Authenticate":                           TestAuthenticate,
		"Projects":                               TestProjects,
		"AdminNameIsReserved":                    TestAdminNameIsReserved,
		"ConcurrentCreationsDoNotConflict":       TestConcurrentCreationsDoNotConflict,
		"TokenGrantsTheIntersection":             TestTokenGrantsTheIntersection,
		"TokenEndpoint":                          TestTokenEndpoint,
		"RefreshTokensEndWithTheAccount":         TestRefreshTokensEndWithTheAccount,
		"CredentialsEndWithTheAccount":           TestCredentialsEndWithTheAccount,
		"DeletedProjectTakesItsMembersAndRobots": TestDeletedProjectTakesItsMembersAndRobots,
		"RobotLoginWithOfflineToken":             TestRobotLoginWithOfflineToken,
		"AuditRecordsExpireAfterRetention":       TestAuditRecordsExpireAfterRetention,
		"AuditBatchesReadsNeverChanges":          TestAuditBatchesReadsNeverChanges,
		"RefusalsAreBoundedPerCaller":            TestRefusalsAreBoundedPerCaller,
		"AuditQueryReadsItsRangeOnly":            TestAuditQueryReadsItsRangeOnly,
		"AuditTotalIsCounted":                    TestAuditTotalIsCounted,
		"TokenAuditRecordsGrants":                TestTokenAuditRecordsGrants,
		"ResetTokenWorksOnce":                    TestResetTokenWorksOnce,
		"ResetMailsAreLimited":                   TestResetMailsAreLimited,
		"EmailSettings":                          TestEmailSettings,
	} {
		t.Run(name, test)
	}
}

func TestDecide(t *testing.T) {
	anon := Principal{}
	admin := Principal{Name: "admin", Admin: true}
	user := Principal{Name: "alice"}
	pub := &Project{Name: "pub", Public: true}
	priv := &Project{Name: "priv"}
	tests := []struct {
		name   string
		p      Principal
		proj   *Project
		action Action
		want   error
	}{
		{"anonymous pulls public", anon, pub, ActionPull, nil},
		{"anonymous pushes public", anon, pub, ActionPush, ErrUnauthenticated},
		{"anonymous pulls private", anon, priv, ActionPull, ErrUnauthenticated},
		{"anonymous, missing project", anon, nil, ActionPull, ErrUnauthenticated},
		{"admin pushes private", admin, priv, ActionPush, nil},
		{"admin deletes public", admin, pub, ActionDelete, nil},
		{"admin, missing project", admin, nil, ActionPush, ErrProjectUnknown},
		{"non-member pulls public", user, pub, ActionPull, nil},
		{"non-member pushes public", user, pub, ActionPush, ErrDenied},
		{"non-member pulls private", user, priv, ActionPull, ErrDenied},
		{"user, missing project", user, nil, ActionPull, ErrDenied},
	}
	for _, tt := range tests {
		if got := decide(tt.p, tt.proj, RoleNone, tt.action); !errors.Is(got, tt.want) {
			t.Errorf("%s: decide = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestRoleMatrix: each role × pull, push, delete, manage members, in a private project.
func TestRoleMatrix(t *testing.T) {
	priv := &Project{Name: "priv"}
	user := Principal{Name: "alice"}
	allow := map[Role][4]bool{ // pull, push, delete, manage members
		RoleProjectAdmin: {true, true, true, true},
		RoleMaintainer:   {true, true, true, false},
		RoleDeveloper:    {true, true, false, false},
		RoleGuest:        {true, false, false, false},
		RoleLimitedGuest: {true, false, false, false},
		RoleNone:         {false, false, false, false},
	}
	actions := []Action{ActionPull, ActionPush, ActionDelete, ActionManageMembers}
	for role, want := range allow {
		for i, a := range actions {
			err := decide(user, priv, role, a)
			if (err == nil) != want[i] {
				t.Errorf("role %q, %s: decide = %v, want allowed=%v", role.Name(), a, err, want[i])
			}
		}
	}
	// Robots: only what they were given, only in their project.
	robot := Principal{Name: "robot$priv+ci", Robot: true, robotProject: "priv", robotActions: []Action{ActionPull, ActionPush}}
	for a, want := range map[Action]bool{ActionPull: true, ActionPush: true, ActionDelete: false, ActionManageMembers: false} {
		if err := decide(robot, priv, RoleNone, a); (err == nil) != want {
			t.Errorf("robot %s in its project: %v, want allowed=%v", a, err, want)
		}
	}
	if err := decide(robot, &Project{Name: "other", Public: false}, RoleNone, ActionPull); err == nil {
		t.Error("a robot pulled from another project")
	}
}

func TestAdminPassword(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	keys := t.TempDir()
	s, err := New(ctx, db, Config{BcryptCost: bcrypt.MinCost, KeyDir: keys})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing is generated before cove is up (EnsureAdmin): a start that fails loses nothing.
	if _, err := s.Identity.User(ctx, AdminName); !errors.Is(err, ErrNotFound) {
		t.Fatalf("New created the admin before EnsureAdmin: %v", err)
	}
	// A password that cannot be shown is not stored: the next start generates one again.
	if _, err := s.Identity.EnsureAdmin(ctx, func(string) error { return errors.New("stdout is closed") }); err == nil {
		t.Fatal("EnsureAdmin stored a password it could not show")
	}
	if _, err := s.Identity.User(ctx, AdminName); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an admin was stored with a password nobody saw: %v", err)
	}
	var generated string
	if ok, err := s.Identity.EnsureAdmin(ctx, func(p string) error { generated = p; return nil }); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if len(generated) < 20 || CheckPasswordPolicy(generated) != nil {
		t.Fatalf("generated password %q is too short or breaks the policy", generated)
	}
	if p, err := s.Identity.CheckPassword(ctx, "admin", generated); err != nil || !p.Admin {
		t.Errorf("CheckPassword(generated) = %v, %v", p, err)
	}
	// The password is shown once: a second start keeps the hash and generates nothing.
	s2, err := New(ctx, db, Config{BcryptCost: bcrypt.MinCost, KeyDir: keys})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s2.Identity.EnsureAdmin(ctx, func(p string) error { t.Errorf("second start showed %q", p); return nil }); err != nil || again {
		t.Fatalf("second start generated: %v, %v", again, err)
	}
	if _, err := s2.Identity.CheckPassword(ctx, "admin", generated); err != nil {
		t.Errorf("generated password lost on restart: %v", err)
	}
	// A configured password applies at first start only: it never overrides the stored one.
	s3, err := New(ctx, db, Config{AdminPassword: "Configured1", BcryptCost: bcrypt.MinCost, KeyDir: keys})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s3.Identity.CheckPassword(ctx, "admin", generated); err != nil {
		t.Errorf("a configured password overrode the stored one: %v", err)
	}
	if _, err := s3.Identity.CheckPassword(ctx, "admin", "Configured1"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("the configured password works after the first start: %v", err)
	}
	// A password changed through the API survives a restart with a configured password.
	if err := s3.Identity.SetPassword(ctx, "admin", "Changed123"); err != nil {
		t.Fatal(err)
	}
	s4, err := New(ctx, db, Config{AdminPassword: "Configured1", BcryptCost: bcrypt.MinCost, KeyDir: keys})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s4.Identity.CheckPassword(ctx, "admin", "Changed123"); err != nil {
		t.Errorf("the changed password was lost at restart: %v", err)
	}

	// At a first start, the configured password is the admin's and nothing is generated.
	fresh := openDB(t)
	s5, err := New(ctx, fresh, Config{AdminPassword: "Configured1", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if g, err := s5.Identity.EnsureAdmin(ctx, func(string) error { return nil }); err != nil || g {
		t.Errorf("EnsureAdmin with a configured admin = %v, %v", g, err)
	}
	if _, err := s5.Identity.CheckPassword(ctx, "admin", "Configured1"); err != nil {
		t.Errorf("configured password at first start: %v", err)
	}
	// Only a hash is stored.
	var rec userRecord
	_ = fresh.View(context.Background(), func(txn kv.Txn) error { return kv.Get(txn, []byte(keyUser+"admin"), &rec) })
	if bcrypt.CompareHashAndPassword(rec.Hash, []byte("Configured1")) != nil {
		t.Error("stored record is not a bcrypt hash of the password")
	}
}

// The policy's maximum fits bcrypt, which refuses passwords over 72 bytes.
func TestPasswordPolicyFitsBcrypt(t *testing.T) {
	ctx := context.Background()
	s, err := New(ctx, openDB(t), Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		pw   string
		ok   bool
	}{
		{"72 bytes", "Aa1" + strings.Repeat("x", 69), true},
		{"73 bytes", "Aa1" + strings.Repeat("x", 70), false},
		{"128 bytes", "Aa1" + strings.Repeat("x", 125), false},
		{"72 bytes of multi-byte letters", "Aa1" + strings.Repeat("é", 34) + "x", true},
		{"short", "Aa1xxxx", false},
		{"8 characters", "Aa1xxxxx", true},
		{"no digit", "Aaxxxxxxx", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPasswordPolicy(tc.pw)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckPasswordPolicy(%d bytes) = %v, want ok=%v", len(tc.pw), err, tc.ok)
			}
			_, err = s.Identity.CreateUser(ctx, User{Name: "u" + strings.ReplaceAll(tc.name, " ", "")}, tc.pw)
			if tc.ok && err != nil {
				t.Errorf("CreateUser = %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalid) {
				t.Errorf("CreateUser = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestCheckPasswordNeverLetsWrongOnesIn(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	s, err := New(ctx, openDB(t), Config{AdminPassword: "right", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Identity.CheckPassword(ctx, "admin", "right"); err != nil {
		t.Fatal(err)
	}
	// The verified-credential cache is warm now; wrong and empty passwords still fail.
	for _, tt := range []struct{ user, pass string }{
		{"admin", "wrong"}, {"admin", ""}, {"admin", "right "}, {"nobody", "right"}, {"", ""},
	} {
		if _, err := s.Identity.CheckPassword(ctx, tt.user, tt.pass); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("CheckPassword(%q, %q) = %v, want ErrBadCredentials", tt.user, tt.pass, err)
		}
	}
	now = now.Add(2 * credTTL) // the cache entry expires; bcrypt decides again
	if _, err := s.Identity.CheckPassword(ctx, "admin", "right"); err != nil {
		t.Errorf("after cache expiry: %v", err)
	}
}

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	s, _ := New(ctx, openDB(t), Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir()})
	r := httptest.NewRequest("GET", "/v2/", nil)
	if p, err := s.Tokens.Authenticate(ctx, r); err != nil || !p.Anonymous() {
		t.Errorf("no credentials = %v, %v; want anonymous", p, err)
	}
	r.Header.Set("Authorization", "Bearer something")
	if _, err := s.Tokens.Authenticate(ctx, r); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("unknown scheme = %v, want ErrBadCredentials (never anonymous)", err)
	}
	r.SetBasicAuth("", "")
	if p, err := s.Tokens.Authenticate(ctx, r); err != nil || !p.Anonymous() {
		t.Errorf("empty Basic credentials = %v, %v; want anonymous", p, err)
	}
	r.SetBasicAuth("admin", "")
	if _, err := s.Tokens.Authenticate(ctx, r); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("user with an empty password = %v, want ErrBadCredentials", err)
	}
	r.SetBasicAuth("admin", "pw")
	if p, err := s.Tokens.Authenticate(ctx, r); err != nil || p.Name != "admin" {
		t.Errorf("basic = %v, %v", p, err)
	}
}

func TestProjects(t *testing.T) {
	ctx := context.Background()
	s, _ := New(ctx, openDB(t), Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir(), ReservedNames: []string{"docker.io"}})
	for _, bad := range []string{"", "UPPER", "a/b", "-a", "a..b", "a_", "docker.io"} {
		if _, err := s.Policy.CreateProject(ctx, bad, false, "admin"); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateProject(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	a, err := s.Policy.CreateProject(ctx, "alpha", true, "admin")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Policy.CreateProject(ctx, "beta", false, "admin")
	if a.ID == b.ID {
		t.Errorf("projects share id %d", a.ID)
	}
	if _, err := s.Policy.CreateProject(ctx, "alpha", false, "admin"); !errors.Is(err, ErrProjectExists) {
		t.Errorf("duplicate CreateProject = %v, want ErrProjectExists", err)
	}
	if p, err := s.Policy.ProjectByID(ctx, b.ID); err != nil || p.Name != "beta" {
		t.Errorf("ProjectByID = %v, %v", p, err)
	}
	all := func(Project) bool { return true }
	if ps, _ := s.Policy.Projects(ctx, Principal{}, all); len(ps) != 1 || ps[0].Name != "alpha" {
		t.Errorf("anonymous Projects = %v, want only the public one", ps)
	}
	if ps, _ := s.Policy.Projects(ctx, Principal{Name: "admin", Admin: true}, all); len(ps) != 2 {
		t.Errorf("admin Projects = %v, want both", ps)
	}
	if err := s.Policy.Authorize(ctx, Principal{}, "alpha/app", ActionPull); err != nil {
		t.Errorf("anonymous pull of public alpha/app = %v", err)
	}
	// A one-element name is in no project, even when a project has that name.
	if err := s.Policy.Authorize(ctx, Principal{Name: "admin", Admin: true}, "alpha", ActionPush); !errors.Is(err, ErrNoProject) {
		t.Errorf("admin push to one-element name alpha = %v, want ErrNoProject", err)
	}
	if err := s.Policy.Authorize(ctx, Principal{}, "alpha", ActionPull); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("anonymous pull of one-element name alpha = %v, want ErrUnauthenticated", err)
	}
	if err := s.Policy.DeleteProject(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Policy.ProjectByID(ctx, b.ID); !errors.Is(err, ErrProjectUnknown) {
		t.Errorf("deleted project still found by id: %v", err)
	}
	if err := s.Policy.DeleteProject(ctx, "beta"); !errors.Is(err, ErrProjectUnknown) {
		t.Errorf("second delete = %v, want ErrProjectUnknown", err)
	}
}

// TestHarborPermissionMatrix: every role against every project action, as Harbor's project RBAC
// table has them (src/common/rbac/project/rbac_role.go: repository pull/push/delete, member
// read/list and create/update/delete, log list, robot read/list and create/delete, metadata
// update, self delete), written out here independently of rolePermissions.
func TestHarborPermissionMatrix(t *testing.T) {
	actions := []Action{ActionPull, ActionPush, ActionDelete, ActionReadMembers, ActionReadLogs, ActionReadRobots, ActionManageMembers, ActionUpdateProject, ActionDeleteProject}
	// Columns in the order of actions: pull push delete members logs robots manage update drop.
	matrix := map[Role]string{
		RoleProjectAdmin: "111111111",
		RoleMaintainer:   "111111010",
		RoleDeveloper:    "110111000",
		RoleGuest:        "100111000",
		RoleLimitedGuest: "100000000",
		RoleNone:         "000000000",
	}
	priv := &Project{Name: "team"}
	pub := &Project{Name: "open", Public: true}
	user := Principal{Name: "someone"}
	for role, row := range matrix {
		for i, a := range actions {
			want := row[i] == '1'
			if got := role.Allows(a); got != want {
				t.Errorf("%s.Allows(%s) = %v, want %v", role.Name(), a, got, want)
			}
			if got := decide(user, priv, role, a) == nil; got != want {
				t.Errorf("decide(%s, private, %s) = %v, want %v", role.Name(), a, got, want)
			}
			// A public project lets everyone pull, and nothing more.
			wantPub := want || a == ActionPull
			if got := decide(user, pub, role, a) == nil; got != wantPub {
				t.Errorf("decide(%s, public, %s) = %v, want %v", role.Name(), a, got, wantPub)
			}
		}
	}
	for _, a := range actions {
		if decide(Principal{Name: "root", Admin: true}, priv, RoleNone, a) != nil {
			t.Errorf("a system admin may not %s", a)
		}
		anon := decide(Principal{}, pub, RoleNone, a) == nil
		if anon != (a == ActionPull) {
			t.Errorf("anonymous %s on a public project = %v", a, anon)
		}
	}
}

// The name "admin" is the built-in administrator's, reserved even before it exists (it is made
// once cove is up): nobody creates a user of that name, in any case, and no directory user
// called admin logs in as it.
func TestAdminNameIsReserved(t *testing.T) {
	ctx := context.Background()
	s, err := New(ctx, openDB(t), Config{BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir(), SelfRegistration: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"admin", "Admin", "ADMIN"} {
		if _, err := s.Identity.CreateUser(ctx, User{Name: name}, "Attacker123"); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateUser(%q) before the admin exists = %v, want ErrInvalid", name, err)
		}
	}
	if ok, err := s.Identity.EnsureAdmin(ctx, func(string) error { return nil }); err != nil || !ok {
		t.Fatalf("EnsureAdmin = %v, %v", ok, err)
	}
	if u, err := s.Identity.User(ctx, AdminName); err != nil || !u.Admin || u.LDAP {
		t.Errorf("the admin = %+v, %v; want a local system admin", u, err)
	}
}

// Creations at the same time all succeed, with distinct ids (a badger sequence per call made
// them conflict: 500 "Transaction Conflict").
func TestConcurrentCreationsDoNotConflict(t *testing.T) {
	ctx := context.Background()
	s, err := New(ctx, openDB(t), Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	const n = 24
	var wg sync.WaitGroup
	ids := make(chan int64, 2*n)
	for i := range n {
		wg.Go(func() {
			p, err := s.Policy.CreateProject(ctx, fmt.Sprintf("p%d", i), false, "admin")
			if err != nil {
				t.Errorf("CreateProject %d: %v", i, err)
				return
			}
			ids <- p.ID
		})
		wg.Go(func() {
			u, err := s.Identity.CreateUser(ctx, User{Name: fmt.Sprintf("u%d", i)}, "Password123")
			if err != nil {
				t.Errorf("CreateUser %d: %v", i, err)
				return
			}
			ids <- -u.ID
		})
	}
	wg.Wait()
	close(ids)
	seen := map[int64]bool{}
	for id := range ids {
		if seen[id] {
			t.Errorf("id %d given twice", id)
		}
		seen[id] = true
	}
}

// Nodes of a fleet that start at once on one database: one creates the admin, the others neither
// fail nor show a password that does not work; with auth.admin_password, none fails.
func TestAdminCreatedOnceByNodesStartingAtOnce(t *testing.T) {
	ctx := context.Background()
	for _, configured := range []string{"", "Passw0rd-of-the-admin"} {
		db := openDB(t)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var shown []string
		errs := make(chan error, 4)
		for range 4 {
			wg.Go(func() {
				s, err := New(ctx, db, Config{BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir(), AdminPassword: configured})
				if err != nil {
					errs <- err
					return
				}
				_, err = s.Identity.EnsureAdmin(ctx, func(p string) error { mu.Lock(); shown = append(shown, p); mu.Unlock(); return nil })
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("a node starting at the same time as others (admin_password %q): %v", configured, err)
		}
		s, err := New(ctx, db, Config{BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		want := configured
		if configured == "" {
			if len(shown) != 1 {
				t.Fatalf("%d passwords shown by 4 nodes, want 1", len(shown))
			}
			want = shown[0]
		} else if len(shown) != 0 {
			t.Errorf("passwords shown with auth.admin_password set: %v", shown)
		}
		if _, err := s.Identity.CheckPassword(ctx, AdminName, want); err != nil {
			t.Errorf("the admin's password does not work: %v", err)
		}
	}
}
