package admin

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/text/message/catalog"

	"cove/auth"
	"cove/cache"
	"cove/internal/telemetry"
	"cove/internal/webhook"
)

// The admin page is served by cove itself at /, server-rendered with html/template (every name,
// tag and label escaped) from embedded templates and static files: nothing to build. It reads
// through the same /api/v2.0 endpoints that tools use — called in-process with the visitor's own
// session, so the API's checks are the page's checks — and its forms change things by calling
// them from the browser.

//go:embed web/templates/*.html
var templateFS embed.FS

//go:embed web/static
var staticFS embed.FS

// webPages renders the pages.
type webPages struct {
	s       *Server
	pages   map[string]*template.Template
	catalog *catalog.Builder
	static  http.Handler
}

func newWebPages(s *Server) (*webPages, error) {
	cat, err := newCatalog()
	if err != nil {
		return nil, err
	}
	w := &webPages{s: s, pages: map[string]*template.Template{}, catalog: cat}
	funcs := template.FuncMap{
		"short": func(d string) string {
			if len(d) > 19 {
				return d[:19]
			}
			return d
		},
		"unix": func(sec int64) time.Time { return time.Unix(sec, 0) },
		"add":  func(a, b int) int { return a + b },
		"list": func(v ...string) []string { return v },
		"mib":  func(n int64) int64 { return n >> 20 },
		// firstProblems is the head of a scrub's problems that the dashboard lists.
		"firstProblems": func(p []cache.ScrubProblem) []cache.ScrubProblem { return p[:min(len(p), dashboardProblems)] },
		"join":          strings.Join,
	}
	for _, page := range []string{"error", "login", "forgot", "resetpw", "dashboard", "projects", "project", "repository", "mirror", "users", "account", "audit", "settings", "connect", "gc"} {
		t, err := template.New(page).Funcs(funcs).ParseFS(templateFS, "web/templates/layout.html", "web/templates/"+page+".html")
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", page, err)
		}
		w.pages[page] = t
	}
	sub, err := fs.Sub(staticFS, "web/static")
	if err != nil {
		return nil, err
	}
	w.static = http.StripPrefix("/static/", http.FileServerFS(sub))
	return w, nil
}

// view is what every template gets.
type view struct {
	L     locale
	Who   auth.Principal
	Title string
	Path  string
	Data  any
}

func (w *webPages) render(rw http.ResponseWriter, r *http.Request, who auth.Principal, page, titleKey string, data any, titleArgs ...any) {
	l := w.localeFor(r)
	v := view{L: l, Who: who, Title: l.T(titleKey, titleArgs...), Path: r.URL.RequestURI(), Data: data}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.Header().Set("Cache-Control", "no-store")
	if err := w.pages[page].ExecuteTemplate(rw, "layout", v); err != nil {
		w.s.log.ErrorContext(r.Context(), "rendering a page", "page", page, "err", err)
	}
}

// api calls an /api/v2.0 endpoint in-process as the visitor, and decodes its answer into out.
func (w *webPages) api(r *http.Request, path string, out any) error {
	_, err := w.apiHeader(r, path, out)
	return err
}

// apiHeader is api that also returns the answer's header (X-Total-Count for paged lists).
func (w *webPages) apiHeader(r *http.Request, path string, out any) (http.Header, error) {
	req := httptest.NewRequestWithContext(r.Context(), http.MethodGet, path, nil)
	req.RemoteAddr = r.RemoteAddr
	for _, c := range r.Cookies() {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	w.s.mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		var body struct {
			Errors []struct{ Code, Message string }
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		e := &apiError{Status: rec.Code, Code: "ERROR"} // the page says what the status means
		if len(body.Errors) > 0 {
			e.Code, e.Message = body.Errors[0].Code, body.Errors[0].Message
		}
		return nil, e
	}
	return rec.Header(), json.Unmarshal(rec.Body.Bytes(), out)
}

// ServeWeb serves the pages, the static files, sign-in, sign-out and the language switch.
func (w *webPages) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	h := rw.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if strings.HasPrefix(r.URL.Path, "/static/") {
		w.static.ServeHTTP(rw, r)
		return
	}
	w.s.webMux.ServeHTTP(rw, r)
}

