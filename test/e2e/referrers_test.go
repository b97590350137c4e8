package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// What cosign writes (github.com/sigstore/cosign, pkg/oci/static and pkg/types).
const (
	cosignSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
	cosignSigAnnotation = "dev.cosignproject.cosign/signature"
	dsseEnvelope        = "application/vnd.dsse.envelope.v1+json"
	inTotoPayload       = "application/vnd.in-toto+json"
	e2ePredicateType    = "https://cove.example/e2e/attestation/v1"
	sbomArtifactType    = "application/vnd.example.sbom.v1+json"
)

// getManifest asks cove for a manifest, as a client that takes any type does.
func getManifest(t *testing.T, s *server, repo, ref string) (*http.Response, []byte) {
	t.Helper()
	accept := strings.Join([]string{string(types.OCIImageIndex), string(types.OCIManifestSchema1),
		string(types.DockerManifestList), string(types.DockerManifestSchema2)}, ", ")
	resp, body := s.do("GET", "/v2/"+repo+"/manifests/"+ref, nil, false, "Accept", accept)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s manifest %s = %d %s", repo, ref, resp.StatusCode, body)
	}
	return resp, body
}

// upstreamManifest is what the upstream itself answers for a manifest: its type and bytes.
func upstreamManifest(t *testing.T, reg *upstreamRegistry, repo, ref string) (string, []byte) {
	t.Helper()
	ref2, err := name.ParseReference(reg.host+"/"+repo+refSep(ref)+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref2)
	if err != nil {
		t.Fatalf("upstream %s %s: %v", repo, ref, err)
	}
	return string(desc.MediaType), desc.Manifest
}

func refSep(ref string) string {
	if strings.Contains(ref, ":") {
		return "@"
	}
	return ":"
}

// mirroredPull reads a cached upstream repository's last pull and pull count from the admin API
// (GET /api/v2.0/mirror/repositories); a zero time when never pulled.
func mirroredPull(t *testing.T, s *server, repo string) (time.Time, int64) {
	t.Helper()
	resp, body := s.do("GET", "/api/v2.0/mirror/repositories", nil, true)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v2.0/mirror/repositories = %d %s", resp.StatusCode, body)
	}
	var repos []struct {
		Name      string    `json:"name"`
		PullTime  time.Time `json:"pull_time"`
		PullCount int64     `json:"pull_count"`
	}
	if err := json.Unmarshal(body, &repos); err != nil {
		t.Fatalf("mirror repositories %s: %v", body, err)
	}
	for _, r := range repos {
		if r.Name == repo {
			return r.PullTime, r.PullCount
		}
	}
	t.Fatalf("mirror repositories %s: no %s", body, repo)
	return time.Time{}, 0
}

