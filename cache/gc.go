package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/internal/blobstore"
	"cove/internal/kv"
)

// Collect removes the blob files that nothing references any more — no repository links them and
// no repository has them as a manifest — and that are older than grace. It is garbage collection
// of local content: a blob leaves the store only by delete plus Collect.
//
// Open uploads are files in tmp/ with no record, so Collect never sees them. A blob being read
// stays readable to its reader: the file is unlinked, not truncated. Collect removes the record
// before the file, so the index never points at a missing file; a crash in between leaves a file
// that the next Open adopts and the next Collect removes. In a fleet it also removes the shared
// store's objects that no record names (collectOrphans).
func (e *Evictor) Collect(ctx context.Context, grace time.Duration) (removed int, freed int64, err error) {
	removed, freed, err = e.collect(ctx, grace)
	if err != nil || e.st.remote == nil {
		return removed, freed, err
	}
	// Not under gcMu: listing a large bucket takes a while, and each object goes under its
	// digest's fleet-wide lock anyway.
	n, size, err := e.collectOrphans(ctx, grace)
	return removed + n, freed + size, err
}

func (e *Evictor) collect(ctx context.Context, grace time.Duration) (removed int, freed int64, err error) {
	// Mark without the lock, so pushes go on meanwhile; then, under the lock, keep the marks only
	// if no reference was added since (refs counts those), else mark again under the lock.
	gen := e.st.refs.Load()
	garbage, err := e.mark(ctx, grace)
	if err != nil {
		return 0, 0, err
	}
	if e.afterMark != nil {
		e.afterMark()
	}
	e.st.gcMu.Lock()
	defer e.st.gcMu.Unlock()
	if e.st.refs.Load() != gen {
		if garbage, err = e.mark(ctx, grace); err != nil {
			return 0, 0, err
		}
	}
	if !e.disk.deletable() {
		avail, floor, _ := e.disk.Space()
		return 0, 0, &SpaceError{Avail: avail, Floor: floor}
	}
	if e.st.remote != nil {
		return e.collectShared(ctx, garbage)
	}
	keys := make([][]byte, len(garbage))
	for i, g := range garbage {
		keys[i] = blobKey(g.dgst)
	}
	if err := e.db.Write(ctx, deletes(keys)); err != nil {
		return 0, 0, fmt.Errorf("collect: %w", err)
	}
	for _, g := range garbage {
		e.st.blobs.Add(-1)
		e.st.stored.Add(-g.size)
		if err := e.st.removeBlob(g.dgst); err != nil {
			return removed, freed, fmt.Errorf("collect %s: %w", g.dgst, err)
		}
		removed++
		freed += g.size
	}
	if removed > 0 {
		e.log.Info("garbage collected", "blobs", removed, "bytes", freed)
	}
	return removed, freed, nil
}

type garbageBlob struct {
	dgst digest.Digest
	size int64
	gen  int64 // the record's Gen when it was found unreferenced
}

// collectShared deletes garbage in a fleet, where gcMu orders nothing across nodes: each blob
// under the fleet-wide lock of its digest (which every new reference takes too), and only if no
// reference came since it was found unreferenced (its Gen); the shared object goes before the
// record, while the lock is held. A push that put the object just before is told by the object's
// absence after its commit, and puts it again (ensureShared).
func (e *Evictor) collectShared(ctx context.Context, garbage []garbageBlob) (removed int, freed int64, err error) {
	for _, g := range garbage {
		gone := false
		err := kv.Retry(ctx, e.db, func(txn kv.Txn) error {
			gone = false
			if err := kv.LockTxn(txn, "blob:"+g.dgst.String()); err != nil {
				return err
			}
			rec, err := getBlobRecord(txn, g.dgst)
			if errors.Is(err, ErrBlobUnknown) {
				return nil
			}
			if err != nil {
				return err
			}
			if rec.Gen != g.gen {
				return nil // referenced since
			}
			if err := e.st.remote.Delete(ctx, g.dgst); err != nil {
				return &RemoteError{Err: err}
			}
			gone = true
			return txn.Delete(blobKey(g.dgst))
		})
		if err != nil {
			return removed, freed, fmt.Errorf("collect %s: %w", g.dgst, err)
		}
		if !gone {
			continue
		}
		e.st.blobs.Add(-1)
		e.st.stored.Add(-g.size)
		if err := os.Remove(e.st.blobPath(g.dgst)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, freed, fmt.Errorf("collect %s: %w", g.dgst, err)
		}
		e.st.hot.drop(g.dgst)
		removed++
		freed += g.size
	}
	if removed > 0 {
		e.log.Info("garbage collected", "blobs", removed, "bytes", freed)
	}
	return removed, freed, nil
}

