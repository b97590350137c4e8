package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The container image of make image (deploy/image), run by podman as users run it.

// imageDir is where make image wrote the image: $E2E_IMAGE_DIR, or the directory of the cove
// binary under test (make test passes bin/cove, and make image writes beside it).
func imageDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("E2E_IMAGE_DIR")
	if dir == "" {
		dir = filepath.Dir(coveBin)
	}
	if _, err := os.Stat(filepath.Join(dir, "cove-image", "index.json")); err != nil {
		t.Fatalf("no image in %s (%v): run make image (make test does) or set E2E_IMAGE_DIR", dir, err)
	}
	return dir
}

var versionLine = regexp.MustCompile(`^cove (\S+) \(commit (\S+), (\S+)\)$`)

// coveVersion is what `cove version` of the binary under test prints: version, commit, Go version.
func coveVersion(t *testing.T) (ver, commit, goVersion string) {
	t.Helper()
	out, err := execCove("version").Output()
	m := versionLine.FindStringSubmatch(strings.TrimSpace(string(out)))
	if err != nil || m == nil {
		t.Fatalf("cove version = %q, %v; want cove VERSION (commit COMMIT, GOVERSION)", out, err)
	}
	return m[1], m[2], m[3]
}

// checkImageConfig checks what an image's configuration promises: a non-root user, /cove serve,
// /data a volume and the data directory, port 5000, and labels saying what `cove version` says.
func checkImageConfig(t *testing.T, what string, c v1.Config, ver, commit, goVersion string) {
	t.Helper()
	user, _, _ := strings.Cut(c.User, ":")
	if uid, err := strconv.Atoi(user); err != nil || uid == 0 {
		t.Errorf("%s: User %q, want a numeric non-root uid", what, c.User)
	}
	if c.Healthcheck == nil || strings.Join(c.Healthcheck.Test, " ") != "CMD /cove healthcheck" {
		t.Errorf("%s: Healthcheck %+v, want CMD /cove healthcheck", what, c.Healthcheck)
	}
	if strings.Join(c.Entrypoint, " ") != "/cove" || strings.Join(c.Cmd, " ") != "serve" {
		t.Errorf("%s: Entrypoint %q Cmd %q, want [/cove] [serve]", what, c.Entrypoint, c.Cmd)
	}
	if _, ok := c.Volumes["/data"]; !ok {
		t.Errorf("%s: Volumes %v, want /data", what, c.Volumes)
	}
	if _, ok := c.ExposedPorts["5000/tcp"]; !ok {
		t.Errorf("%s: ExposedPorts %v, want 5000/tcp", what, c.ExposedPorts)
	}
	env := strings.Join(c.Env, "\n")
	for _, want := range []string{"COVE_DATA=/data", "COVE_LISTEN=:5000"} {
		if !strings.Contains("\n"+env+"\n", "\n"+want+"\n") {
			t.Errorf("%s: Env %q lacks %s", what, c.Env, want)
		}
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.version":  ver,
		"org.opencontainers.image.revision": commit,
		"org.opencontainers.image.title":    "cove",
		"dev.cove.go.version":               goVersion,
	} {
		if got := c.Labels[k]; got != want {
			t.Errorf("%s: label %s = %q, want %q (cove version)", what, k, got, want)
		}
	}
	if _, err := time.Parse(time.RFC3339, c.Labels["org.opencontainers.image.created"]); err != nil {
		t.Errorf("%s: label org.opencontainers.image.created = %q: %v", what, c.Labels["org.opencontainers.image.created"], err)
	}
}

// podman is a podman with storage, configuration and registries of its own under a temp dir.
type podman struct {
	t    *testing.T
	bin  string
	args []string
	env  []string
}

