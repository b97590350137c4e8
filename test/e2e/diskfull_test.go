package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
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
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", dir).CombinedOutput(); err != nil {
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

// smallDisk mounts a tmpfs of size MiB for a test and returns its path.
func smallDisk(t *testing.T, mib int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, t.Name()+" needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", mib), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// freeBytes is what the file system of dir has free.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// fillDisk takes all but leave bytes of dir's file system with a file outside cove's data, as
// another program would; removing the file frees them.
func fillDisk(t *testing.T, dir string, leave int64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := freeBytes(t, dir) - leave; n > 0 {
		if err := syscall.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
			t.Fatalf("fallocate %d: %v", n, err)
		}
	}
	return path
}

// fillDiskToTheLastByte takes every byte of dir's file system left, as a runaway program would,
// even while cove writes: what frees up before the file is complete is taken too.
func fillDiskToTheLastByte(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var off int64
	for step := freeBytes(t, dir); step >= 4096; {
		if err := syscall.Fallocate(int(f.Fd()), 0, off, step); err != nil {
			step /= 2 // cove took some meanwhile
			continue
		}
		off += step
		step = max(freeBytes(t, dir), step/2)
	}
	for i := 0; i < 4096; i++ { // the last blocks, one by one
		if err := syscall.Fallocate(int(f.Fd()), 0, off, 4096); err != nil {
			break
		}
		off += 4096
	}
	if free := freeBytes(t, dir); free != 0 {
		t.Logf("%d bytes still free after filling the disk", free)
	}
	return path
}

