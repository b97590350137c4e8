package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"cove/auth"
	"cove/cache"
)

func TestTranslationsComplete(t *testing.T) {
	en, zh := translations["en"], translations["zh"]
	for k := range en {
		if zh[k] == "" {
			t.Errorf("zh lacks %q", k)
		}
	}
	for k := range zh {
		if en[k] == "" {
			t.Errorf("en lacks %q", k)
		}
	}
	// Every key a template names, and every key made from a value, exists.
	used := map[string]bool{}
	files, _ := os.ReadDir("web/templates")
	re := regexp.MustCompile(`T "([a-zA-Z0-9_.]+)"`)
	for _, f := range files {
		b, _ := os.ReadFile("web/templates/" + f.Name())
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			used[m[1]] = true
		}
	}
	for _, r := range []auth.Role{auth.RoleProjectAdmin, auth.RoleMaintainer, auth.RoleDeveloper, auth.RoleGuest, auth.RoleLimitedGuest} {
		used["role."+r.Name()] = true
	}
	for _, op := range auditOperations {
		used["op."+op] = true
	}
	used["result.success"], used["result.failure"] = true, true
	for _, title := range []string{"login.title", "error.title", "project.title", "repo.title", "notfound.title", "notfound.text"} {
		used[title] = true
	}
	// The API's messages, and what each status means when a message is not known.
	for _, m := range apiMessages {
		used[m.key] = true
	}
	for status := 100; status < 600; status++ {
		used[apiStatusKey(status)] = true
	}
	used["apierr.detail"] = true
	for k := range used {
		if en[k] == "" || zh[k] == "" {
			t.Errorf("key %q is used but not translated in both languages", k)
		}
	}
}

// browser is an HTTP client with a cookie jar, as a browser on cove's own origin.
type browser struct {
	t    *testing.T
	c    *http.Client
	base string
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(method, path, body string, hdr ...string) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest(method, b.base+path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(out)
}

func webEnv(t *testing.T) (*secEnv, *browser) {
	t.Helper()
	e, _, b := webServerEnv(t)
	return e, b
}

// webServerEnv is webEnv with the admin server, for what a test sets behind it.
func webServerEnv(t *testing.T) (*secEnv, *Server, *browser) {
	t.Helper()
	e := newSecEnv(t, false)
	// Serve the page and the API together, as cove does.
	mux := http.NewServeMux()
	srvHandler := e.srv.Config.Handler.(*Server)
	mux.Handle("/api/", srvHandler)
	mux.Handle("/", srvHandler.Web())
	e.srv.Config.Handler = mux
	b := newBrowser(t, e.srv.URL)
	resp, _ := b.do("POST", "/login", url.Values{"username": {"admin"}, "password": {"pw"}}.Encode(), "Content-Type", "application/x-www-form-urlencoded")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in = %d", resp.StatusCode)
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == auth.SessionCookie {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie %+v: want HttpOnly and SameSite=Strict", session)
	}
	return e, srvHandler, b
}

func TestPagesEscapeNamesAndGuardChanges(t *testing.T) {
	e, b := webEnv(t)
	// Changes go through the API with the session, from the same origin.
	resp, _ := b.do("POST", "/api/v2.0/projects", `{"project_name":"team"}`, "Content-Type", "application/json", "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != 201 {
		t.Fatalf("create project from the page = %d", resp.StatusCode)
	}
	evil := `<img src=x onerror=alert(1)>`
	resp, body := b.do("POST", "/api/v2.0/projects/team/members", `{"role_id":3,"member_group":{"group_name":"`+strings.ReplaceAll(evil, `"`, `\"`)+`"}}`, "Content-Type", "application/json")
	if resp.StatusCode != 201 {
		t.Fatalf("add member = %d %s", resp.StatusCode, body)
	}
	resp, body = b.do("GET", "/projects/team", "")
	if resp.StatusCode != 200 {
		t.Fatalf("project page = %d", resp.StatusCode)
	}
	if strings.Contains(body, evil) || !strings.Contains(body, "&lt;img src=x onerror=alert(1)&gt;") {
		t.Errorf("a member name with HTML is not shown as text")
	}
	for h, want := range map[string]string{"Content-Security-Policy": "script-src 'self'", "X-Content-Type-Options": "nosniff"} {
		if !strings.Contains(resp.Header.Get(h), want) {
			t.Errorf("%s = %q, want %q", h, resp.Header.Get(h), want)
		}
	}
	// Another site cannot use the session to change anything.
	resp, _ = b.do("POST", "/api/v2.0/projects", `{"project_name":"evil"}`, "Content-Type", "application/json", "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site change with the session = %d, want 403", resp.StatusCode)
	}
	if _, err := e.auth.Policy.Project(t.Context(), "evil"); err == nil {
		t.Error("the cross-site request created a project")
	}
	// Signed out, pages send to sign-in and the session no longer works: the server ended it, so
	// the old cookie, replayed by someone who kept it, is worth nothing.
	var old *http.Cookie
	u, _ := url.Parse(e.srv.URL)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == auth.SessionCookie {
			old = c
		}
	}
	if old == nil {
		t.Fatal("no session cookie before sign-out")
	}
	b.do("POST", "/logout", "")
	if resp, _ := b.do("GET", "/projects", ""); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("after sign-out = %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	replay := newBrowser(t, e.srv.URL)
	for path, want := range map[string]int{"/projects": http.StatusSeeOther, "/api/v2.0/users/current": http.StatusUnauthorized} {
		if resp, _ := replay.do("GET", path, "", "Cookie", auth.SessionCookie+"="+old.Value); resp.StatusCode != want {
			t.Errorf("the signed-out session's cookie replayed on %s = %d, want %d: the server did not end the session", path, resp.StatusCode, want)
		}
	}
}