// A multi-arch index pulled through cove is the upstream's, byte for byte (digest, media type,
// body), and its child manifests are fetched only when asked for, each once. A pull by digest
// alone (as Kubernetes pulls) sets the repository's last pull; another repository holding the
// same digest keeps its own.
func TestMirrorIndexFidelityAndLastPull(t *testing.T) {
	reg := startRegistry(t, "", nil)
	proxy := newFaultProxy(t, reg.url)
	idx, err := random.Index(512, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	reg.seed(t, "library/multi:v1", idx)
	reg.seed(t, "library/copy:v1", idx)
	s := startMirror(t, t.TempDir(), mirrorConfig(proxy.srv.URL, ""))
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	upType, upBody := upstreamManifest(t, reg, "library/multi", "v1")
	dgst := must(idx.Digest()).String()

	resp, body := getManifest(t, s, "library/multi", "v1")
	if !bytes.Equal(body, upBody) || resp.Header.Get("Content-Type") != upType || resp.Header.Get("Docker-Content-Digest") != dgst {
		t.Errorf("index through cove: %s, %s, %d bytes; want the upstream's %s, %s, %d bytes",
			resp.Header.Get("Content-Type"), resp.Header.Get("Docker-Content-Digest"), len(body), upType, dgst, len(upBody))
	}
	for _, c := range im.Manifests {
		if n := proxy.count("GET", "/manifests/"+c.Digest.String()) + proxy.count("HEAD", "/manifests/"+c.Digest.String()); n != 0 {
			t.Errorf("child %s: %d upstream requests after a pull of the index alone, want 0", c.Digest, n)
		}
	}
	child := im.Manifests[1].Digest.String()
	_, upChild := upstreamManifest(t, reg, "library/multi", child)
	if _, body := getManifest(t, s, "library/multi", child); !bytes.Equal(body, upChild) {
		t.Errorf("child %s through cove differs from the upstream's", child)
	}
	for i, c := range im.Manifests {
		want := 0
		if i == 1 {
			want = 1
		}
		if n := proxy.count("GET", "/manifests/"+c.Digest.String()); n != want {
			t.Errorf("child %d: %d upstream GETs after asking for child 1, want %d", i, n, want)
		}
	}
	before := upstreamRequests(proxy)
	if resp, body := getManifest(t, s, "library/multi", dgst); !bytes.Equal(body, upBody) || resp.Header.Get("Content-Type") != upType {
		t.Errorf("index by digest from the cache differs: %s", resp.Header.Get("Content-Type"))
	}
	if n := upstreamRequests(proxy) - before; n != 0 {
		t.Errorf("index by digest, cached: %d upstream requests, want 0", n)
	}

	// Last pull: library/copy is pulled by tag; then library/multi's index by digest alone, first
	// through its upstream (the copy is not yet cached under this name), then from the cache.
	getManifest(t, s, "library/copy", "v1")
	copyPulled, copyPulls := mirroredPull(t, s, "docker.io/library/copy")
	if copyPulled.IsZero() || copyPulls != 1 {
		t.Fatalf("library/copy after a pull: pull_time %v, pull_count %d; want a time and 1", copyPulled, copyPulls)
	}
	// A repository pulled by digest alone, never by tag.
	reg.seed(t, "library/bydigest:v1", idx)
	getManifest(t, s, "library/bydigest", dgst)
	first, n := mirroredPull(t, s, "docker.io/library/bydigest")
	if !first.After(copyPulled) || n != 1 {
		t.Errorf("library/bydigest pulled by digest alone: pull_time %v, pull_count %d; want after %v, 1", first, n, copyPulled)
	}
	getManifest(t, s, "library/bydigest", dgst) // from the cache now
	if again, n := mirroredPull(t, s, "docker.io/library/bydigest"); !again.After(first) || n != 2 {
		t.Errorf("library/bydigest pulled by digest from the cache: pull_time %v, pull_count %d; want after %v, 2", again, n, first)
	}
	if got, n := mirroredPull(t, s, "docker.io/library/copy"); !got.Equal(copyPulled) || n != 1 {
		t.Errorf("library/copy after pulls of library/bydigest: pull_time %v, pull_count %d; want its own %v, 1", got, n, copyPulled)
	}
}

// signer is an ECDSA P-256 key, as `cosign generate-key-pair` makes.
type signer struct{ key *ecdsa.PrivateKey }

func (k signer) sign(t *testing.T, msg []byte) []byte {
	t.Helper()
	h := sha256.Sum256(msg)
	sig, err := ecdsa.SignASN1(rand.Reader, k.key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func (k signer) verify(msg, sig []byte) bool {
	h := sha256.Sum256(msg)
	return ecdsa.VerifyASN1(&k.key.PublicKey, h[:], sig)
}

// cosignImage is an artifact as cosign pushes one: an OCI manifest, one layer of mediaType with
// annotations.
func cosignImage(t *testing.T, layer []byte, mediaType types.MediaType, annotations map[string]string) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(img, mutate.Addendum{Layer: static.NewLayer(layer, mediaType), Annotations: annotations})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// pae is DSSE's pre-authentication encoding, what a DSSE signature signs.
func pae(payloadType string, body []byte) []byte {
	return fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(body), body)
}

// An image signed as cosign signs (a simple-signing payload under sha256-<hex>.sig, an in-toto
// attestation under sha256-<hex>.att) and with an OCI 1.1 referrer (and, since the upstream has
// no referrers API, the tag-schema index sha256-<hex> an OCI 1.1 client pushes beside it): through
// cove, the signature and attestation come back byte for byte and verify with the public key; the
// referrers API lists the referrer, and asks the upstream once per tag_ttl.
func TestMirrorSignaturesAndReferrers(t *testing.T) {
	reg := startRegistry(t, "", nil)
	proxy := newFaultProxy(t, reg.url)
	img := testImage(t)
	reg.seed(t, "acme/signed:v1", img)
	imgDigest := must(img.Digest())
	imgDesc := v1.Descriptor{MediaType: must(img.MediaType()), Digest: imgDigest, Size: must(img.Size())}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := signer{key}

	// The signature: cosign's simple-signing payload, signed over its SHA-256.
	payload := fmt.Appendf(nil, `{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`,
		reg.host+"/acme/signed", imgDigest.String())
	sigImg := cosignImage(t, payload, cosignSimpleSigning, map[string]string{
		cosignSigAnnotation: base64.StdEncoding.EncodeToString(k.sign(t, payload)),
	})
	tagBase := imgDigest.Algorithm + "-" + imgDigest.Hex
	reg.seed(t, "acme/signed:"+tagBase+".sig", sigImg)

	// The attestation: an in-toto statement in a DSSE envelope.
	statement := fmt.Appendf(nil, `{"_type":"https://in-toto.io/Statement/v0.1","predicateType":%q,"subject":[{"name":%q,"digest":{"sha256":%q}}],"predicate":{"builder":"e2e"}}`,
		e2ePredicateType, reg.host+"/acme/signed", imgDigest.Hex)
	envelope, err := json.Marshal(map[string]any{
		"payloadType": inTotoPayload,
		"payload":     base64.StdEncoding.EncodeToString(statement),
		"signatures":  []map[string]string{{"keyid": "", "sig": base64.StdEncoding.EncodeToString(k.sign(t, pae(inTotoPayload, statement)))}},
	})
	if err != nil {
		t.Fatal(err)
	}
	attImg := cosignImage(t, envelope, dsseEnvelope, map[string]string{cosignSigAnnotation: "", "predicateType": e2ePredicateType})
	reg.seed(t, "acme/signed:"+tagBase+".att", attImg)

	// An OCI 1.1 referrer, and the tag-schema index that lists it.
	sbom := mutate.Subject(cosignImage(t, []byte(`{"sbom":true}`), "application/json", nil), imgDesc).(v1.Image)
	sbom = mutate.ConfigMediaType(sbom, sbomArtifactType)
	reg.seed(t, "acme/signed:sbom", sbom)
	sbomDigest := must(sbom.Digest())
	tagIndex := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{
		Add:        sbom,
		Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1, ArtifactType: sbomArtifactType},
	})
	reg.seed(t, "acme/signed:"+tagBase, tagIndex)

	s := startMirror(t, t.TempDir(), mirrorConfig(proxy.srv.URL, "  tag_ttl: 5m\n"))

	// The signature and attestation, byte for byte, and what they sign.
	for _, c := range []struct {
		tag  string
		want v1.Image
	}{{tagBase + ".sig", sigImg}, {tagBase + ".att", attImg}} {
		_, upBody := upstreamManifest(t, reg, "acme/signed", c.tag)
		resp, body := getManifest(t, s, "acme/signed", c.tag)
		if !bytes.Equal(body, upBody) || resp.Header.Get("Docker-Content-Digest") != must(c.want.Digest()).String() {
			t.Errorf("%s through cove: digest %s, %d bytes; want the upstream's %s, %d bytes",
				c.tag, resp.Header.Get("Docker-Content-Digest"), len(body), must(c.want.Digest()), len(upBody))
		}
	}
	sigThrough, err := remote.Image(s.ref(t, "acme/signed:"+tagBase+".sig"))
	if err != nil {
		t.Fatal(err)
	}
	sm := must(sigThrough.Manifest())
	if len(sm.Layers) != 1 || sm.Layers[0].MediaType != cosignSimpleSigning {
		t.Fatalf("signature manifest layers = %+v", sm.Layers)
	}
	gotPayload := readLayer(t, sigThrough, sm.Layers[0].Digest)
	rawSig, err := base64.StdEncoding.DecodeString(sm.Layers[0].Annotations[cosignSigAnnotation])
	if err != nil || !k.verify(gotPayload, rawSig) {
		t.Errorf("signature pulled through cove does not verify with the public key (%v)", err)
	}
	var ss struct {
		Critical struct {
			Image struct {
				Digest string `json:"docker-manifest-digest"`
			} `json:"image"`
			Type string `json:"type"`
		} `json:"critical"`
	}
	if err := json.Unmarshal(gotPayload, &ss); err != nil || ss.Critical.Image.Digest != imgDigest.String() || ss.Critical.Type != "cosign container image signature" {
		t.Errorf("signature payload %s (%v): want cosign's claim of %s", gotPayload, err, imgDigest)
	}
	attThrough, err := remote.Image(s.ref(t, "acme/signed:"+tagBase+".att"))
	if err != nil {
		t.Fatal(err)
	}
	am := must(attThrough.Manifest())
	var env struct {
		PayloadType string `json:"payloadType"`
		Payload     []byte `json:"payload"`
		Signatures  []struct {
			Sig []byte `json:"sig"`
		} `json:"signatures"`
	}
	if err := json.Unmarshal(readLayer(t, attThrough, am.Layers[0].Digest), &env); err != nil || len(env.Signatures) != 1 {
		t.Fatalf("attestation envelope through cove: %v", err)
	}
	if !k.verify(pae(env.PayloadType, env.Payload), env.Signatures[0].Sig) || !bytes.Equal(env.Payload, statement) {
		t.Errorf("attestation pulled through cove does not verify with the public key")
	}

	// The referrers API lists the OCI 1.1 referrer (through the tag schema: docker-registry 2.8 has
	// no referrers API); the second list within tag_ttl asks the upstream nothing.
	before := upstreamRequests(proxy)
	resp, body := s.do("GET", "/v2/acme/signed/referrers/"+imgDigest.String(), nil, false)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != string(types.OCIImageIndex) {
		t.Fatalf("referrers = %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var list v1.IndexManifest
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Manifests) != 1 || list.Manifests[0].Digest != sbomDigest || list.Manifests[0].ArtifactType != sbomArtifactType {
		t.Errorf("referrers = %s, want %s (%s)", body, sbomDigest, sbomArtifactType)
	}
	if proxy.count("GET", "/referrers/") != 1 || upstreamRequests(proxy) == before {
		t.Errorf("first referrers list: %d upstream referrers requests, %d in all; want 1 and the tag", proxy.count("GET", "/referrers/"), upstreamRequests(proxy)-before)
	}
	before = upstreamRequests(proxy)
	for _, q := range []string{"", "?artifactType=" + url.QueryEscape(sbomArtifactType)} {
		resp, body := s.do("GET", "/v2/acme/signed/referrers/"+imgDigest.String()+q, nil, false)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), sbomDigest.String()) {
			t.Errorf("referrers%s = %d %s", q, resp.StatusCode, body)
		}
	}
	if n := upstreamRequests(proxy) - before; n != 0 {
		t.Errorf("referrers within tag_ttl: %d upstream requests, want 0", n)
	}
	// The referrer itself, byte for byte.
	_, upSbom := upstreamManifest(t, reg, "acme/signed", sbomDigest.String())
	if _, body := getManifest(t, s, "acme/signed", sbomDigest.String()); !bytes.Equal(body, upSbom) {
		t.Errorf("referrer %s through cove differs from the upstream's", sbomDigest)
	}

	// cosign itself verifies the signature and the attestation through cove.
	runCosignVerify(t, s, key, "acme/signed@"+imgDigest.String())
}