// TestMirrorKeepsTheFreeSpaceFloor: with mirror.max_size far above the disk, anonymous pulls
// cannot fill it: mirrored content is evicted to keep storage.min_free; a blob that cannot fit
// is refused with 507, and cove goes on (it crashed with SIGBUS in badger on a full disk).
func TestMirrorKeepsTheFreeSpaceFloor(t *testing.T) {
	disk := smallDisk(t, 160)
	data := filepath.Join(disk, "data")
	reg := startRegistry(t, "", nil)
	var images []string
	for i := range 6 {
		img, err := random.Image(20<<20, 1)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("library/big%d:1", i)
		reg.seed(t, name, img)
		images = append(images, fmt.Sprintf("big%d:1", i))
	}
	huge, err := random.Image(100<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	reg.seed(t, "library/huge:1", huge)
	s := startMirror(t, data, mirrorConfig(reg.url, "  max_size: 10GiB\nstorage:\n  min_free: 16MiB\n"))
	for _, ref := range images { // 120 MiB of layers through a 96 MiB disk
		if _, err := pullAll(t, s, ref); err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		if free := freeBytes(t, disk); free < 16<<20 {
			t.Errorf("after %s the disk has %d MiB free, under the 16 MiB floor", ref, free>>20)
		}
	}
	if n := metricValue(t, s, "cove_mirror_evictions_total"); n == 0 {
		t.Error("nothing was evicted to keep the floor")
	}
	_, err = pullAll(t, s, "huge:1")
	if err == nil || !strings.Contains(err.Error(), "507") && !strings.Contains(err.Error(), "storage") {
		t.Errorf("a 100 MiB layer on a 96 MiB disk = %v, want a 507", err)
	}
	if resp, _ := s.do("GET", "/healthz", nil, false); resp.StatusCode != 200 {
		t.Fatalf("cove is not healthy after the refusal: %d", resp.StatusCode)
	}
	if _, err := pullAll(t, s, images[5]); err != nil {
		t.Errorf("pull after the refusal: %v", err)
	}
	if free := freeBytes(t, disk); free < 16<<20 {
		t.Errorf("the disk ends with %d MiB free, under the floor", free>>20)
	}
}

// TestFullDiskNeitherCrashesNorLocksCoveOut: a disk filled by someone else — a flood of
// anonymous failed logins (each once wrote an audit record at once) does not crash cove, pushes
// get 507 saying why; a start on the full disk comes up read-only and serves what it has; once
// space is freed, a restart writes again.
func TestFullDiskNeitherCrashesNorLocksCoveOut(t *testing.T) {
	disk := smallDisk(t, 160)
	data := filepath.Join(disk, "data")
	s := startMirror(t, data, "storage:\n  min_free: 16MiB\n")
	s.createProject("team", false)
	img := testImage(t)
	if err := remoteWrite(s, t, "team/kept:v1", img); err != nil {
		t.Fatal(err)
	}
	filler := fillDisk(t, disk, 2<<20) // 2 MiB left: under half the floor

	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < 3000 && time.Now().Before(deadline); i++ {
		req, _ := http.NewRequest("GET", s.url+"/service/token?service=cove&scope=repository:team/kept:pull", nil)
		req.SetBasicAuth(fmt.Sprintf("nobody%d", i%50), "wrong-Password1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("failed login %d: %v (cove died?)", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 && resp.StatusCode != 429 {
			t.Fatalf("failed login %d = %d, want 401 or 429", i, resp.StatusCode)
		}
	}
	if resp, _ := s.do("GET", "/healthz", nil, false); resp.StatusCode != 200 {
		t.Fatalf("cove is not healthy after the flood: %d", resp.StatusCode)
	}
	if n := metricValue(t, s, "cove_audit_dropped_total"); n == 0 {
		t.Error("no audit record was dropped on the full disk: they were written into the index")
	}
	if resp, b := s.doAs("POST", "/api/v2.0/projects", strings.NewReader(`{"project_name":"later"}`), "admin", adminPassword); resp.StatusCode != http.StatusInsufficientStorage {
		t.Errorf("a change through the API on the full disk = %d %s, want 507", resp.StatusCode, b)
	}
	small := []byte("a push on a full disk")
	resp, b := s.do("POST", "/v2/team/new/blobs/uploads/?digest="+digest.FromBytes(small).String(), bytes.NewReader(small), true)
	if resp.StatusCode != http.StatusInsufficientStorage || !strings.Contains(string(b), "storage.min_free") {
		t.Errorf("a push on the full disk = %d %s, want 507 naming storage.min_free", resp.StatusCode, b)
	}
	checkImage(t, s.ref(t, "team/kept:v1"), img, adminAuth)
	if code := s.stop(); code != 0 {
		t.Fatalf("cove exited %d on the full disk", code)
	}

	// A start on the full disk: read-only, serving what it has.
	s = startMirror(t, data, "storage:\n  min_free: 16MiB\n")
	if !strings.Contains(s.log(), "READ-ONLY") {
		t.Errorf("no read-only line at a start on a full disk:\n%s", s.tail(10))
	}
	checkImage(t, s.ref(t, "team/kept:v1"), img, adminAuth)
	resp, b = s.do("POST", "/v2/team/new/blobs/uploads/", nil, true)
	if resp.StatusCode != http.StatusInsufficientStorage || !strings.Contains(string(b), "read-only") {
		t.Errorf("an upload on a read-only cove = %d %s, want 507 saying read-only", resp.StatusCode, b)
	}
	if n := metricValue(t, s, "cove_read_only"); n != 1 {
		t.Errorf("cove_read_only = %v, want 1", n)
	}
	// Changes through the API answer 507, twice (a panic once left a lock held: the second hung),
	// and a key rotation touches nothing.
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/api/v2.0/projects", `{"project_name":"later"}`},
		{"POST", "/api/v2.0/projects", `{"project_name":"later"}`},
		{"POST", "/api/v2.0/users", `{"username":"dave","email":"d@example.org","password":"DavePw1xyz"}`},
		{"POST", "/api/v2.0/system/token-key/rotate", ""},
	} {
		if resp, b := s.doAs(c.method, c.path, strings.NewReader(c.body), "admin", adminPassword); resp.StatusCode != http.StatusInsufficientStorage {
			t.Errorf("%s %s on a read-only cove = %d %s, want 507", c.method, c.path, resp.StatusCode, b)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "keys", "token-signing.pem")); err != nil {
		t.Errorf("the signing key after a refused rotation: %v", err)
	}
	s.stop()

	// Space back: a restart writes again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s = startMirror(t, data, "storage:\n  min_free: 16MiB\n")
	if resp, b := s.do("POST", "/v2/team/new/blobs/uploads/?digest="+digest.FromBytes(small).String(), bytes.NewReader(small), true); resp.StatusCode != 201 {
		t.Errorf("a push once space is back = %d %s", resp.StatusCode, b)
	}
	checkImage(t, s.ref(t, "team/kept:v1"), img, adminAuth)
	s.stop()
}

