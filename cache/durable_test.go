package cache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

// noBatchSync keeps the batch sync from running on its own during a test.
func noBatchSync(t *testing.T) {
	old := syncEvery
	syncEvery = time.Hour
	t.Cleanup(func() { syncEvery = old })
}

func hasUnsyncedKey(t *testing.T, s *Store, dgst digest.Digest) bool {
	t.Helper()
	err := s.db.View(context.Background(), func(txn kv.Txn) error {
		_, err := txn.Get(unsyncedKey(dgst))
		return err
	})
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// A mirrored blob's file is placed without its own fsync and made durable by the next batch sync;
// a stop before that sync (a crash) drops the blob at the next start, so that no client is
// served bytes that never reached the disk: the next pull fetches it again.
func TestMirroredBlobsAreSyncedInBatches(t *testing.T) {
	ctx := context.Background()
	noBatchSync(t)
	s, reopen := newStore(t)
	if s.syncer == nil {
		t.Skip("fleet mode syncs every blob into the shared store") // the PostgreSQL run of cache's tests
	}
	synced, lost := randomBytes(t, 100<<10), randomBytes(t, 100<<10)
	for _, b := range [][]byte{synced, lost} {
		if err := fill(t, s, b, int64(len(b))); err != nil {
			t.Fatal(err)
		}
		if !hasUnsyncedKey(t, s, digest.FromBytes(b)) {
			t.Fatal("a mirrored blob placed without fsync is not marked unsynced")
		}
	}
	// The first is synced; the second's sync never comes (a crash).
	s.syncer.mu.Lock()
	s.syncer.pending = []digest.Digest{digest.FromBytes(synced)}
	s.syncer.mu.Unlock()
	if err := s.syncer.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if hasUnsyncedKey(t, s, digest.FromBytes(synced)) {
		t.Error("a synced blob is still marked unsynced")
	}
	s = reopen()
	if !s.HasBlob(ctx, digest.FromBytes(synced)) {
		t.Error("a synced mirrored blob is gone after a restart")
	}
	if s.HasBlob(ctx, digest.FromBytes(lost)) || hasUnsyncedKey(t, s, digest.FromBytes(lost)) {
		t.Error("a mirrored blob whose sync a stop cut short is still recorded")
	}
	if _, err := os.Stat(s.blobPath(digest.FromBytes(lost))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("its file is still there: %v", err)
	}
	if err := fill(t, s, lost, int64(len(lost))); err != nil || !s.HasBlob(ctx, digest.FromBytes(lost)) {
		t.Errorf("the dropped blob fetched again = %v", err)
	}
}

// A push of a digest a fill placed unsynced makes that file durable before it counts as pushed
// content: a stop before the batch sync does not drop it.
func TestAPushSyncsAnUnsyncedMirroredBlob(t *testing.T) {
	ctx := context.Background()
	noBatchSync(t)
	s, reopen := newStore(t)
	if s.syncer == nil {
		t.Skip("fleet mode syncs every blob into the shared store")
	}
	data := randomBytes(t, 100<<10)
	dgst := digest.FromBytes(data)
	if err := fill(t, s, data, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	s.syncer.mu.Lock()
	s.syncer.pending = nil // its batch sync never comes
	s.syncer.mu.Unlock()
	if _, err := s.PutBlob(ctx, "team/app", dgst, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if hasUnsyncedKey(t, s, dgst) {
		t.Error("a pushed blob is still marked unsynced")
	}
	s = reopen()
	if _, err := s.StatBlob(ctx, "team/app", dgst); err != nil {
		t.Errorf("the pushed blob after a stop before the batch sync: %v", err)
	}
}
