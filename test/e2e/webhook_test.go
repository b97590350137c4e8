package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// hookReceiver is a CI system's endpoint: it records what arrives; down answers 503, hang
// holds each request until the test ends.
type hookReceiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  []hookDelivery
	mode string // "", "down", "hang"
	hang chan struct{}
}

type hookDelivery struct {
	id, event, auth, sig, contentType string
	body                              []byte
	ok                                bool // answered 2xx
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{hang: make(chan struct{})}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		mode := h.mode
		h.got = append(h.got, hookDelivery{id: r.Header.Get("X-Cove-Delivery"), event: r.Header.Get("X-Cove-Event"), auth: r.Header.Get("Authorization"),
			sig: r.Header.Get("X-Cove-Signature-256"), contentType: r.Header.Get("Content-Type"), body: b, ok: mode == ""})
		h.mu.Unlock()
		switch mode {
		case "down":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "hang":
			select {
			case <-h.hang:
			case <-r.Context().Done():
			}
		}
	}))
	t.Cleanup(func() { close(h.hang); h.srv.Close() })
	return h
}

func (h *hookReceiver) setMode(m string) { h.mu.Lock(); h.mode = m; h.mu.Unlock() }

// delivered returns the deliveries answered 2xx, by delivery id: each once, or the test says so.
func (h *hookReceiver) delivered(t *testing.T) []hookDelivery {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []hookDelivery
	seen := map[string]bool{}
	for _, d := range h.got {
		if !d.ok {
			continue
		}
		if seen[d.id] {
			t.Errorf("delivery %s arrived twice", d.id)
		}
		seen[d.id] = true
		out = append(out, d)
	}
	return out
}

// hookEvent is the part of Harbor's Default payload the test reads.
type hookEvent struct {
	Type      string `json:"type"`
	OccurAt   int64  `json:"occur_at"`
	Operator  string `json:"operator"`
	EventData struct {
		Resources []struct {
			Digest      string `json:"digest"`
			Tag         string `json:"tag"`
			ResourceURL string `json:"resource_url"`
		} `json:"resources"`
		Repository struct {
			Name         string `json:"name"`
			Namespace    string `json:"namespace"`
			RepoFullName string `json:"repo_full_name"`
			RepoType     string `json:"repo_type"`
		} `json:"repository"`
	} `json:"event_data"`
}