func TestEveryPageRendersInBothLanguages(t *testing.T) {
	_, b := webEnv(t)
	b.do("POST", "/api/v2.0/projects", `{"project_name":"team"}`, "Content-Type", "application/json")
	for _, lang := range []struct{ accept, want string }{{"en-US,en;q=0.9", "Projects"}, {"zh-CN,zh;q=0.9", "项目"}} {
		for _, page := range []string{"/", "/projects", "/projects/team", "/projects/team/repositories/app", "/mirror", "/users", "/audit", "/settings", "/connect"} {
			resp, body := b.do("GET", page, "", "Accept-Language", lang.accept)
			if resp.StatusCode != 200 || !strings.Contains(body, lang.want) {
				t.Errorf("%s in %s = %d, lacking %q", page, lang.accept, resp.StatusCode, lang.want)
			}
		}
	}
	// The switcher's choice wins over Accept-Language, and persists.
	b.do("GET", "/lang?l=zh&back=/projects", "")
	if _, body := b.do("GET", "/projects", "", "Accept-Language", "en"); !strings.Contains(body, "新建项目") {
		t.Error("the language switch did not persist")
	}
	if resp, _ := b.do("GET", "/lang?l=en&back=//evil.example/", ""); resp.Header.Get("Location") != "/" {
		t.Errorf("the switch redirects off-site: %q", resp.Header.Get("Location"))
	}
}

func TestOpenAPICoversEveryRoute(t *testing.T) {
	e := newSecEnv(t, false)
	resp, body := call(t, e.srv, "GET", "/api/v2.0/openapi.json", "", "", "")
	var doc struct {
		Paths      map[string]map[string]any
		Components struct {
			Schemas map[string]any
		}
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || resp.StatusCode != 200 {
		t.Fatalf("openapi.json = %d %v", resp.StatusCode, err)
	}
	srv := e.srv.Config.Handler.(*Server)
	patterns := map[string]bool{}
	for _, rt := range srv.routes() {
		patterns[rt.pattern] = true
		method, path, _ := strings.Cut(rt.pattern, " ")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("the OpenAPI document lacks %s", rt.pattern)
		}
		if _, ok := shapes[rt.pattern]; !ok {
			t.Errorf("%s has no request and response shape (schemas.go)", rt.pattern)
		}
	}
	for p := range shapes {
		if !patterns[p] {
			t.Errorf("schemas.go has a shape for %s, which is no route", p)
		}
	}
	// Every reference resolves, and the schemas are the handlers' own types.
	for _, ref := range regexp.MustCompile(`"#/components/schemas/([A-Za-z_]+)"`).FindAllStringSubmatch(body, -1) {
		if _, ok := doc.Components.Schemas[ref[1]]; !ok {
			t.Errorf("a reference to the missing schema %s", ref[1])
		}
	}
	for schema, field := range map[string]string{"project": "project_id", "projectReq": "storage_limit", "artifact": "extra_attrs", "gcHistory": "job_status", "quota": "hard"} {
		props, _ := doc.Components.Schemas[schema].(map[string]any)["properties"].(map[string]any)
		if _, ok := props[field]; !ok {
			t.Errorf("schema %s lacks %s: %v", schema, field, doc.Components.Schemas[schema])
		}
	}
}

// signIn is a browser signed in as user on the page and API of e.
func signIn(t *testing.T, e *secEnv, user, pass string) *browser {
	t.Helper()
	b := newBrowser(t, e.srv.URL)
	resp, body := b.do("POST", "/login", url.Values{"username": {user}, "password": {pass}}.Encode(), "Content-Type", "application/x-www-form-urlencoded")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in as %s = %d %s", user, resp.StatusCode, body)
	}
	return b
}

// api calls the API with the browser's session, as app.js does.
func (b *browser) api(method, path, body string) (int, string) {
	b.t.Helper()
	resp, out := b.do(method, path, body, "Content-Type", "application/json", "Sec-Fetch-Site", "same-origin")
	return resp.StatusCode, out
}

