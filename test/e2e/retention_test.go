package e2e

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Tag retention (HARBOR-API §4): a policy keeps the two latest v* and every stable in team/app,
// and an immutable v1; a dry run deletes nothing and says what it would; the run deletes exactly
// the rest of team/app and leaves the repository no rule covers alone.
func TestTagRetention(t *testing.T) {
	s := startCove(t, t.TempDir())
	s.createProject("team", false)
	api := func(status int, user, method, path, body string) ([]byte, string) {
		t.Helper()
		pass := adminPassword
		if user != "admin" {
			pass = "DevPw1xyzab"
		}
		resp, b := s.doAs(method, path, strings.NewReader(body), user, pass)
		if resp.StatusCode != status {
			t.Fatalf("%s %s as %s = %d %s, want %d", method, path, user, resp.StatusCode, b, status)
		}
		return b, resp.Header.Get("Location")
	}
	api(201, "admin", "POST", "/api/v2.0/users", `{"username":"dev","email":"d@example.org","password":"DevPw1xyzab"}`)
	api(201, "admin", "POST", "/api/v2.0/projects/team/members", `{"role_id":2,"member_user":{"username":"dev"}}`)

	images := map[string]v1.Image{}
	for _, ref := range []string{"app:v1", "app:v2", "app:v3", "app:v4", "app:v5", "app:stable", "other:x"} {
		img := must(random.Image(1024, 1))
		if err := remoteWrite(s, t, "team/"+ref, img); err != nil {
			t.Fatal(err)
		}
		images[ref] = img
		time.Sleep(5 * time.Millisecond) // distinct push times, which latestPushedK orders by
	}
	untagged := must(random.Image(1024, 1))
	if err := remoteWrite(s, t, "team/app@"+must(untagged.Digest()).String(), untagged); err != nil {
		t.Fatal(err)
	}
	api(201, "admin", "POST", "/api/v2.0/projects/team/immutabletagrules", `{"tag_selectors":[{"kind":"doublestar","decoration":"matches","pattern":"v1"}],"scope_selectors":{"repository":[{"kind":"doublestar","decoration":"repoMatches","pattern":"**"}]}}`)

	var p struct {
		ProjectID int64             `json:"project_id"`
		Metadata  map[string]string `json:"metadata"`
	}
	b, _ := api(200, "admin", "GET", "/api/v2.0/projects/team", "")
	json.Unmarshal(b, &p)
	rule := func(template string, n int, tags string) string {
		params := "{}"
		if n > 0 {
			params = fmt.Sprintf(`{%q:%d}`, template, n)
		}
		return fmt.Sprintf(`{"action":"retain","template":%q,"params":%s,"tag_selectors":[{"kind":"doublestar","decoration":"matches","pattern":%q,"extras":"{\"untagged\":false}"}],"scope_selectors":{"repository":[{"kind":"doublestar","decoration":"repoMatches","pattern":"app"}]}}`, template, params, tags)
	}
	policy := fmt.Sprintf(`{"algorithm":"or","rules":[%s,%s],"trigger":{"kind":"Schedule","settings":{"cron":""}},"scope":{"level":"project","ref":%d}}`,
		rule("latestPushedK", 2, "v*"), rule("always", 0, "stable"), p.ProjectID)
	api(403, "dev", "POST", "/api/v2.0/retentions", policy)
	api(400, "admin", "POST", "/api/v2.0/retentions", strings.Replace(policy, "latestPushedK", "newest", 2))
	_, loc := api(201, "admin", "POST", "/api/v2.0/retentions", policy)
	api(409, "admin", "POST", "/api/v2.0/retentions", policy)
	id := loc[strings.LastIndex(loc, "/")+1:]
	b, _ = api(200, "admin", "GET", "/api/v2.0/projects/team", "")
	json.Unmarshal(b, &p)
	if p.Metadata["retention_id"] != id {
		t.Errorf("the project's retention_id = %q, want %s", p.Metadata["retention_id"], id)
	}
	b, _ = api(200, "dev", "GET", "/api/v2.0/retentions/"+id, "")
	if !strings.Contains(string(b), `"latestPushedK":2`) || !strings.Contains(string(b), `"ref":`+strconv.FormatInt(p.ProjectID, 10)) {
		t.Errorf("the policy = %s", b)
	}
	b, _ = api(200, "dev", "GET", "/api/v2.0/retentions/metadatas", "")
	if !strings.Contains(string(b), "nDaysSinceLastPull") {
		t.Errorf("metadatas = %s", b)
	}

	run := func(dry bool) (string, string) {
		t.Helper()
		_, loc := api(201, "admin", "POST", "/api/v2.0/retentions/"+id+"/executions", fmt.Sprintf(`{"dry_run":%t}`, dry))
		var e struct{ Status string }
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			b, _ := api(200, "admin", "GET", "/api/v2.0/retentions/"+id+"/executions", "")
			var runs []struct {
				ID     int64
				Status string
			}
			json.Unmarshal(b, &runs)
			for _, r := range runs {
				if strings.HasSuffix(loc, "/"+strconv.FormatInt(r.ID, 10)) {
					e.Status = r.Status
				}
			}
			if e.Status != "Running" && e.Status != "" {
				break
			}
		}
		if e.Status != "Succeed" {
			t.Fatalf("retention run %s = %q", loc, e.Status)
		}
		b, _ := api(200, "admin", "GET", strings.TrimPrefix(loc, "")+"/tasks", "")
		var tasks []struct {
			ID              int64
			Repository      string
			Total, Retained int
		}
		json.Unmarshal(b, &tasks)
		summary := ""
		var appTask int64
		for _, task := range tasks {
			summary += fmt.Sprintf("%s %d/%d;", task.Repository, task.Retained, task.Total)
			if task.Repository == "team/app" {
				appTask = task.ID
			}
		}
		log, _ := api(200, "admin", "GET", fmt.Sprintf("%s/tasks/%d", loc, appTask), "")
		return summary, string(log)
	}
	summary, log := run(true)
	if summary != "team/app 4/7;team/other 1/1;" {
		t.Errorf("dry run tasks = %q, want app 4 of 7 retained (v1 immutable, v4, v5, stable), other untouched", summary)
	}
	for _, want := range []string{"would delete team/app@" + must(images["app:v2"].Digest()).String(), "retained team/app@" + must(images["app:v1"].Digest()).String() + " [v1]: an immutable tag"} {
		if !strings.Contains(log, want) {
			t.Errorf("dry run log lacks %q:\n%s", want, log)
		}
	}
	if _, err := remote.Get(s.ref(t, "team/app:v2"), adminAuth); err != nil {
		t.Errorf("a dry run deleted v2: %v", err)
	}

	summary, _ = run(false)
	if summary != "team/app 4/7;team/other 1/1;" {
		t.Errorf("run tasks = %q", summary)
	}
	for ref, want := range map[string]bool{"app:v1": true, "app:v2": false, "app:v3": false, "app:v4": true, "app:v5": true, "app:stable": true, "other:x": true,
		"app@" + must(untagged.Digest()).String(): false} {
		_, err := remote.Get(s.ref(t, "team/"+ref), adminAuth)
		if (err == nil) != want {
			t.Errorf("team/%s after retention: present %v, want %v", ref, err == nil, want)
		}
	}
	api(403, "dev", "DELETE", "/api/v2.0/retentions/"+id, "")
	api(200, "admin", "DELETE", "/api/v2.0/retentions/"+id, "")
	api(404, "admin", "GET", "/api/v2.0/retentions/"+id, "")
}