// page wraps a page handler: it needs a signed-in user, else it sends the visitor to sign in.
func (w *webPages) page(h func(rw http.ResponseWriter, r *http.Request, who auth.Principal)) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		who, err := w.s.auth.Tokens.Authenticate(r.Context(), r)
		if err != nil || who.Anonymous() || r.Header.Get("Authorization") != "" {
			http.Redirect(rw, r, "/login", http.StatusSeeOther)
			return
		}
		h(rw, r, who)
	})
}

// failed renders an API error in place of the page, in the visitor's language, with the API's
// status: what does not exist (or may not be seen) is the site's 404 page.
func (w *webPages) failed(rw http.ResponseWriter, r *http.Request, who auth.Principal, err error) {
	e := toAPIError(err)
	if e.Status >= 500 {
		telemetry.SetCause(r.Context(), err) // the access-log line of a 5xx names its cause
	}
	title := "error.title"
	if e.Status == http.StatusNotFound {
		title = "notfound.title"
	}
	rw.WriteHeader(e.Status)
	w.render(rw, r, who, "error", title, w.localeFor(r).APIMessage(e.Status, e.Message))
}

// handleNotFound answers a path that names no page with the site's 404 page. A signed-in visitor
// keeps the navigation; anyone else gets the page without it.
func (w *webPages) handleNotFound(rw http.ResponseWriter, r *http.Request) {
	who, err := w.s.auth.Tokens.Authenticate(r.Context(), r)
	if err != nil || r.Header.Get("Authorization") != "" {
		who = auth.Principal{}
	}
	rw.WriteHeader(http.StatusNotFound)
	w.render(rw, r, who, "error", "notfound.title", w.localeFor(r).T("notfound.text", r.URL.Path))
}

// handleMessage translates an error of the API for the page's script (app.js), which shows the
// answer as text. It is a POST so that no other site can make cove's origin show a text of its
// choosing (CrossOriginProtection refuses cross-origin POSTs).
func (w *webPages) handleMessage(rw http.ResponseWriter, r *http.Request) {
	var req struct {
		Status  int    `json:"status"`
		Message string `json:"message"`
	}
	r.Body = http.MaxBytesReader(rw, r.Body, 8<<10)
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(rw, "bad request", http.StatusBadRequest)
		return
	}
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(rw, w.localeFor(r).APIMessage(req.Status, req.Message))
}

func (w *webPages) handleLogin(rw http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		w.renderLogin(rw, r, false)
		return
	}
	r.Body = http.MaxBytesReader(rw, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		http.Error(rw, "bad form", http.StatusBadRequest)
		return
	}
	who, err := w.s.auth.Identity.Login(r.Context(), r.PostForm.Get("username"), r.PostForm.Get("password"), auth.RemoteHost(r))
	if err == nil && who.Robot {
		err = auth.ErrBadCredentials // robots have no sessions
	}
	if err == nil {
		if err = w.s.auth.Identity.NewSession(r.Context(), rw, r, who); err != nil {
			// The password was right: say what went wrong instead (a full disk, say).
			telemetry.SetCause(r.Context(), fmt.Errorf("open a session: %w", err))
			w.failed(rw, r, auth.Principal{}, err)
			return
		}
	}
	if err != nil && !errors.Is(err, auth.ErrBadCredentials) && !errors.Is(err, auth.ErrTooManyAttempts) {
		w.failed(rw, r, auth.Principal{}, err) // the directory is down, say
		return
	}
	if err != nil {
		rw.WriteHeader(http.StatusUnauthorized)
		w.renderLogin(rw, r, true)
		return
	}
	http.Redirect(rw, r, "/", http.StatusSeeOther)
}

// loginData is what the sign-in page shows: whether the last attempt failed, and the "Forgot
// password?" link when reset by mail is set up.
type loginData struct{ Failed, CanReset bool }

func (w *webPages) renderLogin(rw http.ResponseWriter, r *http.Request, failed bool) {
	w.render(rw, r, auth.Principal{}, "login", "login.title", loginData{Failed: failed, CanReset: w.s.resetAvailable(r.Context())})
}