// roleEnv is a page with a private project team, its project admin padmin and developer dev,
// and a public project other where neither has a role.
func roleEnv(t *testing.T) (*secEnv, *Server, *browser) {
	t.Helper()
	e, srv, admin := webServerEnv(t)
	for _, name := range []string{"padmin", "dev"} {
		if code, b := admin.api("POST", "/api/v2.0/users", fmt.Sprintf(`{"username":%q,"password":%q}`, name, strong)); code != 201 {
			t.Fatalf("create user %s = %d %s", name, code, b)
		}
	}
	admin.api("POST", "/api/v2.0/projects", `{"project_name":"team"}`)
	admin.api("POST", "/api/v2.0/projects", `{"project_name":"other","metadata":{"public":"true"}}`)
	for name, role := range map[string]auth.Role{"padmin": auth.RoleProjectAdmin, "dev": auth.RoleDeveloper} {
		if code, b := admin.api("POST", "/api/v2.0/projects/team/members", fmt.Sprintf(`{"role_id":%d,"member_user":{"username":%q}}`, role, name)); code != 201 {
			t.Fatalf("add %s = %d %s", name, code, b)
		}
	}
	return e, srv, admin
}

// deleteButton finds a delete button of the API path on a page.
func deleteButton(body, path string) bool {
	return strings.Contains(body, `data-method="DELETE" data-path="`+path+`"`)
}

// TestPagesOfferOnlyWhatTheRoleMay: the page shows Delete, New-project and the management forms
// only to those the API lets use them (the API refuses the rest anyway: TestMemberRolesThroughTheAPI).
func TestPagesOfferOnlyWhatTheRoleMay(t *testing.T) {
	e, _, admin := roleEnv(t)
	users := map[string]*browser{"admin": admin, "padmin": signIn(t, e, "padmin", strong), "dev": signIn(t, e, "dev", strong)}
	for _, tc := range []struct {
		user                  string
		newProject            bool
		deleteTeam, deleteOth bool
		manageTeam            bool
	}{
		{user: "admin", newProject: true, deleteTeam: true, deleteOth: true, manageTeam: true},
		{user: "padmin", deleteTeam: true, manageTeam: true},
		{user: "dev"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			b := users[tc.user]
			resp, body := b.do("GET", "/projects", "")
			if resp.StatusCode != 200 || !strings.Contains(body, `href="/projects/other"`) {
				t.Fatalf("/projects = %d, want 200 listing other", resp.StatusCode)
			}
			if got := strings.Contains(body, `id="new-project"`); got != tc.newProject {
				t.Errorf("New-project form shown = %v, want %v", got, tc.newProject)
			}
			if got := deleteButton(body, "/api/v2.0/projects/team"); got != tc.deleteTeam {
				t.Errorf("Delete of team shown = %v, want %v", got, tc.deleteTeam)
			}
			if got := deleteButton(body, "/api/v2.0/projects/other"); got != tc.deleteOth {
				t.Errorf("Delete of other shown = %v, want %v", got, tc.deleteOth)
			}
			_, body = b.do("GET", "/projects/team", "")
			for _, id := range []string{`id="new-member"`, `id="new-robot"`, `id="toggle-public"`, `data-path="/api/v2.0/projects/team/members/`} {
				if got := strings.Contains(body, id); got != tc.manageTeam {
					t.Errorf("/projects/team shows %s = %v, want %v", id, got, tc.manageTeam)
				}
			}
			// What is offered works; what is not is refused.
			code, _ := b.api("POST", "/api/v2.0/projects", `{"project_name":"new-`+tc.user+`"}`)
			if (code == 201) != tc.newProject {
				t.Errorf("creating a project = %d, the page offers it: %v", code, tc.newProject)
			}
		})
	}
	// With project_creation_restriction everyone, every user gets the form.
	admin.api("PUT", "/api/v2.0/configurations", `{"project_creation_restriction":"everyone"}`)
	if _, body := users["dev"].do("GET", "/projects", ""); !strings.Contains(body, `id="new-project"`) {
		t.Error("with project creation open to everyone, dev has no New-project form")
	}
}

