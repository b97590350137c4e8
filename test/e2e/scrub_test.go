package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"cove/internal/pgtest"
	"cove/internal/s3test"
)

// scrubImages pushes team/app:v1 to s with crane (a copy from the upstream, where it is seeded
// under another name) and mirrors library/mirrored:v1 through s from up; it returns the two
// images' layer digests, once every mirrored layer is on disk under data.
func scrubImages(t *testing.T, s *server, up *upstreamRegistry, data string) (pimg v1.Image, pushed, mirrored []v1.Hash) {
	t.Helper()
	crane := os.Getenv("E2E_CRANE_BIN")
	if crane == "" {
		crane = requireTool(t, "crane")
	}
	pimg, mimg := must(random.Image(256<<10, 2)), must(random.Image(256<<10, 2))
	up.seed(t, "library/mirrored:v1", mimg)
	up.seed(t, "staging/app:v1", pimg)
	s.createProject("team", false)
	craneEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	if out, err := run(t, time.Minute, craneEnv, crane, "auth", "login", s.addr, "-u", "admin", "-p", adminPassword); err != nil {
		t.Fatalf("crane auth login: %v\n%s", err, out)
	}
	if out, err := run(t, 2*time.Minute, craneEnv, crane, "copy", "--insecure", up.host+"/staging/app:v1", s.addr+"/team/app:v1"); err != nil {
		t.Fatalf("crane copy (the push): %v\n%s", err, out)
	}
	if _, err := pullAll(t, s, "library/mirrored:v1"); err != nil {
		t.Fatal(err)
	}
	for _, l := range must(pimg.Layers()) {
		pushed = append(pushed, must(l.Digest()))
	}
	for _, l := range must(mimg.Layers()) {
		mirrored = append(mirrored, must(l.Digest()))
	}
	waitFor(t, 30*time.Second, "the mirrored layers on disk", func() bool {
		for _, d := range mirrored {
			if _, err := os.Stat(blobFile(data, d)); err != nil {
				return false
			}
		}
		return true
	})
	return pimg, pushed, mirrored
}

// flipBytes changes bytes in the middle of a file, keeping its size.
func flipBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 2; i < len(b)/2+16 && i < len(b); i++ {
		b[i] ^= 0xff
	}
	// Rewritten in place (same inode), as a disk would damage it.
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
	return b
}

// runScrub runs cove scrub with args and the configuration file config; it returns the exit
// status and the output (standard output, then standard error).
func runScrub(t *testing.T, config string, args ...string) (int, string) {
	t.Helper()
	code, stdout, stderr := runScrubSplit(t, config, args...)
	return code, stdout + stderr
}

