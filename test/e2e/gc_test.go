package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// gcRun is a run of garbage collection as the API shows it.
type gcRun struct {
	ID            int64  `json:"id"`
	JobKind       string `json:"job_kind"`
	JobStatus     string `json:"job_status"`
	JobParameters string `json:"job_parameters"`
	FreedBlobs    int    `json:"freed_blobs"`
	FreedBytes    int64  `json:"freed_bytes"`
	DryRun        bool   `json:"dry_run"`
}

// runGC starts a garbage collection through the API and waits (30 s at most) for its end.
func runGC(t *testing.T, s *server, params string) gcRun {
	t.Helper()
	resp, b := s.doAs("POST", "/api/v2.0/system/gc/schedule", strings.NewReader(`{"schedule":{"type":"Manual"},"parameters":`+params+`}`), "admin", adminPassword)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != 201 || !strings.HasPrefix(loc, "/api/v2.0/system/gc/") {
		t.Fatalf("start gc = %d %s (Location %q)", resp.StatusCode, b, loc)
	}
	var run gcRun
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, b := s.doAs("GET", loc, strings.NewReader(""), "admin", adminPassword)
		if err := json.Unmarshal(b, &run); err != nil {
			t.Fatalf("GET %s: %v: %s", loc, err, b)
		}
		if run.JobStatus != "Pending" && run.JobStatus != "Running" {
			return run
		}
		time.Sleep(50 * time.Millisecond) // polling the run's status, with a deadline
	}
	t.Fatalf("gc %s still %s after 30 s", loc, run.JobStatus)
	return run
}

func blobFile(data string, d v1.Hash) string {
	return filepath.Join(data, "blobs", d.Algorithm, d.Hex[:2], d.Hex)
}

// Garbage collection as a job (HARBOR-API §2): the default schedule, a dry run that frees nothing
// and says what it would, a run that frees the deleted artifact's and the untagged artifact's
// files on disk and nothing else, the history and the log; the schedule changed and refused.
func TestGarbageCollectionJob(t *testing.T) {
	data := t.TempDir()
	s := startCove(t, data)
	s.createProject("team", false)
	deleted, kept, untagged := must(random.Image(1<<20, 2)), must(random.Image(1<<20, 2)), must(random.Image(1<<20, 1))
	for ref, img := range map[string]v1.Image{"team/app:v1": deleted, "team/app:v2": kept} {
		if err := remoteWrite(s, t, ref, img); err != nil {
			t.Fatal(err)
		}
	}
	untaggedDigest := must(untagged.Digest())
	if err := remoteWrite(s, t, "team/app@"+untaggedDigest.String(), untagged); err != nil {
		t.Fatal(err)
	}
	api := func(status int, method, path, body string) []byte {
		t.Helper()
		resp, b := s.doAs(method, path, strings.NewReader(body), "admin", adminPassword)
		if resp.StatusCode != status {
			t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, b, status)
		}
		return b
	}

	var sched struct {
		Schedule struct {
			Type, Cron        string
			NextScheduledTime *time.Time `json:"next_scheduled_time"`
		} `json:"schedule"`
		JobParameters string `json:"job_parameters"`
	}
	json.Unmarshal(api(200, "GET", "/api/v2.0/system/gc/schedule", ""), &sched)
	if sched.Schedule.Type != "Hourly" || sched.Schedule.Cron != "0 0 * * * *" || sched.Schedule.NextScheduledTime == nil {
		t.Errorf("default schedule = %+v", sched)
	}

	api(200, "DELETE", "/api/v2.0/projects/team/repositories/app/artifacts/v1", "")
	var layers []v1.Hash
	for _, l := range must(deleted.Layers()) {
		layers = append(layers, must(l.Digest()))
	}
	freeable := append(append([]v1.Hash{}, layers...), must(deleted.ConfigName()), must(deleted.Digest()), untaggedDigest)

	dry := runGC(t, s, `{"delete_untagged":true,"dry_run":true,"time_window":0}`)
	if dry.JobStatus != "Success" || !dry.DryRun || dry.FreedBlobs < len(layers)+2 {
		t.Fatalf("dry run = %+v", dry)
	}
	log := string(api(200, "GET", fmt.Sprintf("/api/v2.0/system/gc/%d/log", dry.ID), ""))
	for _, l := range layers {
		if !strings.Contains(log, "would free blob "+l.String()) {
			t.Errorf("the dry run's log does not name %s:\n%s", l, log)
		}
	}
	if !strings.Contains(log, "would delete untagged artifact team/app@"+untaggedDigest.String()) {
		t.Errorf("the dry run's log does not name the untagged artifact:\n%s", log)
	}
	for _, d := range freeable {
		if _, err := os.Stat(blobFile(data, d)); err != nil {
			t.Errorf("a dry run removed %s: %v", d, err)
		}
	}

	real := runGC(t, s, `{"delete_untagged":true,"time_window":0}`)
	if real.JobStatus != "Success" || real.DryRun || real.FreedBytes < 3<<20 {
		t.Fatalf("gc = %+v; want Success with the deleted and untagged images' bytes freed", real)
	}
	for _, d := range freeable {
		if _, err := os.Stat(blobFile(data, d)); !os.IsNotExist(err) {
			t.Errorf("%s is still on disk after gc: %v", d, err)
		}
	}
	checkImage(t, s.ref(t, "team/app:v2"), kept, adminAuth)
	if _, err := remote.Get(s.ref(t, "team/app@"+untaggedDigest.String()), adminAuth); err == nil {
		t.Error("the untagged artifact is still served")
	}
	var runs []gcRun
	json.Unmarshal(api(200, "GET", "/api/v2.0/system/gc", ""), &runs)
	if len(runs) != 2 || runs[0].ID != real.ID || runs[1].ID != dry.ID || runs[0].JobKind != "MANUAL" || !strings.Contains(runs[0].JobParameters, `"time_window":0`) {
		t.Errorf("history = %+v", runs)
	}

	// The schedule: a custom cron, refused bad ones, and only admins.
	api(200, "PUT", "/api/v2.0/system/gc/schedule", `{"schedule":{"type":"Custom","cron":"0 0 3 * * *"},"parameters":{"delete_untagged":true,"time_window":4}}`)
	json.Unmarshal(api(200, "GET", "/api/v2.0/system/gc/schedule", ""), &sched)
	if sched.Schedule.Type != "Custom" || sched.Schedule.NextScheduledTime == nil || sched.Schedule.NextScheduledTime.UTC().Hour() != 3 || !strings.Contains(sched.JobParameters, `"time_window":4`) {
		t.Errorf("custom schedule = %+v", sched)
	}
	if b := api(400, "PUT", "/api/v2.0/system/gc/schedule", `{"schedule":{"type":"Custom","cron":"every day"}}`); !strings.Contains(string(b), "six fields") {
		t.Errorf("a bad cron's message = %s", b)
	}
	api(400, "PUT", "/api/v2.0/system/gc/schedule", `{"schedule":{"type":"Manual"}}`)
	api(400, "PUT", "/api/v2.0/system/gc/schedule", `{"schedule":{"type":"Hourly"},"parameters":{"workers":11}}`)
	api(409, "POST", "/api/v2.0/system/gc/schedule", `{"schedule":{"type":"Daily"}}`)
	api(200, "PUT", "/api/v2.0/system/gc/schedule", `{"schedule":{"type":"None"}}`)
	if b := api(200, "GET", "/api/v2.0/system/gc/schedule", ""); string(b) != "{}" {
		t.Errorf("schedule None = %s, want {}", b)
	}
	api(201, "POST", "/api/v2.0/system/gc/schedule", `{"schedule":{"type":"Daily"}}`)
	api(404, "GET", "/api/v2.0/system/gc/999/log", "")
	if resp, b := s.doAs("POST", "/api/v2.0/users", strings.NewReader(`{"username":"dave","email":"d@example.org","password":"DavePw1xyz"}`), "admin", adminPassword); resp.StatusCode != 201 {
		t.Fatalf("create dave = %d %s", resp.StatusCode, b)
	}
	for _, p := range []string{"/api/v2.0/system/gc", "/api/v2.0/system/gc/schedule"} {
		if resp, _ := s.doAs("GET", p, strings.NewReader(""), "dave", "DavePw1xyz"); resp.StatusCode != 403 {
			t.Errorf("GET %s as a user = %d, want 403", p, resp.StatusCode)
		}
	}
}

