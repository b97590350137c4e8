package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"cove/auth"
	"cove/cache"
)

// fakeWarmer keeps the jobs it is asked to start; an image named "bad" is refused.
type fakeWarmer struct {
	mu   sync.Mutex
	jobs []cache.WarmJob
}

func (f *fakeWarmer) Start(_ context.Context, req cache.WarmRequest) (cache.WarmJob, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, im := range req.Images {
		if im == "bad" {
			return cache.WarmJob{}, fmt.Errorf("%w: image %q: want a reference such as alpine:3.20", cache.ErrWarmInvalid, im)
		}
	}
	job := cache.WarmJob{ID: int64(len(f.jobs) + 1), Kind: req.Kind, Operator: req.Operator, Status: cache.WarmPending,
		Platforms: req.Platforms, Created: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)}
	for _, im := range req.Images {
		job.Images = append(job.Images, cache.WarmImage{Image: im})
	}
	f.jobs = append(f.jobs, job)
	return job, nil
}

func (f *fakeWarmer) Jobs(context.Context) ([]cache.WarmJob, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []cache.WarmJob{}
	for i := len(f.jobs) - 1; i >= 0; i-- {
		out = append(out, f.jobs[i])
	}
	return out, nil
}

func (f *fakeWarmer) Job(_ context.Context, id int64) (cache.WarmJob, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id < 1 || id > int64(len(f.jobs)) {
		return cache.WarmJob{}, cache.ErrWarmUnknown
	}
	return f.jobs[id-1], nil
}

