package admin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/crypto/bcrypt"

	"cove/auth"
	"cove/internal/kv"
	"cove/internal/mail"
)

// fakeOutbox keeps the jobs submitted; the test runs them or not.
type fakeOutbox struct {
	mu   sync.Mutex
	jobs []func(context.Context)
}

func (f *fakeOutbox) Submit(job func(context.Context)) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs = append(f.jobs, job)
	return true
}

func (f *fakeOutbox) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.jobs)
}

const fileSecret = "smtp-Secret-from-the-file"

// newMailEnv is newSecEnv with e-mail set up in the file (a password among it), an outbox, and
// public_url; the page and the API served together.
func newMailEnv(t *testing.T, publicURL string) (*secEnv, *fakeOutbox) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(t.TempDir(), "index")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	audit := auth.NewAudit(kv.NewBadger(db), 0, nil)
	email := mail.Config{Server: "127.0.0.1", Port: 1, Username: "cove", Password: fileSecret, From: "cove@example.org", StartTLS: true}
	as, err := auth.New(context.Background(), kv.NewBadger(db), auth.Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir(), Audit: audit, Email: email})
	if err != nil {
		t.Fatal(err)
	}
	out := &fakeOutbox{}
	s, err := New(Config{Auth: as, Audit: audit, Repos: &fakeRepos{}, Browse: &fakeRepos{}, Evict: &fakeRepos{}, Outbox: out, PublicURL: publicURL})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", s)
	mux.Handle("/", s.Web())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &secEnv{srv: srv, auth: as, audit: audit}, out
}

// TestEmailSettingsAPI: Harbor's email_* keys read and written; the password is never answered,
// whether it came from the file or the API.
func TestEmailSettingsAPI(t *testing.T) {
	e, _ := newMailEnv(t, "https://cove.example.org")
	code, body := e.call(t, "GET", "/api/v2.0/configurations", "", "admin", "pw")
	if code != 200 || !strings.Contains(body, `"email_host":{"value":"127.0.0.1"`) || !strings.Contains(body, `"email_starttls":{"value":true`) {
		t.Errorf("GET configurations = %d %s", code, body)
	}
	if strings.Contains(body, fileSecret) || strings.Contains(body, "email_password") {
		t.Errorf("GET configurations shows the password: %s", body)
	}
	const apiSecret = "smtp-Secret-from-the-API"
	if code, b := e.call(t, "PUT", "/api/v2.0/configurations", `{"email_password":"`+apiSecret+`","email_from":"registry@example.org","email_identity":""}`, "admin", "pw"); code != 200 {
		t.Fatalf("PUT email settings = %d %s", code, b)
	}
	_, body = e.call(t, "GET", "/api/v2.0/configurations", "", "admin", "pw")
	if !strings.Contains(body, `"email_from":{"value":"registry@example.org"`) {
		t.Errorf("email_from not changed: %s", body)
	}
	_, logs := e.call(t, "GET", "/api/v2.0/audit-logs?q=resource_type=settings", "", "admin", "pw")
	for _, where := range []string{body, logs} {
		if strings.Contains(where, apiSecret) {
			t.Errorf("the password set through the API is shown: %s", where)
		}
	}
	if !strings.Contains(logs, "email_password=(changed)") {
		t.Errorf("the password change is not audited as such: %s", logs)
	}
	if cfg, _ := e.auth.Policy.EmailSettings(context.Background()); cfg.Password != apiSecret {
		t.Errorf("the stored password = %q, want the API's", cfg.Password)
	}
	for _, tt := range []struct{ body, want string }{
		{`{"email_ssl":true}`, "email_starttls"},            // ssl and starttls exclude each other
		{`{"email_from":"not an address"}`, "email_from"},   // named in Harbor's key
		{`{"email_port":-1}`, "email_port"},                 //
		{`{"email_host":"evil.example"}`, "email_password"}, // a new server needs its password again
		{`{"email_username":"other"}`, "email_password"},    //
		{`{"email_identity":"someone"}`, "email_identity"},  //
		{`{"email_hots":"typo.example"}`, "unknown field"},  //
		{`{"email_from":"a@example.org\r\nBcc: x@example.org"}`, "email_from"},
	} {
		code, b := e.call(t, "PUT", "/api/v2.0/configurations", tt.body, "admin", "pw")
		if code != 400 || !strings.Contains(b, tt.want) {
			t.Errorf("PUT %s = %d %s, want 400 naming %s", tt.body, code, b, tt.want)
		}
	}
	if cfg, _ := e.auth.Policy.EmailSettings(context.Background()); cfg.Server != "127.0.0.1" || cfg.From != "registry@example.org" || cfg.SSL {
		t.Errorf("refused changes were stored: %+v", cfg)
	}
	if code, b := e.call(t, "PUT", "/api/v2.0/configurations", `{"email_host":"smtp.example.org","email_password":"new"}`, "admin", "pw"); code != 200 {
		t.Errorf("a new server with its password = %d %s", code, b)
	}
	if code, _ := e.call(t, "POST", "/api/v2.0/email/ping", `{"email_host":"evil.example"}`, "admin", "pw"); code != 400 {
		t.Errorf("ping with settings in the body = %d, want 400 (cove tests its saved settings)", code)
	}
	if code, _ := e.call(t, "POST", "/api/v2.0/email/ping", `{"to":"a@example.org"}`, "", ""); code != 401 {
		t.Errorf("anonymous ping = %d, want 401", code)
	}
}

