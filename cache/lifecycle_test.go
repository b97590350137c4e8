package cache

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Quotas count each blob of a project once, whichever of its repositories hold it; a commit past
// the limit is refused before its file is placed, and nothing changes; a repository's delete
// gives back what only it held; a recount finds the same.
func TestQuotas(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	var events []string
	s.onQuota = func(project, kind string, used, hard int64) { events = append(events, project+":"+kind) }
	if _, err := s.SetQuota(ctx, "p", 100); err != nil {
		t.Fatal(err)
	}
	put := func(repo, content string) error {
		_, err := s.PutBlob(ctx, repo, digest.FromString(content), strings.NewReader(content), int64(len(content)))
		return err
	}
	forty := strings.Repeat("a", 40)
	if err := put("p/a", forty); err != nil {
		t.Fatal(err)
	}
	if err := put("p/b", forty); err != nil { // the same blob, another repository
		t.Fatal(err)
	}
	if q, _ := s.Quota(ctx, "p"); q.Used != 40 {
		t.Fatalf("used = %d, want 40: a shared blob counts once", q.Used)
	}
	fifty := strings.Repeat("b", 50)
	if err := put("p/a", fifty); err != nil {
		t.Fatal(err)
	}
	if q, _ := s.Quota(ctx, "p"); q.Used != 90 || len(events) != 1 || events[0] != "p:warning" {
		t.Fatalf("used = %d, events %v; want 90 and one warning at 85 %%", q.Used, events)
	}
	big := strings.Repeat("c", 20)
	err := put("p/c", big)
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Used != 90 || qe.Hard != 100 || !strings.Contains(err.Error(), "Quota exceeded") {
		t.Fatalf("a blob past the quota = %v", err)
	}
	if s.HasBlob(ctx, digest.FromString(big)) {
		t.Error("the refused blob is stored")
	}
	if err := put("other/x", big); err != nil { // another project, no quota
		t.Fatalf("a project without a quota: %v", err)
	}
	if err := s.Manifests.DeleteRepository(ctx, "p/b"); err != nil {
		t.Fatal(err)
	}
	if q, _ := s.Quota(ctx, "p"); q.Used != 90 {
		t.Errorf("used after deleting a repository that shared its blob = %d, want 90", q.Used)
	}
	if err := s.Manifests.DeleteRepository(ctx, "p/a"); err != nil {
		t.Fatal(err)
	}
	if q, _ := s.Quota(ctx, "p"); q.Used != 0 {
		t.Errorf("used after deleting every repository = %d, want 0", q.Used)
	}
	if err := put("p/a", fifty); err != nil {
		t.Fatal(err)
	}
	if q, err := s.Recount(ctx, "p"); err != nil || q.Used != 50 {
		t.Errorf("recount = %d, %v; want 50", q.Used, err)
	}
}

