package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cove/internal/pgtest"
)

// TestMetadataOnPostgres: with storage.metadata.kind postgres, cove keeps its records in
// PostgreSQL (the metadata seam of fleet mode): projects, users and pushed images survive a
// restart; a second node on the same database sees the projects and users; PostgreSQL stopped
// makes /readyz fail, and started again, cove serves on; a bad or unreachable DSN is a clear
// error naming the key.
func TestMetadataOnPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	conf := fmt.Sprintf("storage:\n  metadata:\n    kind: postgres\n    postgres:\n      dsn: %q\n", pg.DSN)
	s := startMirror(t, t.TempDir(), conf)
	if !strings.Contains(s.log(), `"msg":"metadata in PostgreSQL"`) {
		t.Fatalf("cove did not say it keeps its metadata in PostgreSQL:\n%s", s.tail(10))
	}
	s.createProject("team", false)
	if resp, b := s.doAs("POST", "/api/v2.0/users", strings.NewReader(`{"username":"dave","email":"d@example.org","password":"DavePw1xyz"}`), "admin", adminPassword); resp.StatusCode != 201 {
		t.Fatalf("create user = %d %s", resp.StatusCode, b)
	}
	img := testImage(t)
	if err := remoteWrite(s, t, "team/app:v1", img); err != nil {
		t.Fatal(err)
	}
	checkImage(t, s.ref(t, "team/app:v1"), img, adminAuth)

	// A restart finds everything in PostgreSQL (the data dir keeps only blobs and keys).
	dir := s.dir
	s.stop()
	if _, err := os.Stat(filepath.Join(dir, "index")); err == nil {
		t.Error("a badger index was made although the metadata is in PostgreSQL")
	}
	s = startMirror(t, dir, conf)
	checkImage(t, s.ref(t, "team/app:v1"), img, adminAuth)
	if resp, _ := s.doAs("GET", "/api/v2.0/users/current", nil, "dave", "DavePw1xyz"); resp.StatusCode != 200 {
		t.Errorf("dave after a restart = %d", resp.StatusCode)
	}

	// A second node on the same database sees the projects and users (and, its data dir empty,
	// drops none of the records of A's blobs: they are A's).
	b := startMirror(t, t.TempDir(), conf)
	if resp, body := b.doAs("GET", "/api/v2.0/projects/team", nil, "dave", "DavePw1xyz"); resp.StatusCode != 404 && resp.StatusCode != 200 {
		t.Errorf("node B, dave's view of team = %d %s", resp.StatusCode, body)
	}
	if resp, body := b.doAs("GET", "/api/v2.0/projects/team", nil, "admin", adminPassword); resp.StatusCode != 200 {
		t.Errorf("node B does not see the project made on A: %d %s", resp.StatusCode, body)
	}
	// A token signed by A verifies on B: the signing keys are in the database.
	tok := s.token(t, "admin", adminPassword, "repository:team/app:pull")
	if resp, body := b.doBearer("GET", "/v2/team/app/tags/list", tok); resp.StatusCode != 200 || !strings.Contains(string(body), "v1") {
		t.Errorf("node B with node A's token = %d %s", resp.StatusCode, body)
	}
	b.stop()

	// PostgreSQL stopped: not ready; started again: ready, and writes work.
	pg.Stop()
	waitFor(t, 20*time.Second, "/readyz to fail without PostgreSQL", func() bool {
		resp, _ := s.do("GET", "/readyz", nil, false)
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	pg.Restart(t)
	waitFor(t, 30*time.Second, "/readyz once PostgreSQL is back", func() bool {
		resp, _ := s.do("GET", "/readyz", nil, false)
		return resp.StatusCode == 200
	})
	if err := remoteWrite(s, t, "team/app:v2", img); err != nil {
		t.Errorf("push once PostgreSQL is back: %v", err)
	}
	checkImage(t, s.ref(t, "team/app:v1"), img, adminAuth)
	s.stop()

	// A bad DSN is a configuration error (exit 2); an unreachable one fails the start, naming the key.
	for _, tc := range []struct {
		dsn  string
		code int
	}{
		{"postgres://[bad", 2},
		{fmt.Sprintf("postgres://postgres:x@127.0.0.1:%d/cove?sslmode=disable&connect_timeout=2", freePort(t)), 1},
	} {
		path := filepath.Join(t.TempDir(), "cove.yaml")
		os.WriteFile(path, []byte(fmt.Sprintf("storage:\n  metadata:\n    kind: postgres\n    postgres:\n      dsn: %q\n", tc.dsn)), 0o600)
		cmd := execCove("serve", "--config", path, "--listen", "127.0.0.1:0", "--data", t.TempDir())
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != tc.code || !strings.Contains(string(out), "storage.metadata.postgres.dsn") {
			t.Errorf("DSN %q: exit %d, want %d naming the key:\n%s", tc.dsn, cmd.ProcessState.ExitCode(), tc.code, out)
		}
	}
}
