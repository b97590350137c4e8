package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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

// runCoveCmd runs the cove binary with args and returns its output and exit status.
func runCoveCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := execCove(args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("cove %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// TestBackupDuringPushesRestores backs up a running cove while clients push to it, restores the
// backup into a new data directory, and pulls every image pushed before the backup began, and
// every tag the backup holds, whole, from a cove started on it; the mirrored image and a user's
// login come back too. A backup taken of the stopped cove restores as well. Bad uses are refused.
func TestBackupDuringPushesRestores(t *testing.T) {
	reg := startRegistry(t, "", nil)
	mirrored := testImage(t)
	reg.seed(t, "library/base:1", mirrored)
	data := t.TempDir()
	s := startMirror(t, data, mirrorConfig(reg.url, ""))
	s.createProject("team", false)
	if resp, body := s.do("POST", "/api/v2.0/users", strings.NewReader(`{"username":"dev","password":"Dev-pass-1234","email":"dev@example.com","realname":"Dev"}`), true); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create user: %d %s", resp.StatusCode, body)
	}
	if _, err := pullAll(t, s, "library/base:1"); err != nil {
		t.Fatalf("pull through the mirror: %v", err)
	}

	// Two clients push while the backup runs.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var mu sync.Mutex
	pushed := map[string]v1.Image{}
	var wg sync.WaitGroup
	push := func(w, i int) {
		img := must(random.Image(32<<10, 3))
		ref := fmt.Sprintf("team/app%d:v%d", w, i)
		if err := remote.Write(s.ref(t, ref), img, adminAuth, remote.WithContext(ctx)); err != nil {
			if ctx.Err() == nil {
				t.Errorf("push %s: %v", ref, err)
			}
			return
		}
		mu.Lock()
		pushed[ref] = img
		mu.Unlock()
	}
	for i := range 5 {
		push(0, i)
	}
	before := map[string]v1.Image{}
	for k, v := range pushed {
		before[k] = v
	}
	stopPush := make(chan struct{})
	for w := range 2 {
		wg.Go(func() {
			for i := 100; i < 400; i++ {
				select {
				case <-stopPush:
					return
				default:
				}
				push(w, i)
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(pushed) }
	waitFor(t, time.Minute, "the pushers to push", func() bool { return count() >= len(before)+4 })
	online := filepath.Join(t.TempDir(), "online")
	out, errOut, code := runCoveCmd(t, "backup", "--to", online, "--data", data)
	after := count()
	waitFor(t, time.Minute, "the pushers to push after the backup", func() bool { return count() >= after+4 })
	close(stopPush)
	wg.Wait()
	if code != 0 {
		t.Fatalf("cove backup of a running cove: exit %d\n%s%s", code, out, errOut)
	}
	var m struct {
		Online  bool
		Records int
		Blobs   int
		Linked  int
		Schema  int
		Missing []string
	}
	if b, err := os.ReadFile(filepath.Join(online, "cove-backup.json")); err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("the backup's manifest: %v\n%s", err, b)
	}
	if !m.Online || m.Blobs == 0 || m.Linked != m.Blobs || m.Schema == 0 {
		t.Errorf("the online backup's manifest: %+v (want online, blobs hard-linked, a schema)", m)
	}
	t.Logf("online backup: %s (%d pushes in all)", strings.TrimSpace(out), len(pushed))

	// A backup goes into a new or empty directory only; a restore never over an index.
	if _, errOut, code := runCoveCmd(t, "backup", "--to", online, "--data", data); code != 1 || !strings.Contains(errOut, "holds a backup already: back up into a new or empty directory") {
		t.Errorf("a backup into a backup: exit %d, %s", code, errOut)
	}
	if _, errOut, code := runCoveCmd(t, "restore", "--from", online, "--data", data); code != 1 || !strings.Contains(errOut, "holds an index already") {
		t.Errorf("a restore over a data directory: exit %d, %s", code, errOut)
	}

	// The restored cove has every image pushed before the backup, and whatever tag it has pulls
	// whole: the records and the files are of one moment.
	restored := t.TempDir()
	if out, errOut, code := runCoveCmd(t, "restore", "--from", online, "--data", restored); code != 0 {
		t.Fatalf("cove restore: exit %d\n%s%s", code, out, errOut)
	}
	reg.stop() // the mirrored image must come from the restored blobs
	r := startMirror(t, restored, mirrorConfig(reg.url, ""))
	for ref, img := range before {
		checkImage(t, r.ref(t, ref), img, adminAuth)
	}
	tags := 0
	for ref, img := range pushed {
		if _, err := remote.Head(r.ref(t, ref), adminAuth); err != nil {
			continue // pushed after the snapshot
		}
		checkImage(t, r.ref(t, ref), img, adminAuth)
		tags++
	}
	if d, err := pullAll(t, r, "library/base:1"); err != nil {
		t.Errorf("the mirrored image from the restored cove, its upstream stopped: %v", err)
	} else if want, _ := mirrored.Digest(); d != want {
		t.Errorf("the mirrored image: %s, want %s", d, want)
	}
	if resp, body := r.doAs("GET", "/api/v2.0/users/current", strings.NewReader(""), "dev", "Dev-pass-1234"); resp.StatusCode != http.StatusOK {
		t.Errorf("the user's login on the restored cove: %d %s", resp.StatusCode, body)
	}
	t.Logf("restored: %d images pushed before the backup and %d tags in all pulled whole", len(before), tags)
	r.stop()

	// A stopped cove is backed up directly from its index.
	if code := s.stop(); code != 0 {
		t.Fatalf("cove stopped with %d", code)
	}
	offline := filepath.Join(t.TempDir(), "offline")
	if out, errOut, code := runCoveCmd(t, "backup", "--to", offline, "--data", data); code != 0 || !strings.Contains(out, "backed up") {
		t.Fatalf("cove backup of a stopped cove: exit %d\n%s%s", code, out, errOut)
	}
	again := t.TempDir()
	if out, errOut, code := runCoveCmd(t, "restore", "--from", offline, "--data", again); code != 0 {
		t.Fatalf("cove restore of the offline backup: exit %d\n%s%s", code, out, errOut)
	}
	a := startMirror(t, again, mirrorConfig(reg.url, ""))
	for ref, img := range pushed {
		checkImage(t, a.ref(t, ref), img, adminAuth)
	}

	// A damaged blob file of a backup is refused, never restored (the backup's files are links to
	// the stopped cove's: it is done with).
	a.stop()
	files, _ := filepath.Glob(filepath.Join(offline, "blobs", "sha256", "*", "*"))
	if len(files) == 0 {
		t.Fatal("the offline backup holds no blob files")
	}
	blob, _ := os.ReadFile(files[0])
	blob[0] ^= 0xff
	os.WriteFile(files[0], blob, 0o600)
	if _, errOut, code := runCoveCmd(t, "restore", "--from", offline, "--data", filepath.Join(t.TempDir(), "x")); code != 1 || !strings.Contains(errOut, "hashes to") || !strings.Contains(errOut, filepath.Base(files[0])) {
		t.Errorf("the restore of a backup with a damaged blob: exit %d, %s", code, errOut)
	}

	// A damaged backup is refused before anything is written.
	recs := filepath.Join(offline, "records.bin.gz")
	b, _ := os.ReadFile(recs)
	b[len(b)/2] ^= 0xff
	os.WriteFile(recs, b, 0o600)
	fresh := filepath.Join(t.TempDir(), "fresh")
	if _, errOut, code := runCoveCmd(t, "restore", "--from", offline, "--data", fresh); code != 1 || !strings.Contains(errOut, "is damaged") {
		t.Errorf("the restore of a damaged backup: exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(fresh, "index")); err == nil {
		t.Error("the restore of a damaged backup wrote an index")
	}
}