// TestPasswordResetAPI: the request answers 202 and nothing else, known address or not; the
// work goes to the outbox. Confirm takes a token once.
func TestPasswordResetAPI(t *testing.T) {
	e, out := newMailEnv(t, "https://cove.example.org")
	ctx := context.Background()
	if _, err := e.auth.Identity.CreateUser(ctx, auth.User{Name: "eve", Email: "eve@example.org"}, strong); err != nil {
		t.Fatal(err)
	}
	var answers []string
	for _, addr := range []string{"eve@example.org", "nobody@example.org", "eve@example.org", "eve@example.org", "eve@example.org"} {
		resp, b := call(t, e.srv, "POST", "/api/v2.0/users/password-reset", `{"email":"`+addr+`"}`, "", "")
		if resp.StatusCode != 202 {
			t.Errorf("reset for %s = %d %s, want 202", addr, resp.StatusCode, b)
		}
		answers = append(answers, resp.Header.Get("Content-Type")+"|"+resp.Header.Get("Content-Length")+"|"+b)
	}
	for _, a := range answers[1:] {
		if a != answers[0] {
			t.Errorf("answers differ: %q and %q", answers[0], a)
		}
	}
	if out.count() != 5 {
		t.Errorf("%d jobs queued, want 5 (the lookup happens in the background)", out.count())
	}
	for _, bad := range []string{`{"email":"not an address"}`, `{"email":"eve@example.org\r\nBcc: x@example.org"}`, `{}`} {
		if resp, b := call(t, e.srv, "POST", "/api/v2.0/users/password-reset", bad, "", ""); resp.StatusCode != 400 {
			t.Errorf("reset %s = %d %s, want 400", bad, resp.StatusCode, b)
		}
	}
	tickets, err := e.auth.Identity.IssuePasswordResets(ctx, "eve@example.org")
	if err != nil || len(tickets) != 1 {
		t.Fatalf("IssuePasswordResets = %v, %v", tickets, err)
	}
	body := `{"token":"` + tickets[0].Token + `","new_password":"New-passw0rd"}`
	if resp, b := call(t, e.srv, "POST", "/api/v2.0/users/password-reset/confirm", `{"token":"`+tickets[0].Token+`","new_password":"weak"}`, "", ""); resp.StatusCode != 400 {
		t.Errorf("confirm with a weak password = %d %s, want 400", resp.StatusCode, b)
	}
	if resp, b := call(t, e.srv, "POST", "/api/v2.0/users/password-reset/confirm", body, "", ""); resp.StatusCode != 200 {
		t.Fatalf("confirm = %d %s", resp.StatusCode, b)
	}
	if code, _ := e.call(t, "GET", "/api/v2.0/users/current", "", "eve", "New-passw0rd"); code != 200 {
		t.Errorf("the new password = %d, want 200", code)
	}
	if resp, b := call(t, e.srv, "POST", "/api/v2.0/users/password-reset/confirm", body, "", ""); resp.StatusCode != 400 || !strings.Contains(b, "used already") {
		t.Errorf("a second confirm = %d %s, want 400 saying it was used", resp.StatusCode, b)
	}
	_, logs := e.call(t, "GET", "/api/v2.0/audit-logs?q=resource_type=user", "", "admin", "pw")
	if !strings.Contains(logs, "password reset through a mailed link") || strings.Contains(logs, tickets[0].Token) {
		t.Errorf("the reset is not audited, or its token is: %s", logs)
	}
}

// TestPasswordResetNeedsPublicURL: without public_url (the base of the link: never the
// request's Host, which anyone sets) there is no reset by mail, nor a link to it.
func TestPasswordResetNeedsPublicURL(t *testing.T) {
	e, out := newMailEnv(t, "")
	resp, b := call(t, e.srv, "POST", "/api/v2.0/users/password-reset", `{"email":"eve@example.org"}`, "", "")
	if resp.StatusCode != 503 || !strings.Contains(b, "public_url") || out.count() != 0 {
		t.Errorf("reset without public_url = %d %s (%d jobs), want 503 naming public_url", resp.StatusCode, b, out.count())
	}
	_, page := call(t, e.srv, "GET", "/login", "", "", "")
	if strings.Contains(page, "forgot-password") {
		t.Error("the sign-in page offers a reset that is not set up")
	}
	e, _ = newMailEnv(t, "https://cove.example.org")
	for lang, want := range map[string]string{"en": "Forgot password?", "zh": "忘记密码？"} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/login", nil)
		req.Header.Set("Accept-Language", lang)
		_, page := doRequest(t, req)
		if !strings.Contains(page, `href="/forgot-password"`) || !strings.Contains(page, want) {
			t.Errorf("the sign-in page in %s lacks the reset link %q", lang, want)
		}
	}
	for _, path := range []string{"/forgot-password", "/reset-password"} {
		if resp, b := call(t, e.srv, "GET", path, "", "", ""); resp.StatusCode != 200 || !strings.Contains(b, "data-api=\"POST /api/v2.0/users/password-reset") {
			t.Errorf("GET %s = %d, lacking its form", path, resp.StatusCode)
		}
	}
}

func doRequest(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}
