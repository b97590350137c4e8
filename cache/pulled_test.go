package cache

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

// A repository's last pull is its own: two repositories holding the same manifest (same digest)
// keep their pull times apart, a pull in one leaves the other's as it was; a mirrored manifest
// fetched for a client (CountPull) counts as pulled; a delete takes the pull time with it.
func TestPullTimePerRepository(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0).UTC()
	s := openStore(t, Config{Now: func() time.Time { return now }})

	// The same image in two local repositories, and in two mirrored ones.
	blobs := []string{"shared config", "shared layer"}
	var refs []digest.Digest
	for _, c := range blobs {
		refs = append(refs, digest.FromString(c))
	}
	body := []byte(`{"schemaVersion":2,"config":"` + refs[0] + `","layers":["` + refs[1] + `"]}`)
	m := Manifest{Digest: digest.FromBytes(body), MediaType: "application/vnd.oci.image.manifest.v1+json", Blobs: refs}
	for _, repo := range []string{"p/a", "p/b"} {
		for _, c := range blobs {
			if _, err := s.PutBlob(ctx, repo, digest.FromString(c), strings.NewReader(c), -1); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Manifests.Put(ctx, repo, m, body, []string{"v1"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, repo := range []string{"docker.io/x/one", "docker.io/x/two"} {
		if err := s.Manifests.PutMirrored(ctx, repo, m, body, "", now); err != nil {
			t.Fatal(err)
		}
	}
	pulled := func(repo string) time.Time {
		t.Helper()
		arts, err := s.Manifests.Artifacts(ctx, repo)
		if err != nil {
			t.Fatalf("Artifacts(%q): %v", repo, err)
		}
		for _, a := range arts {
			if a.Digest == m.Digest {
				return a.Pulled
			}
		}
		t.Fatalf("Artifacts(%q) lacks %s", repo, m.Digest)
		return time.Time{}
	}
	summary := func(repo string) RepoSummary {
		t.Helper()
		sums, err := s.Manifests.RepositorySummaries(ctx, repo)
		if err != nil || len(sums) != 1 {
			t.Fatalf("RepositorySummaries(%q) = %v, %v", repo, sums, err)
		}
		return sums[0]
	}
	for _, repo := range []string{"p/a", "p/b", "docker.io/x/one", "docker.io/x/two"} {
		if got := pulled(repo); !got.IsZero() {
			t.Errorf("%s: pull time %v before any pull, want none", repo, got)
		}
	}

	t1 := now.Add(time.Hour)
	now = t1
	if _, _, err := s.Manifests.Get(ctx, "p/a", "v1"); err != nil {
		t.Fatal(err)
	}
	if got := pulled("p/a"); !got.Equal(t1) {
		t.Errorf("p/a: pull time %v after its pull, want %v", got, t1)
	}
	if got := pulled("p/b"); !got.IsZero() {
		t.Errorf("p/b: pull time %v after a pull of p/a only, want none", got)
	}
	if sum := summary("p/b"); !sum.Pulled.IsZero() || sum.Pulls != 0 {
		t.Errorf("p/b summary: pulled %v, %d pulls; want never, 0", sum.Pulled, sum.Pulls)
	}
	if sum := summary("p/a"); !sum.Pulled.Equal(t1) || sum.Pulls != 1 {
		t.Errorf("p/a summary: pulled %v, %d pulls; want %v, 1", sum.Pulled, sum.Pulls, t1)
	}

	t2 := now.Add(time.Hour)
	now = t2
	if _, _, err := s.Manifests.Get(ctx, "p/b", m.Digest.String()); err != nil { // by digest only
		t.Fatal(err)
	}
	if got := pulled("p/b"); !got.Equal(t2) {
		t.Errorf("p/b: pull time %v after its pull by digest, want %v", got, t2)
	}
	if got := pulled("p/a"); !got.Equal(t1) {
		t.Errorf("p/a: pull time %v after a pull of p/b, want its own %v", got, t1)
	}

	// A mirrored manifest fetched for a client counts as a pull there, and there only.
	t3 := now.Add(time.Hour)
	now = t3
	s.Manifests.CountPull("docker.io/x/one", m.Digest)
	if got := pulled("docker.io/x/one"); !got.Equal(t3) {
		t.Errorf("docker.io/x/one: pull time %v after a fetch for a client, want %v", got, t3)
	}
	if got := pulled("docker.io/x/two"); !got.IsZero() {
		t.Errorf("docker.io/x/two: pull time %v after a pull of x/one, want none", got)
	}
	if got := pulled("p/a"); !got.Equal(t1) {
		t.Errorf("p/a: pull time %v after a mirrored pull of the digest, want %v", got, t1)
	}

	// A pull recorded for a manifest deleted before the flush writes nothing; a manifest pushed
	// again starts unpulled; deletes take the pull times with them.
	s.Manifests.CountPull("p/a", m.Digest)
	if err := s.Manifests.Delete(ctx, "p/a", m.Digest); err != nil {
		t.Fatal(err)
	}
	if err := s.Evictor.flushAccess(); err != nil {
		t.Fatal(err)
	}
	if err := s.Manifests.Put(ctx, "p/a", m, body, nil); err != nil {
		t.Fatal(err)
	}
	if got := pulled("p/a"); !got.IsZero() {
		t.Errorf("p/a: pull time %v of a manifest deleted and pushed again, want none", got)
	}
	if err := s.Manifests.DeleteRepository(ctx, "p/b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Manifests.DeleteRepository(ctx, "docker.io/x/one"); err != nil {
		t.Fatal(err)
	}
	own := []byte(`{"schemaVersion":2,"own":1}`)
	om := Manifest{Digest: digest.FromBytes(own), MediaType: "application/vnd.oci.image.manifest.v1+json"}
	if err := s.Manifests.PutMirrored(ctx, "docker.io/x/three", om, own, "", now); err != nil {
		t.Fatal(err)
	}
	s.Manifests.CountPull("docker.io/x/three", om.Digest)
	if got := onlyPulled(t, s, "docker.io/x/three"); !got.Equal(now) {
		t.Errorf("docker.io/x/three: pull time %v, want %v", got, now)
	}
	if _, err := s.Evictor.EvictRepository(ctx, "docker.io/x/three"); err != nil {
		t.Fatal(err)
	}
	var left []string
	err := s.db.View(ctx, func(txn kv.Txn) error {
		return scan(txn, []byte(prefixPulled), "", func(key, _ []byte) bool {
			left = append(left, strings.ReplaceAll(string(key), sep, "@"))
			return true
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pulled/docker.io/x/two@" + m.Digest.String(), "pulled/p/a@" + m.Digest.String()}
	if strings.Join(left, " ") != strings.Join(want, " ") {
		t.Errorf("pull times left = %v, want %v", left, want)
	}

	// A manifest stored before cove kept pulls per repository shows its blob's last read.
	if err := s.db.Update(ctx, func(txn kv.Txn) error { return txn.Delete(pulledKey("docker.io/x/two", m.Digest)) }); err != nil {
		t.Fatal(err)
	}
	if got := pulled("docker.io/x/two"); !got.Equal(t3) {
		t.Errorf("docker.io/x/two without a pull record: %v, want the blob's last read %v", got, t3)
	}
}

// onlyPulled is the last pull of repo's only artifact.
func onlyPulled(t *testing.T, s *Store, repo string) time.Time {
	t.Helper()
	arts, err := s.Manifests.Artifacts(context.Background(), repo)
	if err != nil || len(arts) != 1 {
		t.Fatalf("Artifacts(%q) = %v, %v; want one", repo, arts, err)
	}
	return arts[0].Pulled
}
