package mirror_test

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"cove/mirror"
)

const (
	sigType  = "application/vnd.example.signature.v1+json"
	sbomType = "application/vnd.example.sbom.v1+json"
)

// referrerOf is an artifact whose subject is img and whose artifact type (its config's media
// type, as the referrers API reports it) is artifactType.
func referrerOf(t *testing.T, img v1.Image, artifactType string) v1.Image {
	t.Helper()
	subject, err := partialDescriptor(img)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref = mutate.MediaType(ref, types.OCIManifestSchema1)
	ref = mutate.ConfigMediaType(ref, types.MediaType(artifactType))
	return mutate.Subject(ref, subject).(v1.Image)
}

func partialDescriptor(img v1.Image) (v1.Descriptor, error) {
	d, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	size, err := img.Size()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := img.MediaType()
	return v1.Descriptor{MediaType: mt, Digest: d, Size: size}, err
}

// referrers asks cove for the referrers of subject and returns the listed digests by artifact type.
func referrers(t *testing.T, me *mirrorEnv, repo, subject, query string) (map[string]string, http.Header) {
	t.Helper()
	resp, body := me.do(t, http.MethodGet, "/v2/"+repo+"/referrers/"+subject+query, nil, false)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET referrers of %s%s = %d %s", subject, query, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != ocispec.MediaTypeImageIndex {
		t.Errorf("referrers Content-Type = %q, want %q", ct, ocispec.MediaTypeImageIndex)
	}
	var index ocispec.Index
	if err := json.Unmarshal(body, &index); err != nil {
		t.Fatalf("referrers body %s: %v", body, err)
	}
	if index.SchemaVersion != 2 || index.MediaType != ocispec.MediaTypeImageIndex || index.Manifests == nil {
		t.Errorf("referrers body = %s, want an image index with a manifests list", body)
	}
	got := map[string]string{}
	for _, d := range index.Manifests {
		got[d.Digest.String()] = d.ArtifactType
	}
	return got, resp.Header
}

// An upstream with the referrers API: its answer is passed on, filtered by artifactType with
// OCI-Filters-Applied, asked once per tag_ttl whatever the filters, and served stale when the
// upstream fails.
func TestMirrorReferrersFromTheUpstreamsAPI(t *testing.T) {
	up := newFakeUpstream(t)
	up.reg = registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0)))
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.seed(t, "library/app:v1", img)
	sig, sbom := referrerOf(t, img, sigType), referrerOf(t, img, sbomType)
	up.seed(t, "library/app:sig", sig)
	up.seed(t, "library/app:sbom", sbom)
	subject := must(img.Digest()).String()
	sigDigest, sbomDigest := must(sig.Digest()).String(), must(sbom.Digest()).String()

	got, hdr := referrers(t, me, "library/app", subject, "")
	if len(got) != 2 || got[sigDigest] != sigType || got[sbomDigest] != sbomType {
		t.Errorf("referrers = %v, want %s (%s) and %s (%s)", got, sigDigest, sigType, sbomDigest, sbomType)
	}
	if f := hdr.Get("OCI-Filters-Applied"); f != "" {
		t.Errorf("OCI-Filters-Applied = %q without a filter", f)
	}
	got, hdr = referrers(t, me, "library/app", subject, "?artifactType="+url.QueryEscape(sigType))
	if len(got) != 1 || got[sigDigest] != sigType {
		t.Errorf("referrers of type %s = %v, want %s only", sigType, got, sigDigest)
	}
	if f := hdr.Get("OCI-Filters-Applied"); f != "artifactType" {
		t.Errorf("OCI-Filters-Applied = %q, want artifactType", f)
	}
	asked := up.count("GET referrers")
	if asked != 1 {
		t.Errorf("upstream referrers requests = %d, want one whatever the filters (1)", asked)
	}

	// Within tag_ttl: from cove's memory.
	if got, _ := referrers(t, me, "library/app", subject, ""); len(got) != 2 {
		t.Errorf("cached referrers = %v", got)
	}
	if n := up.count("GET referrers"); n != asked {
		t.Errorf("upstream referrers requests within tag_ttl = %d, want still %d", n, asked)
	}

	// After it, asked again; with the upstream down, the last answer is served.
	me.clock.Add(2 * time.Minute)
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return true
	})
	if got, _ := referrers(t, me, "library/app", subject, ""); len(got) != 2 {
		t.Errorf("stale referrers with the upstream down = %v, want both", got)
	}
	if n := up.count("GET referrers"); n <= asked {
		t.Errorf("upstream referrers requests after tag_ttl = %d, want more than %d", n, asked)
	}
	// Never asked, upstream down: an error, not an empty list that says "unsigned".
	resp, body := me.do(t, http.MethodGet, "/v2/library/app/referrers/"+sigDigest, nil, false)
	if resp.StatusCode < 500 {
		t.Errorf("referrers never asked, upstream down = %d %s, want a 5xx", resp.StatusCode, body)
	}
	up.setFault(nil)

	// A subject without referrers: an empty list.
	if got, _ := referrers(t, me, "library/app", sigDigest, ""); len(got) != 0 {
		t.Errorf("referrers of a signature = %v, want none", got)
	}
}