// events lists the delivered events of type typ.
func (h *hookReceiver) events(t *testing.T, typ string) []hookEvent {
	t.Helper()
	var out []hookEvent
	for _, d := range h.delivered(t) {
		var e hookEvent
		if err := json.Unmarshal(d.body, &e); err != nil {
			t.Errorf("payload %s: %v", d.body, err)
		}
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// TestWebhooks: a project admin's policy receives the push, the pull and the delete of an
// artifact, each once, in Harbor's payload, signed; a receiver down for a while gets its events
// after retries, once; deliveries pending across a restart of cove are delivered; a hanging
// receiver does not slow pushes; a system policy receives the pulls of mirrored images; the
// history says what happened.
func TestWebhooks(t *testing.T) {
	reg := startRegistry(t, "", nil)
	reg.seed(t, "library/app:1", testImage(t))
	dir := t.TempDir()
	cfg := mirrorConfig(reg.url, "webhooks:\n  allow_private_targets: true\n")
	s := startMirror(t, dir, cfg)
	s.createProject("team", false)
	rc := newHookReceiver(t)
	api := func(want int, method, path, body string) []byte {
		t.Helper()
		resp, b := s.doAs(method, path, strings.NewReader(body), "admin", adminPassword)
		if resp.StatusCode != want {
			t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, b, want)
		}
		return b
	}
	api(201, "POST", "/api/v2.0/projects/team/webhook/policies", fmt.Sprintf(`{"name":"ci","enabled":true,"secret":"hush",
		"event_types":["PUSH_ARTIFACT","PULL_ARTIFACT","DELETE_ARTIFACT"],
		"targets":[{"type":"http","address":%q,"auth_header":"Bearer ci-token","payload_format":"Default"}]}`, rc.srv.URL))
	api(400, "POST", "/api/v2.0/projects/team/webhook/policies", `{"name":"meta","enabled":true,"event_types":["PUSH_ARTIFACT"],
		"targets":[{"address":"http://169.254.169.254/latest/meta-data"}]}`)
	var policies []struct {
		ID        int64  `json:"id"`
		Secret    string `json:"secret"`
		ProjectID int64  `json:"project_id"`
	}
	json.Unmarshal(api(200, "GET", "/api/v2.0/projects/team/webhook/policies", ""), &policies)
	if len(policies) != 1 || policies[0].Secret != "" || policies[0].ProjectID == 0 {
		t.Fatalf("policies = %+v, want one, its secret not shown", policies)
	}
	pid := policies[0].ID
	if b := api(200, "GET", "/api/v2.0/projects/team/webhook/events", ""); !strings.Contains(string(b), "TAG_RETENTION") {
		t.Errorf("events = %s", b)
	}

	// Push, pull, delete: one delivery each.
	img := testImage(t)
	if err := remoteWrite(s, t, "team/app:v1", img); err != nil {
		t.Fatal(err)
	}
	dgst := must(img.Digest()).String()
	if _, err := remote.Get(s.ref(t, "team/app:v1"), adminAuth); err != nil {
		t.Fatal(err)
	}
	api(200, "DELETE", "/api/v2.0/projects/team/repositories/app/artifacts/v1", "")
	waitFor(t, 20*time.Second, "push, pull and delete to be delivered", func() bool {
		return len(rc.events(t, "PUSH_ARTIFACT")) >= 1 && len(rc.events(t, "PULL_ARTIFACT")) >= 1 && len(rc.events(t, "DELETE_ARTIFACT")) >= 1
	})
	for _, typ := range []string{"PUSH_ARTIFACT", "PULL_ARTIFACT", "DELETE_ARTIFACT"} {
		evs := rc.events(t, typ)
		if len(evs) != 1 {
			t.Errorf("%s delivered %d times, want once", typ, len(evs))
			continue
		}
		e := evs[0]
		r := e.EventData.Repository
		if e.Operator != "admin" || e.OccurAt == 0 || len(e.EventData.Resources) != 1 || e.EventData.Resources[0].Digest != dgst ||
			e.EventData.Resources[0].Tag != "v1" || e.EventData.Resources[0].ResourceURL != s.addr+"/team/app:v1" ||
			r.Name != "app" || r.Namespace != "team" || r.RepoFullName != "team/app" || r.RepoType != "private" {
			t.Errorf("%s payload = %+v", typ, e)
		}
	}
	for _, d := range rc.delivered(t) {
		m := hmac.New(sha256.New, []byte("hush"))
		m.Write(d.body)
		if d.sig != "sha256="+hex.EncodeToString(m.Sum(nil)) || d.auth != "Bearer ci-token" || d.id == "" || d.contentType != "application/json" {
			t.Errorf("delivery headers: signature %q, auth %q, id %q, type %q", d.sig, d.auth, d.id, d.contentType)
		}
	}

	// Down for a while: delivered after retries, once.
	rc.setMode("down")
	if err := remoteWrite(s, t, "team/app:v2", testImage(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a refused attempt", func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return len(rc.got) > 0 && !rc.got[len(rc.got)-1].ok
	})
	rc.setMode("")
	waitFor(t, 30*time.Second, "the push to be delivered after retries", func() bool { return len(rc.events(t, "PUSH_ARTIFACT")) == 2 })

	// Pending across a restart.
	rc.setMode("down")
	if err := remoteWrite(s, t, "team/app:v3", testImage(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a refused attempt", func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return !rc.got[len(rc.got)-1].ok && strings.Contains(string(rc.got[len(rc.got)-1].body), `"tag":"v3"`)
	})
	if code := s.stop(); code != 0 {
		t.Fatalf("cove exited with %d", code)
	}
	rc.setMode("")
	s = startMirror(t, dir, cfg)
	waitFor(t, 60*time.Second, "the pending push to be delivered after the restart", func() bool { return len(rc.events(t, "PUSH_ARTIFACT")) == 3 })

	// The history: executions with their tasks, attempts and log.
	var execs []struct {
		ID      int64  `json:"id"`
		Status  string `json:"status"`
		Metrics struct {
			TaskCount int `json:"task_count"`
		} `json:"metrics"`
		ExtraAttrs map[string]any `json:"extra_attrs"`
	}
	base := fmt.Sprintf("/api/v2.0/projects/team/webhook/policies/%d/executions", pid)
	json.Unmarshal(api(200, "GET", base, ""), &execs)
	if len(execs) != 5 || execs[0].Status != "Success" || execs[0].Metrics.TaskCount != 1 || execs[0].ExtraAttrs["event_type"] != "PUSH_ARTIFACT" {
		t.Errorf("executions = %+v, want 5, the newest a Success", execs)
	}
	var tasks []struct {
		ID       int64  `json:"id"`
		Status   string `json:"status"`
		RunCount int    `json:"run_count"`
	}
	json.Unmarshal(api(200, "GET", fmt.Sprintf("%s/%d/tasks", base, execs[0].ID), ""), &tasks)
	if len(tasks) != 1 || tasks[0].RunCount < 2 || tasks[0].Status != "Success" {
		t.Errorf("tasks of the delivery across the restart = %+v, want Success after 2 attempts or more", tasks)
	}
	if b := api(200, "GET", fmt.Sprintf("%s/%d/tasks/%d/log", base, execs[0].ID, tasks[0].ID), ""); !strings.Contains(string(b), "HTTP 503") {
		t.Errorf("task log = %s", b)
	}

	// A hanging receiver does not slow pushes: push latency with it equals latency without.
	timePushes := func() time.Duration {
		var d []time.Duration
		for i := range 5 {
			img := testImage(t)
			start := time.Now()
			if err := remoteWrite(s, t, fmt.Sprintf("team/timed:%d", i), img); err != nil {
				t.Fatal(err)
			}
			d = append(d, time.Since(start))
		}
		slices.Sort(d)
		return d[len(d)/2]
	}
	api(200, "PUT", fmt.Sprintf("/api/v2.0/projects/team/webhook/policies/%d", pid), fmt.Sprintf(`{"name":"ci","enabled":false,
		"event_types":["PUSH_ARTIFACT"],"targets":[{"address":%q}]}`, rc.srv.URL))
	none := timePushes()
	rc.setMode("hang")
	api(200, "PUT", fmt.Sprintf("/api/v2.0/projects/team/webhook/policies/%d", pid), fmt.Sprintf(`{"name":"ci","enabled":true,
		"event_types":["PUSH_ARTIFACT"],"targets":[{"address":%q}]}`, rc.srv.URL))
	hanging := timePushes()
	t.Logf("median push: %v with no policy, %v with a receiver that hangs", none, hanging)
	if hanging > 2*none+200*time.Millisecond {
		t.Errorf("a hanging receiver slowed pushes: median %v, %v without", hanging, none)
	}
	rc.setMode("")

	// A system policy receives the pulls of mirrored images.
	sys := newHookReceiver(t)
	api(201, "POST", "/api/v2.0/system/webhook/policies", fmt.Sprintf(`{"name":"mirror-pulls","enabled":true,
		"event_types":["PULL_ARTIFACT"],"targets":[{"address":%q,"payload_format":"CloudEvents"}]}`, sys.srv.URL))
	if _, err := pullAll(t, s, "app:1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the mirrored pull to reach the system policy", func() bool { return len(sys.delivered(t)) >= 1 })
	var ce struct {
		SpecVersion string `json:"specversion"`
		Type        string `json:"type"`
		Data        struct {
			Repository struct {
				RepoFullName string `json:"repo_full_name"`
			} `json:"repository"`
		} `json:"data"`
	}
	d := sys.delivered(t)[0]
	if err := json.Unmarshal(d.body, &ce); err != nil || ce.SpecVersion != "1.0" || ce.Type != "harbor.artifact.pulled" ||
		ce.Data.Repository.RepoFullName != "library/app" || d.contentType != "application/cloudevents+json" {
		t.Errorf("mirrored pull's CloudEvent = %s (%v)", d.body, err)
	}
}
