package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"cove/internal/kv"
)

func openDB(t *testing.T, dir string) kv.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "index")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	return closing{kv.NewBadger(db), db}
}

// closing is a kv.DB whose Close closes badger too.
type closing struct {
	*kv.Badger
	db *badger.DB
}

func (c closing) Close() error {
	c.Badger.Close()
	return c.db.Close()
}

// receiver records deliveries; fail, when set, answers each with its status instead.
type receiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  []delivery
	fail func(n int) int // the status of the nth request (from 1), 0: 200
	hang chan struct{}
}

type delivery struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{hang: make(chan struct{})}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, delivery{r.Header.Clone(), b})
		n, fail := len(rc.got), rc.fail
		rc.mu.Unlock()
		if fail != nil {
			if code := fail(n); code == -1 {
				<-rc.hang
				return
			} else if code != 0 {
				w.WriteHeader(code)
				return
			}
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(func() { close(rc.hang); rc.srv.Close() })
	return rc
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

// waitFor polls cond, for at most 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitUpTo(t, 20*time.Second, what, cond)
}

func waitUpTo(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newDispatcher(t *testing.T, db kv.DB) *Dispatcher {
	t.Helper()
	d, err := New(Config{DB: db, AllowPrivate: true, Host: "cove.example", Backoff: 20 * time.Millisecond, MaxAttempts: 4, Timeout: 2 * time.Second,
		Project: func(_ context.Context, name string) (int64, bool, error) {
			if name == "team" {
				return 7, false, nil
			}
			return 0, false, errors.New("no such project")
		},
		RepoCreated: func(context.Context, string) time.Time { return time.Unix(1_690_000_000, 0) },
		FirstTag: func(_ context.Context, repo, dgst string) string {
			if repo == "team/app" && dgst == "sha256:dd" {
				return "v9"
			}
			return ""
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A push reaches each target of a policy once, in its format: Harbor's Default payload, or a
// CloudEvent; with the auth header, a delivery id, and a signature that verifies.
func TestDelivery(t *testing.T) {
	rc := newReceiver(t)
	d := newDispatcher(t, openDB(t, t.TempDir()))
	defer d.Close()
	ctx := context.Background()
	_, err := d.Policies().Create(ctx, 7, "team", Policy{Name: "ci", Enabled: true, EventTypes: []string{PushArtifact}, Secret: "s3cret",
		Targets: []Target{{Address: rc.srv.URL + "/default", AuthHeader: "Bearer t0k"}, {Address: rc.srv.URL + "/ce", PayloadFormat: FormatCloudEvents}}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	d.Notify(Event{Type: PullArtifact, Repo: "team/app", Digest: "sha256:aa", Operator: "bob"})  // not wanted
	d.Notify(Event{Type: PushArtifact, Repo: "other/app", Digest: "sha256:aa", Operator: "bob"}) // another project
	d.Notify(Event{Type: PushArtifact, Repo: "team/app", Digest: "sha256:ab", Tag: "v1", Operator: "bob", Time: time.Unix(1_700_000_000, 0)})
	waitFor(t, "two deliveries", func() bool { return len(rc.deliveries()) >= 2 })
	var def, ce delivery
	for _, g := range rc.deliveries() {
		if g.header.Get("Content-Type") == "application/cloudevents+json" {
			ce = g
		} else {
			def = g
		}
	}
	var p struct {
		Type      string `json:"type"`
		OccurAt   int64  `json:"occur_at"`
		Operator  string `json:"operator"`
		EventData struct {
			Resources []struct {
				Digest, Tag string
				ResourceURL string `json:"resource_url"`
			} `json:"resources"`
			Repository struct {
				DateCreated  int64  `json:"date_created"`
				Name         string `json:"name"`
				Namespace    string `json:"namespace"`
				RepoFullName string `json:"repo_full_name"`
				RepoType     string `json:"repo_type"`
			} `json:"repository"`
		} `json:"event_data"`
	}
	if err := json.Unmarshal(def.body, &p); err != nil {
		t.Fatalf("default payload %s: %v", def.body, err)
	}
	r := p.EventData.Repository
	if p.Type != PushArtifact || p.OccurAt != 1_700_000_000 || p.Operator != "bob" || len(p.EventData.Resources) != 1 ||
		p.EventData.Resources[0].Digest != "sha256:ab" || p.EventData.Resources[0].Tag != "v1" || p.EventData.Resources[0].ResourceURL != "cove.example/team/app:v1" ||
		r.Name != "app" || r.Namespace != "team" || r.RepoFullName != "team/app" || r.RepoType != "private" || r.DateCreated != 1_690_000_000 {
		t.Errorf("default payload = %s", def.body)
	}
	if def.header.Get("Authorization") != "Bearer t0k" || def.header.Get(HeaderEvent) != PushArtifact || def.header.Get(HeaderDelivery) == "" {
		t.Errorf("default delivery's headers = %v", def.header)
	}
	if got := def.header.Get(HeaderSignature); got != Sign("s3cret", def.body) || !strings.HasPrefix(got, "sha256=") {
		t.Errorf("signature %q does not verify", got)
	}
	var c map[string]any
	if err := json.Unmarshal(ce.body, &c); err != nil || c["specversion"] != "1.0" || c["type"] != "harbor.artifact.pushed" ||
		c["source"] != "/projects/7/webhook/policies/1" || c["id"] != ce.header.Get(HeaderDelivery) || c["data"] == nil {
		t.Errorf("CloudEvent = %s (%v)", ce.body, err)
	}
	if len(rc.deliveries()) != 2 {
		t.Errorf("%d deliveries, want 2", len(rc.deliveries()))
	}
}

// A receiver that fails is tried again after a back-off that grows, with the same delivery id,
// until it answers: delivered once; the task says how many attempts it took. One that never
// answers ends in Error, with the last error, after the maximum of attempts.
func TestRetries(t *testing.T) {
	rc := newReceiver(t)
	rc.fail = func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return 0
	}
	d := newDispatcher(t, openDB(t, t.TempDir()))
	defer d.Close()
	ctx := context.Background()
	pol, err := d.Policies().Create(ctx, 7, "team", Policy{Name: "ci", Enabled: true, EventTypes: []string{DeleteArtifact},
		Targets: []Target{{Address: rc.srv.URL}}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	d.Notify(Event{Type: DeleteArtifact, Repo: "team/app", Digest: "sha256:ab"})
	waitFor(t, "the execution to end", func() bool {
		ex, _ := d.Policies().Executions(ctx, pol.ID)
		return len(ex) == 1 && ex[0].Status == statusSuccess
	})
	got := rc.deliveries()
	if len(got) != 3 || got[0].header.Get(HeaderDelivery) != got[2].header.Get(HeaderDelivery) {
		t.Fatalf("%d attempts, want 3 with one delivery id", len(got))
	}
	ex, _ := d.Policies().Executions(ctx, pol.ID)
	tasks, err := d.Policies().Tasks(ctx, pol.ID, ex[0].ID)
	if err != nil || len(tasks) != 1 || tasks[0].RunCount != 3 || tasks[0].Status != statusSuccess {
		t.Errorf("tasks = %+v, %v", tasks, err)
	}
	if log, _ := d.Policies().TaskLog(ctx, pol.ID, ex[0].ID, tasks[0].ID); strings.Count(log, "attempt") != 3 || !strings.Contains(log, "HTTP 503") {
		t.Errorf("task log = %q", log)
	}

	rc.fail = nil
	rc.mu.Lock()
	rc.fail = func(int) int { return http.StatusInternalServerError }
	rc.mu.Unlock()
	d.Notify(Event{Type: DeleteArtifact, Repo: "team/app", Digest: "sha256:cd"})
	waitFor(t, "the failing execution to end", func() bool {
		ex, _ := d.Policies().Executions(ctx, pol.ID)
		return len(ex) == 2 && ex[0].Status == statusError
	})
	ex, _ = d.Policies().Executions(ctx, pol.ID)
	if ex[0].StatusMessage != "HTTP 500" || ex[0].Metrics.ErrorTaskCount != 1 {
		t.Errorf("failed execution = %+v", ex[0])
	}
	if n := len(rc.deliveries()); n != 3+4 {
		t.Errorf("%d attempts in all, want 3 + the maximum of 4", n)
	}
}

// Deliveries pending when cove stops are delivered after it starts again: the queue is in the
// metadata store.
func TestRestartDelivers(t *testing.T) {
	dir := t.TempDir()
	rc := newReceiver(t)
	down := true
	var mu sync.Mutex
	rc.fail = func(int) int {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return http.StatusBadGateway
		}
		return 0
	}
	db := openDB(t, dir)
	d := newDispatcher(t, db)
	ctx := context.Background()
	pol, err := d.Policies().Create(ctx, 7, "team", Policy{Name: "ci", Enabled: true, EventTypes: []string{PushArtifact},
		Targets: []Target{{Address: rc.srv.URL}}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	d.Notify(Event{Type: PushArtifact, Repo: "team/app", Digest: "sha256:ab"})
	waitFor(t, "a failed attempt", func() bool { return len(rc.deliveries()) >= 1 })
	d.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	db = openDB(t, dir)
	defer db.Close()
	d = newDispatcher(t, db)
	defer d.Close()
	waitFor(t, "the delivery after the restart", func() bool {
		ex, _ := d.Policies().Executions(ctx, pol.ID)
		return len(ex) == 1 && ex[0].Status == statusSuccess
	})
	ok := 0
	for range rc.deliveries() {
		ok++
	}
	if ok < 2 {
		t.Errorf("%d attempts, want the failed one and the one after the restart", ok)
	}
}

// Targets: link-local addresses are refused always, loopback and private ones unless allowed;
// and a connection is checked where it goes, whatever the address given said.
func TestTargets(t *testing.T) {
	for _, c := range []struct {
		addr         string
		allowPrivate bool
		ok           bool
	}{
		{"http://169.254.169.254/latest/meta-data", true, false},
		{"http://[fe80::1]/", true, false},
		{"http://127.0.0.1:5000/", false, false},
		{"http://localhost:5000/", false, false},
		{"http://10.1.2.3/", false, false},
		{"http://[::1]/", false, false},
		{"http://127.0.0.1:5000/", true, true},
		{"http://0.0.0.0/", true, false},
		{"https://ci.example.com/hook", false, true},
		{"ftp://ci.example.com/", false, false},
		{"http://user:pw@ci.example.com/", false, false},
	} {
		p := Policy{Name: "x", EventTypes: []string{PushArtifact}, Targets: []Target{{Address: c.addr}}}
		if err := p.validate(c.allowPrivate); (err == nil) != c.ok {
			t.Errorf("%s (allow private %v): %v, want ok %v", c.addr, c.allowPrivate, err, c.ok)
		}
	}
	rc := newReceiver(t)
	client := newClient(false, false, time.Second)
	if _, err := client.Post(rc.srv.URL, "application/json", strings.NewReader("{}")); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("a connection to loopback without allow_private_targets: %v", err)
	}
	if len(rc.deliveries()) != 0 {
		t.Error("the loopback receiver was reached")
	}
}

// Notify never waits: with the store not taking events, they are dropped and counted.
func TestNotifyNeverBlocks(t *testing.T) {
	d := newDispatcher(t, openDB(t, t.TempDir()))
	ctx := context.Background()
	rc := newReceiver(t)
	if _, err := d.Policies().Create(ctx, 7, "team", Policy{Name: "ci", Enabled: true, EventTypes: []string{PullArtifact},
		Targets: []Target{{Address: rc.srv.URL}}}, "alice"); err != nil {
		t.Fatal(err)
	}
	d.Close() // the writer is gone: nothing takes events any more
	start := time.Now()
	for range queueCap + 10 {
		d.Notify(Event{Type: PullArtifact, Repo: "team/app", Digest: "sha256:ab"})
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("%d notifications took %v", queueCap+10, el)
	}
	if d.Dropped() == 0 {
		t.Error("nothing was counted dropped")
	}
}

// One tenant's hanging receiver does not hold another's deliveries: each policy has at most two
// in flight, and the policies take turns.
func TestFairness(t *testing.T) {
	slow, fast := newReceiver(t), newReceiver(t)
	slow.fail = func(int) int { return -1 } // hangs
	d := newDispatcher(t, openDB(t, t.TempDir()))
	defer d.Close()
	ctx := context.Background()
	if _, err := d.Policies().Create(ctx, 7, "team", Policy{Name: "hangs", Enabled: true, EventTypes: []string{PullArtifact},
		Targets: []Target{{Address: slow.srv.URL}}}, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Policies().Create(ctx, 0, "", Policy{Name: "mirror", Enabled: true, EventTypes: []string{PullArtifact},
		Targets: []Target{{Address: fast.srv.URL}}}, "admin"); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		d.Notify(Event{Type: PullArtifact, Repo: "team/app", Digest: "sha256:ab"})
	}
	waitFor(t, "the hanging receiver to hold its slots", func() bool { return len(slow.deliveries()) >= 2 })
	d.Notify(Event{Type: PullArtifact, Repo: "docker.io/library/alpine", Name: "alpine", Mirrored: true, Digest: "sha256:cd"})
	waitFor(t, "the other policy's delivery", func() bool { return len(fast.deliveries()) == 1 })
	if n := len(slow.deliveries()); n > 2 {
		t.Errorf("the hanging receiver has %d deliveries in flight, want at most 2", n)
	}
}

// A fast receiver gets events as fast as they come, not one round a second; many policies with
// many targets each are stored whatever the batch (one transaction per execution).
func TestThroughputAndFanOut(t *testing.T) {
	rc := newReceiver(t)
	d := newDispatcher(t, openDB(t, t.TempDir()))
	defer d.Close()
	ctx := context.Background()
	targets := make([]Target, 10)
	for i := range targets {
		targets[i] = Target{Address: fmt.Sprintf("%s/t%d", rc.srv.URL, i)}
	}
	for i := range 30 {
		if _, err := d.Policies().Create(ctx, 7, "team", Policy{Name: fmt.Sprintf("p%d", i), Enabled: true, EventTypes: []string{PushArtifact},
			Targets: targets}, "alice"); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for range 5 {
		d.Notify(Event{Type: PushArtifact, Repo: "team/app", Digest: "sha256:ab"})
	}
	// Refilled as they end, 1500 take seconds (2.5 s here under the race detector); a round a
	// second, 8 at a time, would take more than three minutes.
	waitUpTo(t, time.Minute, "1500 deliveries", func() bool { return len(rc.deliveries()) >= 5*30*10 })
	t.Logf("1500 deliveries in %v", time.Since(start))
	if d.Dropped() != 0 {
		t.Errorf("%d events dropped", d.Dropped())
	}
}

// A disabled policy sends nothing more, not even what was waiting; a target taken out of a policy
// gets nothing more with its old settings.
func TestDisabledPolicyStops(t *testing.T) {
	rc := newReceiver(t)
	rc.fail = func(int) int { return http.StatusServiceUnavailable }
	d := newDispatcher(t, openDB(t, t.TempDir()))
	defer d.Close()
	ctx := context.Background()
	p := Policy{Name: "ci", Enabled: true, EventTypes: []string{PushArtifact}, Targets: []Target{{Address: rc.srv.URL + "/old", AuthHeader: "Bearer old"}}}
	pol, err := d.Policies().Create(ctx, 7, "team", p, "alice")
	if err != nil {
		t.Fatal(err)
	}
	d.Notify(Event{Type: PushArtifact, Repo: "team/app", Digest: "sha256:ab"})
	waitFor(t, "a failed attempt", func() bool { return len(rc.deliveries()) >= 1 })
	p.Targets = []Target{{Address: rc.srv.URL + "/new"}}
	if _, err := d.Policies().Update(ctx, 7, pol.ID, p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pending delivery to stop", func() bool {
		ex, _ := d.Policies().Executions(ctx, pol.ID)
		return len(ex) == 1 && ex[0].Status == statusStopped
	})
	for _, g := range rc.deliveries()[1:] {
		if g.header.Get("Authorization") == "Bearer old" {
			t.Error("the removed target's auth header was sent again")
		}
	}
	p.Enabled = false
	d.Policies().Update(ctx, 7, pol.ID, p)
	d.Notify(Event{Type: PushArtifact, Repo: "team/app", Digest: "sha256:cd"})
	if ex, _ := d.Policies().Executions(ctx, pol.ID); len(ex) != 1 {
		t.Errorf("a disabled policy got %d executions, want still 1", len(ex))
	}
}

// A policy whose receiver is far behind takes no more than maxPending deliveries; the rest are
// dropped and counted.
func TestPendingBound(t *testing.T) {
	rc := newReceiver(t)
	rc.fail = func(int) int { return -1 }
	d := newDispatcher(t, openDB(t, t.TempDir()))
	defer d.Close()
	ctx := context.Background()
	pol, err := d.Policies().Create(ctx, 7, "team", Policy{Name: "ci", Enabled: true, EventTypes: []string{PullArtifact},
		Targets: []Target{{Address: rc.srv.URL}}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	for range maxPending + 50 {
		d.Notify(Event{Type: PullArtifact, Repo: "team/app", Digest: "sha256:ab"})
	}
	waitFor(t, "the events to be written or dropped", func() bool { return d.pending(ctx, pol.ID)+int(d.Dropped()) >= maxPending+50-perPolicy })
	if n := d.pending(ctx, pol.ID); n > maxPending {
		t.Errorf("%d deliveries pending, want at most %d", n, maxPending)
	}
	if d.Dropped() < 40 {
		t.Errorf("%d dropped, want about 50", d.Dropped())
	}
}

// An event by digest (docker pulls a tag's digest) names the manifest's tag when it has one; a
// manifest without a tag is named by its digest, as Harbor does.
func TestEventByDigestNamesItsTag(t *testing.T) {
	rc := newReceiver(t)
	d := newDispatcher(t, openDB(t, t.TempDir()))
	defer d.Close()
	if _, err := d.Policies().Create(context.Background(), 7, "team", Policy{Name: "ci", Enabled: true, EventTypes: []string{PullArtifact},
		Targets: []Target{{Address: rc.srv.URL}}}, "alice"); err != nil {
		t.Fatal(err)
	}
	d.Notify(Event{Type: PullArtifact, Repo: "team/app", Digest: "sha256:dd"})
	d.Notify(Event{Type: PullArtifact, Repo: "team/app", Digest: "sha256:ee"})
	waitFor(t, "two deliveries", func() bool { return len(rc.deliveries()) == 2 })
	tags := map[string]bool{}
	for _, g := range rc.deliveries() {
		var p struct {
			EventData struct {
				Resources []struct{ Digest, Tag string } `json:"resources"`
			} `json:"event_data"`
		}
		json.Unmarshal(g.body, &p)
		tags[p.EventData.Resources[0].Tag] = true
	}
	if !tags["v9"] || !tags["sha256:ee"] {
		t.Errorf("tags = %v, want v9 (the digest's tag) and sha256:ee (no tag)", tags)
	}
}
