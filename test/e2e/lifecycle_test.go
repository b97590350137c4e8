package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestRestartKeepsContent pushes, stops cove with SIGTERM, starts it again on the same data
// directory and pulls the same digests.
func TestRestartKeepsContent(t *testing.T) {
	dir := t.TempDir()
	s := startCove(t, dir)
	s.createProject("team", true)
	img := testImage(t)
	if err := remoteWrite(s, t, "team/app:v1", img); err != nil {
		t.Fatal(err)
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("cove exited with %d on SIGTERM", code)
	}
	s = startCove(t, dir)
	checkImage(t, s.ref(t, "team/app:v1"), img) // anonymously: the project is public
	resp, b := s.do("GET", "/api/v2.0/projects/team", nil, false)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"repo_count":1`) {
		t.Errorf("project after restart = %d %s", resp.StatusCode, b)
	}
}

// TestKillDuringChunkedUpload kills cove with SIGKILL while a chunked upload is in progress, a
// chunk half sent. After a restart no partial blob is visible, the upload is gone, tmp/ is empty,
// an earlier acknowledged push is intact and a new upload of the same blob succeeds.
func TestKillDuringChunkedUpload(t *testing.T) {
	dir := t.TempDir()
	s := startCove(t, dir)
	s.createProject("team", false)
	img := testImage(t)
	if err := remoteWrite(s, t, "team/acked:v1", img); err != nil {
		t.Fatal(err)
	}

	blob := make([]byte, 4<<20)
	rand.Read(blob)
	dgst := digest.FromBytes(blob)
	resp, b := s.do("POST", "/v2/team/app/blobs/uploads/", nil, true)
	if resp.StatusCode != 202 {
		t.Fatalf("start upload = %d %s", resp.StatusCode, b)
	}
	loc := resp.Header.Get("Location")
	half := len(blob) / 2
	resp, b = s.do("PATCH", loc, bytes.NewReader(blob[:half]), true, "Content-Range", fmt.Sprintf("0-%d", half-1))
	if resp.StatusCode != 202 {
		t.Fatalf("first chunk = %d %s", resp.StatusCode, b)
	}
	// The second chunk is in flight: part of it has reached cove's temporary file.
	pr, pw := io.Pipe()
	go func() {
		req, _ := http.NewRequest("PATCH", s.url+loc, pr)
		req.SetBasicAuth("admin", adminPassword)
		req.ContentLength = int64(len(blob) - half)
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", half, len(blob)-1))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	if _, err := pw.Write(blob[half : half+(1<<20)]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the in-flight chunk to reach tmp/", func() bool {
		_, n := tmpBytes(dir)
		return n > int64(half)
	})
	s.kill()
	pw.CloseWithError(io.ErrClosedPipe)

	s = startCove(t, dir)
	if files, n := tmpBytes(dir); files != 0 {
		t.Errorf("tmp/ holds %d files (%d bytes) after restart", files, n)
	}
	resp, b = s.do("GET", loc, nil, true)
	if resp.StatusCode != 404 || !strings.Contains(string(b), "BLOB_UPLOAD_UNKNOWN") {
		t.Errorf("upload session after kill = %d %s, want 404 BLOB_UPLOAD_UNKNOWN", resp.StatusCode, b)
	}
	if resp, _ := s.do("HEAD", "/v2/team/app/blobs/"+dgst.String(), nil, true); resp.StatusCode != 404 {
		t.Errorf("partial blob visible after kill: HEAD = %d", resp.StatusCode)
	}
	checkImage(t, s.ref(t, "team/acked:v1"), img, adminAuth)

	resp, b = s.do("POST", "/v2/team/app/blobs/uploads/?digest="+dgst.String(), bytes.NewReader(blob), true)
	if resp.StatusCode != 201 {
		t.Fatalf("new upload after restart = %d %s", resp.StatusCode, b)
	}
	resp, got := s.do("GET", "/v2/team/app/blobs/"+dgst.String(), nil, true)
	if resp.StatusCode != 200 || digest.FromBytes(got) != dgst {
		t.Errorf("blob after new upload = %d, %d bytes", resp.StatusCode, len(got))
	}
}

// TestShutdownFinishesRequestsInFlight sends SIGTERM while an upload is streaming: the upload
// completes with 201, cove exits 0, and the blob is there after a restart.
func TestShutdownFinishesRequestsInFlight(t *testing.T) {
	dir := t.TempDir()
	s := startCove(t, dir)
	s.createProject("team", false)
	blob := make([]byte, 2<<20)
	rand.Read(blob)
	dgst := digest.FromBytes(blob)

	pr, pw := io.Pipe()
	result := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", s.url+"/v2/team/app/blobs/uploads/?digest="+dgst.String(), pr)
		req.SetBasicAuth("admin", adminPassword)
		req.ContentLength = int64(len(blob))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			result <- 0
			return
		}
		resp.Body.Close()
		result <- resp.StatusCode
	}()
	if _, err := pw.Write(blob[:1<<20]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the upload to reach tmp/", func() bool {
		_, n := tmpBytes(dir)
		return n > 0
	})
	if err := s.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "cove to begin shutting down", func() bool {
		return strings.Contains(s.log(), "shutting down")
	})
	if _, err := pw.Write(blob[1<<20:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if code := <-result; code != http.StatusCreated {
		t.Errorf("upload in flight during shutdown = %d, want 201", code)
	}
	if code := s.wait(60 * time.Second); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	s = startCove(t, dir)
	resp, got := s.do("GET", "/v2/team/app/blobs/"+dgst.String(), nil, true)
	if resp.StatusCode != 200 || !bytes.Equal(got, blob) {
		t.Errorf("blob after restart = %d, %d bytes", resp.StatusCode, len(got))
	}
}

// TestOperations checks the health, readiness and metrics endpoints and the access log.
func TestOperations(t *testing.T) {
	s := startCove(t, t.TempDir())
	s.createProject("team", true)
	if err := remoteWrite(s, t, "team/app:v1", testImage(t)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if resp, b := s.do("GET", p, nil, false); resp.StatusCode != 200 {
			t.Errorf("GET %s = %d %s", p, resp.StatusCode, b)
		}
	}
	s.do("GET", "/v2/team/app/manifests/v1", nil, false)
	s.do("GET", "/v2/team/app/manifests/nope", nil, false)
	_, metrics := s.do("GET", "/metrics", nil, false)
	for _, want := range []string{
		`cove_http_requests_total{code="200",method="GET",route="v2_manifest"} 1`,
		`cove_http_requests_total{code="404",method="GET",route="v2_manifest"} 1`,
		`cove_http_request_duration_seconds_bucket{route="v2_upload",le=`,
		`cove_http_response_bytes_total{route="v2_manifest"}`,
		"cove_blobs_stored 6",
		"cove_bytes_stored ",
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// One access-log line per request, with its id, status and route; written within a
	// millisecond (in batches).
	waitFor(t, 10*time.Second, "the access-log line of the 404", func() bool { return strings.Contains(s.log(), `"path":"/v2/team/app/manifests/nope"`) })
	var found bool
	for _, line := range strings.Split(s.log(), "\n") {
		var rec struct {
			Msg, Path, Route string
			RequestID        string `json:"request_id"`
			Status           int
		}
		_ = json.Unmarshal([]byte(line), &rec)
		if rec.Msg == "request" && rec.Path == "/v2/team/app/manifests/nope" {
			if rec.RequestID == "" || rec.Status != 404 || rec.Route != "v2_manifest" {
				t.Errorf("access-log line %s lacks id, status or route", line)
			}
			if found {
				t.Error("two access-log lines for one request")
			}
			found = true
		}
	}
	if !found {
		t.Error("no access-log line for GET /v2/team/app/manifests/nope")
	}
	if strings.Contains(s.log(), adminPassword) {
		t.Error("the admin password appears in the log")
	}
}

// TestBadConfigurationExitsTwo runs the binary with a bad configuration file.
func TestBadConfigurationExitsTwo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cove.yaml")
	if err := os.WriteFile(path, []byte("mirror:\n  max_sise: 1GiB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := execCove("serve", "--config", path, "--data", t.TempDir())
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "mirror.max_sise: unknown key") {
		t.Errorf("exit %d, output %s; want 2 naming mirror.max_sise", code, out)
	}
}

// TestMetricsListen: with metrics_listen, /metrics is served on its own address and not on the
// registry's port (where anyone who reaches the registry would read it).
func TestMetricsListen(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s := startMirror(t, t.TempDir(), "metrics_listen: "+addr+"\n")
	if resp, _ := s.do("GET", "/metrics", nil, false); resp.StatusCode == 200 {
		t.Error("/metrics is still served on the registry's port")
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "cove_storage_free_bytes") || !strings.Contains(string(b), "cove_read_only 0") {
		t.Errorf("metrics_listen /metrics = %d, lacking the storage series", resp.StatusCode)
	}
}