// handleForgot is the form that asks for a reset link (POST /api/v2.0/users/password-reset).
func (w *webPages) handleForgot(rw http.ResponseWriter, r *http.Request) {
	w.render(rw, r, auth.Principal{}, "forgot", "forgot.title", struct{ CanReset bool }{w.s.resetAvailable(r.Context())})
}

// handleResetPassword is the page a mailed link opens: its token is in the fragment
// (#token=…), which the page's script reads and sends with the new password to
// POST /api/v2.0/users/password-reset/confirm. The server never sees it in the page's URL.
func (w *webPages) handleResetPassword(rw http.ResponseWriter, r *http.Request) {
	w.render(rw, r, auth.Principal{}, "resetpw", "resetpw.title", nil)
}

func (w *webPages) handleLogout(rw http.ResponseWriter, r *http.Request) {
	w.s.auth.Identity.EndSession(r.Context(), rw, r)
	http.Redirect(rw, r, "/login", http.StatusSeeOther)
}

// handleLang sets the language cookie and goes back to the page (a local path only).
func (w *webPages) handleLang(rw http.ResponseWriter, r *http.Request) {
	code := r.URL.Query().Get("l")
	if _, ok := langTags[code]; ok {
		http.SetCookie(rw, &http.Cookie{Name: langCookie, Value: code, Path: "/", MaxAge: 365 * 24 * 3600, HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil})
	}
	http.Redirect(rw, r, localPath(r.URL.Query().Get("back")), http.StatusSeeOther)
}

// localPath returns back when it is a path on this site, else "/": redirects go to same-origin
// paths only (docs/SECURITY.md 19). Browsers drop tabs and newlines from a URL and read "\" as
// "/", so "/\t/evil.example" is "//evil.example" to them, another host: any control character,
// space or backslash refuses the path, as does anything with a scheme or a host.
func localPath(back string) string {
	if !strings.HasPrefix(back, "/") || strings.HasPrefix(back, "//") {
		return "/"
	}
	for _, c := range []byte(back) {
		if c <= ' ' || c == 0x7f || c == '\\' {
			return "/"
		}
	}
	u, err := url.Parse(back)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/") ||
		strings.Contains(u.Path, "//") || strings.Contains(u.Path+"/", "/./") || strings.Contains(u.Path+"/", "/../") {
		return "/" // and no empty or dot segments: nothing a browser could fold into "//host"
	}
	return back
}

func (w *webPages) canCreateProject(r *http.Request, who auth.Principal) bool {
	if who.Anonymous() || who.Robot {
		return false
	}
	return who.Admin || w.s.auth.Policy.Settings(r.Context()).ProjectCreation == "everyone"
}

// canManage mirrors the handlers that delete a project and change its members, robots and
// visibility: the project's admins and system admins.
// canDelete reports whether who may delete repositories, artifacts and tags of project
// (maintainers and up).
func (w *webPages) canDelete(r *http.Request, who auth.Principal, project string) bool {
	return w.s.auth.Policy.AuthorizeProject(r.Context(), who, project, auth.ActionDelete) == nil
}

func (w *webPages) canManage(r *http.Request, who auth.Principal, project string) bool {
	return w.s.auth.Policy.AuthorizeProject(r.Context(), who, project, auth.ActionManageMembers) == nil
}

// hookView is a webhook policy with its last deliveries, for the project page.
type hookView struct {
	webhook.Policy
	Executions []webhook.Execution
}

