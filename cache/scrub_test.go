package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"

	"cove/internal/blobstore"
	"cove/internal/kv"
)

// flipByte changes one byte of the file of dgst in s, keeping its size.
func flipByte(t *testing.T, s *Store, dgst digest.Digest) {
	t.Helper()
	p := s.blobPath(dgst)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

// problem returns the report's problem of kind about dgst (or, for a tag, repo:tag).
func problem(r ScrubResult, kind string, dgst digest.Digest, repo string) (ScrubProblem, bool) {
	for _, p := range r.Problems {
		if p.Kind == kind && (dgst == "" || p.Digest == dgst) && (repo == "" || p.Repo == repo) {
			return p, true
		}
	}
	return ScrubProblem{}, false
}

func TestScrub(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	mirrored := func(repo string) bool { return strings.HasPrefix(repo, "docker.io/") }

	// Pushed: proj/a:v1 (its layer is corrupted), proj/b:v1 (its config is truncated), proj/c
	// (its layer's link is lost), and a tag of proj/a that names no manifest.
	push := func(repo string) Manifest {
		m, body := putImage(t, s, repo)
		if err := s.Manifests.Put(ctx, repo, m, body, []string{"v1"}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	ma, mb, mc := push("proj/a"), push("proj/b"), push("proj/c")
	layerA, configB := ma.Blobs[1], mb.Blobs[0]
	flipByte(t, s, layerA)
	if err := os.Truncate(s.blobPath(configB), 3); err != nil {
		t.Fatal(err)
	}
	gone := digest.FromString("no such manifest")
	err := s.db.Update(ctx, func(txn kv.Txn) error {
		if err := txn.Delete(linkKey("proj/c", mc.Blobs[1])); err != nil {
			return err
		}
		return txn.Set(tagKey("proj/a", "dangling"), []byte(gone.String()))
	})
	if err != nil {
		t.Fatal(err)
	}
	// Mirrored: one blob corrupted, one whose file is lost.
	const up = "docker.io/library/x"
	mirror := func(data []byte) digest.Digest { return mirrorBlob(t, s, up, data) }
	good := randomBytes(t, 64<<10)
	corruptM, missingM := mirror(good), mirror(randomBytes(t, 1<<10))
	flipByte(t, s, corruptM)
	if err := os.Remove(s.blobPath(missingM)); err != nil {
		t.Fatal(err)
	}

	// A report changes nothing.
	r, err := s.Scrub(ctx, ScrubOptions{Mirrored: mirrored})
	if err != nil {
		t.Fatalf("Scrub = %v", err)
	}
	want := map[string]int{ScrubCorrupt: 2, ScrubSize: 1, ScrubMissing: 1, ScrubMissingReference: 1, ScrubDanglingTag: 1}
	for k, n := range want {
		if r.Counts[k] != n {
			t.Errorf("Scrub counts[%s] = %d, want %d (report %+v)", k, r.Counts[k], n, r.Problems)
		}
	}
	if r.Blobs < 8 || r.Bytes < int64(len(good)) {
		t.Errorf("Scrub checked %d blobs, %d bytes; want at least 8 and %d", r.Blobs, r.Bytes, len(good))
	}
	p, ok := problem(r, ScrubCorrupt, layerA, "")
	wantBreaks := []string{"proj/a", "proj/a:v1", "proj/a@" + ma.Digest.String()}
	if !ok || !p.Pushed || !slices.Equal(p.Breaks, wantBreaks) || p.Action != "" {
		t.Errorf("problem of the pushed corrupt layer = %+v, %v; want pushed, breaking %v, no action", p, ok, wantBreaks)
	}
	if p, ok := problem(r, ScrubCorrupt, corruptM, ""); !ok || p.Pushed {
		t.Errorf("problem of the mirrored corrupt blob = %+v, %v; want it, not pushed", p, ok)
	}
	if _, ok := problem(r, ScrubSize, configB, ""); !ok {
		t.Errorf("no size problem for the truncated config %s: %+v", configB, r.Problems)
	}
	if _, ok := problem(r, ScrubMissing, missingM, ""); !ok {
		t.Errorf("no missing problem for %s: %+v", missingM, r.Problems)
	}
	if p, ok := problem(r, ScrubMissingReference, mc.Digest, "proj/c"); !ok || !strings.Contains(p.Detail, mc.Blobs[1].String()) {
		t.Errorf("missing reference of proj/c = %+v, %v; want it naming %s", p, ok, mc.Blobs[1])
	}
	if p, ok := problem(r, ScrubDanglingTag, "", "proj/a"); !ok || p.Tag != "dangling" {
		t.Errorf("dangling tag = %+v, %v", p, ok)
	}
	if _, err := os.Stat(s.blobPath(layerA)); err != nil {
		t.Errorf("a report moved the corrupt file: %v", err)
	}
	last, ok, err := s.LastScrub(ctx)
	if err != nil || !ok || last.Counts[ScrubCorrupt] != 2 || last.Blobs != r.Blobs {
		t.Errorf("LastScrub = %+v, %v, %v; want the run's result", last, ok, err)
	}

	// Serving never sends a file of the wrong size.
	if f, err := s.OpenBlob(ctx, "proj/b", configB); !errors.Is(err, ErrBlobUnknown) {
		if f != nil {
			f.Close()
		}
		t.Errorf("OpenBlob of the truncated config = %v, want ErrBlobUnknown", err)
	}

	// Repair.
	r, err = s.Scrub(ctx, ScrubOptions{Repair: true, Mirrored: mirrored})
	if err != nil {
		t.Fatalf("Scrub(repair) = %v", err)
	}
	if p, ok := problem(r, ScrubCorrupt, layerA, ""); !ok || !strings.Contains(p.Action, "quarantine") {
		t.Errorf("repair of the pushed corrupt layer = %+v, %v; want its file quarantined", p, ok)
	}
	q := filepath.Join(s.dir, "quarantine", "sha256", layerA.Encoded())
	if _, err := os.Stat(q); err != nil {
		t.Errorf("the corrupt file is not in the quarantine: %v", err)
	}
	for _, d := range []digest.Digest{layerA, corruptM, missingM} {
		if s.HasBlob(ctx, d) {
			t.Errorf("HasBlob(%s) after repair = true, want its record dropped", d)
		}
	}
	if _, err := s.OpenBlob(ctx, "proj/a", layerA); !errors.Is(err, ErrBlobUnknown) {
		t.Errorf("OpenBlob of the pushed corrupt layer after repair = %v, want ErrBlobUnknown", err)
	}
	err = s.db.View(ctx, func(txn kv.Txn) error { _, err := txn.Get(tagKey("proj/a", "dangling")); return err })
	if !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("the dangling tag after repair: %v, want it deleted", err)
	}
	// The mirrored blob is fetched again: right bytes.
	if d := mirror(good); d != corruptM {
		t.Fatalf("refill digest %s, want %s", d, corruptM)
	}
	f, err := s.OpenBlob(ctx, up, corruptM)
	if err != nil {
		t.Fatalf("OpenBlob of the refetched blob = %v", err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if digest.FromBytes(b) != corruptM {
		t.Errorf("the refetched blob's bytes hash to %s", digest.FromBytes(b))
	}
	// The pushed layer, pushed again, is whole.
	data, err := os.ReadFile(q)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if _, err := s.PutBlob(ctx, "proj/a", layerA, strings.NewReader(string(data)), -1); err != nil {
		t.Fatalf("push the layer again: %v", err)
	}
	if f, err := s.OpenBlob(ctx, "proj/a", layerA); err != nil {
		t.Errorf("OpenBlob after the push again = %v", err)
	} else {
		f.Close()
	}
}

func TestCorruptManifestIsNotServed(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	m, body := putImage(t, s, "proj/a")
	if err := s.Manifests.Put(ctx, "proj/a", m, body, []string{"v1"}); err != nil {
		t.Fatal(err)
	}
	flipByte(t, s, m.Digest)
	if _, _, err := s.Manifests.Read(ctx, "proj/a", "v1"); !errors.Is(err, ErrManifestUnknown) {
		t.Errorf("Read of a corrupt manifest = %v, want ErrManifestUnknown", err)
	}
}

// In a fleet, scrub hashes the bucket's objects: a damaged or lost mirrored object loses its
// record and object (the next pull fills it again), a damaged pushed one is reported and never
// served.
func TestFleetScrub(t *testing.T) {
	ctx := context.Background()
	a, b, srv := fleetPair(t, 0)
	damagedBody, damaged := randomBlob(t, 3000)
	lostBody, lost := randomBlob(t, 3000)
	for _, body := range [][]byte{damagedBody, lostBody} {
		if err := fill(t, a, body, int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}
	pushedBody, pushed := randomBlob(t, 3000)
	if _, err := a.PutBlob(ctx, "proj/a", pushed, bytes.NewReader(pushedBody), -1); err != nil {
		t.Fatal(err)
	}
	client := srv.Client(t)
	bad := bytes.Repeat([]byte("x"), 3000)
	for _, d := range []digest.Digest{damaged, pushed} {
		if _, err := client.PutObject(ctx, srv.Bucket, blobstore.Key("", d), bytes.NewReader(bad), int64(len(bad)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.RemoveObject(ctx, srv.Bucket, blobstore.Key("", lost), minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	r, err := b.Scrub(ctx, ScrubOptions{Protect: true})
	if err != nil {
		t.Fatalf("Scrub = %v", err)
	}
	if r.Counts[ScrubCorrupt] != 2 || r.Counts[ScrubMissing] != 1 {
		t.Errorf("Scrub counts = %v, want 2 corrupt and 1 missing: %+v", r.Counts, r.Problems)
	}
	if p, ok := problem(r, ScrubCorrupt, pushed, ""); !ok || !p.Pushed || !slices.Contains(p.Breaks, "proj/a") {
		t.Errorf("the pushed damaged object's problem = %+v, %v; want pushed, breaking proj/a", p, ok)
	}
	for _, d := range []digest.Digest{damaged, lost} {
		if a.HasBlob(ctx, d) {
			t.Errorf("the mirrored blob %s keeps its record after the scrub", d)
		}
		if _, err := client.StatObject(ctx, srv.Bucket, blobstore.Key("", d), minio.StatObjectOptions{}); err == nil {
			t.Errorf("the damaged mirrored object %s is still in the bucket", d)
		}
	}
	if err := fill(t, a, damagedBody, int64(len(damagedBody))); err != nil {
		t.Fatalf("refill: %v", err)
	}
	if got, err := readBlob(t, b, "docker.io/library/x", damaged); err != nil || !bytes.Equal(got, damagedBody) {
		t.Errorf("the refilled blob = %d bytes, %v", len(got), err)
	}
	if got, err := readBlob(t, b, "proj/a", pushed); err == nil || bytes.Equal(got, bad) {
		t.Errorf("reading the damaged pushed blob = %d bytes, %v; want an error, never its bytes", len(got), err)
	}
}

// A blob both pushed and mirrored (an upstream image copied into a project) that scrub finds
// corrupt is fetched again through the mirror, and the bytes fetched again are pushed content
// again: the project's image is whole, and eviction never takes the blob from under it.
func TestScrubHealsABlobBothPushedAndMirrored(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	m, body := putImage(t, s, "proj/a")
	if err := s.Manifests.Put(ctx, "proj/a", m, body, []string{"v1"}); err != nil {
		t.Fatal(err)
	}
	layer := m.Blobs[1]
	good, err := os.ReadFile(s.blobPath(layer))
	if err != nil {
		t.Fatal(err)
	}
	const up = "docker.io/library/x"
	mirrorBlob(t, s, up, good) // the same bytes through the mirror: one record, pushed and mirrored
	flipByte(t, s, layer)
	if _, err := s.Scrub(ctx, ScrubOptions{Protect: true, Mirrored: func(repo string) bool { return strings.HasPrefix(repo, "docker.io/") }}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StatBlob(ctx, up, layer); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("the corrupt blob after the scrub: %v, want unknown (to be fetched again)", err)
	}
	mirrorBlob(t, s, up, good)
	var rec blobRecord
	if err := s.db.View(ctx, func(txn kv.Txn) error { rec, err = getBlobRecord(txn, layer); return err }); err != nil {
		t.Fatal(err)
	}
	if !rec.Local || !rec.Mirrored {
		t.Errorf("the record of the blob fetched again: %+v, want pushed and mirrored", rec)
	}
	if n, err := s.Evictor.evict(ctx, func(int64) bool { return false }); err != nil || n != 0 {
		t.Errorf("evict = %d, %v: the project's blob must not be evictable", n, err)
	}
	bf, err := s.OpenBlob(ctx, "proj/a", layer)
	if err != nil {
		t.Fatalf("the project's layer after the mirror fetched it again: %v", err)
	}
	got, _ := io.ReadAll(bf)
	bf.Close()
	if !bytes.Equal(got, good) {
		t.Error("the project's layer reads other bytes than were pushed")
	}
	if err := s.db.View(ctx, func(txn kv.Txn) error { _, err := txn.Get(lostKey(layer)); return err }); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("the lost/ mark after the blob came back: %v", err)
	}
}
