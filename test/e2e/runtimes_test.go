package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// The container runtimes users point at cove: dockerd with --registry-mirror, podman with a
// registries.conf mirror, containerd with a hosts.toml mirror, each started privately on temp dirs.

// shortDir is a temporary directory with a short path: unix socket paths are limited to 108 bytes.
func shortDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// run runs a command with a time limit and returns its combined output.
func run(t *testing.T, limit time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startDaemon starts a long-running program and stops it at the end of the test.
func startDaemon(t *testing.T, logFile string, name string, args ...string) *exec.Cmd {
	t.Helper()
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("%s log (tail):\n%s", filepath.Base(name), tail(string(b), 30))
		}
	})
	return cmd
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// runtimeImages seeds the upstream with what the runtimes pull: a Docker schema 2 image, a
// multi-arch OCI index and an OCI image, all for linux/amd64 where a platform matters.
func runtimeImages(t *testing.T, reg *upstreamRegistry) map[string]v1.Hash {
	t.Helper()
	docker, err := random.Image(512<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := docker.ConfigFile()
	cf.OS, cf.Architecture = "linux", "amd64"
	docker = must(mutate.ConfigFile(docker, cf))
	reg.seed(t, "library/alpine:latest", docker)
	idx := newOCIIndex(t)
	reg.seed(t, "library/multi:latest", idx.asIndex(t))
	oci := ociImage(t, 2, 512<<10, &v1.Platform{OS: "linux", Architecture: "amd64"})
	reg.seed(t, "library/ociimg:latest", oci)
	return map[string]v1.Hash{
		"alpine": must(docker.Digest()),
		"multi":  must(idx.Digest()),
		"ociimg": must(oci.Digest()),
	}
}

var digestLine = regexp.MustCompile(`Digest: (sha256:[0-9a-f]{64})`)

// startDockerd starts a private dockerd with cove (mirror) as its registry mirror; it returns
// its temp dir and the -H value of its socket.
func startDockerd(t *testing.T, dockerd, docker, mirror string) (dir, sock string) {
	t.Helper()
	d := shortDir(t, "dk")
	cfg := filepath.Join(d, "daemon.json")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`{"deprecated-key-path": %q}`, filepath.Join(d, "key.json"))), 0o600); err != nil {
		t.Fatal(err)
	}
	sock = "unix://" + filepath.Join(d, "docker.sock")
	startDaemon(t, filepath.Join(d, "dockerd.log"), dockerd,
		"--data-root", filepath.Join(d, "data"), "--exec-root", filepath.Join(d, "exec"),
		"--pidfile", filepath.Join(d, "docker.pid"), "--host", sock, "--config-file", cfg,
		"--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs",
		"--registry-mirror", mirror)
	waitFor(t, 60*time.Second, "dockerd to answer", func() bool {
		_, err := run(t, 10*time.Second, nil, docker, "-H", sock, "version")
		return err == nil
	})
	return d, sock
}