// An upstream without the referrers API (CNCF distribution 2.x answers 404): the tag schema's
// index, sha256-<hex>, is the list, stored as a mirrored tag; the second request within tag_ttl
// makes no upstream request; after tag_ttl with the upstream down, the stored list is served.
func TestMirrorReferrersFallBackToTheTagSchema(t *testing.T) {
	up := newFakeUpstream(t)
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.seed(t, "library/app:v1", img)
	sig := referrerOf(t, img, sigType)
	sigDesc, err := partialDescriptor(sig)
	if err != nil {
		t.Fatal(err)
	}
	sigDesc.ArtifactType = sigType
	subject := must(img.Digest())
	tagIndex := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{Add: sig, Descriptor: sigDesc})
	up.seed(t, "library/app:sha256-"+subject.Hex, tagIndex)

	total := func() int {
		n := 0
		for _, k := range []string{"GET referrers", "GET manifests", "HEAD manifests", "GET ping"} {
			n += up.count(k)
		}
		return n
	}
	got, hdr := referrers(t, me, "library/app", subject.String(), "")
	if len(got) != 1 || got[must(sig.Digest()).String()] != sigType {
		t.Errorf("referrers through the tag schema = %v, want %s (%s)", got, must(sig.Digest()), sigType)
	}
	if f := hdr.Get("OCI-Filters-Applied"); f != "" {
		t.Errorf("OCI-Filters-Applied = %q without a filter", f)
	}
	if up.count("GET referrers") != 1 || up.count("GET manifests") != 1 {
		t.Errorf("upstream: %d referrers and %d manifest requests, want 1 and 1 (the API, then the tag)", up.count("GET referrers"), up.count("GET manifests"))
	}
	before := total()
	if got, _ := referrers(t, me, "library/app", subject.String(), ""); len(got) != 1 {
		t.Errorf("cached referrers = %v", got)
	}
	if n := total(); n != before {
		t.Errorf("upstream requests for the second list within tag_ttl = %d, want 0", n-before)
	}
	got, hdr = referrers(t, me, "library/app", subject.String(), "?artifactType="+url.QueryEscape(sbomType))
	if len(got) != 0 || hdr.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("referrers of type %s = %v (OCI-Filters-Applied %q), want none, filtered", sbomType, got, hdr.Get("OCI-Filters-Applied"))
	}

	// No tag for a subject: an empty list.
	if got, _ := referrers(t, me, "library/app", must(sig.Digest()).String(), ""); len(got) != 0 {
		t.Errorf("referrers of a subject without a tag = %v, want none", got)
	}

	// After tag_ttl, upstream down: the stored tag gives the list, by a node that never asked
	// too (a new cove over the same store has nothing in memory).
	me.clock.Add(2 * time.Minute)
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return true
	})
	if got, _ := referrers(t, me, "library/app", subject.String(), "?artifactType="+url.QueryEscape(sigType)); len(got) != 1 {
		t.Errorf("referrers never asked with this filter, upstream down = %v, want the stored tag's one", got)
	}
	if got, _ := referrers(t, me, "library/app", subject.String(), ""); len(got) != 1 {
		t.Errorf("stale referrers, upstream down = %v, want one", got)
	}
}

// An upstream whose next page is a page already read ends the list there, and a descriptor
// listed twice is listed once.
func TestMirrorReferrersPagesThatLoop(t *testing.T) {
	up := newFakeUpstream(t)
	d := digest.FromString("sig")
	body := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` +
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + d.String() + `","size":3,"artifactType":"` + sigType + `"}]}`
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/referrers/") {
			return false
		}
		w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
		w.Header().Set("Link", `<`+r.URL.Path+`?last=2>; rel="next"`) // the same page again, and again
		w.Write([]byte(body))
		return true
	})
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	subject := digest.FromString("subject").String()
	resp, b := me.do(t, http.MethodGet, "/v2/library/app/referrers/"+subject, nil, false)
	if resp.StatusCode != 200 || strings.Count(string(b), d.String()) != 1 {
		t.Errorf("referrers = %d %s, want %s once", resp.StatusCode, b, d)
	}
	if n := up.count("GET referrers"); n != 2 {
		t.Errorf("upstream referrers pages asked = %d, want 2 (the first, then the loop's page once)", n)
	}
}
