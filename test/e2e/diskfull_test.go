package e2e

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestDiskFull runs cove on a small tmpfs and fills it with an upload: the request fails with a
// clear error, nothing partial remains, and once the failed upload is gone cove takes pushes and
// restarts as before (docs/SECURITY.md 5).
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		missing(t, "TestDiskFull needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })

	s := startCove(t, dir)
	s.createProject("team", false)
	img := testImage(t)
	if err := remoteWrite(s, t, "team/before:v1", img); err != nil {
		t.Fatal(err)
	}

	resp, b := s.do("POST", "/v2/team/big/blobs/uploads/", nil, true)
	if resp.StatusCode != 202 {
		t.Fatalf("start upload = %d %s", resp.StatusCode, b)
	}
	loc := resp.Header.Get("Location")
	// 256 MiB of random bytes, streamed: more than the filesystem holds.
	req, _ := http.NewRequest("PATCH", s.url+loc, io.LimitReader(rand.Reader, 256<<20))
	req.SetBasicAuth("admin", adminPassword)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusInsufficientStorage || !strings.Contains(string(b), "storage is full") {
			t.Errorf("PATCH on a full disk = %d %s, want 507 saying the storage is full", resp.StatusCode, b)
		}
	} else {
		// cove may answer while the body is still being sent; the client then sees the close.
		t.Logf("PATCH on a full disk: %v", err)
	}
	waitFor(t, 10*time.Second, "the failed chunk to be rolled back", func() bool {
		_, n := tmpBytes(dir)
		return n == 0
	})
	resp, _ = s.do("GET", loc, nil, true)
	if resp.StatusCode != 204 || resp.Header.Get("Range") != "0-0" {
		t.Errorf("upload after the failed chunk = %d, Range %q; want it open and empty", resp.StatusCode, resp.Header.Get("Range"))
	}
	s.do("DELETE", loc, nil, true)

	// The store is consistent: old content pulls, a new push lands, a restart finds both.
	checkImage(t, s.ref(t, "team/before:v1"), img, adminAuth)
	small := []byte("after the disk was full")
	d := digest.FromBytes(small)
	if resp, b := s.do("POST", "/v2/team/after/blobs/uploads/?digest="+d.String(), bytes.NewReader(small), true); resp.StatusCode != 201 {
		t.Fatalf("push after disk full = %d %s", resp.StatusCode, b)
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	s = startCove(t, dir)
	checkImage(t, s.ref(t, "team/before:v1"), img, adminAuth)
	if resp, got := s.do("GET", "/v2/team/after/blobs/"+d.String(), nil, true); resp.StatusCode != 200 || !bytes.Equal(got, small) {
		t.Errorf("blob pushed after disk full, after restart = %d %q", resp.StatusCode, got)
	}
	s.stop()
}
