package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"cove/auth"
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
	for _, title := range []string{"login.title", "error.title", "project.title", "repo.title"} {
		used[title] = true
	}
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
	return e, b
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
	if _, err := e.auth.Project(t.Context(), "evil"); err == nil {
		t.Error("the cross-site request created a project")
	}
	// Signed out, pages send to sign-in and the session no longer works.
	b.do("POST", "/logout", "")
	if resp, _ := b.do("GET", "/projects", ""); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("after sign-out = %d %q", resp.StatusCode, resp.Header.Get("Location"))
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
		Paths map[string]map[string]any
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || resp.StatusCode != 200 {
		t.Fatalf("openapi.json = %d %v", resp.StatusCode, err)
	}
	srv := e.srv.Config.Handler.(*Server)
	for _, rt := range srv.routes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("the OpenAPI document lacks %s", rt.pattern)
		}
	}
	if !slices.Contains([]int{len(doc.Paths)}, len(doc.Paths)) || len(doc.Paths) < 20 {
		t.Errorf("%d paths", len(doc.Paths))
	}
}
