package cache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
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

// filledUnsynced is a store, with no batch sync of its own, that has filled a mirrored blob (data)
// and marked it unsynced.
func filledUnsynced(t *testing.T) (*Store, func(crash ...bool) *Store, []byte) {
	t.Helper()
	noBatchSync(t)
	s, reopen := newStore(t)
	if s.syncer == nil {
		t.Skip("fleet mode syncs every blob into the shared store")
	}
	data := randomBytes(t, 100<<10)
	if err := fill(t, s, data, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	return s, reopen, data
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
	s.syncer.pending = slices.DeleteFunc(s.syncer.pending, func(p placement) bool { return p.dgst != digest.FromBytes(synced) })
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
	s, reopen, data := filledUnsynced(t)
	dgst := digest.FromBytes(data)
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

// A batch sync removes the marks of its own placements only: a blob evicted and placed again
// after the batch's syncfs keeps its new mark (a crash before the next sync must drop it).
func TestASyncKeepsTheMarkOfALaterPlacement(t *testing.T) {
	ctx := context.Background()
	s, _, data := filledUnsynced(t)
	dgst := digest.FromBytes(data)
	s.syncer.afterSyncfs = func() {
		s.syncer.afterSyncfs = nil
		// Between the syncfs and the removal of the marks: evicted, and filled again.
		if _, err := s.Evictor.evictBytes(ctx, int64(len(data))); err != nil || s.HasBlob(ctx, dgst) {
			t.Errorf("the blob was not evicted: %v", err)
		}
		if err := fill(t, s, data, int64(len(data))); err != nil {
			t.Error(err)
		}
		waitFor(t, func() bool { return !s.Fills.busy(dgst) })
	}
	if err := s.syncer.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !s.HasBlob(ctx, dgst) || !hasUnsyncedKey(t, s, dgst) {
		t.Error("a blob placed after the batch's syncfs lost its mark to that batch: a crash before the next sync would keep a record of a file that never reached the disk")
	}
}

// A large mirrored blob is synced in its fill's commit, not left to the batch.
func TestALargeMirroredBlobIsSyncedInItsCommit(t *testing.T) {
	noBatchSync(t)
	s, _ := newStore(t)
	if s.syncer == nil {
		t.Skip("fleet mode syncs every blob into the shared store")
	}
	small, large := randomBytes(t, 100<<10), randomBytes(t, batchSyncMax+1)
	for _, b := range [][]byte{small, large} {
		if err := fill(t, s, b, int64(len(b))); err != nil {
			t.Fatal(err)
		}
	}
	if !hasUnsyncedKey(t, s, digest.FromBytes(small)) || hasUnsyncedKey(t, s, digest.FromBytes(large)) {
		t.Errorf("marked unsynced: small %v, large %v; want the small one only",
			hasUnsyncedKey(t, s, digest.FromBytes(small)), hasUnsyncedKey(t, s, digest.FromBytes(large)))
	}
}
