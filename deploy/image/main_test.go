package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

var created = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeBinary builds testdata/fakecove for linux/arch as make image builds cove.
func fakeBinary(t *testing.T, arch, ldflags string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "cove")
	cmd := exec.Command("go", "build", "-ldflags", ldflags, "-o", out, "./testdata/fakecove")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// entry is one tar header of a layer, with its body.
type entry struct {
	hdr  *tar.Header
	body string
}

func layerEntries(t *testing.T, l v1.Layer) map[string]entry {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = entry{h, string(b)}
	}
}

func TestLayers(t *testing.T) {
	bin := fakeBinary(t, "arm64", "-X main.version=v1.2.3 -X main.commit=abc123")
	certs := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(certs, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	o := options{binaries: binaryFlag{{platform: v1.Platform{OS: "linux", Architecture: "arm64"}, path: bin}},
		created: created, certs: certs, out: out, repo: "cove", source: "https://example.org/cove"}
	if _, err := build(o); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(filepath.Join(out, "cove-image-arm64.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 2 {
		t.Fatalf("layers = %d, %v; want 2 (base and binary)", len(layers), err)
	}
	files := layerEntries(t, layers[0])
	for name, e := range layerEntries(t, layers[1]) {
		files[name] = e
	}
	for _, c := range []struct {
		name     string
		typ      byte
		mode     int64
		uid, gid int
		body     string // a part of it
	}{
		{"cove", tar.TypeReg, 0o755, 0, 0, ""},
		{"etc/passwd", tar.TypeReg, 0o644, 0, 0, "cove:x:65532:65532:cove:/data:/sbin/nologin\n"},
		{"etc/group", tar.TypeReg, 0o644, 0, 0, "cove:x:65532:\n"},
		{"etc/ssl/certs/ca-certificates.crt", tar.TypeReg, 0o644, 0, 0, "BEGIN CERTIFICATE"},
		{"data/", tar.TypeDir, 0o750, 65532, 65532, ""},
		{"tmp/", tar.TypeDir, 0o1777, 0, 0, ""},
	} {
		e, ok := files[c.name]
		if !ok {
			t.Errorf("the image has no %s", c.name)
			continue
		}
		h := e.hdr
		if h.Typeflag != c.typ || h.Mode != c.mode || h.Uid != c.uid || h.Gid != c.gid || !h.ModTime.Equal(created) {
			t.Errorf("%s: type %c mode %o owner %d:%d time %v, want %c %o %d:%d %v", c.name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime, c.typ, c.mode, c.uid, c.gid, created)
		}
		if !strings.Contains(e.body, c.body) {
			t.Errorf("%s holds %q, want %q in it", c.name, e.body, c.body)
		}
	}
	if b, _ := os.ReadFile(bin); files["cove"].body != string(b) {
		t.Error("/cove is not the binary")
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "arm64" || cf.OS != "linux" || !cf.Created.Time.Equal(created) {
		t.Errorf("config: %s/%s created %v", cf.OS, cf.Architecture, cf.Created)
	}
	for k, want := range map[string]string{labelVersion: "v1.2.3", labelRevision: "abc123", labelSource: "https://example.org/cove",
		labelCreated: "2026-01-02T03:04:05Z", labelTitle: "cove"} {
		if got := cf.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
	if _, ok := cf.Config.Labels[labelLicenses]; ok {
		t.Errorf("a licenses label without --licenses: %q", cf.Config.Labels[labelLicenses])
	}

	// The same inputs give the same image.
	again := t.TempDir()
	o.out = again
	if _, err := build(o); err != nil {
		t.Fatal(err)
	}
	lp1, _ := layout.ImageIndexFromPath(filepath.Join(out, "cove-image"))
	lp2, _ := layout.ImageIndexFromPath(filepath.Join(again, "cove-image"))
	d1, err1 := lp1.Digest()
	d2, err2 := lp2.Digest()
	if err1 != nil || err2 != nil || d1 != d2 {
		t.Errorf("two builds of the same inputs: %v (%v) and %v (%v)", d1, err1, d2, err2)
	}
}

func TestRefusedBinaries(t *testing.T) {
	plain := fakeBinary(t, "amd64", "")
	v1bin := fakeBinary(t, "amd64", "-X main.version=v1 -X main.commit=abc")
	v2bin := fakeBinary(t, "arm64", "-X main.version=v2 -X main.commit=abc")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no ldflags", []string{"--binary", "linux/amd64=" + plain}, "built without -ldflags"},
		{"two versions", []string{"--binary", "linux/amd64=" + v1bin, "--binary", "linux/arm64=" + v2bin}, "from the same commit"},
		{"not a Go binary", []string{"--binary", "linux/amd64=/etc/passwd"}, "not a Go binary"},
		{"no platform", []string{"--binary", v1bin}, "want os/arch=path"},
		{"no binary", nil, "no --binary"},
		{"no created", []string{"--binary", "linux/amd64=" + v1bin, "--created", ""}, "RFC 3339"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"--out", t.TempDir(), "--created", "2026-01-02T03:04:05Z"}, c.args...)
			err := run(args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("run(%q) = %v, want an error saying %q", c.args, err, c.want)
			}
		})
	}
}
