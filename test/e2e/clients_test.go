package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var adminAuth = remote.WithAuth(&authn.Basic{Username: "admin", Password: adminPassword})

func (s *server) ref(t *testing.T, r string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s.addr+"/"+r, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// testImage is a multi-layer image: three small layers and one of 8 MiB.
func testImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(1024, 3)
	if err != nil {
		t.Fatal(err)
	}
	big, err := random.Layer(8<<20, "application/vnd.oci.image.layer.v1.tar+gzip")
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.AppendLayers(img, big)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// checkImage pulls ref and checks that it is img, byte for byte: digest, and every layer's content.
func checkImage(t *testing.T, ref name.Reference, img v1.Image, opts ...remote.Option) {
	t.Helper()
	got, err := remote.Image(ref, opts...)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	want, _ := img.Digest()
	if d, _ := got.Digest(); d != want {
		t.Fatalf("pull %s: digest %s, want %s", ref, d, want)
	}
	layers, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		want, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		h, _, err := v1.SHA256(rc)
		rc.Close()
		if err != nil || h != want {
			t.Errorf("layer %s of %s read as %s (%v)", want, ref, h, err)
		}
	}
}

// TestGoContainerRegistryClient pushes and pulls a multi-layer image and a multi-arch index with
// go-containerregistry's remote package, the library crane and many tools are built on.
func TestGoContainerRegistryClient(t *testing.T) {
	s := startCove(t, t.TempDir())
	s.createProject("team", false)
	img := testImage(t)
	if err := remote.Write(s.ref(t, "team/app:1.0"), img, adminAuth); err != nil {
		t.Fatalf("push image: %v", err)
	}
	checkImage(t, s.ref(t, "team/app:1.0"), img, adminAuth)

	idx, err := random.Index(2048, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(s.ref(t, "team/multi:latest"), idx, adminAuth); err != nil {
		t.Fatalf("push index: %v", err)
	}
	got, err := remote.Index(s.ref(t, "team/multi:latest"), adminAuth)
	if err != nil {
		t.Fatalf("pull index: %v", err)
	}
	want, _ := idx.Digest()
	if d, _ := got.Digest(); d != want {
		t.Fatalf("index digest %s, want %s", d, want)
	}
	im, _ := idx.IndexManifest()
	for _, desc := range im.Manifests {
		child, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, s.ref(t, "team/multi@"+desc.Digest.String()), child, adminAuth)
	}
	if _, err := remote.Image(s.ref(t, "team/app:1.0")); err == nil {
		t.Error("anonymous pull of a private project succeeded")
	}
}