func TestDockerDaemonMirror(t *testing.T) {
	dockerd := requireTool(t, "dockerd")
	docker := requireTool(t, "docker")
	requireTool(t, "containerd")
	reg := startRegistry(t, "", nil)
	want := runtimeImages(t, reg)
	proxy := newFaultProxy(t, reg.url)
	s := startMirror(t, t.TempDir(), mirrorConfig(proxy.srv.URL, "webhooks:\n  allow_private_targets: true\n"))
	hooks := newHookReceiver(t) // docker's push, below, reaches a webhook once

	d, sock := startDockerd(t, dockerd, docker, s.url)
	for _, image := range []string{"alpine", "multi", "ociimg"} {
		out, err := run(t, 3*time.Minute, nil, docker, "-H", sock, "pull", image)
		if err != nil {
			t.Fatalf("docker pull %s: %v\n%s", image, err, out)
		}
		m := digestLine.FindStringSubmatch(out)
		if m == nil || m[1] != want[image].String() {
			t.Errorf("docker pull %s: digest %v, want %s\n%s", image, m, want[image], out)
		}
	}
	if n := proxy.count("GET", "/v2/library/alpine/manifests/"); n == 0 {
		t.Error("the pulls did not go through cove")
	}
	// A registry host cove does not mirror: docker shows what would configure it, and Docker Hub
	// (the default upstream) is never asked.
	before := proxy.count("GET", "")
	out, err := run(t, time.Minute, nil, docker, "-H", sock, "pull", s.addr+"/quay.io/org/img:1")
	if err == nil || !strings.Contains(out, `mirror.upstreams.\"quay.io\".url`) && !strings.Contains(out, `mirror.upstreams."quay.io".url`) {
		t.Errorf("docker pull of an unconfigured registry host: %v\n%s", err, out)
	}
	if n := proxy.count("GET", "") - before; n != 0 {
		t.Errorf("the pull of an unconfigured registry host sent %d requests to the default upstream", n)
	}

	// docker login and push to a local project: the token flow with credentials.
	s.createProject("team", false)
	if resp, b := s.doAs("POST", "/api/v2.0/projects/team/webhook/policies", strings.NewReader(fmt.Sprintf(
		`{"name":"ci","enabled":true,"event_types":["PUSH_ARTIFACT"],"targets":[{"address":%q}]}`, hooks.srv.URL)), "admin", adminPassword); resp.StatusCode != 201 {
		t.Fatalf("webhook policy = %d %s", resp.StatusCode, b)
	}
	login := func(pass string) (string, error) {
		cmd := exec.Command(docker, "-H", sock, "--config", filepath.Join(d, "client"), "login", "-u", "admin", "--password-stdin", s.addr)
		cmd.Stdin = strings.NewReader(pass)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := login("wrong-password"); err == nil {
		t.Errorf("docker login with a wrong password succeeded:\n%s", out)
	}
	if out, err := login(adminPassword); err != nil {
		t.Fatalf("docker login: %v\n%s", err, out)
	}
	target := s.addr + "/team/alpine:pushed"
	if out, err := run(t, time.Minute, nil, docker, "-H", sock, "tag", "alpine", target); err != nil {
		t.Fatalf("docker tag: %v\n%s", err, out)
	}
	out, err = run(t, 3*time.Minute, nil, docker, "-H", sock, "--config", filepath.Join(d, "client"), "push", target)
	if err != nil {
		t.Fatalf("docker push: %v\n%s", err, out)
	}
	m := digestLine.FindStringSubmatch(strings.ReplaceAll(out, "digest: ", "Digest: "))
	if m == nil {
		t.Fatalf("docker push printed no digest:\n%s", out)
	}
	resp, _ := s.do("HEAD", "/v2/team/alpine/manifests/pushed", nil, true)
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != m[1] {
		t.Errorf("pushed manifest = %d %s, want %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), m[1])
	}
	if !strings.Contains(s.log(), `"path":"/v2/library/alpine/manifests/latest"`) {
		t.Error("cove never saw dockerd's manifest request")
	}
	waitFor(t, 20*time.Second, "docker's push to reach the webhook", func() bool { return len(hooks.events(t, "PUSH_ARTIFACT")) >= 1 })
	if evs := hooks.events(t, "PUSH_ARTIFACT"); len(evs) != 1 || evs[0].EventData.Resources[0].Tag != "pushed" || evs[0].Operator != "admin" {
		t.Errorf("docker push's webhook events = %+v, want one for team/alpine:pushed by admin", evs)
	}
}

func TestPodmanMirror(t *testing.T) {
	podman := requireTool(t, "podman")
	reg := startRegistry(t, "", nil)
	want := runtimeImages(t, reg)
	proxy := newFaultProxy(t, reg.url)
	s := startMirror(t, t.TempDir(), mirrorConfig(proxy.srv.URL, ""))
	d := shortDir(t, "pm")
	conf := filepath.Join(d, "registries.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`unqualified-search-registries = ["docker.io"]
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = %q
insecure = true
`, s.addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	storage := filepath.Join(d, "storage.conf")
	if err := os.WriteFile(storage, []byte(fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n", filepath.Join(d, "root"), filepath.Join(d, "run"))), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"CONTAINERS_REGISTRIES_CONF=" + conf, "CONTAINERS_STORAGE_CONF=" + storage}
	args := []string{"--root", filepath.Join(d, "root"), "--runroot", filepath.Join(d, "run"), "--storage-driver", "vfs"}
	pull := func() {
		out, err := run(t, 3*time.Minute, env, podman, append(args, "pull", "docker.io/library/ociimg:latest")...)
		if err != nil {
			t.Fatalf("podman pull: %v\n%s", err, out)
		}
		out, err = run(t, time.Minute, env, podman, append(args, "image", "inspect", "--format", "{{.Digest}}", "docker.io/library/ociimg:latest")...)
		if err != nil || strings.TrimSpace(out) != want["ociimg"].String() {
			t.Errorf("podman image digest %q (%v), want %s", strings.TrimSpace(out), err, want["ociimg"])
		}
	}
	pull()
	blobs := proxy.count("GET", "/blobs/")
	if blobs == 0 {
		t.Fatal("the first pull fetched no blob through cove")
	}
	// Remove the image so that podman must fetch every blob again: from cove's cache this time.
	if out, err := run(t, time.Minute, env, podman, append(args, "rmi", "docker.io/library/ociimg:latest")...); err != nil {
		t.Fatalf("podman rmi: %v\n%s", err, out)
	}
	pull()
	if n := proxy.count("GET", "/blobs/"); n != blobs {
		t.Errorf("the second pull sent %d blob requests upstream, want none", n-blobs)
	}
}

func TestContainerdMirror(t *testing.T) {
	containerd := requireTool(t, "containerd")
	ctr := requireTool(t, "ctr")
	reg := startRegistry(t, "", nil)
	want := runtimeImages(t, reg)
	s := startMirror(t, t.TempDir(), mirrorConfig(reg.url, ""))
	d := shortDir(t, "cd")
	sock := filepath.Join(d, "containerd.sock")
	cfg := filepath.Join(d, "config.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
`, filepath.Join(d, "root"), filepath.Join(d, "state"), sock)), 0o600); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(d, "certs.d", "docker.io")
	if err := os.MkdirAll(hosts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(fmt.Sprintf(`server = "https://registry-1.docker.io"
[host.%q]
  capabilities = ["pull", "resolve"]
`, s.url)), 0o600); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, filepath.Join(d, "containerd.log"), containerd, "--config", cfg)
	waitFor(t, 30*time.Second, "containerd to answer", func() bool {
		_, err := run(t, 10*time.Second, nil, ctr, "--address", sock, "version")
		return err == nil
	})
	for _, image := range []string{"multi", "alpine"} {
		ref := "docker.io/library/" + image + ":latest"
		out, err := run(t, 3*time.Minute, nil, ctr, "--address", sock, "images", "pull", "--hosts-dir", filepath.Join(d, "certs.d"),
			"--snapshotter", "native", "--platform", "linux/amd64", ref)
		if err != nil {
			t.Fatalf("ctr images pull %s: %v\n%s", ref, err, out)
		}
		out, err = run(t, time.Minute, nil, ctr, "--address", sock, "images", "ls")
		if err != nil || !strings.Contains(out, want[image].String()) {
			t.Errorf("ctr images ls lacks %s (%v):\n%s", want[image], err, out)
		}
	}
	if !strings.Contains(s.log(), `"path":"/v2/library/multi/manifests/latest","query":"ns=docker.io"`) {
		t.Error("cove never saw containerd's requests with ?ns=docker.io")
	}
}

// TestSkopeoPathPrefixedUpstream copies from a second upstream, named ghcr.io, selected by the
// first element of the path.
func TestSkopeoPathPrefixedUpstream(t *testing.T) {
	requireTool(t, "skopeo")
	hub := startRegistry(t, "", nil)
	ghcr := startRegistry(t, "", nil)
	img := ociImage(t, 2, 256<<10, nil)
	ghcr.seed(t, "owner/tool:v1", img)
	s := startMirror(t, t.TempDir(), mirrorConfig(hub.url, fmt.Sprintf("    ghcr.io:\n      url: %s\n", ghcr.url)))
	dest := filepath.Join(t.TempDir(), "out")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+s.addr+"/ghcr.io/owner/tool:v1", "oci:"+dest+":v1")
	raw := skopeo(t, "inspect", "--raw", "--tls-verify=false", "docker://"+s.addr+"/ghcr.io/owner/tool:v1")
	got := v1.Hash{Algorithm: "sha256", Hex: sha256hex([]byte(raw))}
	if got != must(img.Digest()) {
		t.Errorf("manifest through ghcr.io/ prefix hashes to %s, want %s", got, must(img.Digest()))
	}
}