// TestUsersChangePasswordsOnThePage: every user changes its own password on /account; system
// admins reset others' and grant or revoke admin on /users.
func TestUsersChangePasswordsOnThePage(t *testing.T) {
	e, _, admin := roleEnv(t)
	dev := signIn(t, e, "dev", strong)
	u, err := e.auth.Identity.User(t.Context(), "dev")
	if err != nil {
		t.Fatal(err)
	}
	resp, body := dev.do("GET", "/account", "")
	form := fmt.Sprintf(`data-api="PUT /api/v2.0/users/%d/password"`, u.ID)
	if resp.StatusCode != 200 || !strings.Contains(body, form) || !strings.Contains(body, `name="old_password"`) {
		t.Fatalf("/account = %d, lacking the password form %s", resp.StatusCode, form)
	}
	if !strings.Contains(body, `href="/account"`) {
		t.Error("the layout has no link to /account")
	}
	path := fmt.Sprintf("/api/v2.0/users/%d/password", u.ID)
	if code, _ := dev.api("PUT", path, `{"old_password":"wrong","new_password":"N3wPassword"}`); code != 403 {
		t.Errorf("own password change with a wrong current password = %d, want 403", code)
	}
	if code, b := dev.api("PUT", path, `{"old_password":"`+strong+`","new_password":"N3wPassword"}`); code != 200 {
		t.Fatalf("own password change = %d %s", code, b)
	}
	if _, err := e.auth.Identity.CheckPassword(t.Context(), "dev", "N3wPassword"); err != nil {
		t.Errorf("the new password does not work: %v", err)
	}
	// The change ends the user's other sessions; the page it was made on stays signed in.
	other := signIn(t, e, "dev", "N3wPassword")
	if code, b := dev.api("PUT", path, `{"old_password":"N3wPassword","new_password":"N4wPassword"}`); code != 200 {
		t.Fatalf("second own password change = %d %s", code, b)
	}
	if resp, _ := dev.do("GET", "/account", ""); resp.StatusCode != 200 {
		t.Errorf("the page where the password was changed is signed out: %d", resp.StatusCode)
	}
	if resp, _ := other.do("GET", "/account", ""); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("another session of the user survived the password change: %d", resp.StatusCode)
	}

	// The admin's users page: reset and grant for others, nothing that would remove itself.
	_, body = admin.do("GET", "/users", "")
	row := func(name string) string {
		_, after, _ := strings.Cut(body, `<tr id="user-`+name+`">`)
		r, _, _ := strings.Cut(after, "</tr>")
		return r
	}
	devRow, adminRow := row("dev"), row("admin")
	for _, want := range []string{form, fmt.Sprintf(`data-path="/api/v2.0/users/%d/sysadmin" data-body='{"sysadmin_flag":true}'`, u.ID), `data-method="DELETE"`} {
		if !strings.Contains(devRow, want) {
			t.Errorf("dev's row lacks %s:\n%s", want, devRow)
		}
	}
	if adminRow == "" || strings.Contains(adminRow, "<button") || strings.Contains(adminRow, "<form") {
		t.Errorf("the admin's own row offers changes:\n%s", adminRow)
	}
	if code, b := admin.api("PUT", path, `{"new_password":"Reset0Password"}`); code != 200 {
		t.Fatalf("admin resets dev's password = %d %s", code, b)
	}
	if _, err := e.auth.Identity.CheckPassword(t.Context(), "dev", "Reset0Password"); err != nil {
		t.Errorf("the reset password does not work: %v", err)
	}
	admin.api("PUT", fmt.Sprintf("/api/v2.0/users/%d/sysadmin", u.ID), `{"sysadmin_flag":true}`)
	_, body = admin.do("GET", "/users", "")
	if devRow = row("dev"); !strings.Contains(devRow, `data-body='{"sysadmin_flag":false}'`) {
		t.Errorf("an admin dev has no Revoke button:\n%s", devRow)
	}
	// A user who is not an admin sees no users page, in its language.
	resp, body = signIn(t, e, "padmin", strong).do("GET", "/users", "", "Accept-Language", "zh-CN")
	if resp.StatusCode != 403 || !strings.Contains(body, "您无权执行此操作") {
		t.Errorf("/users for a non-admin = %d, want 403 with a Chinese message", resp.StatusCode)
	}
}

// TestUnknownPagesAreStyled404s: a path that names no page, or a project that does not exist,
// is the site's 404 page, translated; not Go's plain "404 page not found".
func TestUnknownPagesAreStyled404s(t *testing.T) {
	e, admin := webEnv(t)
	for _, tc := range []struct {
		name, path, lang string
		b                *browser
		want             []string
	}{
		{"signed in", "/no/such/page", "en", admin, []string{"<h1>Page not found</h1>", `id="nav-projects"`, "/no/such/page"}},
		{"chinese", "/no/such/page", "zh-CN", admin, []string{"<h1>页面不存在</h1>", `id="nav-projects"`}},
		{"signed out", "/no/such/page", "en", newBrowser(t, e.srv.URL), []string{"<h1>Page not found</h1>", `href="/static/app.css"`}},
		{"no project", "/projects/nosuch", "en", admin, []string{"<h1>Page not found</h1>", "The project does not exist"}},
		{"no project, chinese", "/projects/nosuch", "zh-CN", admin, []string{"<h1>页面不存在</h1>", "项目不存在"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := tc.b.do("GET", tc.path, "", "Accept-Language", tc.lang)
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s = %d, want 404", tc.path, resp.StatusCode)
			}
			if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || strings.Contains(body, "404 page not found") {
				t.Errorf("GET %s is not the site's page: %s %q", tc.path, resp.Header.Get("Content-Type"), body)
			}
			for _, want := range tc.want {
				if !strings.Contains(body, want) {
					t.Errorf("GET %s lacks %q", tc.path, want)
				}
			}
		})
	}
	// The start page is still the dashboard.
	if resp, body := admin.do("GET", "/", ""); resp.StatusCode != 200 || !strings.Contains(body, `id="chart"`) {
		t.Errorf("GET / = %d, want the dashboard", resp.StatusCode)
	}
}