// runScrubSplit is runScrub with standard output and standard error apart.
func runScrubSplit(t *testing.T, config string, args ...string) (int, string, string) {
	t.Helper()
	cmd := execCove(append([]string{"scrub"}, args...)...)
	cmd.Env = append(os.Environ(), "COVE_CONFIG="+config)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("cove scrub %v did not end within 2 minutes:\n%s%s", args, out.String(), errOut.String())
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// blobGet fetches a blob from s (as admin) and reports the status and the body.
func blobGet(s *server, repo string, d v1.Hash) (int, []byte) {
	resp, b := s.do("GET", "/v2/"+repo+"/blobs/"+d.String(), nil, true)
	return resp.StatusCode, b
}

// TestScrubOffline: a pushed and a mirrored blob are corrupted on disk (same size) and another
// mirrored one truncated while cove is stopped; cove scrub reports them (the pushed one with the
// repository and tag it breaks) and changes nothing; cove scrub --repair quarantines the corrupt
// files and drops the records; after a start the mirrored blobs are fetched again from the
// upstream, and the pushed one answers BLOB_UNKNOWN, never its corrupt bytes, until pushed again.
func TestScrubOffline(t *testing.T) {
	up := startRegistry(t, "", nil)
	data := t.TempDir()
	config := filepath.Join(t.TempDir(), "cove.yaml")
	if err := os.WriteFile(config, []byte(mirrorConfig(up.url, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startCove(t, data, "COVE_CONFIG="+config)
	pimg, pushed, mirrored := scrubImages(t, s, up, data)

	if code, out := runScrub(t, config, "--data", data); code != 3 || !strings.Contains(out, "stop cove first") {
		t.Errorf("cove scrub beside a running cove = %d:\n%s\nwant 3 and a message saying to stop cove", code, out)
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("cove exited %d", code)
	}
	if code, out := runScrub(t, config, "--data", data); code != 0 || !strings.Contains(out, "no problem found") {
		t.Fatalf("cove scrub of a sound store = %d:\n%s", code, out)
	}

	pushedBad, mirroredBad, truncated := pushed[0], mirrored[0], mirrored[1]
	corrupt := flipBytes(t, blobFile(data, pushedBad))
	flipBytes(t, blobFile(data, mirroredBad))
	if err := os.Truncate(blobFile(data, truncated), 100); err != nil {
		t.Fatal(err)
	}

	code, out := runScrub(t, config, "--data", data)
	if code != 1 {
		t.Errorf("cove scrub exit status = %d, want 1 (problems found):\n%s", code, out)
	}
	for _, want := range []string{
		"corrupt " + pushedBad.String() + " (pushed",
		"corrupt " + mirroredBad.String() + " (mirrored",
		"size " + truncated.String(),
		"breaks: team/app, team/app:v1, team/app@",
		"nothing was changed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the report does not say %q:\n%s", want, out)
		}
	}
	if b, err := os.ReadFile(blobFile(data, pushedBad)); err != nil || !bytes.Equal(b, corrupt) {
		t.Errorf("a scrub without --repair changed the corrupt file: %v", err)
	}
	code, out, _ = runScrubSplit(t, config, "--data", data, "--json")
	var rep struct {
		Problems map[string]int `json:"problems"`
		Details  []struct {
			Kind   string   `json:"kind"`
			Digest string   `json:"digest"`
			Pushed bool     `json:"pushed"`
			Breaks []string `json:"breaks"`
		} `json:"details"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || rep.Problems["corrupt"] != 2 || rep.Problems["size"] != 1 {
		t.Errorf("cove scrub --json = %d, %v: %+v\n%s", code, err, rep, out)
	}

	code, out = runScrub(t, config, "--data", data, "--repair")
	if code != 1 || !strings.Contains(out, "done: file moved to "+filepath.Join(data, "quarantine")) {
		t.Errorf("cove scrub --repair = %d:\n%s\nwant 1 and the corrupt files quarantined", code, out)
	}
	q := filepath.Join(data, "quarantine", "sha256", pushedBad.Hex)
	if b, err := os.ReadFile(q); err != nil || !bytes.Equal(b, corrupt) {
		t.Errorf("the corrupt pushed blob is not in the quarantine (%s): %v", q, err)
	}

	s = startCove(t, data, "COVE_CONFIG="+config)
	for _, d := range []v1.Hash{mirroredBad, truncated} {
		status, b := blobGet(s, "library/mirrored", d)
		if status != 200 || sha256hex(b) != d.Hex {
			t.Errorf("GET of the repaired mirrored blob %s = %d, %d bytes hashing to %s; want its bytes fetched again", d, status, len(b), sha256hex(b))
		}
	}
	status, b := blobGet(s, "team/app", pushedBad)
	if status != 404 || bytes.Contains(b, corrupt[:64]) || !strings.Contains(string(b), "BLOB_UNKNOWN") {
		t.Errorf("GET of the corrupt pushed blob = %d %.200q; want 404 BLOB_UNKNOWN", status, b)
	}
	// Pushed again, the image is whole. go-containerregistry (crane) skips an image whose
	// manifest the registry has: pushed under a new tag, it uploads the blob cove lacks.
	if err := remoteWrite(s, t, "team/app:repair", pimg); err != nil {
		t.Fatalf("push the image again: %v", err)
	}
	if status, b := blobGet(s, "team/app", pushedBad); status != 200 || sha256hex(b) != pushedBad.Hex {
		t.Errorf("GET of the pushed blob after the image was pushed again = %d, hashing to %s", status, sha256hex(b))
	}
	if code, out := runScrubAfterStop(t, s, config, data); code != 0 {
		t.Errorf("cove scrub after the push again = %d, want 0:\n%s", code, out)
	}
}

// runScrubAfterStop stops s and runs cove scrub on data.
func runScrubAfterStop(t *testing.T, s *server, config, data string) (int, string) {
	t.Helper()
	if code := s.stop(); code != 0 {
		t.Fatalf("cove exited %d", code)
	}
	return runScrub(t, config, "--data", data)
}

// TestScrubInterval: a running cove with scrub.interval finds a blob corrupted under it, says so
// in /metrics, and never serves the corrupt bytes: the mirrored blob is fetched again, the pushed
// one answers BLOB_UNKNOWN.
func TestScrubInterval(t *testing.T) {
	up := startRegistry(t, "", nil)
	data := t.TempDir()
	s := startMirror(t, data, mirrorConfig(up.url, "scrub:\n  interval: 1s\n"))
	_, pushed, mirrored := scrubImages(t, s, up, data)
	waitFor(t, 30*time.Second, "a first scrub in /metrics", func() bool {
		return metricValue(t, s, "cove_scrub_blobs_checked") >= float64(len(pushed)+len(mirrored))
	})
	corrupt := flipBytes(t, blobFile(data, pushed[0]))
	mcorrupt := flipBytes(t, blobFile(data, mirrored[0]))

	// The run that found them says corrupt 2 (its result is kept once it has acted); the next
	// ones say that the pushed blob, quarantined, is missing.
	waitFor(t, 60*time.Second, "the scrub to report the corrupt blobs in /metrics", func() bool {
		return metricValue(t, s, `cove_scrub_problems{kind="corrupt"}`) > 0 || metricValue(t, s, `cove_scrub_problems{kind="missing"}`) > 0
	})
	for _, d := range []v1.Hash{pushed[0], mirrored[0]} {
		if _, err := os.Stat(filepath.Join(data, "quarantine", "sha256", d.Hex)); err != nil {
			t.Errorf("the corrupt blob %s is not in the quarantine: %v", d, err)
		}
	}
	status, b := blobGet(s, "team/app", pushed[0])
	if status != 404 || bytes.Contains(b, corrupt[:64]) {
		t.Errorf("GET of the corrupt pushed blob = %d %.200q; want 404", status, b)
	}
	status, b = blobGet(s, "library/mirrored", mirrored[0])
	if status != 200 || sha256hex(b) != mirrored[0].Hex || bytes.Equal(b, mcorrupt) {
		t.Errorf("GET of the corrupt mirrored blob = %d, hashing to %s; want its bytes fetched again", status, sha256hex(b))
	}
}

// TestScrubFleet: in a fleet, cove scrub runs beside a running node and hashes the bucket's
// objects: a pushed layer damaged in the bucket is reported with its repository; --repair drops
// its record and object, and the node never serves the damaged bytes.
func TestScrubFleet(t *testing.T) {
	pg := pgtest.Start(t)
	s3 := s3test.Start(t)
	conf := fleetConfig(pg, s3, "", "")
	a := startFleet(t, 1, conf)[0]
	a.createProject("team", false)
	img := must(random.Image(256<<10, 2))
	if err := remoteWrite(a.server, t, "team/app:v1", img); err != nil {
		t.Fatal(err)
	}
	layer := must(must(img.Layers())[0].Digest())
	object := filepath.Join(s3.Root, s3.Bucket, "fleet", "blobs", layer.Algorithm, layer.Hex[:2], layer.Hex)
	corrupt := flipBytes(t, object)
	config := filepath.Join(t.TempDir(), "cove.yaml")
	// A node's configuration, as an operator would use (the fleet needs cluster.*).
	nodeConf := conf + fmt.Sprintf("cluster:\n  advertise: http://127.0.0.1:1\n  secret: %s\n", fleetSecret)
	if err := os.WriteFile(config, []byte(nodeConf), 0o600); err != nil {
		t.Fatal(err)
	}

	code, out := runScrub(t, config)
	if code != 1 || !strings.Contains(out, "corrupt "+layer.String()+" (pushed") || !strings.Contains(out, "breaks: team/app, team/app:v1") {
		t.Errorf("cove scrub of the fleet = %d:\n%s\nwant 1, the damaged pushed layer and what it breaks", code, out)
	}
	if resp, _ := a.do("GET", "/v2/team/app/manifests/v1", nil, true); resp.StatusCode != 200 {
		t.Errorf("the node beside the scrub answers %d", resp.StatusCode)
	}
	code, out = runScrub(t, config, "--repair")
	if code != 1 || !strings.Contains(out, "record dropped") {
		t.Errorf("cove scrub --repair of the fleet = %d:\n%s", code, out)
	}
	if _, err := os.Stat(object); !os.IsNotExist(err) {
		t.Errorf("the damaged object is still in the bucket: %v", err)
	}
	status, b := blobGet(a.server, "team/app", layer)
	if status != 404 || bytes.Contains(b, corrupt[len(corrupt)/2:len(corrupt)/2+16]) {
		t.Errorf("GET of the repaired pushed layer = %d, %d bytes; want 404", status, len(b))
	}
	if code, out := runScrub(t, config); code != 1 || !strings.Contains(out, "missing_reference team/app@") {
		t.Errorf("cove scrub after the repair = %d:\n%s\nwant the manifest reported missing its layer", code, out)
	}
}