// Garbage collection with no time window, run again and again while images are pushed, takes no
// blob of a push in flight: every push succeeds, and every pushed image pulls whole afterwards.
func TestGarbageCollectionRacingPushes(t *testing.T) {
	s := startCove(t, t.TempDir())
	s.createProject("team", false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	pushed := map[string]v1.Image{}
	failed := 0
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil && i < 500; i++ {
				img := must(random.Image(64<<10, 3))
				ref := fmt.Sprintf("team/app%d:v%d", w, i)
				err := remote.Write(s.ref(t, ref), img, adminAuth, remote.WithContext(ctx))
				mu.Lock()
				if err == nil {
					pushed[ref] = img
				} else if ctx.Err() == nil {
					failed++
					t.Logf("push %s: %v", ref, err)
				}
				mu.Unlock()
			}
		})
	}
	runs := 0
	for ctx.Err() == nil && runs < 1000 {
		if run := runGC(t, s, `{"time_window":0,"delete_untagged":true}`); run.JobStatus != "Success" {
			_, log := s.doAs("GET", fmt.Sprintf("/api/v2.0/system/gc/%d/log", run.ID), strings.NewReader(""), "admin", adminPassword)
			t.Errorf("gc %d = %+v\n%s", run.ID, run, log)
		}
		runs++
	}
	wg.Wait()
	if len(pushed) < 10 || runs < 5 {
		t.Fatalf("only %d pushes and %d runs of gc in a minute", len(pushed), runs)
	}
	if failed > 0 {
		t.Errorf("%d pushes were refused while gc ran (their blobs were collected before their manifests came)", failed)
	}
	for ref, img := range pushed {
		checkImage(t, s.ref(t, ref), img, adminAuth)
	}
	t.Logf("%d pushes, %d runs of gc; every pushed image pulled whole", len(pushed), runs)
}