// TestRobotSecretShownOnce: the project page has the place for a new robot's secret, saying it
// is shown only once, with a copy button; app.js fills it and adds the robot to the list (the
// browser test, test/web, runs it).
func TestRobotSecretShownOnce(t *testing.T) {
	_, _, admin := roleEnv(t)
	for lang, want := range map[string]string{"en": "shown only once", "zh-CN": "仅显示一次"} {
		_, body := admin.do("GET", "/projects/team", "", "Accept-Language", lang)
		for _, s := range []string{want, `id="robot-secret"`, `id="robot-secret-value"`, `data-copy="robot-secret-value"`, `<table id="robots" data-never=`} {
			if !strings.Contains(body, s) {
				t.Errorf("/projects/team in %s lacks %q", lang, s)
			}
		}
	}
	resp, js := admin.do("GET", "/static/app.js", "")
	for _, s := range []string{"robot-secret-value", "insertRow", "clipboard", `"/message"`} {
		if resp.StatusCode != 200 || !strings.Contains(js, s) {
			t.Errorf("app.js lacks %q", s)
		}
	}
	// The list the page shows after a reload has the robot; its secret is in no page.
	code, out := admin.api("POST", "/api/v2.0/robots", `{"name":"ci","duration":-1,"permissions":[{"kind":"project","namespace":"team","access":[{"resource":"repository","action":"pull"}]}]}`)
	var rb robot
	if err := json.Unmarshal([]byte(out), &rb); code != 201 || err != nil || rb.Secret == "" {
		t.Fatalf("create robot = %d %s", code, out)
	}
	if _, body := admin.do("GET", "/projects/team", ""); !strings.Contains(body, "robot$team&#43;ci") || strings.Contains(body, rb.Secret) {
		t.Error("the project page does not list the robot, or shows its secret")
	}
}

