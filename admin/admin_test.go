package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/crypto/bcrypt"

	"cove/auth"
	"cove/cache"

	"cove/internal/kv"
)

// fakeRepos counts repositories from a list the test sets; it browses nothing.
type fakeRepos struct{ repos []string }

func (f *fakeRepos) RepositorySummaries(ctx context.Context, prefix string) ([]cache.RepoSummary, error) {
	return nil, nil
}
func (f *fakeRepos) Artifacts(ctx context.Context, repo string) ([]cache.Artifact, error) {
	return nil, nil
}
func (f *fakeRepos) EvictRepository(ctx context.Context, repo string) (int, error) { return 0, nil }
func (f *fakeRepos) Stats() (int64, int64)                                         { return 0, 0 }

func (f *fakeRepos) CountRepositories(ctx context.Context, prefix string) (int, error) {
	n := 0
	for _, r := range f.repos {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n, nil
}

func newServer(t *testing.T) (*httptest.Server, *fakeRepos) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(t.TempDir(), "index")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	as, err := auth.New(context.Background(), kv.NewBadger(db), auth.Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir(), ReservedNames: []string{"docker.io"}})
	if err != nil {
		t.Fatal(err)
	}
	repos := &fakeRepos{}
	s, err := New(Config{Auth: as, Repos: repos, Browse: repos, Evict: repos, Audit: auth.NewAudit(kv.NewBadger(db), 0, nil), Upstreams: []string{"docker.io"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv, repos
}

func call(t *testing.T, srv *httptest.Server, method, path, body, user, pass string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestProjectsAPI(t *testing.T) {
	srv, repos := newServer(t)
	admin := func(method, path, body string) (*http.Response, string) {
		return call(t, srv, method, path, body, "admin", "pw")
	}
	for _, p := range []string{`{"project_name":"full"}`, `{"project_name":"open","metadata":{"public":"true"}}`, `{"project_name":"shut","public":false}`} {
		if resp, b := admin("POST", "/api/v2.0/projects", p); resp.StatusCode != 201 || !strings.HasPrefix(resp.Header.Get("Location"), "/api/v2.0/projects/") {
			t.Fatalf("create %s = %d %s", p, resp.StatusCode, b)
		}
	}
	repos.repos = []string{"full/app", "ghost/app", "docker.io/library/alpine"} // ghost/app: left by a deleted project
	tests := []struct {
		name, method, path, body, user, pass string
		status                               int
		want                                 string // substring of the body
	}{
		{"duplicate, with repositories", "POST", "/api/v2.0/projects", `{"project_name":"full"}`, "admin", "pw", 409, "a project with that name exists already"},
		{"leftover repositories", "POST", "/api/v2.0/projects", `{"project_name":"ghost"}`, "admin", "pw", 409, "former project ghost"},
		{"an upstream's name, with cached repositories", "POST", "/api/v2.0/projects", `{"project_name":"docker.io"}`, "admin", "pw", 400, "names an upstream registry"},
		{"bad name", "POST", "/api/v2.0/projects", `{"project_name":"Bad Name"}`, "admin", "pw", 400, `"code":"BAD_REQUEST"`},
		{"bad JSON", "POST", "/api/v2.0/projects", `{"project_name":`, "admin", "pw", 400, `"code":"BAD_REQUEST"`},
		{"bad public", "POST", "/api/v2.0/projects", `{"project_name":"x","metadata":{"public":"maybe"}}`, "admin", "pw", 400, `"code":"BAD_REQUEST"`},
		{"anonymous create", "POST", "/api/v2.0/projects", `{"project_name":"anon"}`, "", "", 401, `"code":"UNAUTHORIZED"`},
		{"wrong password", "GET", "/api/v2.0/projects", "", "admin", "nope", 401, `"code":"UNAUTHORIZED"`},
		{"get by name", "GET", "/api/v2.0/projects/full", "", "admin", "pw", 200, `"repo_count":1`},
		{"get by id", "GET", "/api/v2.0/projects/2", "", "admin", "pw", 200, `"name":"open"`},
		{"metadata public", "GET", "/api/v2.0/projects/open", "", "", "", 200, `"metadata":{"public":"true"}`},
		{"anonymous private", "GET", "/api/v2.0/projects/shut", "", "", "", 401, `"code":"UNAUTHORIZED"`},
		{"missing", "GET", "/api/v2.0/projects/none", "", "admin", "pw", 404, `"code":"NOT_FOUND"`},
		{"head existing", "HEAD", "/api/v2.0/projects?project_name=open", "", "admin", "pw", 200, ""},
		{"head missing", "HEAD", "/api/v2.0/projects?project_name=none", "", "admin", "pw", 404, ""},
		{"head by path", "HEAD", "/api/v2.0/projects/open", "", "admin", "pw", 200, ""},
		{"delete with repositories", "DELETE", "/api/v2.0/projects/full", "", "admin", "pw", 412, `"code":"PRECONDITION"`},
		{"anonymous delete", "DELETE", "/api/v2.0/projects/shut", "", "", "", 401, `"code":"UNAUTHORIZED"`},
		{"delete empty", "DELETE", "/api/v2.0/projects/shut", "", "admin", "pw", 200, ""},
		{"deleted is gone", "GET", "/api/v2.0/projects/shut", "", "admin", "pw", 404, ""},
		{"unknown endpoint", "GET", "/api/v2.0/nothing", "", "admin", "pw", 404, `"code":"NOT_FOUND"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := call(t, srv, tt.method, tt.path, tt.body, tt.user, tt.pass)
			if resp.StatusCode != tt.status || !strings.Contains(b, tt.want) {
				t.Errorf("%s %s = %d %s, want %d with %s", tt.method, tt.path, resp.StatusCode, b, tt.status, tt.want)
			}
		})
	}
}

func TestListProjectsPaging(t *testing.T) {
	srv, _ := newServer(t)
	for _, n := range []string{"a1", "a2", "a3", "b1", "b2"} {
		public := "false"
		if n != "b2" {
			public = "true"
		}
		call(t, srv, "POST", "/api/v2.0/projects", `{"project_name":"`+n+`","metadata":{"public":"`+public+`"}}`, "admin", "pw")
	}
	names := func(b string) string {
		var ps []project
		if err := json.Unmarshal([]byte(b), &ps); err != nil {
			t.Fatalf("list body %s: %v", b, err)
		}
		var out []string
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return strings.Join(out, ",")
	}
	resp, b := call(t, srv, "GET", "/api/v2.0/projects?page=2&page_size=2", "", "admin", "pw")
	if names(b) != "a3,b1" || resp.Header.Get("X-Total-Count") != "5" || !strings.Contains(resp.Header.Get("Link"), "page=3") {
		t.Errorf("page 2 = %s, total %q, link %q", names(b), resp.Header.Get("X-Total-Count"), resp.Header.Get("Link"))
	}
	resp, b = call(t, srv, "GET", "/api/v2.0/projects?name=b", "", "", "")
	if names(b) != "b1" || resp.Header.Get("X-Total-Count") != "1" {
		t.Errorf("anonymous name=b = %s (total %s): private b2 must not show", names(b), resp.Header.Get("X-Total-Count"))
	}
	if resp, _ := call(t, srv, "GET", "/api/v2.0/projects?page_size=1000", "", "admin", "pw"); resp.StatusCode != 400 {
		t.Errorf("page_size=1000 = %d, want 400", resp.StatusCode)
	}
}
