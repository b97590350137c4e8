package e2e

import (
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Tag immutability (HARBOR-API §5) with the Docker CLI: a rule makes v* immutable; pushing v1
// again unchanged works, pushing another image as v1 is refused with Harbor's message, another
// tag is free; the tag shows as immutable; deleting it, its artifact or its repository is
// refused with 412 (through the API and through /v2) until the rule goes.
func TestImmutableTags(t *testing.T) {
	dockerd := requireTool(t, "dockerd")
	docker := requireTool(t, "docker")
	requireTool(t, "containerd")
	reg := startRegistry(t, "", nil)
	runtimeImages(t, reg)
	s := startMirror(t, t.TempDir(), mirrorConfig(reg.url, ""))
	s.createProject("team", false)
	api := func(status int, user, pass, method, path, body string) []byte {
		t.Helper()
		resp, b := s.doAs(method, path, strings.NewReader(body), user, pass)
		if resp.StatusCode != status {
			t.Fatalf("%s %s as %s = %d %s, want %d", method, path, user, resp.StatusCode, b, status)
		}
		return b
	}
	admin := func(status int, method, path, body string) []byte {
		t.Helper()
		return api(status, "admin", adminPassword, method, path, body)
	}
	admin(201, "POST", "/api/v2.0/users", `{"username":"dev","email":"d@example.org","password":"DevPw1xyzab"}`)
	admin(201, "POST", "/api/v2.0/projects/team/members", `{"role_id":2,"member_user":{"username":"dev"}}`)

	const rules = "/api/v2.0/projects/team/immutabletagrules"
	rule := `{"action":"immutable","template":"immutable_template","tag_selectors":[{"kind":"doublestar","decoration":"matches","pattern":"v*"}],"scope_selectors":{"repository":[{"kind":"doublestar","decoration":"repoMatches","pattern":"**"}]}}`
	api(403, "dev", "DevPw1xyzab", "POST", rules, rule)
	admin(201, "POST", rules, rule)
	admin(409, "POST", rules, rule)
	admin(400, "POST", rules, strings.Replace(rule, `"v*"`, `"v["`, 1))
	var listed []struct {
		ID           int64                      `json:"id"`
		TagSelectors []struct{ Pattern string } `json:"tag_selectors"`
	}
	json.Unmarshal(api(200, "dev", "DevPw1xyzab", "GET", rules, ""), &listed)
	if len(listed) != 1 || listed[0].TagSelectors[0].Pattern != "v*" {
		t.Fatalf("rules = %+v", listed)
	}

	_, sock := startDockerd(t, dockerd, docker, s.url)
	dk := func(args ...string) (string, error) {
		return run(t, 3*time.Minute, nil, docker, append([]string{"-H", sock}, args...)...)
	}
	for _, img := range []string{"alpine", "ociimg"} {
		if out, err := dk("pull", img); err != nil {
			t.Fatalf("docker pull %s: %v\n%s", img, err, out)
		}
	}
	login := exec.Command(docker, "-H", sock, "login", "-u", "admin", "--password-stdin", s.addr)
	login.Stdin = strings.NewReader(adminPassword)
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("docker login: %v\n%s", err, out)
	}
	push := func(src, tag string) (string, error) {
		t.Helper()
		if out, err := dk("tag", src, s.addr+"/team/app:"+tag); err != nil {
			t.Fatalf("docker tag: %v\n%s", err, out)
		}
		return dk("push", s.addr+"/team/app:"+tag)
	}
	for range 2 { // the same image again: nothing moves
		if out, err := push("alpine", "v1"); err != nil {
			t.Fatalf("docker push v1: %v\n%s", err, out)
		}
	}
	out, err := push("ociimg", "v1")
	if err == nil || !strings.Contains(out, "'app:v1' configured as immutable") {
		t.Errorf("docker push of another image as the immutable v1: %v\n%s", err, out)
	}
	if out, err := push("ociimg", "latest"); err != nil {
		t.Errorf("docker push latest (no rule): %v\n%s", err, out)
	}

	const art = "/api/v2.0/projects/team/repositories/app/artifacts/"
	var tags []struct {
		Name      string `json:"name"`
		Immutable bool   `json:"immutable"`
	}
	json.Unmarshal(admin(200, "GET", art+"v1/tags", ""), &tags)
	if len(tags) != 1 || tags[0].Name != "v1" || !tags[0].Immutable {
		t.Errorf("v1's tags = %+v, want v1 immutable", tags)
	}
	json.Unmarshal(admin(200, "GET", art+"latest/tags", ""), &tags)
	if len(tags) != 1 || tags[0].Immutable {
		t.Errorf("latest's tags = %+v, want latest mutable", tags)
	}
	for _, path := range []string{art + "v1/tags/v1", art + "v1", "/api/v2.0/projects/team/repositories/app"} {
		if b := admin(412, "DELETE", path, ""); !strings.Contains(string(b), "PRECONDITION") || !strings.Contains(string(b), "immutable") {
			t.Errorf("DELETE %s = %s", path, b)
		}
	}
	var v1 struct {
		Digest string `json:"digest"`
	}
	json.Unmarshal(admin(200, "GET", art+"v1", ""), &v1)
	tok := s.token(t, "admin", adminPassword, "repository:team/app:delete,pull")
	if resp, b := s.doBearer("DELETE", "/v2/team/app/manifests/"+v1.Digest, tok); resp.StatusCode != 412 {
		t.Errorf("/v2 DELETE of the immutable tag's manifest = %d %s, want 412", resp.StatusCode, b)
	}
	if resp, _ := s.doBearer("GET", "/v2/team/app/manifests/v1", tok); resp.StatusCode != 200 {
		t.Errorf("v1 after the refused deletes = %d", resp.StatusCode)
	}

	// Without the rule, the tag goes.
	admin(200, "DELETE", rules+"/"+strconv.FormatInt(listed[0].ID, 10), "")
	admin(200, "DELETE", art+"v1/tags/v1", "")
}