func (w *webPages) handleProjects(rw http.ResponseWriter, r *http.Request, who auth.Principal) {
	q := r.URL.Query().Get("q")
	var ps []project
	if err := w.api(r, "/api/v2.0/projects?page_size=100&name="+url.QueryEscape(q), &ps); err != nil {
		w.failed(rw, r, who, err)
		return
	}
	rows := make([]projectRow, 0, len(ps))
	for _, p := range ps {
		row := projectRow{project: p, Manage: w.canManage(r, who, p.Name)}
		var sum struct {
			Quota *struct{ Hard, Used map[string]int64 } `json:"quota"`
		}
		if w.api(r, "/api/v2.0/projects/"+url.PathEscape(p.Name)+"/summary", &sum) == nil && sum.Quota != nil {
			row.Used, row.Hard, row.HasQuota = sum.Quota.Used["storage"], sum.Quota.Hard["storage"], true
		}
		rows = append(rows, row)
	}
	w.render(rw, r, who, "projects", "nav.projects", struct {
		Query     string
		Projects  []projectRow
		CanCreate bool
	}{q, rows, w.canCreateProject(r, who)})
}

// repoView is a repository row with its name inside the project.
type repoView struct {
	repository
	Short string
}

// artifactView is an artifact on the repository page, with its platforms.
type artifactView struct {
	artifact
	Platforms []string
	Locked    bool // a tag is immutable: the artifact cannot be deleted
}

