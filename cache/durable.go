package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"cove/internal/kv"
)

// batchSyncMax is the largest mirrored blob whose sync is left to the batch: the fixed cost of
// two fsyncs is what a small blob's fill is made of; a large one's sync is its bytes' writeback,
// which a batch would only move.
const batchSyncMax = 16 << 20

// syncEvery is how often the files of mirrored blobs placed without their own fsync are made
// durable together (one syncfs for all of them). Tests that stop a store before its sync raise it.
var syncEvery = time.Second

// A mirrored blob can be fetched again; a pushed one can not. So a cold fill on one node places
// its file without the two fsyncs (file and directory) a push pays, and records the digest under
// unsynced/ in the same transaction as its record; a syncfs of the data directory's filesystem,
// once a second for every such blob, then drops those keys. A start that finds one left (the
// machine stopped before the sync) drops the blob's file, and reconcile its records: the next pull
// fetches it again, and no client is served bytes a crash lost. The moment such a blob becomes
// local content (a push or a mount of the same digest), it is synced on its own (makeDurable).
type syncer struct {
	st  *Store
	seq atomic.Uint64 // the marks' values: each placement's own

	mu sync.Mutex
	// pending are the placements made unsynced since the last sync, guarded by mu.
	pending []placement

	// afterSyncfs, in tests, runs between a sync's syncfs and the removal of its marks.
	afterSyncfs func()
}

// placement is a blob placed unsynced, and the value of its mark: a sync removes the mark only
// if it is still this one (the blob may have been evicted and placed again since).
type placement struct {
	dgst digest.Digest
	mark []byte
}

func unsyncedKey(dgst digest.Digest) []byte { return []byte(prefixUnsynced + dgst.String()) }

// mark is the value of a new placement's unsynced key.
func (y *syncer) mark() []byte { return strconv.AppendUint(nil, y.seq.Add(1), 10) }

// placed notes a blob placed without its fsync, whose unsynced key (with mark) is committed.
func (y *syncer) placed(dgst digest.Digest, mark []byte) {
	y.mu.Lock()
	y.pending = append(y.pending, placement{dgst, mark})
	y.mu.Unlock()
}

// loop syncs every syncEvery until the store stops.
func (y *syncer) loop() {
	t := time.NewTicker(syncEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-y.st.ctx.Done():
			return // Store.stop syncs once more, after the fills have ended
		}
		if err := y.sync(y.st.ctx); err != nil {
			y.st.log.Error("syncing mirrored blobs", "err", err)
		}
	}
}

// sync makes the pending blobs durable and drops their unsynced keys.
func (y *syncer) sync(ctx context.Context) error {
	y.mu.Lock()
	batch := y.pending
	y.pending = nil
	y.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := SyncFS(y.st.dir); err != nil {
		y.mu.Lock()
		y.pending = append(batch, y.pending...)
		y.mu.Unlock()
		return err
	}
	if y.afterSyncfs != nil {
		y.afterSyncfs()
	}
	// Only the marks of these placements: one of a blob placed again after the syncfs stays.
	for chunk := range slices.Chunk(batch, 500) {
		err := kv.Retry(ctx, y.st.db, func(txn kv.Txn) error {
			for _, p := range chunk {
				v, err := txn.Get(unsyncedKey(p.dgst))
				if errors.Is(err, kv.ErrNotFound) || err == nil && !bytes.Equal(v, p.mark) {
					continue
				}
				if err != nil {
					return err
				}
				if err := txn.Delete(unsyncedKey(p.dgst)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// SyncFS flushes every written file of the filesystem that holds dir.
func SyncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// makeDurable syncs the file of dgst before the transaction ct makes it local content, and drops
// its unsynced key there if it has one. It syncs whether or not the key is there: a fill may have
// placed the file and not yet committed its key (a file already synced costs a quick fsync).
func (s *Store) makeDurable(ct *commitTxn, dgst digest.Digest) error {
	if s.syncer == nil {
		return nil // a fleet's blobs are in the shared store before their records are written
	}
	f, err := os.Open(s.blobPath(dgst))
	if err != nil {
		return fmt.Errorf("open blob %s to sync it: %w", dgst, err)
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("sync blob %s: %w", dgst, err)
	}
	if err := syncDir(filepath.Dir(s.blobPath(dgst))); err != nil {
		return err
	}
	return ct.Txn.Delete(unsyncedKey(dgst))
}

// renameNoReplace renames oldpath to newpath unless newpath exists; it reports whether it did.
func renameNoReplace(oldpath, newpath string) (bool, error) {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EEXIST):
		return false, nil
	case !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.ENOTSUP):
		return false, err
	}
	// A filesystem without RENAME_NOREPLACE: a hard link fails on an existing name too.
	if err := os.Link(oldpath, newpath); errors.Is(err, os.ErrExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, os.Remove(oldpath)
}

// dropUnsynced removes, at start, the files of mirrored blobs whose sync a stop cut short; reconcile
// then drops their records (and what needs them), so the next pull fetches them again.
func (s *Store) dropUnsynced() (int, error) {
	var keys [][]byte
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
		return scan(txn, []byte(prefixUnsynced), "", func(key, _ []byte) bool {
			keys = append(keys, bytes.Clone(key))
			return true
		})
	})
	if err != nil || len(keys) == 0 {
		return 0, err
	}
	ops := make([]kv.Op, len(keys))
	for i, key := range keys {
		dgst := digest.Digest(key[len(prefixUnsynced):])
		if err := os.Remove(s.blobPath(dgst)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("drop the unsynced blob %s: %w", dgst, err)
		}
		ops[i] = kv.Op{Key: key, Delete: true}
	}
	if err := s.db.Write(s.ctx, ops); err != nil {
		return 0, err
	}
	s.log.Warn("dropped mirrored blobs stored just before an unclean stop (their bytes may not have reached the disk); the next pull fetches them again", "blobs", len(keys))
	return len(keys), nil
}