func readLayer(t *testing.T, img v1.Image, dgst v1.Hash) []byte {
	t.Helper()
	l, err := img.LayerByDigest(dgst)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed() // checked against its digest as it is read
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("layer %s through cove: %v", dgst, err)
	}
	return b
}

// runCosignVerify runs `cosign verify` and `cosign verify-attestation` with the public key against
// ref on cove, with no transparency log (none is reachable here).
func runCosignVerify(t *testing.T, s *server, key *ecdsa.PrivateKey, ref string) {
	t.Helper()
	cosign := os.Getenv("E2E_COSIGN_BIN")
	if cosign == "" {
		cosign = requireTool(t, "cosign")
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	pub := filepath.Join(home, "cosign.pub")
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"verify", "--key", pub, "--insecure-ignore-tlog=true", "--offline=true", "--allow-http-registry=true", "--output", "json"},
		{"verify-attestation", "--key", pub, "--insecure-ignore-tlog=true", "--offline=true", "--allow-http-registry=true", "--type", e2ePredicateType, "--output", "json"},
	} {
		cmd := exec.Command(cosign, append(args, s.addr+"/"+ref)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "TUF_ROOT="+filepath.Join(home, "tuf"), "SIGSTORE_NO_CACHE=true")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("cosign %s against cove: %v\n%s", args[0], err, out)
		}
	}
}
