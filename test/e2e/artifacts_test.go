package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Repositories, artifacts and tags through Harbor's API (HARBOR-API §1): shapes, who may change
// what (developers tag and describe, maintainers delete, guests only read), every delete audited,
// and a deleted artifact gone from the registry.
func TestRepositoryLifecycleAPI(t *testing.T) {
	s := startCove(t, t.TempDir())
	s.createProject("team", false)
	for _, u := range []struct {
		name string
		role int
	}{{"maint", 4}, {"dev", 2}, {"guest", 3}} {
		if resp, b := s.doAs("POST", "/api/v2.0/users", strings.NewReader(`{"username":"`+u.name+`","email":"`+u.name+`@example.org","password":"Passw0rdxyz"}`), "admin", adminPassword); resp.StatusCode != 201 {
			t.Fatalf("create %s = %d %s", u.name, resp.StatusCode, b)
		}
		body := `{"role_id":` + string(rune('0'+u.role)) + `,"member_user":{"username":"` + u.name + `"}}`
		if resp, b := s.doAs("POST", "/api/v2.0/projects/team/members", strings.NewReader(body), "admin", adminPassword); resp.StatusCode != 201 {
			t.Fatalf("add %s = %d %s", u.name, resp.StatusCode, b)
		}
	}
	as := func(user, method, path, body string) (*httpResponse, []byte) {
		t.Helper()
		pass := "Passw0rdxyz"
		if user == "admin" {
			pass = adminPassword
		}
		return s.doAs(method, path, strings.NewReader(body), user, pass)
	}
	want := func(status int, user, method, path, body string) []byte {
		t.Helper()
		resp, b := as(user, method, path, body)
		if resp.StatusCode != status {
			t.Fatalf("%s %s as %s = %d %s, want %d", method, path, user, resp.StatusCode, b, status)
		}
		return b
	}

	// Each caller sees its role in the project, as Harbor's page reads it.
	for user, role := range map[string]int{"maint": 4, "dev": 2, "guest": 3, "admin": 0} {
		var p struct {
			Role int `json:"current_user_role_id"`
		}
		json.Unmarshal(want(200, user, "GET", "/api/v2.0/projects/team", ""), &p)
		if p.Role != role {
			t.Errorf("current_user_role_id of %s = %d, want %d", user, p.Role, role)
		}
	}

	img, err := mutate.ConfigFile(must(random.Image(1024, 2)), &v1.ConfigFile{OS: "linux", Architecture: "arm64", Author: "team"})
	if err != nil {
		t.Fatal(err)
	}
	other := must(random.Image(512, 1))
	for ref, im := range map[string]v1.Image{"team/app:v1": img, "team/app:v2": img, "team/app:v3": other} {
		if err := remoteWrite(s, t, ref, im); err != nil {
			t.Fatal(err)
		}
	}
	idx := mutate.AppendManifests(must(random.Index(256, 1, 0)),
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	if err := remote.WriteIndex(s.ref(t, "team/sub/multi:1"), idx, adminAuth); err != nil {
		t.Fatal(err)
	}
	dgst := must(img.Digest()).String()
	for range 2 { // pulls count
		if _, err := remote.Get(s.ref(t, "team/app:v1"), adminAuth); err != nil {
			t.Fatal(err)
		}
	}

	var repos []struct {
		ID            int64  `json:"id"`
		ProjectID     int64  `json:"project_id"`
		Name          string `json:"name"`
		Description   string `json:"description"`
		ArtifactCount int    `json:"artifact_count"`
		PullCount     int64  `json:"pull_count"`
	}
	json.Unmarshal(want(200, "guest", "GET", "/api/v2.0/projects/team/repositories?sort=name", ""), &repos)
	if len(repos) != 2 || repos[0].Name != "team/app" || repos[0].ArtifactCount != 2 || repos[0].PullCount != 2 || repos[0].ID == 0 || repos[0].ProjectID == 0 {
		t.Errorf("repositories = %+v; want team/app with 2 artifacts, 2 pulls, and ids", repos)
	}
	json.Unmarshal(want(200, "guest", "GET", "/api/v2.0/repositories?q=name%3D~multi", ""), &repos)
	if len(repos) != 1 || repos[0].Name != "team/sub/multi" {
		t.Errorf("GET /repositories?q=name=~multi = %+v", repos)
	}

	// Developers describe and tag; guests do not.
	want(403, "guest", "PUT", "/api/v2.0/projects/team/repositories/app", `{"description":"no"}`)
	want(200, "dev", "PUT", "/api/v2.0/projects/team/repositories/app", `{"description":"the app"}`)
	var repo struct{ Description string }
	json.Unmarshal(want(200, "guest", "GET", "/api/v2.0/projects/team/repositories/app", ""), &repo)
	if repo.Description != "the app" {
		t.Errorf("description = %q", repo.Description)
	}
	const art = "/api/v2.0/projects/team/repositories/app/artifacts/"
	want(403, "guest", "POST", art+"v1/tags", `{"name":"extra"}`)
	want(201, "dev", "POST", art+"v1/tags", `{"name":"extra"}`)
	want(409, "dev", "POST", art+dgst+"/tags", `{"name":"extra"}`)
	want(400, "dev", "POST", art+"v1/tags", `{"name":"-bad"}`)
	if _, err := remote.Get(s.ref(t, "team/app:extra"), adminAuth); err != nil {
		t.Errorf("pull of the added tag: %v", err)
	}

	// An artifact by tag: its tags, its config's attributes; an index: its platforms.
	var a struct {
		Digest     string         `json:"digest"`
		Type       string         `json:"type"`
		Size       int64          `json:"size"`
		ExtraAttrs map[string]any `json:"extra_attrs"`
		Tags       []struct {
			Name      string `json:"name"`
			Immutable bool   `json:"immutable"`
		} `json:"tags"`
		References []struct {
			ChildDigest string `json:"child_digest"`
			Platform    struct {
				OS, Architecture, Variant string
			} `json:"platform"`
		} `json:"references"`
	}
	json.Unmarshal(want(200, "guest", "GET", art+"v2", ""), &a)
	if a.Digest != dgst || a.Type != "IMAGE" || a.Size == 0 || len(a.Tags) != 3 || a.ExtraAttrs["os"] != "linux" || a.ExtraAttrs["architecture"] != "arm64" || a.ExtraAttrs["author"] != "team" {
		t.Errorf("artifact v2 = %+v", a)
	}
	json.Unmarshal(want(200, "guest", "GET", "/api/v2.0/projects/team/repositories/sub%252Fmulti/artifacts/1", ""), &a)
	if len(a.References) != 2 || a.References[0].Platform.Architecture != "arm64" || a.References[0].Platform.Variant != "v8" || a.References[0].ChildDigest != dgst {
		t.Errorf("index references = %+v", a.References)
	}
	want(404, "guest", "GET", art+"nosuchtag", "")

	// An index's images are its references, not artifacts of their own.
	var multi struct {
		ArtifactCount int `json:"artifact_count"`
	}
	json.Unmarshal(want(200, "guest", "GET", "/api/v2.0/projects/team/repositories/sub%252Fmulti", ""), &multi)
	if multi.ArtifactCount != 1 {
		t.Errorf("team/sub/multi has %d artifacts; want 1, the index", multi.ArtifactCount)
	}
	want(200, "guest", "GET", "/api/v2.0/projects/team/repositories/sub%252Fmulti/artifacts/"+dgst, "") // still there by digest

	// Copy the index with its images and tag into another repository; delete it there, with its
	// images, and the source is untouched.
	const cp = "/api/v2.0/projects/team/repositories/copy/artifacts"
	want(403, "guest", "POST", cp+"?from=team/sub/multi:1", "")
	want(400, "dev", "POST", cp+"?from=nonsense", "")
	want(404, "dev", "POST", cp+"?from=team/sub/multi:nosuchtag", "")
	want(400, "dev", "POST", "/api/v2.0/projects/team/repositories/..%252Fother%252Fevil/artifacts?from=team/sub/multi:1", "")
	want(400, "dev", "POST", "/api/v2.0/projects/team/repositories/a%2500b/artifacts?from=team/sub/multi:1", "")
	want(201, "dev", "POST", cp+"?from=team/sub/multi:1", "")
	if _, err := remote.Index(s.ref(t, "team/copy:1"), adminAuth); err != nil {
		t.Errorf("pull the copied index: %v", err)
	}
	if _, err := remote.Image(s.ref(t, "team/copy@"+dgst), adminAuth); err != nil {
		t.Errorf("pull an image of the copied index: %v", err)
	}
	want(200, "maint", "DELETE", cp+"/1", "")
	want(404, "guest", "GET", cp+"/"+dgst, "")
	if _, err := remote.Index(s.ref(t, "team/sub/multi:1"), adminAuth); err != nil {
		t.Errorf("the source index after its copy's delete: %v", err)
	}

	// Listing: q, sort, paging.
	resp, b := as("guest", "GET", "/api/v2.0/projects/team/repositories/app/artifacts?page_size=1&sort=-push_time", "")
	if resp.StatusCode != 200 || resp.Header.Get("X-Total-Count") != "2" || !strings.Contains(resp.Header.Get("Link"), `rel="next"`) || strings.Count(string(b), `"digest"`) != 1 {
		t.Errorf("page 1 of 1 = %d, total %q, link %q: %s", resp.StatusCode, resp.Header.Get("X-Total-Count"), resp.Header.Get("Link"), b)
	}
	resp, b = as("guest", "GET", "/api/v2.0/projects/team/repositories/app/artifacts?q=tags%3D~extr", "")
	if resp.StatusCode != 200 || resp.Header.Get("X-Total-Count") != "1" || !strings.Contains(string(b), dgst) {
		t.Errorf("q=tags=~extr = %d %s", resp.StatusCode, b)
	}

	// Maintainers delete: a tag, an artifact (with all its tags), a repository.
	want(403, "dev", "DELETE", art+"v1/tags/extra", "")
	want(200, "maint", "DELETE", art+"v1/tags/extra", "")
	want(404, "maint", "DELETE", art+"v1/tags/extra", "")
	want(403, "dev", "DELETE", art+"v1", "")
	want(200, "maint", "DELETE", art+"v1", "")
	for _, tag := range []string{"v1", "v2"} {
		if _, err := remote.Get(s.ref(t, "team/app:"+tag), adminAuth); err == nil {
			t.Errorf("team/app:%s is still served after its artifact's delete", tag)
		}
	}
	if _, err := remote.Get(s.ref(t, "team/app:v3"), adminAuth); err != nil {
		t.Errorf("another artifact of the repository went with the delete: %v", err)
	}
	want(403, "guest", "DELETE", "/api/v2.0/projects/team/repositories/sub%252Fmulti", "")
	want(200, "maint", "DELETE", "/api/v2.0/projects/team/repositories/sub%252Fmulti", "")
	want(404, "guest", "GET", "/api/v2.0/projects/team/repositories/sub%252Fmulti", "")
	if _, err := remote.Get(s.ref(t, "team/sub/multi:1"), adminAuth); err == nil {
		t.Error("a deleted repository is still served")
	}

	// Every delete is in the audit log, with who did it.
	var logs []struct {
		Username  string `json:"username"`
		Resource  string `json:"resource"`
		Operation string `json:"operation"`
	}
	json.Unmarshal(want(200, "admin", "GET", "/api/v2.0/audit-logs?q=operation%3Ddelete&page_size=100", ""), &logs)
	for _, res := range []string{"team/app:extra", "team/app@" + dgst, "team/sub/multi"} {
		found := false
		for _, l := range logs {
			found = found || (l.Resource == res && l.Username == "maint")
		}
		if !found {
			t.Errorf("the audit log lacks maint's delete of %s: %+v", res, logs)
		}
	}
}
