package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// warmJob is a pre-warm job as GET /api/v2.0/mirror/warm/{id} answers it.
type warmJob struct {
	ID        int64    `json:"id"`
	Kind      string   `json:"kind"`
	Operator  string   `json:"operator"`
	Status    string   `json:"status"`
	Platforms []string `json:"platforms"`
	Images    []struct {
		Image       string   `json:"image"`
		Digest      string   `json:"digest"`
		Platforms   []string `json:"platforms"`
		Manifests   int      `json:"manifests"`
		Blobs       int      `json:"blobs"`
		CachedBlobs int      `json:"cached_blobs"`
		Bytes       int64    `json:"bytes"`
		Done        bool     `json:"done"`
		Error       string   `json:"error"`
	} `json:"images"`
}

// waitWarmJob polls the job at path (its Location) until it ends, for at most limit.
func waitWarmJob(t *testing.T, s *server, path string, limit time.Duration) warmJob {
	t.Helper()
	var job warmJob
	waitFor(t, limit, "the warm job to end", func() bool {
		resp, body := s.do("GET", path, nil, true)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, body)
		}
		if err := json.Unmarshal(body, &job); err != nil {
			t.Fatal(err)
		}
		return job.Status == "Success" || job.Status == "Error"
	})
	return job
}

// pulledBytes is what a pull of img reads (manifest, config, layers) and its blob count.
func pulledBytes(t *testing.T, img v1.Image) (int64, int) {
	t.Helper()
	m := must(img.Manifest())
	n := must(img.Size()) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, 1 + len(m.Layers)
}

// TestMirrorWarm: a pre-warm through the API pulls an index's amd64 image and a plain image into
// the cache (the arm64 image stays upstream); pulls of them afterwards — go-containerregistry's,
// and dockerd's — make no upstream request at all. A missing image fails alone; only system
// admins may warm.
func TestMirrorWarm(t *testing.T) {
	reg := startRegistry(t, "", nil)
	idx := newOCIIndex(t)
	reg.seed(t, "library/multi:1", idx.asIndex(t))
	plain := testImage(t)
	reg.seed(t, "library/plain:1", plain)
	proxy := newFaultProxy(t, reg.url)
	s := startMirror(t, t.TempDir(), mirrorConfig(proxy.srv.URL, ""))

	body := `{"images":["multi:1","plain:1","missing:1"],"platforms":["linux/amd64"]}`
	resp, out := s.do("POST", "/api/v2.0/users", strings.NewReader(`{"username":"dave","password":"Dave-pw-123"}`), true, "Content-Type", "application/json")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create user = %d %s", resp.StatusCode, out)
	}
	if resp, out := s.doAs("POST", "/api/v2.0/mirror/warm", strings.NewReader(body), "dave", "Dave-pw-123"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a user's warm = %d %s, want 403", resp.StatusCode, out)
	}
	if resp, out := s.doAs("POST", "/api/v2.0/mirror/warm", strings.NewReader(body), "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("an anonymous warm = %d %s, want 401", resp.StatusCode, out)
	}
	if resp, out := s.do("POST", "/api/v2.0/mirror/warm", strings.NewReader(`{"images":["quay.io/o/i:1"]}`), true); resp.StatusCode != http.StatusBadRequest ||
		!strings.Contains(string(out), `mirror.upstreams.\"quay.io\".url`) {
		t.Errorf("a warm of an unconfigured upstream's image = %d %s, want 400 naming the key", resp.StatusCode, out)
	}
	if n := upstreamRequests(proxy); n != 0 {
		t.Fatalf("refused warms made %d upstream requests", n)
	}

	resp, out = s.do("POST", "/api/v2.0/mirror/warm", strings.NewReader(body), true, "Content-Type", "application/json")
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(loc, "/api/v2.0/mirror/warm/") {
		t.Fatalf("warm = %d %q %s, want 201 with a Location", resp.StatusCode, loc, out)
	}
	start := time.Now()
	job := waitWarmJob(t, s, loc, time.Minute)
	t.Logf("warm job ended in %s: %+v", time.Since(start).Round(time.Millisecond), job)
	if job.Status != "Error" || job.Kind != "MANUAL" || job.Operator != "admin" || len(job.Images) != 3 {
		t.Fatalf("job = %+v, want Error (one image is missing), MANUAL by admin, three images", job)
	}
	amd64Bytes, amd64Blobs := pulledBytes(t, idx.images[0])
	amd64Bytes += int64(len(idx.raw))
	plainBytes, plainBlobs := pulledBytes(t, plain)
	for i, want := range []struct {
		digest           string
		platforms        string
		manifests, blobs int
		bytes            int64
	}{
		{must(idx.Digest()).String(), "linux/amd64", 2, amd64Blobs, amd64Bytes},
		{must(plain.Digest()).String(), "", 1, plainBlobs, plainBytes},
	} {
		got := job.Images[i]
		if got.Digest != want.digest || strings.Join(got.Platforms, ",") != want.platforms || got.Manifests != want.manifests ||
			got.Blobs != want.blobs || got.CachedBlobs != 0 || got.Bytes != want.bytes || !got.Done || got.Error != "" {
			t.Errorf("image %s = %+v, want %+v", got.Image, got, want)
		}
	}
	if got := job.Images[2]; !got.Done || !strings.Contains(got.Error, "not found at upstream docker.io") {
		t.Errorf("missing image = %+v, want done, with an error", got)
	}
	// The upstream served the amd64 image's blobs and the plain image's, each once; not arm64's.
	if n := proxy.count("GET", "/blobs/"); n != amd64Blobs+plainBlobs {
		t.Errorf("upstream blob GETs = %d, want %d", n, amd64Blobs+plainBlobs)
	}
	for _, l := range must(idx.images[1].Layers()) {
		if n := proxy.count("GET", must(l.Digest()).String()); n != 0 {
			t.Errorf("an arm64 layer was fetched %d times", n)
		}
	}

	// The pulls: not one upstream request.
	before := upstreamRequests(proxy)
	ref := must(name.ParseReference(s.addr+"/multi:1", name.Insecure))
	checkImage(t, ref, idx.images[0], remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	checkImage(t, must(name.ParseReference(s.addr+"/plain:1", name.Insecure)), plain)
	if n := upstreamRequests(proxy) - before; n != 0 {
		t.Errorf("pulls of warmed images made %d upstream requests, want 0", n)
	}
	t.Run("docker", func(t *testing.T) {
		dockerd := requireTool(t, "dockerd")
		docker := requireTool(t, "docker")
		requireTool(t, "containerd")
		_, sock := startDockerd(t, dockerd, docker, s.url)
		before := upstreamRequests(proxy)
		for image, want := range map[string]string{"multi:1": must(idx.Digest()).String(), "plain:1": must(plain.Digest()).String()} {
			out, err := run(t, 3*time.Minute, nil, docker, "-H", sock, "pull", image)
			if err != nil {
				t.Fatalf("docker pull %s: %v\n%s", image, err, out)
			}
			if m := digestLine.FindStringSubmatch(out); m == nil || m[1] != want {
				t.Errorf("docker pull %s: digest %v, want %s\n%s", image, m, want, out)
			}
		}
		if n := upstreamRequests(proxy) - before; n != 0 {
			t.Errorf("docker pulls of warmed images made %d upstream requests, want 0", n)
		}
	})

	// The list, newest first, and the audit log's record of the start.
	resp, out = s.do("GET", "/api/v2.0/mirror/warm", nil, true)
	var list []warmJob
	if resp.StatusCode != 200 || json.Unmarshal(out, &list) != nil || len(list) != 1 || list[0].ID != job.ID {
		t.Errorf("GET /api/v2.0/mirror/warm = %d %s", resp.StatusCode, out)
	}
	resp, out = s.do("GET", "/api/v2.0/audit-logs?q=operation=create", nil, true)
	if !strings.Contains(string(out), `"resource_type":"warm"`) {
		t.Errorf("the audit log lacks the warm's start: %d %s", resp.StatusCode, out)
	}
}

