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
	"cove/internal/s3test"
)

// fleetConfig is the configuration of a fleet node: metadata in pg, blobs in the bucket.
func fleetConfig(pg *pgtest.Server, s3 *s3test.Server, extra string) string {
	return fmt.Sprintf(`storage:
  metadata:
    kind: postgres
    postgres:
      dsn: %q
  blobs:
    kind: s3
    s3:
      endpoint: %s
      bucket: %s
      access_key: %s
      secret_key: %s
      prefix: fleet/
%s`, pg.DSN, s3.Endpoint, s3.Bucket, s3.AccessKey, s3.SecretKey, extra)
}

// blobFiles counts the blob files of a node's data directory (its hot tier).
func blobFiles(t *testing.T, data string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(filepath.Join(data, "blobs"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// TestFleetOnS3: nodes on one PostgreSQL and one S3 bucket (versitygw) share their blobs: an
// image pushed on A pulls byte-exact on B and C, which read it from the bucket into their hot
// tier; with storage.blobs.s3.redirect a node answers blob GETs with a presigned URL; the bucket
// unreachable makes /readyz fail and uncached blobs answer 503 saying why, and serving resumes
// when it is back; a bucket that does not exist fails the start naming the key.
func TestFleetOnS3(t *testing.T) {
	pg := pgtest.Start(t)
	s3 := s3test.Start(t)
	conf := fleetConfig(pg, s3, "")
	a := startMirror(t, t.TempDir(), conf)
	if !strings.Contains(a.log(), `"msg":"blobs in S3"`) {
		t.Fatalf("node A did not say it keeps its blobs in S3:\n%s", a.tail(10))
	}
	b := startMirror(t, t.TempDir(), conf)
	c := startMirror(t, t.TempDir(), conf+"      redirect: true\n")
	a.createProject("team", false)
	img := testImage(t)
	if err := remoteWrite(a, t, "team/app:v1", img); err != nil {
		t.Fatal(err)
	}
	objects := 0
	filepath.WalkDir(filepath.Join(s3.Root, s3.Bucket, "fleet", "blobs"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			objects++
		}
		return nil
	})
	if objects < 3 { // config, layer(s), manifest
		t.Errorf("the bucket holds %d objects under the prefix after a push", objects)
	}
	if n := blobFiles(t, b.dir); n != 0 {
		t.Fatalf("node B has %d blob files before any pull", n)
	}
	checkImage(t, b.ref(t, "team/app:v1"), img, adminAuth)
	if n := blobFiles(t, b.dir); n < 3 {
		t.Errorf("node B's hot tier holds %d blobs after the pull, want the image's", n)
	}

	// Node C redirects blob GETs to the bucket; the client follows and gets the bytes.
	layer := must(must(img.Layers())[0].Digest()).String()
	req, _ := http.NewRequest("GET", c.url+"/v2/team/app/blobs/"+layer, nil)
	req.SetBasicAuth("admin", adminPassword)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, s3.Endpoint+"/") {
		t.Errorf("GET a blob on the redirecting node = %d Location %q, want 307 to the bucket", resp.StatusCode, loc)
	}
	checkImage(t, c.ref(t, "team/app:v1"), img, adminAuth)

	// The bucket unreachable: not ready, and a blob a node never had answers 503 saying why.
	d := startMirror(t, t.TempDir(), conf)
	s3.Stop()
	waitFor(t, 20*time.Second, "/readyz to fail without the bucket", func() bool {
		resp, _ := a.do("GET", "/readyz", nil, false)
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	resp, body := d.do("GET", "/v2/team/app/blobs/"+layer, nil, true)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "storage.blobs") {
		t.Errorf("a blob with the bucket down = %d %s, want 503 naming storage.blobs", resp.StatusCode, body)
	}
	if !strings.Contains(d.log(), `"level":"ERROR"`) {
		t.Errorf("the 503 was not logged at ERROR:\n%s", d.tail(5))
	}
	s3.Restart(t)
	waitFor(t, 30*time.Second, "/readyz once the bucket is back", func() bool {
		resp, _ := a.do("GET", "/readyz", nil, false)
		return resp.StatusCode == 200
	})
	checkImage(t, d.ref(t, "team/app:v1"), img, adminAuth)

	// A bucket that does not exist fails the start, naming the key.
	path := filepath.Join(t.TempDir(), "cove.yaml")
	os.WriteFile(path, []byte(strings.Replace(conf, "bucket: "+s3.Bucket, "bucket: absent", 1)), 0o600)
	cmd := execCove("serve", "--config", path, "--listen", "127.0.0.1:0", "--data", t.TempDir())
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() == 0 || !strings.Contains(string(out), "storage.blobs.s3.bucket") {
		t.Errorf("a missing bucket: exit %d, want a failed start naming storage.blobs.s3.bucket:\n%s", cmd.ProcessState.ExitCode(), out)
	}
}