// TestAPIMessagesTranslated: the errors the page's forms can meet, made by the API itself, are
// shown in Chinese on a Chinese page (POST /message, which app.js calls, and error pages).
func TestAPIMessagesTranslated(t *testing.T) {
	e, srv, admin := roleEnv(t)
	dev := signIn(t, e, "dev", strong)
	u, _ := e.auth.Identity.User(t.Context(), "dev")
	srv.repos.(*fakeRepos).repos = []string{"team/app"}
	robotBody := func(name, action string) string {
		return fmt.Sprintf(`{"name":%q,"permissions":[{"kind":"project","namespace":"team","access":[{"resource":"repository","action":%q}]}]}`, name, action)
	}
	admin.api("POST", "/api/v2.0/robots", robotBody("ci", "pull"))
	for _, tc := range []struct {
		name             string
		b                *browser
		method, path, in string
		zh, en           string
	}{
		{"project exists", admin, "POST", "/api/v2.0/projects", `{"project_name":"other"}`, "同名项目已存在", "A project with that name exists already."},
		{"invalid project name", admin, "POST", "/api/v2.0/projects", `{"project_name":"Bad Name"}`, `项目名称 "Bad Name" 无效`, `The project name "Bad Name" is not valid`},
		{"upstream name", admin, "POST", "/api/v2.0/projects", `{"project_name":"docker.io"}`, "是上游仓库的名称", "names an upstream registry"},
		{"creation is for admins", dev, "POST", "/api/v2.0/projects", `{"project_name":"mine"}`, "只有系统管理员可以创建项目", "Only system admins create projects"},
		{"project not empty", admin, "DELETE", "/api/v2.0/projects/team", "", "项目 team 仍有 1 个仓库", "Project team still has 1 repositories"},
		{"forbidden", dev, "DELETE", "/api/v2.0/projects/team", "", "您无权执行此操作", "You may not do this"},
		{"project not found", admin, "DELETE", "/api/v2.0/projects/nosuch", "", "项目不存在", "The project does not exist"},
		{"password policy", admin, "POST", "/api/v2.0/users", `{"username":"weak","password":"short"}`, "密码不符合要求", "The password breaks the policy"},
		{"invalid user name", admin, "POST", "/api/v2.0/users", `{"username":"-x y","password":"` + strong + `"}`, "用户名 \"-x y\" 无效", "The user name \"-x y\" is not valid"},
		{"user exists", admin, "POST", "/api/v2.0/users", `{"username":"dev","password":"` + strong + `"}`, "用户 dev 已存在", "The user dev exists already."},
		{"wrong old password", dev, "PUT", fmt.Sprintf("/api/v2.0/users/%d/password", u.ID), `{"old_password":"wrong","new_password":"N3wPassword"}`, "当前密码错误", "The current password is wrong."},
		{"new password policy", admin, "PUT", fmt.Sprintf("/api/v2.0/users/%d/password", u.ID), `{"new_password":"short"}`, "密码不符合要求", "The password breaks the policy"},
		{"undeletable", admin, "DELETE", "/api/v2.0/users/1", "", "不能删除此用户", "This user cannot be deleted."},
		{"built-in admin", admin, "PUT", "/api/v2.0/users/1/sysadmin", `{"sysadmin_flag":false}`, "内置管理员始终是系统管理员", "The built-in admin stays a system admin."},
		{"no such user", admin, "POST", "/api/v2.0/projects/team/members", `{"role_id":2,"member_user":{"username":"nobody"}}`, "用户 nobody 不存在", "There is no user nobody."},
		{"member exists", admin, "POST", "/api/v2.0/projects/team/members", `{"role_id":2,"member_user":{"username":"dev"}}`, "dev 已经是 team 的成员", "dev is a member of team already."},
		{"robot exists", admin, "POST", "/api/v2.0/robots", robotBody("ci", "pull"), "机器人账户 robot$team+ci 已存在", "The robot account robot$team+ci exists already."},
		{"invalid robot name", admin, "POST", "/api/v2.0/robots", robotBody("CI!", "pull"), "机器人名称 \"CI!\" 无效", "The robot name \"CI!\" is not valid"},
		{"bad robot permission", admin, "POST", "/api/v2.0/robots", `{"name":"x","permissions":[{"kind":"project","namespace":"team","access":[]}]}`, "机器人账户至少需要一项权限", "A robot account needs at least one permission."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := tc.b.api(tc.method, tc.path, tc.in)
			var body struct {
				Errors []struct{ Code, Message string }
			}
			if err := json.Unmarshal([]byte(out), &body); err != nil || len(body.Errors) == 0 || code < 400 {
				t.Fatalf("%s %s = %d %s, want an error", tc.method, tc.path, code, out)
			}
			msg := body.Errors[0].Message
			if _, _, ok := apiMessageKey(msg); !ok {
				t.Errorf("no translation knows %q", msg)
			}
			req, _ := json.Marshal(map[string]any{"status": code, "message": msg})
			for lang, want := range map[string]string{"zh-CN": tc.zh, "en": tc.en} {
				resp, got := tc.b.do("POST", "/message", string(req), "Content-Type", "application/json", "Sec-Fetch-Site", "same-origin", "Accept-Language", lang)
				if resp.StatusCode != 200 || !strings.Contains(got, want) {
					t.Errorf("%q in %s = %d %q, want %q", msg, lang, resp.StatusCode, got, want)
				}
			}
		})
	}
	// A message no pattern knows says what its status means, and keeps what it said.
	resp, got := admin.do("POST", "/message", `{"status":400,"message":"q: something new"}`, "Content-Type", "application/json", "Accept-Language", "zh-CN")
	if got != "请求无效。（q: something new）" {
		t.Errorf("an unknown message in Chinese = %d %q", resp.StatusCode, got)
	}
	// Another site cannot make cove's origin show its text.
	resp, _ = admin.do("POST", "/message", `{"status":400,"message":"x"}`, "Content-Type", "application/json", "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST /message = %d, want 403", resp.StatusCode)
	}
}

// TestTimesToTheSecond: times are shown to the second, in both languages.
func TestTimesToTheSecond(t *testing.T) {
	at := time.Date(2026, 11, 30, 16, 20, 5, 0, time.FixedZone("CET", 3600))
	for _, code := range []string{"en", "zh"} {
		if got := (locale{Code: code}).Time(at); got != "2026-11-30 15:20:05 UTC" {
			t.Errorf("Time in %s = %q, want 2026-11-30 15:20:05 UTC", code, got)
		}
	}
	_, admin := webEnv(t)
	admin.api("POST", "/api/v2.0/projects", `{"project_name":"team"}`)
	stamp := regexp.MustCompile(`<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td>`)
	for _, lang := range []string{"en", "zh-CN"} {
		for _, page := range []string{"/audit", "/projects", "/users"} {
			if _, body := admin.do("GET", page, "", "Accept-Language", lang); !stamp.MatchString(body) {
				t.Errorf("%s in %s shows no time to the second", page, lang)
			}
		}
	}
}