// TestDiskFilledToTheLastByte: another program takes the disk's last byte while cove runs —
// under the floor, with index writes in flight — and later while cove is down after a kill -9
// with entries to replay. cove neither crashes (a SIGBUS in badger's memory-mapped files at
// close, or at replay) nor stays locked out: it starts read-only and serves what it has.
func TestDiskFilledToTheLastByte(t *testing.T) {
	disk := smallDisk(t, 160)
	data := filepath.Join(disk, "data")
	const cfg = "storage:\n  min_free: 16MiB\n"
	s := startMirror(t, data, cfg)
	s.createProject("team", false)
	img := testImage(t)
	if err := remoteWrite(s, t, "team/kept:v1", img); err != nil {
		t.Fatal(err)
	}
	filler := fillDiskToTheLastByte(t, disk)
	for i := range 200 { // index writes refused, audit records dropped; none may fault
		req, _ := http.NewRequest("GET", s.url+"/service/token?service=cove&scope=repository:team/kept:pull", nil)
		req.SetBasicAuth(fmt.Sprintf("nobody%d", i%50), "wrong-Password1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("failed login %d: %v (cove died?)\n%s", i, err, s.tail(10))
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	checkImage(t, s.ref(t, "team/kept:v1"), img, adminAuth)
	if code := s.stop(); code != 0 {
		t.Fatalf("cove exited %d at a SIGTERM on a disk full to the last byte:\n%s", code, s.tail(20))
	}
	os.Remove(filler)

	// pushThenKill leaves entries to replay: a push, then kill -9.
	pushThenKill := func(ref string) {
		t.Helper()
		s := startMirror(t, data, cfg)
		if err := remoteWrite(s, t, ref, img); err != nil {
			t.Fatal(err)
		}
		s.kill()
	}
	// The disk fills up while cove is down.
	pushThenKill("team/kept:v2")
	filler = fillDiskToTheLastByte(t, disk)
	s = startMirror(t, data, cfg)
	if !strings.Contains(s.log(), "READ-ONLY") {
		t.Errorf("no read-only line at a start on a full disk:\n%s", s.tail(10))
	}
	checkImage(t, s.ref(t, "team/kept:v2"), img, adminAuth)
	if code := s.stop(); code != 0 {
		t.Fatalf("cove exited %d at a SIGTERM, read-only on a full disk:\n%s", code, s.tail(20))
	}
	os.Remove(filler)

	// Once more after a kill -9, and this time the filler also takes the reserve's room (a
	// program that keeps writing): the start refuses with a clear error (exit 1), never a SIGBUS
	// (reading the index's memory maps faulted on tmpfs); with space back, cove starts.
	pushThenKill("team/kept:v2b")
	os.Remove(filepath.Join(data, "index.reserve"))
	filler = fillDiskToTheLastByte(t, disk)
	path := filepath.Join(t.TempDir(), "cove.yaml")
	os.WriteFile(path, []byte(cfg), 0o600)
	cmd := execCove("serve", "--config", path, "--listen", "127.0.0.1:0", "--data", data)
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "free space and start cove again") {
		t.Errorf("a start on a disk full to the last byte: exit %d, want 1 with a clear error:\n%.2000s", code, out)
	}
	os.Remove(filler)
	s = startMirror(t, data, cfg)
	if err := remoteWrite(s, t, "team/kept:v3", img); err != nil {
		t.Errorf("a push once space is back: %v", err)
	}
	s.stop()
}