// An immutable tag is never moved nor deleted, whichever way; other tags are.
func TestImmutableTags(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	m, body := putImage(t, s, "p/a")
	if err := s.Manifests.Put(ctx, "p/a", m, body, []string{"v1", "dev"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Manifests.AddImmutableRule(ctx, ImmutableRule{Project: "p", TagPattern: "v*", RepoPattern: "**"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Manifests.AddImmutableRule(ctx, ImmutableRule{Project: "p", TagPattern: "v*", RepoPattern: "**"}); !errors.Is(err, ErrRuleExists) {
		t.Errorf("the same rule twice = %v", err)
	}
	other, otherBody := putImage(t, s, "p/a")
	other.Digest = digest.FromBytes(append(bytes.Clone(otherBody), ' '))
	otherBody = append(bytes.Clone(otherBody), ' ')
	if err := s.Manifests.Put(ctx, "p/a", other, otherBody, []string{"v1"}); !errors.Is(err, ErrTagImmutable) {
		t.Errorf("moving v1 = %v, want ErrTagImmutable", err)
	}
	if err := s.Manifests.Put(ctx, "p/a", m, body, []string{"v1"}); err != nil {
		t.Errorf("pushing v1 again unchanged = %v", err)
	}
	if err := s.Manifests.Put(ctx, "p/a", other, otherBody, []string{"dev"}); err != nil {
		t.Errorf("moving dev = %v", err)
	}
	for name, err := range map[string]error{
		"DeleteTag":        s.Manifests.DeleteTag(ctx, "p/a", "v1"),
		"Delete":           s.Manifests.Delete(ctx, "p/a", m.Digest),
		"DeleteRepository": s.Manifests.DeleteRepository(ctx, "p/a"),
	} {
		var ie *ImmutableError
		if !errors.As(err, &ie) || ie.Repo != "a" || ie.Tag != "v1" {
			t.Errorf("%s of the immutable v1 = %v", name, err)
		}
	}
	if imm, _ := s.Manifests.Immutable(ctx, "p/a", []string{"v1", "dev"}); !imm["v1"] || imm["dev"] {
		t.Errorf("Immutable = %v", imm)
	}
	rules, _ := s.Manifests.ImmutableRules(ctx, "p")
	if err := s.Manifests.DeleteImmutableRule(ctx, "p", rules[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Manifests.DeleteTag(ctx, "p/a", "v1"); err != nil {
		t.Errorf("deleting v1 without the rule = %v", err)
	}
}

// keep_days: a mirrored manifest neither cached nor pulled within the window is forgotten with
// its tag; one pulled lately stays; local repositories are not touched.
func TestExpireMirrored(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	s := openStore(t, Config{Now: func() time.Time { return now }})
	put := func(repo, tag, body string) Manifest {
		m := Manifest{Digest: digest.FromString(body), MediaType: "application/vnd.oci.image.manifest.v1+json"}
		if err := s.Manifests.PutMirrored(ctx, repo, m, []byte(body), tag, now); err != nil {
			t.Fatal(err)
		}
		return m
	}
	put("docker.io/library/old", "v1", `{"schemaVersion":2,"old":1}`)
	pulled := put("docker.io/library/pulled", "v1", `{"schemaVersion":2,"pulled":1}`)
	now = now.Add(10 * 24 * time.Hour)
	if _, _, err := s.Manifests.Get(ctx, "docker.io/library/pulled", "v1"); err != nil {
		t.Fatal(err)
	}
	n, err := s.Manifests.ExpireMirrored(ctx, "docker.io", 7*24*time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("ExpireMirrored = %d, %v; want the one not pulled in 7 days", n, err)
	}
	if _, err := s.Manifests.Resolve(ctx, "docker.io/library/old", "v1"); !errors.Is(err, ErrManifestUnknown) {
		t.Errorf("the expired tag resolves: %v", err)
	}
	if _, err := s.Manifests.Resolve(ctx, "docker.io/library/pulled", pulled.Digest.String()); err != nil {
		t.Errorf("the pulled manifest was forgotten: %v", err)
	}
}

// A delete that would break an image of the repository is refused: a layer its manifest names
// (a /v2 blob delete), an image its index names; a job's delete of what a push tagged since it
// chose it (untagged, or not kept by retention) leaves it.
func TestDeletesThatWouldBreakAnImage(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	m, body := putImage(t, s, "p/a")
	if err := s.Manifests.Put(ctx, "p/a", m, body, []string{"v1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.UnlinkBlob(ctx, "p/a", m.Blobs[1]); !errors.Is(err, ErrInUse) {
		t.Errorf("deleting a layer of p/a:v1 = %v, want ErrInUse", err)
	}
	index := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"` + m.Digest.String() + `"}]}`)
	im := Manifest{Digest: digest.FromBytes(index), MediaType: "application/vnd.oci.image.index.v1+json", Children: []digest.Digest{m.Digest}}
	if err := s.Manifests.Put(ctx, "p/a", im, index, []string{"multi"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Manifests.DeleteTag(ctx, "p/a", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Manifests.Delete(ctx, "p/a", m.Digest); !errors.Is(err, ErrInUse) {
		t.Errorf("deleting an image of p/a:multi = %v, want ErrInUse", err)
	}
	other, otherBody := putImage(t, s, "p/b")
	if err := s.Manifests.Put(ctx, "p/b", other, otherBody, []string{"new"}); err != nil {
		t.Fatal(err)
	}
	// Chosen as untagged, tagged since: it stays, with its tag.
	if err := s.Manifests.deleteArtifact(ctx, "p/b", other.Digest, []string{}); !errors.Is(err, ErrChanged) {
		t.Errorf("a job's delete of an artifact tagged since = %v, want ErrChanged", err)
	}
	if _, err := s.Manifests.Resolve(ctx, "p/b", "new"); err != nil {
		t.Errorf("the tag pushed since is gone: %v", err)
	}
	// The index goes with its image, which nothing else names.
	if err := s.Manifests.DeleteArtifact(ctx, "p/a", im.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Manifests.Resolve(ctx, "p/a", m.Digest.String()); !errors.Is(err, ErrManifestUnknown) {
		t.Errorf("the index's image after the index's delete: %v", err)
	}
}

// A run seen ended lets the next one start at once: this node forgets its run before the end is
// recorded, under the lock Start takes (a client that polled a run to Success and started the
// next got 409 now and then).
func TestGCRunEndedStartsNext(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	g, err := NewGC(ctx, s, "", func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	busyAtEnd := 0
	g.ended = func(GCRun) {
		if g.cancel != nil {
			busyAtEnd++
		}
	}
	for i := range 3 {
		if _, err := g.Start(ctx, "MANUAL", GCParams{}, GCSchedule{Type: GCManual}); err != nil {
			t.Fatalf("start %d, after the previous run ended: %v", i, err)
		}
		g.Wait()
	}
	if busyAtEnd > 0 {
		t.Errorf("%d runs were recorded ended while their node still counted them running", busyAtEnd)
	}
}
