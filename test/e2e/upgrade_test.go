package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestUpgradeFromPreviousRelease starts a data directory of the previous release (built from git
// by make test: E2E_PREV_COVE_BIN) with this cove: the index is backed up, then migrated, at the
// first start, and everything the old cove held is served — a pushed image, a mirrored one with
// its upstream gone, a user's login. The backup taken before the migration brings the previous
// release back (the way back the README gives).
func TestUpgradeFromPreviousRelease(t *testing.T) {
	prev := os.Getenv("E2E_PREV_COVE_BIN")
	if prev == "" {
		missing(t, "the previous release's cove (E2E_PREV_COVE_BIN; make test builds it from git)")
	}
	if _, err := os.Stat(prev); err != nil {
		t.Fatalf("the previous release's cove: %v (make test builds it from git)", err)
	}
	reg := startRegistry(t, "", nil)
	mirrored := testImage(t)
	reg.seed(t, "library/base:1", mirrored)
	config := filepath.Join(t.TempDir(), "cove.yaml")
	if err := os.WriteFile(config, []byte(mirrorConfig(reg.url, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	old := startCoveBin(t, prev, data, nil, "COVE_CONFIG="+config)
	old.createProject("team", false)
	pushed := testImage(t)
	if err := remote.Write(old.ref(t, "team/app:1"), pushed, adminAuth); err != nil {
		t.Fatalf("push to the previous release: %v", err)
	}
	if resp, body := old.do("POST", "/api/v2.0/users", strings.NewReader(`{"username":"dev","password":"Dev-pass-1234","email":"dev@example.com","realname":"Dev"}`), true); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create user: %d %s", resp.StatusCode, body)
	}
	if _, err := pullAll(t, old, "library/base:1"); err != nil {
		t.Fatalf("pull through the previous release: %v", err)
	}
	if code := old.stop(); code != 0 {
		t.Fatalf("the previous release stopped with %d", code)
	}
	reg.stop()

	s := startCove(t, data, "COVE_CONFIG="+config)
	log := s.log()
	for _, want := range []string{"migrating it", "backed up the index before migrating it", "migrated the index"} {
		if !strings.Contains(log, want) {
			t.Errorf("the first start of the new cove does not log %q:\n%s", want, log)
		}
	}
	backups, _ := filepath.Glob(filepath.Join(data, "backups", "before-schema-*", "cove-backup.json"))
	if len(backups) != 1 {
		t.Fatalf("backups before the migration: %v, want one", backups)
	}
	checkImage(t, s.ref(t, "team/app:1"), pushed, adminAuth)
	if _, err := pullAll(t, s, "library/base:1"); err != nil {
		t.Errorf("the mirrored image after the upgrade, its upstream gone: %v", err)
	}
	if resp, body := s.doAs("GET", "/api/v2.0/users/current", strings.NewReader(""), "dev", "Dev-pass-1234"); resp.StatusCode != http.StatusOK {
		t.Errorf("the user's login after the upgrade: %d %s", resp.StatusCode, body)
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("cove stopped with %d", code)
	}
	// A second start has nothing to migrate.
	s = startCove(t, data, "COVE_CONFIG="+config)
	if strings.Contains(s.log(), "migrating it") {
		t.Errorf("a second start migrated again:\n%s", s.log())
	}
	s.stop()

	// The way back: the index moved aside, the backup restored into the same data directory
	// (whose blob files it shares), the previous release started on it.
	if err := os.Rename(filepath.Join(data, "index"), filepath.Join(data, "index.new")); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runCoveCmd(t, "restore", "--from", filepath.Dir(backups[0]), "--data", data); code != 0 {
		t.Fatalf("restore the backup made before the migration: exit %d\n%s%s", code, out, errOut)
	}
	back := startCoveBin(t, prev, data, nil, "COVE_CONFIG="+config)
	checkImage(t, back.ref(t, "team/app:1"), pushed, adminAuth)
	if _, err := pullAll(t, back, "library/base:1"); err != nil {
		t.Errorf("the mirrored image on the previous release again: %v", err)
	}
}
