package e2e

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// The system endpoints (HARBOR-API §7) in Harbor's shapes, each showing only what the caller may
// see.
func TestSystemEndpoints(t *testing.T) {
	s := startCove(t, t.TempDir())
	s.createProject("team", false)
	s.createProject("open", true)
	s.createProject("empty", false)
	if err := remoteWrite(s, t, "team/app:v1", testImage(t)); err != nil {
		t.Fatal(err)
	}
	if err := remoteWrite(s, t, "open/tool:v1", testImage(t)); err != nil {
		t.Fatal(err)
	}
	get := func(status int, user, pass, path string) map[string]any {
		t.Helper()
		resp, b := s.doAs("GET", path, strings.NewReader(""), user, pass)
		if resp.StatusCode != status {
			t.Fatalf("GET %s as %q = %d %s, want %d", path, user, resp.StatusCode, b, status)
		}
		var out map[string]any
		json.Unmarshal(b, &out)
		return out
	}
	admin := func(path string) map[string]any { t.Helper(); return get(200, "admin", adminPassword, path) }
	if resp, b := s.doAs("POST", "/api/v2.0/users", strings.NewReader(`{"username":"dave","email":"d@example.org","password":"DavePw1xyz"}`), "admin", adminPassword); resp.StatusCode != 201 {
		t.Fatalf("create dave = %d %s", resp.StatusCode, b)
	}
	dave := func(status int, path string) map[string]any {
		t.Helper()
		return get(status, "dave", "DavePw1xyz", path)
	}

	anon := get(200, "", "", "/api/v2.0/systeminfo")
	if anon["auth_mode"] != "db_auth" || anon["harbor_version"] == "" || anon["registry_url"] != nil {
		t.Errorf("anonymous systeminfo = %v", anon)
	}
	if info := admin("/api/v2.0/systeminfo"); info["registry_storage_provider_name"] != "filesystem" || info["registry_url"] != s.addr || info["read_only"] != false {
		t.Errorf("systeminfo = %v", info)
	}
	vol := admin("/api/v2.0/systeminfo/volumes")["storage"].([]any)[0].(map[string]any)
	if vol["total"].(float64) <= vol["free"].(float64) || vol["free"].(float64) <= 0 {
		t.Errorf("volumes = %v", vol)
	}
	dave(403, "/api/v2.0/systeminfo/volumes")
	health := get(200, "", "", "/api/v2.0/health")
	if health["status"] != "healthy" || len(health["components"].([]any)) < 3 {
		t.Errorf("health = %v", health)
	}

	st := admin("/api/v2.0/statistics")
	if st["total_project_count"] != 3.0 || st["private_repo_count"] != 1.0 || st["public_repo_count"] != 1.0 || st["total_storage_consumption"].(float64) <= 0 {
		t.Errorf("statistics as admin = %v", st)
	}
	if st := dave(200, "/api/v2.0/statistics"); st["private_project_count"] != 0.0 || st["public_repo_count"] != 1.0 || st["total_storage_consumption"] != nil {
		t.Errorf("statistics as a user of no project = %v", st)
	}

	hits := admin("/api/v2.0/search?q=app")["repository"].([]any)
	if len(hits) != 1 || hits[0].(map[string]any)["repository_name"] != "team/app" {
		t.Errorf("search as admin = %v", hits)
	}
	if hits := dave(200, "/api/v2.0/search?q=app")["repository"].([]any); len(hits) != 0 {
		t.Errorf("search found a private repository for a stranger: %v", hits)
	}
	dave(400, "/api/v2.0/search")

	if resp, b := s.doAs("POST", "/api/v2.0/projects/team/members", strings.NewReader(`{"role_id":2,"member_user":{"username":"dave"}}`), "admin", adminPassword); resp.StatusCode != 201 {
		t.Fatalf("add dave = %d %s", resp.StatusCode, b)
	}
	var p struct {
		ProjectID int64 `json:"project_id"`
	}
	_, b := s.doAs("GET", "/api/v2.0/projects/team", strings.NewReader(""), "admin", adminPassword)
	json.Unmarshal(b, &p)
	_, b = s.doAs("GET", "/api/v2.0/users/current/permissions?relative=true&scope=/project/"+strconv.FormatInt(p.ProjectID, 10), strings.NewReader(""), "dave", "DavePw1xyz")
	if perms := string(b); !strings.Contains(perms, `{"resource":"repository","action":"push"}`) || strings.Contains(perms, `{"resource":"repository","action":"delete"}`) {
		t.Errorf("a developer's permissions = %s", perms)
	}

	if d := admin("/api/v2.0/projects/team/_deletable"); d["deletable"] != false || !strings.Contains(d["message"].(string), "repositories (1)") {
		t.Errorf("team _deletable = %v", d)
	}
	if d := admin("/api/v2.0/projects/empty/_deletable"); d["deletable"] != true {
		t.Errorf("empty _deletable = %v", d)
	}
	if resp, b := s.doAs("POST", "/api/v2.0/ldap/ping", strings.NewReader(""), "admin", adminPassword); resp.StatusCode != 400 || !strings.Contains(string(b), "auth.mode") {
		t.Errorf("ldap ping without a directory = %d %s", resp.StatusCode, b)
	}
}

// POST /ldap/ping connects to the configured directory and binds.
func TestLDAPPing(t *testing.T) {
	ldap := startSlapd(t)
	reg := startRegistry(t, "", nil)
	s := startMirror(t, t.TempDir(), mirrorConfig(reg.url, ldap.authConfig()))
	resp, b := s.doAs("POST", "/api/v2.0/ldap/ping", strings.NewReader("{}"), "admin", adminPassword)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"success":true`) {
		t.Errorf("ldap ping = %d %s", resp.StatusCode, b)
	}
	if resp, _ := s.doAs("POST", "/api/v2.0/ldap/ping", strings.NewReader(`{"ldap_url":"ldap://10.0.0.1"}`), "admin", adminPassword); resp.StatusCode != 400 {
		t.Errorf("ldap ping of another directory = %d, want 400", resp.StatusCode)
	}
	if _, b := s.do("GET", "/api/v2.0/systeminfo", nil, false); !strings.Contains(string(b), `"auth_mode":"ldap_auth"`) {
		t.Errorf("systeminfo with LDAP = %s", b)
	}
}