func ifNotEmpty(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

func (w *webPages) handleProject(rw http.ResponseWriter, r *http.Request, who auth.Principal) {
	name := r.PathValue("name")
	var p project
	if err := w.api(r, "/api/v2.0/projects/"+url.PathEscape(name), &p); err != nil {
		w.failed(rw, r, who, err)
		return
	}
	data := struct {
		Name   string
		Public bool
		Manage bool
		Delete bool
		Repos  []repoView
		Rules  []immutableRule
		// The quota (for members), and whether the visitor may change it (system admins).
		HasQuota   bool
		Used, Hard int64
		Admin      bool
		// Retention is the project's policy (nil: none) and its last runs.
		ID        int64
		Retention *retentionPolicy
		Runs      []retentionExecution
		Members   []member
		Robots    []robot
		// Webhooks are the project's policies with their last deliveries (maintainers and up
		// read them, project admins change them).
		Webhooks    []hookView
		ManageHooks bool
		ReadHooks   bool
		EventTypes  []string
	}{Name: p.Name, Public: p.Metadata["public"] == "true", EventTypes: webhook.EventTypes}
	var repos []repository
	if err := w.api(r, "/api/v2.0/projects/"+url.PathEscape(name)+"/repositories?page_size=100", &repos); err != nil {
		w.failed(rw, r, who, err)
		return
	}
	for _, rp := range repos {
		data.Repos = append(data.Repos, repoView{repository: rp, Short: url.PathEscape(url.PathEscape(strings.TrimPrefix(rp.Name, p.Name+"/")))})
	}
	_ = w.api(r, "/api/v2.0/projects/"+url.PathEscape(name)+"/members", &data.Members) // members only
	_ = w.api(r, "/api/v2.0/projects/"+url.PathEscape(name)+"/immutabletagrules?page_size=100", &data.Rules)
	data.ID = p.ProjectID
	var sum struct {
		Quota *struct{ Hard, Used map[string]int64 } `json:"quota"`
	}
	if w.api(r, "/api/v2.0/projects/"+url.PathEscape(name)+"/summary", &sum) == nil && sum.Quota != nil {
		data.HasQuota, data.Used, data.Hard = true, sum.Quota.Used["storage"], sum.Quota.Hard["storage"]
	}
	data.Admin = who.Admin
	if id := p.Metadata["retention_id"]; id != "" {
		var rp retentionPolicy
		if w.api(r, "/api/v2.0/retentions/"+id, &rp) == nil {
			data.Retention = &rp
			_ = w.api(r, "/api/v2.0/retentions/"+id+"/executions?page_size=10", &data.Runs)
		}
	}
	data.Manage = w.canManage(r, who, p.Name)
	data.Delete = w.canDelete(r, who, p.Name)
	if data.Manage {
		_ = w.api(r, "/api/v2.0/robots?project="+url.QueryEscape(p.Name), &data.Robots)
	}
	hooks := "/api/v2.0/projects/" + url.PathEscape(p.Name) + "/webhook/policies"
	var policies []webhook.Policy
	if w.api(r, hooks, &policies) == nil {
		data.ReadHooks = true
		data.ManageHooks = w.s.auth.Policy.AuthorizeProject(r.Context(), who, p.Name, auth.ActionManageWebhooks) == nil
		for _, pol := range policies {
			hv := hookView{Policy: pol}
			_ = w.api(r, fmt.Sprintf("%s/%d/executions?page_size=10", hooks, pol.ID), &hv.Executions)
			data.Webhooks = append(data.Webhooks, hv)
		}
	}
	w.render(rw, r, who, "project", "project.title", data, p.Name)
}

func (w *webPages) handleRepository(rw http.ResponseWriter, r *http.Request, who auth.Principal) {
	name, repo := r.PathValue("name"), r.PathValue("repo")
	base := "/api/v2.0/projects/" + url.PathEscape(name) + "/repositories/" + url.PathEscape(repo) + "/artifacts"
	var arts []artifact
	if err := w.api(r, base+"?page_size=100&sort=-push_time", &arts); err != nil {
		w.failed(rw, r, who, err)
		return
	}
	// The platforms of an index are its references'; each artifact's detail has them.
	views := make([]artifactView, 0, len(arts))
	for _, a := range arts {
		v := artifactView{artifact: a}
		for _, t := range a.Tags {
			v.Locked = v.Locked || t.Immutable
		}
		var full artifact
		if err := w.api(r, base+"/"+url.PathEscape(a.Digest)+"?with_tag=false", &full); err == nil {
			for _, ref := range full.References {
				if ref.Platform != nil {
					v.Platforms = append(v.Platforms, ref.Platform.OS+"/"+ref.Platform.Architecture+ifNotEmpty("/", ref.Platform.Variant))
				}
			}
			if os, _ := full.ExtraAttrs["os"].(string); os != "" {
				arch, _ := full.ExtraAttrs["architecture"].(string)
				v.Platforms = append(v.Platforms, os+"/"+arch)
			}
		}
		views = append(views, v)
	}
	short, _ := url.PathUnescape(repo)
	w.render(rw, r, who, "repository", "repo.title", struct {
		Host, Repo, API string
		Delete          bool
		Artifacts       []artifactView
	}{r.Host, name + "/" + short, base, w.canDelete(r, who, name), views}, name+"/"+short)
}

// handleMirror is the mirror's page: the cached repositories, and the pre-warm form with the
// last jobs, per image (when pre-warm is available: not on a read-only start).
func (w *webPages) handleMirror(rw http.ResponseWriter, r *http.Request, who auth.Principal) {
	var data struct {
		Repos []mirrorRepository
		Warm  bool
		Jobs  []cache.WarmJob
	}
	if err := w.api(r, "/api/v2.0/mirror/repositories", &data.Repos); err != nil {
		w.failed(rw, r, who, err)
		return
	}
	if w.s.warm != nil {
		if err := w.api(r, "/api/v2.0/mirror/warm?page_size=10", &data.Jobs); err != nil {
			w.failed(rw, r, who, err)
			return
		}
		data.Warm = true
	}
	w.render(rw, r, who, "mirror", "nav.mirror", data)
}

// handleGC is garbage collection's page: the schedule, a run now (or a dry run), the history.
func (w *webPages) handleGC(rw http.ResponseWriter, r *http.Request, who auth.Principal) {
	var data struct {
		Schedule gcHistory
		Params   struct {
			DeleteUntagged bool `json:"delete_untagged"`
			TimeWindow     *int `json:"time_window"`
			Workers        int  `json:"workers"`
		}
		Window int
		Runs   []gcHistory
	}
	if err := w.api(r, "/api/v2.0/system/gc/schedule", &data.Schedule); err != nil {
		w.failed(rw, r, who, err)
		return
	}
	if data.Schedule.Schedule.Type == "" {
		data.Schedule.Schedule.Type = "None"
	}
	_ = json.Unmarshal([]byte(data.Schedule.JobParameters), &data.Params)
	data.Window = 2 // Harbor's default
	if data.Params.TimeWindow != nil {
		data.Window = *data.Params.TimeWindow
	}
	if err := w.api(r, "/api/v2.0/system/gc?page_size=50", &data.Runs); err != nil {
		w.failed(rw, r, who, err)
		return
	}
	w.render(rw, r, who, "gc", "nav.gc", data)
}

func (w *webPages) handleUsers(rw http.ResponseWriter, r *http.Request, who auth.Principal) {
	var users []user
	if err := w.api(r, "/api/v2.0/users?page_size=100", &users); err != nil {
		w.failed(rw, r, who, err)
		return
	}
	w.render(rw, r, who, "users", "nav.users", users)
}

// handleAccount is the visitor's own account: the password change, which the API allows every
// local user with the current password.
func (w *webPages) handleAccount(rw http.ResponseWriter, r *http.Request, who auth.Principal) {
	var u user
	if err := w.api(r, "/api/v2.0/users/current", &u); err != nil {
		w.failed(rw, r, who, err)
		return
	}
	w.render(rw, r, who, "account", "nav.account", u)
}

// auditOperations are the operations the filter offers.
var auditOperations = []string{"login", "token", "push", "pull", "delete", "create", "update"}

func (w *webPages) handleAudit(rw http.ResponseWriter, r *http.Request, who auth.Principal) {
	in := r.URL.Query()
	filter := map[string]string{}
	var q []string
	for _, k := range []string{"username", "operation", "resource", "from", "to"} {
		filter[k] = in.Get(k)
	}
	if v := filter["username"]; v != "" {
		q = append(q, "username="+v)
	}
	if v := filter["operation"]; v != "" {
		q = append(q, "operation="+v)
	}
	if v := filter["resource"]; v != "" {
		q = append(q, "resource=~"+v)
	}
	if filter["from"] != "" || filter["to"] != "" {
		to := filter["to"]
		if to != "" {
			to += " 23:59:59"
		}
		from := filter["from"]
		if from != "" {
			from += " 00:00:00"
		}
		q = append(q, "op_time=["+from+"~"+to+"]")
	}
	page, _ := strconv.Atoi(in.Get("page"))
	page = max(page, 1)
	const size = 20
	var events []auth.Event
	path := fmt.Sprintf("/api/v2.0/audit-logs?page=%d&page_size=%d&q=%s", page, size, url.QueryEscape(strings.Join(q, ",")))
	hdr, err := w.apiHeader(r, path, &events)
	if err != nil {
		w.failed(rw, r, who, err)
		return
	}
	total, _ := strconv.Atoi(hdr.Get("X-Total-Count"))
	pages := max((total+size-1)/size, 1)
	link := func(p int) string {
		v := url.Values{}
		for k, val := range filter {
			if val != "" {
				v.Set(k, val)
			}
		}
		v.Set("page", strconv.Itoa(p))
		return "/audit?" + v.Encode()
	}
	data := struct {
		Filter     map[string]string
		Operations []string
		Events     []auth.Event
		Page       int
		Pages      int
		Total      int
		Prev, Next string
	}{Filter: filter, Operations: auditOperations, Events: events, Page: page, Pages: pages, Total: total}
	if page > 1 {
		data.Prev = link(page - 1)
	}
	if page < pages {
		data.Next = link(page + 1)
	}
	w.render(rw, r, who, "audit", "nav.audit", data)
}

func (w *webPages) handleSettings(rw http.ResponseWriter, r *http.Request, who auth.Principal) {
	var cfg map[string]setting
	if err := w.api(r, "/api/v2.0/configurations", &cfg); err != nil {
		w.failed(rw, r, who, err)
		return
	}
	str := func(k string) string { v, _ := cfg[k].Value.(string); return v }
	selfReg, _ := cfg["self_registration"].Value.(bool)
	w.render(rw, r, who, "settings", "nav.settings", struct {
		SelfRegistration               bool
		AnonymousPull, ProjectCreation string
	}{selfReg, str("anonymous_pull"), str("project_creation_restriction")})
}

type connectData struct{ Host, Scheme string }

func (w *webPages) handleConnect(rw http.ResponseWriter, r *http.Request, who auth.Principal) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	w.render(rw, r, who, "connect", "nav.connect", connectData{Host: r.Host, Scheme: scheme})
}