// TestMirrorWarmSchedule: mirror.warm's images are warmed at start, by "system"; a restart
// within every does not warm them again; bad images in mirror.warm stop cove with status 2.
func TestMirrorWarmSchedule(t *testing.T) {
	reg := startRegistry(t, "", nil)
	plain := testImage(t)
	reg.seed(t, "library/plain:1", plain)
	proxy := newFaultProxy(t, reg.url)
	dir := t.TempDir()
	conf := mirrorConfig(proxy.srv.URL, "  warm:\n    every: 1h\n    images: [plain:1]\n")
	s := startMirror(t, dir, conf)
	var jobs []warmJob
	list := func(s *server) []warmJob {
		resp, out := s.do("GET", "/api/v2.0/mirror/warm", nil, true)
		if resp.StatusCode != 200 || json.Unmarshal(out, &jobs) != nil {
			t.Fatalf("GET /api/v2.0/mirror/warm = %d %s", resp.StatusCode, out)
		}
		return jobs
	}
	waitFor(t, time.Minute, "the scheduled warm to end", func() bool {
		jobs := list(s)
		return len(jobs) == 1 && (jobs[0].Status == "Success" || jobs[0].Status == "Error")
	})
	if j := jobs[0]; j.Kind != "SCHEDULE" || j.Operator != "system" || j.Status != "Success" || !j.Images[0].Done || j.Images[0].Blobs != len(must(plain.Layers()))+1 {
		t.Fatalf("scheduled job = %+v, want a Success by system", j)
	}
	before := upstreamRequests(proxy)
	checkImage(t, must(name.ParseReference(s.addr+"/plain:1", name.Insecure)), plain)
	if n := upstreamRequests(proxy) - before; n != 0 {
		t.Errorf("a pull of the scheduled warm's image made %d upstream requests", n)
	}

	// A restart within the hour does not warm again. The schedule is looked at as cove starts;
	// a bounded look afterwards is the only way to see that nothing starts.
	if code := s.stop(); code != 0 {
		t.Fatalf("stop = %d", code)
	}
	s = startMirror(t, dir, conf)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if n := len(list(s)); n != 1 {
			t.Fatalf("after a restart within every: %d jobs, want still 1", n)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Images that name no configured upstream, or bad platforms, are configuration errors.
	path := filepath.Join(t.TempDir(), "bad.yaml")
	bad := mirrorConfig(proxy.srv.URL, "  warm:\n    every: 1h\n    images: [ghcr.io/o/i:1]\n    platforms: [amd64]\n")
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := execCove("serve", "--config", path, "--data", t.TempDir(), "--listen", "127.0.0.1:0")
	outb, _ := cmd.CombinedOutput()
	for _, want := range []string{`mirror.warm.images: image "ghcr.io/o/i:1": no upstream named "ghcr.io" is configured (mirror.upstreams."ghcr.io".url)`, `mirror.warm.platforms: platform "amd64"`} {
		if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(outb), want) {
			t.Errorf("bad mirror.warm: exit %d, output %s; want 2 and %q", cmd.ProcessState.ExitCode(), outb, want)
		}
	}
}