// TestChartHasATimeAxis: the dashboard's chart labels its time axis every ten minutes, and each
// bar stands at its own minute.
func TestChartHasATimeAxis(t *testing.T) {
	now := time.Date(2026, 11, 30, 16, 37, 0, 0, time.UTC)
	var st mirrorStatus
	for _, ago := range []int{30, 29, 3, 0} { // a gap of 25 minutes without samples
		st.History = append(st.History, historyPoint{Time: now.Add(-time.Duration(ago) * time.Minute), Hits: int64(ago), Misses: 1})
	}
	c := newDashboard(st).Chart
	var labels []string
	for i, tk := range c.Ticks {
		labels = append(labels, tk.Label)
		if tk.X < 0 || tk.X > float64(c.W) || (i > 0 && tk.X <= c.Ticks[i-1].X) {
			t.Errorf("tick %s at x=%.1f", tk.Label, tk.X)
		}
	}
	if want := []string{"15:50", "16:00", "16:10", "16:20", "16:30"}; !slices.Equal(labels, want) {
		t.Errorf("ticks %v, want %v", labels, want)
	}
	slot := float64(c.W) / float64(historyLen+1)
	for i, ago := range []int{30, 29, 3, 0} {
		if want := float64(c.W) - float64(ago+1)*slot; math.Abs(c.Bars[i].X-want) > 0.01 {
			t.Errorf("bar of %d minutes ago at x=%.1f, want %.1f", ago, c.Bars[i].X, want)
		}
	}
	// The 16:30 tick is under the 16:30 bar (7 minutes ago).
	if x := c.Ticks[len(c.Ticks)-1].X; x < float64(c.W)-8*slot || x > float64(c.W)-7*slot {
		t.Errorf("the 16:30 tick at x=%.1f is not under its minute", x)
	}
	_, admin := webEnv(t)
	for lang, name := range map[string]string{"en": "time (UTC)", "zh-CN": "时间（UTC）"} {
		_, body := admin.do("GET", "/", "", "Accept-Language", lang)
		if n := len(regexp.MustCompile(`class="tick">\d\d:\d0</text>`).FindAllString(body, -1)); n < 4 || !strings.Contains(body, name) {
			t.Errorf("the dashboard in %s has %d labelled ticks and axis name %q: %v", lang, n, name, strings.Contains(body, name))
		}
	}
}