// ociImage is an image with OCI media types throughout (random.Image uses Docker's): n layers of size bytes.
func ociImage(t *testing.T, n int, size int64, platform *v1.Platform) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for range n {
		l, err := random.Layer(size, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	if platform != nil {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf.OS, cf.Architecture = platform.OS, platform.Architecture
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// ociIndex is a multi-arch OCI index of two images, linux/amd64 and linux/arm64. It is written
// by hand: go-containerregistry adds artifactType to index descriptors, which the skopeo of
// Debian 12 drops, so it could not copy the index with its digest preserved.
type ociIndex struct {
	raw    []byte
	images []v1.Image
}

func newOCIIndex(t *testing.T) ociIndex {
	t.Helper()
	var idx ociIndex
	var descs []string
	for _, arch := range []string{"amd64", "arm64"} {
		img := ociImage(t, 2, 4096, &v1.Platform{OS: "linux", Architecture: arch})
		d, _ := img.Digest()
		n, _ := img.Size()
		descs = append(descs, fmt.Sprintf(`{"mediaType":%q,"size":%d,"digest":%q,"platform":{"architecture":%q,"os":"linux"}}`, types.OCIManifestSchema1, n, d, arch))
		idx.images = append(idx.images, img)
	}
	idx.raw = []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[%s]}`, types.OCIImageIndex, strings.Join(descs, ",")))
	return idx
}

func (i ociIndex) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(i.raw))
	return h, err
}

// writeLayout writes img under tag "v1" and idx under tag "multi" into an OCI layout directory.
func writeLayout(t *testing.T, img v1.Image, idx ociIndex) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	for _, child := range idx.images {
		if err := p.WriteImage(child); err != nil {
			t.Fatal(err)
		}
	}
	d, _ := idx.Digest()
	if err := p.WriteBlob(d, io.NopCloser(bytes.NewReader(idx.raw))); err != nil {
		t.Fatal(err)
	}
	err = p.AppendDescriptor(v1.Descriptor{
		MediaType: types.OCIImageIndex, Size: int64(len(idx.raw)), Digest: d,
		Annotations: map[string]string{"org.opencontainers.image.ref.name": "multi"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func skopeo(t *testing.T, args ...string) string {
	t.Helper()
	bin := requireTool(t, "skopeo")
	cmd := exec.Command(bin, append([]string{"--tmpdir", t.TempDir()}, args...)...)
	cmd.Env = append(os.Environ(), "REGISTRY_AUTH_FILE="+filepath.Join(t.TempDir(), "auth.json"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestSkopeo copies a multi-layer image and a multi-arch index from an OCI layout to cove and
// back with skopeo, the client of podman and CRI-O's image library.
func TestSkopeo(t *testing.T) {
	requireTool(t, "skopeo")
	s := startCove(t, t.TempDir())
	s.createProject("team", false)
	img := ociImage(t, 4, 1<<20, nil)
	idx := newOCIIndex(t)
	src := writeLayout(t, img, idx)
	creds := "admin:" + adminPassword
	dest := "docker://" + s.addr + "/team/"

	skopeo(t, "copy", "--dest-tls-verify=false", "--dest-creds", creds, "oci:"+src+":v1", dest+"app:v1")
	skopeo(t, "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", creds, "oci:"+src+":multi", dest+"multi:v1")

	for _, tc := range []struct {
		ref  string
		want interface{ Digest() (v1.Hash, error) }
	}{{"app:v1", img}, {"multi:v1", idx}} {
		raw := skopeo(t, "inspect", "--raw", "--tls-verify=false", "--creds", creds, dest+tc.ref)
		sum := sha256.Sum256([]byte(raw))
		want, _ := tc.want.Digest()
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != want.String() {
			t.Errorf("%s: manifest from cove hashes to %s, want %s", tc.ref, got, want)
		}
	}
	// And back out: every blob verified by skopeo on the way.
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-tls-verify=false", "--src-creds", creds, dest+"app:v1", "oci:"+back+":v1")
	skopeo(t, "copy", "--all", "--src-tls-verify=false", "--src-creds", creds, dest+"multi:v1", "oci:"+back+":multi")
	p, err := layout.FromPath(back)
	if err != nil {
		t.Fatal(err)
	}
	ii, _ := p.ImageIndex()
	m, _ := ii.IndexManifest()
	got := map[string]bool{}
	for _, d := range m.Manifests {
		got[d.Digest.String()] = true
	}
	for _, w := range []interface{ Digest() (v1.Hash, error) }{img, idx} {
		d, _ := w.Digest()
		if !got[d.String()] {
			t.Errorf("copied back layout lacks %s (has %v)", d, got)
		}
	}
	checkImage(t, s.ref(t, "team/app:v1"), img, adminAuth)
}

func remoteWrite(s *server, t *testing.T, ref string, img v1.Image) error {
	return remote.Write(s.ref(t, ref), img, adminAuth)
}

func mutateAppend(img v1.Image, l v1.Layer) (v1.Image, error) { return mutate.AppendLayers(img, l) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// asIndex is the hand-written index as a v1.ImageIndex, for pushing with go-containerregistry.
func (i ociIndex) asIndex(t *testing.T) v1.ImageIndex {
	t.Helper()
	return rawIndex{i}
}

// rawIndex serves the exact bytes of an ociIndex through go-containerregistry's interface.
type rawIndex struct{ ociIndex }

func (r rawIndex) MediaType() (types.MediaType, error) { return types.OCIImageIndex, nil }
func (r rawIndex) Size() (int64, error)                { return int64(len(r.raw)), nil }
func (r rawIndex) RawManifest() ([]byte, error)        { return r.raw, nil }
func (r rawIndex) IndexManifest() (*v1.IndexManifest, error) {
	return v1.ParseIndexManifest(bytes.NewReader(r.raw))
}
func (r rawIndex) Image(h v1.Hash) (v1.Image, error) {
	for _, img := range r.images {
		if d, _ := img.Digest(); d == h {
			return img, nil
		}
	}
	return nil, fmt.Errorf("no image %s", h)
}
func (r rawIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	return nil, fmt.Errorf("no index %s", h)
}
