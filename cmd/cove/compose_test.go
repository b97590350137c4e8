package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// composeEnv is what the fleet file requires (its ${VAR:?…}); the single node's file needs none.
var composeEnv = []string{
	"PUBLIC_URL=http://registry.example:5000",
	"POSTGRES_PASSWORD=pg-password",
	"S3_ACCESS_KEY=cove",
	"S3_SECRET_KEY=s3-secret-key",
	"CLUSTER_SECRET=0123456789abcdef0123456789abcdef-fleet",
}

// composeService is the part of a rendered service the tests read.
type composeService struct {
	Image       string            `yaml:"image"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []struct {
		Target    int `yaml:"target"`
		Published int `yaml:"published"`
	} `yaml:"ports"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	Restart   string         `yaml:"restart"`
	DependsOn map[string]any `yaml:"depends_on"`
}

// composeConfig renders file with docker-compose config (no engine needed) in a clean environment
// plus env, and parses the result.
func composeConfig(t *testing.T, file string, env ...string) (map[string]composeService, string, error) {
	t.Helper()
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Fatalf("docker-compose is not installed (make test installs Debian's docker-compose): %v", err)
	}
	cmd := exec.Command(bin, "--project-directory", t.TempDir(), "-f", file, "config")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, string(out), err
	}
	var doc struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("docker-compose config of %s printed no YAML: %v\n%s", file, err, out)
	}
	return doc.Services, string(out), nil
}