// collectOrphans deletes the shared store's objects that no blob record names and that were
// written before grace ago: a push whose record never came (its node stopped, or the metadata
// failed, between the object and the record). Each goes under the fleet-wide lock of its digest,
// after a last look for its record; a push that writes the record later puts the object again
// (ensureShared).
func (e *Evictor) collectOrphans(ctx context.Context, grace time.Duration) (removed int, freed int64, err error) {
	lister, ok := e.st.remote.(blobstore.Lister)
	if !ok {
		return 0, 0, nil
	}
	cutoff := e.st.now().Add(-grace)
	type object struct {
		dgst digest.Digest
		size int64
	}
	var old []object
	err = lister.List(ctx, func(dgst digest.Digest, size int64, written time.Time) error {
		if written.Before(cutoff) {
			old = append(old, object{dgst, size})
		}
		return nil
	})
	if err != nil {
		return 0, 0, &RemoteError{Err: err}
	}
	// Those with records are the many: one read of them all, in batches.
	const batch = 1000
	for i := 0; i < len(old); i += batch {
		chunk := old[i:min(i+batch, len(old))]
		var orphans []object
		err := e.db.View(e.st.ctx, func(txn kv.Txn) error {
			for _, o := range chunk {
				if _, err := txn.Get(blobKey(o.dgst)); errors.Is(err, kv.ErrNotFound) {
					orphans = append(orphans, o)
				} else if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return removed, freed, fmt.Errorf("collect orphan objects: %w", err)
		}
		for _, o := range orphans {
			gone := false
			err := kv.Retry(ctx, e.db, func(txn kv.Txn) error {
				gone = false
				if err := kv.LockTxn(txn, "blob:"+o.dgst.String()); err != nil {
					return err
				}
				if _, err := txn.Get(blobKey(o.dgst)); !errors.Is(err, kv.ErrNotFound) {
					return err // recorded since, or the index fails
				}
				if err := e.st.remote.Delete(ctx, o.dgst); err != nil {
					return &RemoteError{Err: err}
				}
				gone = true
				return nil
			})
			if err != nil {
				return removed, freed, fmt.Errorf("collect orphan object %s: %w", o.dgst, err)
			}
			if gone {
				removed++
				freed += o.size
			}
		}
	}
	if removed > 0 {
		e.log.Info("garbage collected objects of the shared store that no record names", "objects", removed, "bytes", freed)
	}
	return removed, freed, nil
}

// mark returns the blobs that nothing references and that were stored before grace ago.
func (e *Evictor) mark(ctx context.Context, grace time.Duration) ([]garbageBlob, error) {
	referenced := map[digest.Digest]bool{}
	var garbage []garbageBlob
	cutoff := e.st.now().Add(-grace)
	err := e.db.View(e.st.ctx, func(txn kv.Txn) error {
		for _, prefix := range []string{prefixLink, prefixManifest} {
			err := scan(txn, []byte(prefix), "", func(key, _ []byte) bool {
				referenced[digest.Digest(lastPart(key))] = true
				return true
			})
			if err != nil {
				return err
			}
		}
		return eachBlob(txn, func(dgst digest.Digest, rec blobRecord) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !referenced[dgst] && rec.Created.Before(cutoff) {
				garbage = append(garbage, garbageBlob{dgst, rec.Size, rec.Gen})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("collect: %w", err)
	}
	return garbage, nil
}
