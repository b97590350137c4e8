package e2e

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Storage quotas (HARBOR-API §3): a push past the limit is refused with 403 DENIED before its
// bytes are stored; blobs shared by repositories of the project count once; usage is right
// after deletes and garbage collection; admins read and change quotas, and a summary shows them.
func TestProjectQuotas(t *testing.T) {
	data := t.TempDir()
	s := startCove(t, data)
	api := func(status int, method, path, body string) []byte {
		t.Helper()
		resp, b := s.doAs(method, path, strings.NewReader(body), "admin", adminPassword)
		if resp.StatusCode != status {
			t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, b, status)
		}
		return b
	}
	const mib = 1 << 20
	api(400, "POST", "/api/v2.0/projects", `{"project_name":"bad","storage_limit":-5}`)
	api(201, "POST", "/api/v2.0/projects", `{"project_name":"small","storage_limit":`+strconv.Itoa(3*mib)+`}`)
	api(201, "POST", "/api/v2.0/projects", `{"project_name":"big"}`)
	var p struct {
		ProjectID int64 `json:"project_id"`
	}
	json.Unmarshal(api(200, "GET", "/api/v2.0/projects/small", ""), &p)
	id := strconv.FormatInt(p.ProjectID, 10)
	type quotaT struct {
		ID   int64 `json:"id"`
		Ref  struct{ Name string }
		Hard struct{ Storage int64 }
		Used struct{ Storage int64 }
	}
	quotaOf := func() quotaT {
		t.Helper()
		var qs []quotaT
		json.Unmarshal(api(200, "GET", "/api/v2.0/quotas?reference=project&reference_id="+id, ""), &qs)
		if len(qs) != 1 {
			t.Fatalf("quotas of small = %+v", qs)
		}
		return qs[0]
	}
	if q := quotaOf(); q.Hard.Storage != 3*mib || q.Used.Storage != 0 || q.Ref.Name != "small" || q.ID != p.ProjectID {
		t.Fatalf("small's quota = %+v", q)
	}

	first := must(random.Image(mib, 2))
	if err := remoteWrite(s, t, "small/a:v1", first); err != nil {
		t.Fatal(err)
	}
	used := quotaOf().Used.Storage
	if used < 2*mib || used > 2*mib+16<<10 {
		t.Errorf("used after 2 MiB of layers = %d", used)
	}
	if err := remoteWrite(s, t, "small/b:v1", first); err != nil { // the same image in another repository
		t.Fatal(err)
	}
	if q := quotaOf(); q.Used.Storage != used {
		t.Errorf("the same blobs in a second repository counted again: %d, was %d", q.Used.Storage, used)
	}

	second := must(random.Image(3*mib/2, 2))
	// One blob at a time: when the refusal ends the push, no upload of it is still in flight
	// (one would land after the checks below).
	err := remote.Write(s.ref(t, "small/c:v1"), second, adminAuth, remote.WithJobs(1))
	if err == nil || !strings.Contains(err.Error(), "DENIED") || !strings.Contains(err.Error(), "Quota exceeded") {
		t.Fatalf("a push past the quota = %v, want 403 DENIED, Quota exceeded", err)
	}
	for _, l := range must(second.Layers()) {
		if _, err := os.Stat(blobFile(data, must(l.Digest()))); !os.IsNotExist(err) {
			t.Errorf("a layer of the refused push is stored: %v", err)
		}
	}
	// Its config, small, fits: it counts, alone, when the client uploaded it before a layer's
	// refusal ended the push.
	config := int64(len(must(second.RawConfigFile())))
	q := quotaOf()
	if q.Used.Storage != used && q.Used.Storage != used+config {
		t.Errorf("usage after the refused push = %d, want %d, or that and the config's %d", q.Used.Storage, used, config)
	}
	repos, left := 2, int64(0) // what the refused push left: its repository and config, or nothing
	if q.Used.Storage == used+config {
		repos, left = 3, config
	}
	used = q.Used.Storage
	var sum struct {
		RepoCount int `json:"repo_count"`
		Quota     struct {
			Hard, Used map[string]int64
		} `json:"quota"`
	}
	json.Unmarshal(api(200, "GET", "/api/v2.0/projects/small/summary", ""), &sum)
	if sum.RepoCount != repos || sum.Quota.Hard["storage"] != 3*mib || sum.Quota.Used["storage"] != used {
		t.Errorf("summary = %+v", sum)
	}
	b := api(200, "GET", "/api/v2.0/audit-logs?q=operation%3Dquota_exceeded", "")
	if !strings.Contains(string(b), `"resource":"small"`) {
		t.Errorf("no quota_exceeded event in the audit log: %s", b)
	}

	// Deletes, then garbage collection: the usage goes back to nothing.
	api(200, "DELETE", "/api/v2.0/projects/small/repositories/a", "")
	if q := quotaOf(); q.Used.Storage != used {
		t.Errorf("deleting one of two repositories that share the blobs changed the usage: %d, was %d", q.Used.Storage, used)
	}
	// The artifact's delete leaves its layers linked until garbage collection, which recounts.
	api(200, "DELETE", "/api/v2.0/projects/small/repositories/b/artifacts/v1", "")
	if run := runGC(t, s, `{"time_window":0}`); run.JobStatus != "Success" {
		t.Fatalf("gc = %+v", run)
	}
	if q := quotaOf(); q.Used.Storage != left {
		t.Errorf("usage after delete and gc = %d, want %d (what the refused push left: a push in flight, kept an hour)", q.Used.Storage, left)
	}

	// A larger limit takes the push; admins only.
	api(400, "PUT", "/api/v2.0/quotas/"+id, `{"hard":{"storage":0}}`)
	api(200, "PUT", "/api/v2.0/quotas/"+id, `{"hard":{"storage":`+strconv.Itoa(10*mib)+`}}`)
	if err := remoteWrite(s, t, "small/c:v1", second); err != nil {
		t.Errorf("push under the raised quota: %v", err)
	}
	if err := remoteWrite(s, t, "big/x:v1", must(random.Image(mib, 1))); err != nil {
		t.Fatal(err)
	}
	var qs []quotaT
	json.Unmarshal(api(200, "GET", "/api/v2.0/quotas?sort=-used.storage", ""), &qs)
	if len(qs) != 2 || qs[0].Ref.Name != "small" || qs[1].Ref.Name != "big" || qs[1].Hard.Storage != -1 {
		t.Errorf("quotas by usage = %+v", qs)
	}
	api(201, "POST", "/api/v2.0/users", `{"username":"dave","email":"d@example.org","password":"DavePw1xyz"}`)
	if resp, _ := s.doAs("GET", "/api/v2.0/quotas", strings.NewReader(""), "dave", "DavePw1xyz"); resp.StatusCode != 403 {
		t.Errorf("GET /quotas as a user = %d, want 403", resp.StatusCode)
	}
}