// /lang?back= redirects to paths of this site only (an open redirect was /\t/evil.example).
func TestLangRedirectsOnlyToLocalPaths(t *testing.T) {
	for back, want := range map[string]string{
		"/projects":              "/projects",
		"/projects/team?x=1#top": "/projects/team?x=1#top",
		"/%2F/evil.example":      "/",
		"/\t/evil.example":       "/",
		"/\n/evil.example":       "/",
		"/\r/evil.example":       "/",
		"/ /evil.example":        "/",
		"/\\evil.example":        "/",
		"\\\\evil.example":       "/",
		"//evil.example":         "/",
		"///evil.example":        "/",
		"https://evil.example/":  "/",
		"javascript:alert(1)":    "/",
		"evil.example":           "/",
		"/\x7f/evil.example":     "/",
		"/\x00/evil.example":     "/",
		"":                       "/",
		"/.//evil.example":       "/",
		"/a/../../evil.example":  "/",
	} {
		if got := localPath(back); got != want {
			t.Errorf("localPath(%q) = %q, want %q", back, got, want)
		}
	}
	_, b := webEnv(t)
	resp, _ := b.do("GET", "/lang?l=zh&back=/%09/evil.example", "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Errorf("/lang with a tab in back = %d, Location %q; want a redirect to /", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestAuditPageShowsDetail: the audit page shows each record's detail — what a token refused, why
// a change failed — and a refused API change says its status and reason.
func TestAuditPageShowsDetail(t *testing.T) {
	_, admin := webEnv(t)
	admin.api("POST", "/api/v2.0/projects", `{"project_name":"Bad Name"}`)
	_, body := admin.do("GET", "/audit", "")
	if !strings.Contains(body, ">Detail<") || !strings.Contains(body, `<td class="detail">400 BAD_REQUEST: invalid value: project name`) {
		t.Errorf("the audit page lacks the refused change's detail:\n%s", body)
	}
}

// The dashboard lists the fleet's nodes, in both languages, when there are any; the API lists
// them to system admins only.
func TestDashboardListsTheNodes(t *testing.T) {
	e, srv, admin := webServerEnv(t)
	seen := time.Date(2026, 11, 30, 16, 37, 5, 0, time.UTC)
	srv.nodes = func(context.Context) ([]Node, error) {
		return []Node{
			{Name: "node-<b>1</b>", AdvertiseURL: "http://10.0.0.1:5000", Version: "v1.2.3", LastHeartbeat: seen, Live: true},
			{Name: "node2", AdvertiseURL: "http://10.0.0.2:5000", Version: "v1.2.3", LastHeartbeat: seen.Add(-time.Minute)},
		}, nil
	}
	for lang, words := range map[string][]string{"en": {"Nodes of the fleet", ">live<", ">gone<"}, "zh-CN": {"集群节点", ">在线<", ">离线<"}} {
		_, body := admin.do("GET", "/", "", "Accept-Language", lang)
		for _, w := range append(words, `id="nodes"`, "node-&lt;b&gt;1&lt;/b&gt;", "http://10.0.0.2:5000", "v1.2.3") {
			if !strings.Contains(body, w) {
				t.Errorf("the dashboard in %s lacks %q", lang, w)
			}
		}
	}
	code, body := e.call(t, "GET", "/api/v2.0/cluster/nodes", "", "admin", "pw")
	var nodes []Node
	if code != 200 || json.Unmarshal([]byte(body), &nodes) != nil || len(nodes) != 2 || !nodes[0].Live || nodes[1].Live {
		t.Errorf("GET /api/v2.0/cluster/nodes as admin = %d %s", code, body)
	}
	if _, err := e.auth.Identity.CreateUser(context.Background(), auth.User{Name: "dave"}, "DavePw1xyz"); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.call(t, "GET", "/api/v2.0/cluster/nodes", "", "dave", "DavePw1xyz"); code != http.StatusForbidden {
		t.Errorf("GET /api/v2.0/cluster/nodes as a user = %d, want 403", code)
	}
	// A single node has no fleet: no table.
	srv.nodes = nil
	if _, body := admin.do("GET", "/", ""); strings.Contains(body, `id="nodes"`) {
		t.Error("a single node's dashboard shows a nodes table")
	}
}

// scrubsFunc is a Scrubs from a func.
type scrubsFunc func() (cache.ScrubResult, bool, error)

func (f scrubsFunc) LastScrub(context.Context) (cache.ScrubResult, bool, error) { return f() }

// The dashboard shows the last scrub, in both languages, with its problems by kind; before the
// first, it says how to run one. The API gives it to system admins only.
func TestDashboardShowsTheLastScrub(t *testing.T) {
	e, srv, admin := webServerEnv(t)
	for lang, w := range map[string]string{"en": "No scrub has run", "zh-CN": "尚未运行数据校验"} {
		if _, body := admin.do("GET", "/", "", "Accept-Language", lang); !strings.Contains(body, w) || !strings.Contains(body, `id="scrub-never"`) {
			t.Errorf("the dashboard in %s before any scrub lacks %q", lang, w)
		}
	}
	last := cache.ScrubResult{Started: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC), Duration: 12.5, Blobs: 4321, Bytes: 5 << 30,
		Counts: map[string]int{cache.ScrubCorrupt: 2, cache.ScrubSize: 0, cache.ScrubMissing: 1, cache.ScrubMissingReference: 0, cache.ScrubDanglingTag: 0},
		Problems: []cache.ScrubProblem{
			{Kind: cache.ScrubCorrupt, Digest: "sha256:1111111111111111111111111111111111111111111111111111111111111111", Pushed: true, Breaks: []string{"team/app", "team/app:v1"}},
			{Kind: cache.ScrubCorrupt, Digest: "sha256:2222222222222222222222222222222222222222222222222222222222222222"},
			{Kind: cache.ScrubMissing, Digest: "sha256:3333333333333333333333333333333333333333333333333333333333333333"},
		}}
	srv.scrubs = scrubsFunc(func() (cache.ScrubResult, bool, error) { return last, true, nil })
	for lang, words := range map[string][]string{"en": {"Scrub", "Blobs checked", "2 corrupt", "1 missing", "12.5 s", "Breaks", "team/app, team/app:v1", "sha256:111111111111", ">missing<", "Problems in all: 3"}, "zh-CN": {"数据校验", "2 个已损坏", "1 个缺失", "受影响", "team/app, team/app:v1", ">缺失<", "共 3 个问题"}} {
		_, body := admin.do("GET", "/", "", "Accept-Language", lang)
		for _, w := range append(words, `id="scrub"`, `id="scrub-problems"`) {
			if !strings.Contains(body, w) {
				t.Errorf("the dashboard in %s lacks %q", lang, w)
			}
		}
		if strings.Contains(body, "of the wrong size") || strings.Contains(body, "大小不符") {
			t.Errorf("the dashboard in %s shows a kind of problem the scrub did not find", lang)
		}
	}
	code, body := e.call(t, "GET", "/api/v2.0/system/scrub", "", "admin", "pw")
	var st struct {
		Last *cache.ScrubResult `json:"last"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Last == nil || st.Last.Counts[cache.ScrubCorrupt] != 2 {
		t.Errorf("GET /api/v2.0/system/scrub as admin = %d %s", code, body)
	}
	if _, err := e.auth.Identity.CreateUser(context.Background(), auth.User{Name: "dave"}, "DavePw1xyz"); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.call(t, "GET", "/api/v2.0/system/scrub", "", "dave", "DavePw1xyz"); code != http.StatusForbidden {
		t.Errorf("GET /api/v2.0/system/scrub as a user = %d, want 403", code)
	}
}
