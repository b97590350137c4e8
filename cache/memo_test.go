package cache

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Reads of manifests are answered from memory while the index is unchanged (the manifest's file
// is not opened again), and every write to the index is seen at once: a moved tag, a deleted one,
// a new check time.
func TestManifestMemoSeesEveryWrite(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0).UTC()
	s := openStore(t, Config{Now: func() time.Time { return now }})
	const repo = "docker.io/library/memo"
	put := func(tag, body string) Manifest {
		t.Helper()
		m := Manifest{Digest: digest.FromString(body), MediaType: "application/vnd.oci.image.manifest.v1+json", Size: int64(len(body))}
		if err := s.Manifests.PutMirrored(ctx, repo, m, []byte(body), tag, now); err != nil {
			t.Fatal(err)
		}
		return m
	}
	v1 := put("v1", `{"schemaVersion":2,"v":1}`)
	if m, body, err := s.Manifests.Read(ctx, repo, "v1"); err != nil || m.Digest != v1.Digest || string(body) != `{"schemaVersion":2,"v":1}` {
		t.Fatalf("Read = %s %q %v", m.Digest, body, err)
	}
	// The file is gone behind the index's back: only the memo can still answer.
	if err := os.Remove(s.blobPath(v1.Digest)); err != nil {
		t.Fatal(err)
	}
	if m, _, err := s.Manifests.Read(ctx, repo, "v1"); err != nil || m.Digest != v1.Digest {
		t.Fatalf("a second Read = %s, %v; want it from memory", m.Digest, err)
	}
	if _, checked, err := s.Manifests.MirroredTag(ctx, repo, "v1"); err != nil || !checked.Equal(now) {
		t.Fatalf("MirroredTag = %v, %v", checked, err)
	}
	later := now.Add(time.Minute)
	if err := s.Manifests.TagChecked(ctx, repo, "v1", later); err != nil {
		t.Fatal(err)
	}
	if _, checked, err := s.Manifests.MirroredTag(ctx, repo, "v1"); err != nil || !checked.Equal(later) {
		t.Errorf("MirroredTag after a check = %v, %v; want %v", checked, err, later)
	}
	v2 := put("v1", `{"schemaVersion":2,"v":2}`) // the tag moves
	if m, body, err := s.Manifests.Read(ctx, repo, "v1"); err != nil || m.Digest != v2.Digest || string(body) != `{"schemaVersion":2,"v":2}` {
		t.Errorf("Read after the tag moved = %s %q %v; want %s", m.Digest, body, err, v2.Digest)
	}
	if err := s.Manifests.DeleteTag(ctx, repo, "v1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Manifests.Read(ctx, repo, "v1"); !errors.Is(err, ErrManifestUnknown) {
		t.Errorf("Read of a deleted tag = %v, want ErrManifestUnknown", err)
	}
	if _, _, err := s.Manifests.MirroredTag(ctx, repo, "v1"); !errors.Is(err, ErrManifestUnknown) {
		t.Errorf("MirroredTag of a deleted tag = %v, want ErrManifestUnknown", err)
	}
}

// What was read before a write is not remembered after it: a reader that raced a write cannot
// put the old state back.
func TestManifestMemoForgetsAReadOlderThanAWrite(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, Config{})
	mm := s.Manifests.memo
	gen := mm.generation()
	m := Manifest{Digest: digest.FromString("old")}
	if err := s.Manifests.TagChecked(ctx, "docker.io/library/x", "v1", time.Now()); err != nil { // a write
		t.Fatal(err)
	}
	mm.remember(gen, "docker.io/library/x", "v1", m, []byte("old"), nil)
	if _, _, ok := mm.read("docker.io/library/x", "v1"); ok {
		t.Error("a read from before a write was remembered")
	}
	mm.remember(mm.generation(), "docker.io/library/x", "v1", m, []byte("old"), nil)
	if _, _, ok := mm.read("docker.io/library/x", "v1"); !ok {
		t.Error("a read from the current generation was not remembered")
	}
}

// The memo's bytes stay within memoBytes, the oldest manifests going first.
func TestManifestMemoIsBounded(t *testing.T) {
	s := openStore(t, Config{})
	mm := s.Manifests.memo
	body := make([]byte, memoBytes/32)
	var first digest.Digest
	for i := range 100 {
		d := digest.FromString(string(rune(i)))
		if i == 0 {
			first = d
		}
		mm.remember(mm.generation(), "r", d.String(), Manifest{Digest: d}, body, nil)
	}
	mm.mu.Lock()
	defer mm.mu.Unlock()
	if mm.bytes > memoBytes || len(mm.bodies) > memoBytes/len(body) {
		t.Errorf("the memo holds %d bytes in %d manifests; want at most %d", mm.bytes, len(mm.bodies), memoBytes)
	}
	if _, ok := mm.bodies[first]; ok {
		t.Error("the oldest manifest is still held")
	}
}