func TestWarmAPI(t *testing.T) {
	e, srv, admin := webServerEnv(t)
	fw := &fakeWarmer{}
	srv.warm = fw
	if _, err := e.auth.Identity.CreateUser(context.Background(), auth.User{Name: "dave"}, "DavePw1xyz"); err != nil {
		t.Fatal(err)
	}
	body := `{"images":["alpine:3.20","ghcr.io/o/i:tag"],"platforms":["linux/amd64"]}`
	for _, tc := range []struct {
		name, method, path, body, user, pass string
		want                                 int
	}{
		{"anonymous start", "POST", "/api/v2.0/mirror/warm", body, "", "", http.StatusUnauthorized},
		{"user start", "POST", "/api/v2.0/mirror/warm", body, "dave", "DavePw1xyz", http.StatusForbidden},
		{"user list", "GET", "/api/v2.0/mirror/warm", "", "dave", "DavePw1xyz", http.StatusForbidden},
		{"user job", "GET", "/api/v2.0/mirror/warm/1", "", "dave", "DavePw1xyz", http.StatusForbidden},
		{"unknown field", "POST", "/api/v2.0/mirror/warm", `{"image":["alpine"]}`, "admin", "pw", http.StatusBadRequest},
		{"refused image", "POST", "/api/v2.0/mirror/warm", `{"images":["bad"]}`, "admin", "pw", http.StatusBadRequest},
		{"no such job", "GET", "/api/v2.0/mirror/warm/7", "", "admin", "pw", http.StatusNotFound},
		{"bad id", "GET", "/api/v2.0/mirror/warm/x", "", "admin", "pw", http.StatusBadRequest},
	} {
		if code, out := e.call(t, tc.method, tc.path, tc.body, tc.user, tc.pass); code != tc.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tc.name, tc.method, tc.path, code, out, tc.want)
		}
	}
	if len(fw.jobs) != 0 {
		t.Fatalf("refused requests started %d jobs", len(fw.jobs))
	}
	resp, out := call(t, e.srv, "POST", "/api/v2.0/mirror/warm", `{"images":["bad"]}`, "admin", "pw")
	if !strings.Contains(out, `"message":"image \"bad\": want a reference such as alpine:3.20"`) {
		t.Errorf("a refused image = %d %s: want the reason, without the sentinel's words", resp.StatusCode, out)
	}

	resp, out = call(t, e.srv, "POST", "/api/v2.0/mirror/warm", body, "admin", "pw")
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != "/api/v2.0/mirror/warm/1" {
		t.Fatalf("start = %d %q %s, want 201 with the job's Location", resp.StatusCode, resp.Header.Get("Location"), out)
	}
	if j := fw.jobs[0]; j.Kind != cache.WarmManual || j.Operator != "admin" || len(j.Images) != 2 || j.Platforms[0] != "linux/amd64" {
		t.Errorf("the job started = %+v", j)
	}
	code, out := e.call(t, "GET", "/api/v2.0/mirror/warm/1", "", "admin", "pw")
	var job map[string]any
	if code != 200 || json.Unmarshal([]byte(out), &job) != nil {
		t.Fatalf("GET the job = %d %s", code, out)
	}
	for _, k := range []string{"id", "kind", "operator", "status", "platforms", "images", "creation_time", "update_time"} {
		if _, ok := job[k]; !ok {
			t.Errorf("the job's JSON lacks %q: %s", k, out)
		}
	}
	im := job["images"].([]any)[0].(map[string]any)
	for _, k := range []string{"image", "digest", "platforms", "manifests", "blobs", "cached_blobs", "bytes", "done", "error"} {
		if _, ok := im[k]; !ok {
			t.Errorf("an image's JSON lacks %q: %s", k, out)
		}
	}
	e.call(t, "POST", "/api/v2.0/mirror/warm", `{"images":["busybox"]}`, "admin", "pw")
	resp, out = call(t, e.srv, "GET", "/api/v2.0/mirror/warm?page_size=1", "", "admin", "pw")
	var list []cache.WarmJob
	if json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].ID != 2 || resp.Header.Get("X-Total-Count") != "2" {
		t.Errorf("list = %s (X-Total-Count %q), want the newest of 2", out, resp.Header.Get("X-Total-Count"))
	}

	// The start is in the audit log; the refusal too.
	events, _, err := e.audit.Query(context.Background(), auth.Filter{Operation: "create"}, 1, 50)
	if err != nil {
		t.Fatal(err)
	}
	var started, refused bool
	for _, ev := range events {
		started = started || (ev.ResourceType == "warm" && ev.Resource == "1" && ev.Username == "admin" && strings.Contains(ev.Detail, "ghcr.io/o/i:tag"))
		refused = refused || (ev.Result == "failure" && ev.Username == "dave" && strings.Contains(ev.Resource, "/mirror/warm"))
	}
	if !started || !refused {
		t.Errorf("audit log: start recorded %v, refusal recorded %v: %+v", started, refused, events)
	}

	// The page: the form, and the jobs with their images, in both languages.
	fw.jobs[0].Status = cache.WarmError
	fw.jobs[0].Images[1].Error, fw.jobs[0].Images[1].Done = "not found at upstream <ghcr.io>", true
	for lang, words := range map[string][]string{"en": {"Pre-warm", "Warm now", ">Error<"}, "zh-CN": {"预热", "立即预热", ">失败<"}} {
		_, page := admin.do("GET", "/mirror", "", "Accept-Language", lang)
		for _, w := range append(words, `id="warm-form"`, `data-api="POST /api/v2.0/mirror/warm"`, `id="warm-jobs"`, "ghcr.io/o/i:tag", "not found at upstream &lt;ghcr.io&gt;") {
			if !strings.Contains(page, w) {
				t.Errorf("the mirror page in %s lacks %q", lang, w)
			}
		}
	}
	// Read-only: no pre-warm, no form.
	srv.warm = nil
	if _, page := admin.do("GET", "/mirror", ""); strings.Contains(page, `id="warm-form"`) {
		t.Error("the page offers pre-warm on a read-only start")
	}
	if code, _ := e.call(t, "POST", "/api/v2.0/mirror/warm", body, "admin", "pw"); code != http.StatusServiceUnavailable {
		t.Errorf("start on a read-only start = %d, want 503", code)
	}
}
