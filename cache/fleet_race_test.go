package cache

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/internal/blobstore"
	"cove/internal/kv"
	"cove/internal/pgtest"
	"cove/internal/s3test"
)

// Races of fleet eviction against pushes on other nodes (the attack on fleet mode lost pushed
// blobs this way: eviction deleted the shared object after it had committed the record's
// deletion, outside the digest's lock).

// hookedDelete is the bucket as one node sees it: each DELETE first calls hook (which starts
// another node's push at that very moment), then answers after delay (a busy S3).
type hookedDelete struct {
	blobstore.Store
	delay time.Duration
	hook  func(digest.Digest)
}

func (s hookedDelete) Delete(ctx context.Context, d digest.Digest) error {
	if s.hook != nil {
		s.hook(d)
	}
	time.Sleep(s.delay) // the simulated slowness of the backend, not a synchronisation
	return s.Store.Delete(ctx, d)
}

// pgFleet is three stores on one PostgreSQL and one bucket; A's deletes go through hooked.
func pgFleet(t *testing.T, hooked *hookedDelete, maxMirrored int64) (a, b, c *Store) {
	t.Helper()
	pg := pgtest.Start(t)
	srv := s3test.Start(t)
	remote, err := blobstore.NewS3(blobstore.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Region: "us-east-1",
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	hooked.Store = remote
	open := func(r blobstore.Store) *Store {
		meta, err := kv.OpenPostgres(context.Background(), pg.DSN)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(context.Background(), Config{Dir: t.TempDir(), DB: meta, SharedMetadata: true, Remote: r, MaxMirrored: maxMirrored})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close(); meta.Close() })
		return s
	}
	return open(hooked), open(remote), open(remote)
}

func fillRepo(t *testing.T, s *Store, repo string, data []byte) {
	t.Helper()
	f := startFill(t, s, repo, data, int64(len(data)))
	r, err := f.Reader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatal(err)
	}
	// The clients have the bytes before the record is written: wait for it.
	waitFor(t, func() bool { return s.HasBlob(context.Background(), digest.FromBytes(data)) })
}

// A push on B of a digest that fleet eviction on A is deleting keeps its blob: B reads the
// record and the object after both ended (pushing FROM a mirrored base reuses its digests).
func TestFleetEvictionRacingAPush(t *testing.T) {
	ctx := context.Background()
	hooked := &hookedDelete{delay: 300 * time.Millisecond}
	a, b, c := pgFleet(t, hooked, 1000)
	body, d := randomBlob(t, 1500) // over the 1000-byte cap: evicted
	fillRepo(t, b, "docker.io/library/base", body)
	var pushed sync.WaitGroup
	hooked.hook = func(digest.Digest) {
		pushed.Go(func() {
			if _, err := b.PutBlob(ctx, "team/app", d, bytes.NewReader(body), int64(len(body))); err != nil {
				t.Errorf("push on B: %v", err)
			}
		})
	}
	if n, err := a.Evictor.EvictFleet(ctx); err != nil || n != 1 {
		t.Fatalf("EvictFleet = %d, %v; want the one blob over the cap", n, err)
	}
	pushed.Wait()
	if got, err := readBlob(t, c, "team/app", d); err != nil || !bytes.Equal(got, body) {
		t.Errorf("node C reads the pushed blob: %d bytes, %v; want it whole", len(got), err)
	}
}

// Evicting a mirrored repository on A while B pushes the same blobs to a local project loses
// none of them.
func TestFleetEvictRepositoryRacingPushes(t *testing.T) {
	ctx := context.Background()
	hooked := &hookedDelete{}
	a, b, c := pgFleet(t, hooked, 0)
	const n = 20
	bodies := map[digest.Digest][]byte{}
	for range n {
		body, d := randomBlob(t, 4096)
		fillRepo(t, b, "docker.io/library/base", body)
		bodies[d] = body
	}
	var pushed sync.WaitGroup
	var once sync.Once
	hooked.hook = func(digest.Digest) {
		once.Do(func() { // at the first delete, B pushes them all
			pushed.Go(func() {
				for d, body := range bodies {
					if _, err := b.PutBlob(ctx, "team/app", d, bytes.NewReader(body), int64(len(body))); err != nil {
						t.Errorf("push on B: %v", err)
					}
				}
			})
		})
	}
	if _, err := a.Evictor.EvictRepository(ctx, "docker.io/library/base"); err != nil {
		t.Fatalf("EvictRepository: %v", err)
	}
	once.Do(func() { t.Fatal("EvictRepository deleted nothing: the race was not run") })
	pushed.Wait()
	for d, body := range bodies {
		if got, err := readBlob(t, c, "team/app", d); err != nil || !bytes.Equal(got, body) {
			t.Errorf("pushed blob %s: %d bytes, %v; want it whole", d, len(got), err)
		}
	}
}