// coveServices are the services that run the cove image: those whose healthcheck is cove's.
func coveServices(svcs map[string]composeService) []string {
	var names []string
	for n, s := range svcs {
		if slices.Equal(s.Healthcheck.Test, []string{"CMD", "/cove", "healthcheck"}) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// checkCoveEnv loads cove's configuration from a service's environment as the container would
// (no file: COVE_* variables on the image's own COVE_DATA and COVE_LISTEN): an unknown key, a bad
// value or a fleet that lacks a setting fails.
func checkCoveEnv(t *testing.T, what string, env map[string]string) Config {
	t.Helper()
	environ := []string{"COVE_DATA=/data", "COVE_LISTEN=:5000"}
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	cfg, err := loadConfig(env["COVE_CONFIG"], environ, nil)
	if err != nil {
		t.Errorf("%s: cove's configuration loader refuses the environment: %v", what, err)
	}
	return cfg
}

var coveVar = regexp.MustCompile(`\bCOVE_[A-Z0-9_]+`)

// Every COVE_ name written in the file, wherever it is, is one cove knows: Compose's own
// variables have other names, so that a typo in a key fails here and not on a user's machine.
func checkCoveNames(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	leaves := map[string]reflect.Value{}
	cfg := DefaultConfig()
	collectLeaves(reflect.ValueOf(&cfg).Elem(), "", leaves)
	for _, v := range coveVar.FindAllString(string(b), -1) {
		if _, ok := leaves[strings.ToLower(strings.TrimPrefix(v, envPrefix))]; !ok && v != "COVE_CONFIG" {
			t.Errorf("%s names %s, which is no configuration key of cove", filepath.Base(file), v)
		}
	}
}

func TestComposeOneNode(t *testing.T) {
	file := "../../deploy/compose/compose.yaml"
	checkCoveNames(t, file)
	svcs, out, err := composeConfig(t, file)
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	names := coveServices(svcs)
	if len(names) != 1 {
		t.Fatalf("cove services %v, want one", names)
	}
	s := svcs[names[0]]
	if s.Image != "cove:latest" || s.Restart == "" || s.Restart == "no" {
		t.Errorf("image %q restart %q, want cove:latest and a restart policy", s.Image, s.Restart)
	}
	if len(s.Ports) != 1 || s.Ports[0].Target != 5000 || s.Ports[0].Published != 5000 {
		t.Errorf("ports %+v, want 5000:5000", s.Ports)
	}
	if len(s.Volumes) != 1 || !strings.HasSuffix(s.Volumes[0], ":/data:rw") || strings.HasPrefix(s.Volumes[0], "/") {
		t.Errorf("volumes %q, want a named volume on /data", s.Volumes)
	}
	checkCoveEnv(t, names[0], s.Environment)

	// The variables reach cove: the image, the port, the admin's password.
	svcs, out, err = composeConfig(t, file, "IMAGE=cove:v9", "PORT=5555", "ADMIN_PASSWORD=Compose-admin-1")
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	s = svcs[names[0]]
	if s.Image != "cove:v9" || s.Ports[0].Published != 5555 || checkCoveEnv(t, names[0], s.Environment).Auth.AdminPassword != "Compose-admin-1" {
		t.Errorf("with IMAGE, PORT and ADMIN_PASSWORD: image %q port %+v env %v", s.Image, s.Ports, s.Environment)
	}
}

func TestComposeFleet(t *testing.T) {
	file := "../../deploy/compose/compose-fleet.yaml"
	checkCoveNames(t, file)
	svcs, out, err := composeConfig(t, file, composeEnv...)
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	names := coveServices(svcs)
	if len(names) != 3 {
		t.Fatalf("cove services %v, want three", names)
	}
	nodes, adverts := map[string]bool{}, map[string]bool{}
	for _, n := range names {
		s := svcs[n]
		if s.Image != svcs[names[0]].Image || s.Image != "cove:latest" {
			t.Errorf("%s runs %q, %s runs %q: want cove:latest on every node", n, s.Image, names[0], svcs[names[0]].Image)
		}
		cfg := checkCoveEnv(t, n, s.Environment)
		if !cfg.fleet() {
			t.Errorf("%s is not a fleet node: metadata %s, blobs %s", n, cfg.Storage.Metadata.Kind, cfg.Storage.Blobs.Kind)
		}
		for key, want := range map[string]string{
			"public_url":       "http://registry.example:5000",
			"cluster.secret":   "0123456789abcdef0123456789abcdef-fleet",
			"postgres dsn":     "postgres://cove:pg-password@postgres:5432/cove?sslmode=disable",
			"s3 secret_key":    "s3-secret-key",
			"s3 endpoint host": "s3:9000",
		} {
			got := map[string]string{"public_url": cfg.PublicURL, "cluster.secret": cfg.Cluster.Secret,
				"postgres dsn": cfg.Storage.Metadata.Postgres.DSN, "s3 secret_key": cfg.Storage.Blobs.S3.SecretKey,
				"s3 endpoint host": strings.TrimPrefix(cfg.Storage.Blobs.S3.Endpoint, "http://")}[key]
			if got != want {
				t.Errorf("%s: %s = %q, want %q", n, key, got, want)
			}
		}
		nodes[cfg.Cluster.NodeName], adverts[cfg.Cluster.Advertise] = true, true
		if _, ok := s.DependsOn["postgres"]; !ok {
			t.Errorf("%s does not wait for postgres", n)
		}
		if len(s.Volumes) != 1 || !strings.HasSuffix(s.Volumes[0], ":/data:rw") {
			t.Errorf("%s: volumes %q, want one on /data", n, s.Volumes)
		}
	}
	if len(nodes) != 3 || len(adverts) != 3 {
		t.Errorf("node names %v and advertise URLs %v: want three of each", nodes, adverts)
	}
	for _, want := range []string{"postgres", "s3", "s3-bucket", "lb"} {
		if _, ok := svcs[want]; !ok {
			t.Errorf("no service %s", want)
		}
	}
	if p := svcs["lb"].Ports; len(p) != 1 || p[0].Target != 5000 {
		t.Errorf("the balancer's ports %+v, want 5000", p)
	}
	// The balancer balances the three nodes, checking /readyz.
	cfg, err := os.ReadFile("../../deploy/compose/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range append([]string{"option httpchk GET /readyz", "option forwardfor"}, names...) {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("haproxy.cfg lacks %q", want)
		}
	}

	// Each secret missing is an error naming it.
	for i, kv := range composeEnv {
		name, _, _ := strings.Cut(kv, "=")
		env := slices.Delete(slices.Clone(composeEnv), i, i+1)
		if _, out, err := composeConfig(t, file, env...); err == nil || !strings.Contains(out, "set "+name) {
			t.Errorf("without %s: docker-compose config = %v, want an error saying to set it\n%s", name, err, out)
		}
	}
}
