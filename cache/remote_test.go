package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"cove/internal/blobstore"
	"cove/internal/kv"
	"cove/internal/s3test"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"
)

// fleetPair is two stores, as two nodes: one index (the shared metadata) and one S3 bucket, a
// data directory each.
func fleetPair(t *testing.T, hotMax int64) (a, b *Store, srv *s3test.Server) {
	return fleetPairMax(t, hotMax, 0)
}

func fleetPairMax(t *testing.T, hotMax, maxMirrored int64) (a, b *Store, srv *s3test.Server) {
	t.Helper()
	srv = s3test.Start(t)
	remote, err := blobstore.NewS3(blobstore.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Region: "us-east-1",
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	db, err := OpenDB(filepath.Join(t.TempDir(), "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	meta := kv.NewBadger(db)
	open := func(hot int64) *Store {
		s, err := Open(context.Background(), Config{Dir: t.TempDir(), DB: meta, SharedMetadata: true, Remote: remote, HotTierMaxSize: hot, MaxMirrored: maxMirrored})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	return open(0), open(hotMax), srv
}

func randomBlob(t *testing.T, n int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b, digest.FromBytes(b)
}

// readBlob reads a blob as the mirror does: from the hot tier, or streamed from the shared store
// while the hot tier fills.
func readBlob(t *testing.T, s *Store, repo string, d digest.Digest) ([]byte, error) {
	t.Helper()
	f, err := s.OpenBlob(context.Background(), repo, d)
	if errors.Is(err, ErrNotLocal) {
		fill, _, err := s.Fills.FromShared(d, repo)
		if err != nil {
			return nil, err
		}
		rd, err := fill.Reader(context.Background())
		if err != nil {
			return nil, err
		}
		defer rd.Close()
		b, err := io.ReadAll(rd)
		if err == nil { // the reader has the bytes before the copy is placed and the tier trimmed
			waitFor(t, func() bool { return !s.Fills.busy(d) })
		}
		return b, err
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// In fleet mode a blob pushed on one node is in the shared bucket before its record is written,
// and another node serves it byte-exact, reading it once into its hot tier; the hot tier keeps
// under its maximum, least recently used first, and what it dropped is read again on demand.
func TestFleetBlobsAreShared(t *testing.T) {
	ctx := context.Background()
	a, b, srv := fleetPair(t, 2500)
	var blobs [][]byte
	var dgsts []digest.Digest
	for range 3 {
		body, d := randomBlob(t, 1000)
		if _, err := a.PutBlob(ctx, "team/app", d, bytes.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Client(t).StatObject(ctx, srv.Bucket, blobstore.Key("", d), minio.StatObjectOptions{}); err != nil {
			t.Fatalf("the pushed blob is not in the bucket: %v", err)
		}
		blobs, dgsts = append(blobs, body), append(dgsts, d)
	}
	for i, d := range dgsts {
		got, err := readBlob(t, b, "team/app", d)
		if err != nil || !bytes.Equal(got, blobs[i]) {
			t.Fatalf("node B reads blob %d: %d bytes, %v; want it byte-exact", i, len(got), err)
		}
	}
	if bytes, n := b.HotStats(); bytes > 2500 || n != 2 {
		t.Errorf("B's hot tier holds %d blobs, %d bytes; want 2, at most 2500", n, bytes)
	}
	if _, err := os.Stat(b.blobPath(dgsts[0])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the least recently used copy is still on B: %v", err)
	}
	if got, err := readBlob(t, b, "team/app", dgsts[0]); err != nil || !bytes.Equal(got, blobs[0]) {
		t.Errorf("a dropped copy read again = %d bytes, %v", len(got), err)
	}

	// Garbage collection on A removes the shared object too.
	if err := a.UnlinkBlob(ctx, "team/app", dgsts[2]); err != nil {
		t.Fatal(err)
	}
	if removed, _, err := a.Evictor.Collect(ctx, 0); err != nil || removed != 1 {
		t.Fatalf("Collect = %d, %v; want the unlinked blob", removed, err)
	}
	if _, err := srv.Client(t).StatObject(ctx, srv.Bucket, blobstore.Key("", dgsts[2]), minio.StatObjectOptions{}); err == nil {
		t.Error("a collected blob is still in the bucket")
	}
}

// Garbage collection in a fleet removes the objects of the bucket that no record names (a push
// cut between its object and its record) once they are older than the grace, and never an object
// with a record.
func TestFleetOrphanObjects(t *testing.T) {
	ctx := context.Background()
	a, _, srv := fleetPair(t, 0)
	m, body := putImage(t, a, "team/app") // an image: its blobs are kept
	if err := a.Manifests.Put(ctx, "team/app", m, body, []string{"v1"}); err != nil {
		t.Fatal(err)
	}
	keptDigest := m.Blobs[0]
	orphan, orphanDigest := randomBlob(t, 1500)
	client := srv.Client(t)
	if _, err := client.PutObject(ctx, srv.Bucket, blobstore.Key("", orphanDigest), bytes.NewReader(orphan), int64(len(orphan)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	inBucket := func(d digest.Digest) bool {
		_, err := client.StatObject(ctx, srv.Bucket, blobstore.Key("", d), minio.StatObjectOptions{})
		return err == nil
	}
	if removed, _, err := a.Evictor.Collect(ctx, time.Hour); err != nil || removed != 0 || !inBucket(orphanDigest) {
		t.Fatalf("Collect with an hour's grace = %d, %v; the orphan written just now in the bucket: %v", removed, err, inBucket(orphanDigest))
	}
	removed, freed, err := a.Evictor.Collect(ctx, 0)
	if err != nil || removed != 1 || freed != int64(len(orphan)) {
		t.Fatalf("Collect = %d blobs, %d bytes, %v; want the orphan's 1 and %d", removed, freed, err, len(orphan))
	}
	if inBucket(orphanDigest) {
		t.Error("the orphan object is still in the bucket")
	}
	if !inBucket(keptDigest) || !a.HasBlob(ctx, keptDigest) {
		t.Error("garbage collection of orphans removed a linked blob")
	}
}

// A blob the bucket does not take is not stored at all: no record, no file; a corrupt object in
// the bucket is never served nor kept.
func TestFleetBlobStoreFailures(t *testing.T) {
	ctx := context.Background()
	a, b, srv := fleetPair(t, 0)
	body, d := randomBlob(t, 1000)
	if _, err := a.PutBlob(ctx, "team/app", d, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	// Corrupt the object behind the stores' back.
	bad := bytes.Repeat([]byte("x"), len(body))
	if _, err := srv.Client(t).PutObject(ctx, srv.Bucket, blobstore.Key("", d), bytes.NewReader(bad), int64(len(bad)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	var re *RemoteError
	if _, err := readBlob(t, b, "team/app", d); !errors.As(err, &re) || !errors.Is(err, ErrUpstreamCorrupt) {
		t.Errorf("reading a corrupt shared object = %v, want a RemoteError of corrupt content", err)
	}
	if _, err := os.Stat(b.blobPath(d)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a corrupt object was kept in the hot tier: %v", err)
	}
	if !b.HasBlob(ctx, d) {
		t.Error("pushed content that the bucket damaged lost its record: it cannot be fetched again")
	}

	srv.Stop()
	body2, d2 := randomBlob(t, 1000)
	ctx2, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := a.PutBlob(ctx2, "team/app", d2, bytes.NewReader(body2), int64(len(body2))); !errors.As(err, &re) {
		t.Errorf("PutBlob with the bucket down = %v, want a RemoteError", err)
	}
	if a.HasBlob(ctx, d2) {
		t.Error("a blob the bucket did not take has a record")
	}
	if _, err := os.Stat(a.blobPath(d2)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a blob the bucket did not take left a file: %v", err)
	}
	if err := a.PingRemote(ctx); err == nil {
		t.Error("PingRemote with the bucket down passed")
	}
}

// A mirrored blob that the bucket lost or damaged is forgotten at its first read, so that the
// next pull fetches it from its upstream; the read itself fails (nothing wrong was served).
func TestFleetLostMirroredBlobs(t *testing.T) {
	ctx := context.Background()
	a, b, srv := fleetPair(t, 0)
	lostBody, lost := randomBlob(t, 3000)
	damagedBody, damaged := randomBlob(t, 3000)
	for _, body := range [][]byte{lostBody, damagedBody} {
		if err := fill(t, a, body, int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}
	client := srv.Client(t)
	if err := client.RemoveObject(ctx, srv.Bucket, blobstore.Key("", lost), minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Repeat([]byte("x"), len(damagedBody))
	if _, err := client.PutObject(ctx, srv.Bucket, blobstore.Key("", damaged), bytes.NewReader(bad), int64(len(bad)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]digest.Digest{"lost": lost, "damaged": damaged} {
		if _, err := readBlob(t, b, "docker.io/library/x", d); !errors.Is(err, ErrSharedLost) {
			t.Errorf("reading a %s object = %v, want ErrSharedLost", name, err)
		}
		if b.HasBlob(ctx, d) {
			t.Errorf("the %s mirrored blob keeps its record: every pull fails until an operator acts", name)
		}
		if _, err := client.StatObject(ctx, srv.Bucket, blobstore.Key("", d), minio.StatObjectOptions{}); err == nil {
			t.Errorf("the %s object is still in the bucket", name)
		}
		// The next pull fills it again from the upstream, and the fleet serves it.
		body := lostBody
		if d == damaged {
			body = damagedBody
		}
		if err := fill(t, b, body, int64(len(body))); err != nil {
			t.Fatalf("refill of the %s blob: %v", name, err)
		}
		if got, err := readBlob(t, a, "docker.io/library/x", d); err != nil || !bytes.Equal(got, body) {
			t.Errorf("the %s blob after its refill = %d bytes, %v", name, len(got), err)
		}
	}
}

// The shared tier is evicted by one node for the fleet, counting every node's fills: fills on B
// past mirror.max_size evict nothing on B; A's EvictFleet removes the least recently used from
// the index and the bucket until the fleet fits.
func TestFleetEviction(t *testing.T) {
	ctx := context.Background()
	a, b, srv := fleetPairMax(t, 0, 2500)
	var dgsts []digest.Digest
	for range 4 {
		body, d := randomBlob(t, 1000)
		if err := fill(t, b, body, int64(len(body))); err != nil {
			t.Fatal(err)
		}
		dgsts = append(dgsts, d)
	}
	for _, d := range dgsts {
		if !b.HasBlob(ctx, d) {
			t.Fatalf("B evicted %s after its own fill: only EvictFleet evicts in a fleet", d)
		}
	}
	n, err := a.Evictor.EvictFleet(ctx)
	if err != nil || n != 2 {
		t.Fatalf("EvictFleet = %d, %v; want 2 (4000 bytes over a cap of 2500)", n, err)
	}
	for i, d := range dgsts {
		_, serr := srv.Client(t).StatObject(ctx, srv.Bucket, blobstore.Key("", d), minio.StatObjectOptions{})
		if gone := i < 2; gone != !a.HasBlob(ctx, d) || gone != (serr != nil) {
			t.Errorf("blob %d: indexed %v, in the bucket %v; want both %v", i, a.HasBlob(ctx, d), serr == nil, !gone)
		}
	}
	// Every node shows the fleet's figures, not only the node that counted them.
	if _, err := b.Evictor.EvictFleet(ctx); err != nil {
		t.Fatal(err)
	}
	if am, _ := a.Evictor.Stats(); am != 2000 {
		t.Errorf("A's mirrored bytes = %d, want the fleet's 2000", am)
	}
	if bm, _ := b.Evictor.Stats(); bm != 2000 {
		t.Errorf("B's mirrored bytes = %d, want the fleet's 2000 (B did not count them)", bm)
	}
}

// Garbage collection on one node never deletes a blob another node linked after it was found
// unreferenced (the attack lost pushed blobs this way: node 1 marked, node 2 linked, node 1
// deleted the record and the object).
func TestFleetCollectionSparesABlobLinkedMeanwhile(t *testing.T) {
	ctx := context.Background()
	a, b, srv := fleetPair(t, 0)
	body, d := randomBlob(t, 1000)
	if _, err := a.PutBlob(ctx, "team/app", d, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	if err := a.UnlinkBlob(ctx, "team/app", d); err != nil {
		t.Fatal(err)
	}
	a.Evictor.afterMark = func() {
		if _, err := b.LinkBlob(ctx, "team/other", d); err != nil {
			t.Errorf("link on node B: %v", err)
		}
	}
	if removed, _, err := a.Evictor.Collect(ctx, 0); err != nil || removed != 0 {
		t.Errorf("Collect = %d, %v; want nothing removed", removed, err)
	}
	if !a.HasBlob(ctx, d) {
		t.Error("the record of a blob linked meanwhile was deleted")
	}
	if _, err := srv.Client(t).StatObject(ctx, srv.Bucket, blobstore.Key("", d), minio.StatObjectOptions{}); err != nil {
		t.Errorf("the object of a blob linked meanwhile was deleted: %v", err)
	}
	if got, err := readBlob(t, b, "team/other", d); err != nil || !bytes.Equal(got, body) {
		t.Errorf("node B reads the blob it linked: %d bytes, %v", len(got), err)
	}
	// Unreferenced for good, it goes.
	a.Evictor.afterMark = nil
	if err := b.UnlinkBlob(ctx, "team/other", d); err != nil {
		t.Fatal(err)
	}
	if removed, _, err := a.Evictor.Collect(ctx, 0); err != nil || removed != 1 {
		t.Errorf("Collect of the unreferenced blob = %d, %v; want 1", removed, err)
	}
}