func newPodman(t *testing.T) *podman {
	t.Helper()
	bin := requireTool(t, "podman")
	d := shortDir(t, "pi")
	root, runroot := filepath.Join(d, "root"), filepath.Join(d, "run")
	files := map[string]string{
		"storage.conf":    fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n", root, runroot),
		"containers.conf": "",
		"registries.conf": "",
	}
	for f, body := range files {
		if err := os.WriteFile(filepath.Join(d, f), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := &podman{t: t, bin: bin,
		args: []string{"--root", root, "--runroot", runroot, "--storage-driver", "vfs"},
		env: []string{"CONTAINERS_STORAGE_CONF=" + filepath.Join(d, "storage.conf"),
			"CONTAINERS_CONF=" + filepath.Join(d, "containers.conf"),
			"CONTAINERS_REGISTRIES_CONF=" + filepath.Join(d, "registries.conf")}}
	t.Cleanup(func() {
		// The containers' files are under d; their processes must not outlive the test.
		p.run(time.Minute, "rm", "--all", "--force", "--time", "5")
	})
	return p
}

func (p *podman) run(limit time.Duration, args ...string) (string, error) {
	p.t.Helper()
	return run(p.t, limit, p.env, p.bin, append(append([]string{}, p.args...), args...)...)
}

func (p *podman) must(limit time.Duration, args ...string) string {
	p.t.Helper()
	out, err := p.run(limit, args...)
	if err != nil {
		p.t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestContainerImage(t *testing.T) {
	dir := imageDir(t)
	ver, commit, goVersion := coveVersion(t)
	crane := os.Getenv("E2E_CRANE_BIN")
	if crane == "" {
		crane = requireTool(t, "crane")
	}

	// The OCI layout: one index of linux/amd64 and linux/arm64, named <version> and latest.
	lp, err := layout.FromPath(filepath.Join(dir, "cove-image"))
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range tm.Manifests {
		names = append(names, d.Annotations["org.opencontainers.image.ref.name"])
		idx, err := top.ImageIndex(d.Digest)
		if err != nil {
			t.Fatalf("the layout's %s is not an index: %v", d.Digest, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		var plats []string
		for _, m := range im.Manifests {
			img, err := idx.Image(m.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			plat := cf.OS + "/" + cf.Architecture
			if m.Platform == nil || m.Platform.String() != plat {
				t.Errorf("the index says %v for an image of %s", m.Platform, plat)
			}
			plats = append(plats, plat)
			checkImageConfig(t, "OCI layout "+plat, cf.Config, ver, commit, goVersion)
		}
		if strings.Join(plats, " ") != "linux/amd64 linux/arm64" {
			t.Errorf("the layout's index holds %v, want linux/amd64 and linux/arm64", plats)
		}
	}
	if strings.Join(names, " ") != ver+" latest" {
		t.Errorf("the layout names %q, want %q and latest", names, ver)
	}

	// Each docker-archive is its platform's image.
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := tarball.ImageFromPath(filepath.Join(dir, "cove-image-"+arch+".tar"), nil)
		if err != nil {
			t.Fatalf("docker-archive of %s: %v", arch, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != arch {
			t.Errorf("cove-image-%s.tar holds an image of %s", arch, cf.Architecture)
		}
	}

	// podman loads this machine's archive and sees the same configuration.
	p := newPodman(t)
	out := p.must(2*time.Minute, "load", "--input", filepath.Join(dir, "cove-image-"+runtime.GOARCH+".tar"))
	image := "localhost/cove:" + ver
	if !strings.Contains(out, image) || !strings.Contains(out, "localhost/cove:latest") {
		t.Fatalf("podman load printed no %s and localhost/cove:latest:\n%s", image, out)
	}
	var inspected []struct {
		Config      v1.Config
		Healthcheck *v1.HealthConfig // podman shows it beside Config
	}
	if err := json.Unmarshal([]byte(p.must(time.Minute, "image", "inspect", image)), &inspected); err != nil || len(inspected) != 1 {
		t.Fatalf("podman image inspect: %v", err)
	}
	if inspected[0].Config.Healthcheck == nil {
		inspected[0].Config.Healthcheck = inspected[0].Healthcheck
	}
	checkImageConfig(t, "podman image inspect", inspected[0].Config, ver, commit, goVersion)

	// cove in the container mirrors a docker-registry on this machine's loopback (host network).
	reg := startRegistry(t, "", nil)
	img := testImage(t)
	reg.seed(t, "library/alpine:latest", img)
	want := must(img.Digest())
	conf := filepath.Join(t.TempDir(), "cove.yaml")
	if err := os.WriteFile(conf, []byte(mirrorConfig(reg.url, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	data := shortDir(t, "pd") // its owner becomes the image's user (:U)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	nofile := min(lim.Max, 65536)
	start := func(name string) {
		t.Helper()
		p.must(2*time.Minute, "run", "--detach", "--name", name, "--network", "host",
			"--ulimit", fmt.Sprintf("nofile=%d:%d", nofile, nofile), "--ulimit", "nproc=4096:4096",
			"--env", "COVE_LISTEN="+addr, "--env", "COVE_AUTH_ADMIN_PASSWORD="+adminPassword,
			"--env", "COVE_CONFIG=/etc/cove/cove.yaml",
			"--volume", conf+":/etc/cove/cove.yaml:ro", "--volume", data+":/data:U", image)
		deadline := time.Now().Add(60 * time.Second)
		for {
			resp, err := http.Get("http://" + addr + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return
				}
			}
			if time.Now().After(deadline) {
				logs, _ := p.run(time.Minute, "logs", name)
				t.Fatalf("cove in container %s did not answer /healthz on %s within 60s (%v); its log:\n%s", name, addr, err, tail(logs, 40))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	pull := func(what string) {
		t.Helper()
		ref := addr + "/library/alpine:latest"
		out, err := run(t, 2*time.Minute, nil, crane, "pull", "--insecure", "--format", "oci", ref, filepath.Join(t.TempDir(), "pulled"))
		if err != nil {
			t.Fatalf("%s: crane pull %s: %v\n%s", what, ref, err, out)
		}
		got, err := run(t, time.Minute, nil, crane, "digest", "--insecure", ref)
		if err != nil || strings.TrimSpace(got) != want.String() {
			t.Fatalf("%s: crane digest %s = %q (%v), want %s", what, ref, got, err, want)
		}
	}
	stop := func(name string) {
		t.Helper()
		p.must(time.Minute, "stop", "--time", "30", name)
		if code := strings.TrimSpace(p.must(time.Minute, "inspect", "--format", "{{.State.ExitCode}}", name)); code != "0" {
			logs, _ := p.run(time.Minute, "logs", name)
			t.Errorf("cove in container %s exited %s at SIGTERM, want 0; its log:\n%s", name, code, tail(logs, 20))
		}
		p.must(time.Minute, "rm", name)
	}

	start("cove-e2e-1")
	pull("the first pull, through the upstream")
	// The image's healthcheck: cove healthcheck finds its own listen address.
	if out, err := p.run(time.Minute, "exec", "cove-e2e-1", "/cove", "healthcheck"); err != nil || !strings.Contains(out, "http://"+addr+"/healthz") {
		t.Errorf("podman exec cove healthcheck: %v\n%s", err, out)
	}
	// The container ran as the image's user, and wrote the blobs into the volume.
	blobs := 0
	filepath.WalkDir(filepath.Join(data, "blobs"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			blobs++
			if fi, err := d.Info(); err == nil {
				if st := fi.Sys().(*syscall.Stat_t); st.Uid == 0 {
					t.Errorf("%s is owned by root: the container ran as root", path)
				}
			}
		}
		return nil
	})
	if blobs < 5 { // four layers and the config
		t.Errorf("the volume holds %d blob files after the pull, want at least 5", blobs)
	}
	stop("cove-e2e-1")

	// A new container on the same volume, with the upstream gone, serves the image from the cache.
	reg.stop()
	if c, err := net.DialTimeout("tcp", reg.host, time.Second); err == nil {
		c.Close()
		t.Fatal("the upstream still answers after its stop")
	}
	start("cove-e2e-2")
	pull("the pull after the restart, with the upstream stopped")
	stop("cove-e2e-2")
}
