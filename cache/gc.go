package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

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
	return e.CollectWith(ctx, CollectOptions{Grace: grace})
}

// CollectOptions are a garbage collection's choices (Harbor's job parameters).
type CollectOptions struct {
	// Grace is the time window: a blob referenced (or stored) more recently stays.
	Grace time.Duration
	// DryRun finds what would be freed and frees nothing.
	DryRun bool
	// Workers deletes that many blobs of the shared store at once (fleet mode); 0 means 1.
	Workers int
	// Freed, when set, is told of each blob freed, or that would be in a dry run.
	Freed func(dgst digest.Digest, size int64)
}

// CollectWith is Collect with options.
func (e *Evictor) CollectWith(ctx context.Context, o CollectOptions) (removed int, freed int64, err error) {
	if o.Freed == nil {
		o.Freed = func(digest.Digest, int64) {}
	}
	o.Workers = max(o.Workers, 1)
	removed, freed, err = e.collect(ctx, o)
	if err != nil || e.st.remote == nil {
		return removed, freed, err
	}
	// Not under gcMu: listing a large bucket takes a while, and each object goes under its
	// digest's fleet-wide lock anyway.
	n, size, err := e.collectOrphans(ctx, o)
	return removed + n, freed + size, err
}

func (e *Evictor) collect(ctx context.Context, o CollectOptions) (removed int, freed int64, err error) {
	grace := o.Grace
	// Mark without the lock, so pushes go on meanwhile; then, under the lock, keep the marks only
	// if no reference was added since (refs counts those), else mark again under the lock.
	gen := e.st.refs.Load()
	garbage, err := e.mark(ctx, grace)
	if err != nil {
		return 0, 0, err
	}
	if o.DryRun {
		for _, g := range garbage {
			o.Freed(g.dgst, g.size)
			removed++
			freed += g.size
		}
		return removed, freed, nil
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
		return e.collectShared(ctx, garbage, o)
	}
	var keys [][]byte
	for _, g := range garbage {
		keys = append(append(keys, blobRecordKeys(g.dgst, g.rec)...), g.links...)
	}
	if err := e.db.Write(ctx, deletes(keys)); err != nil {
		return 0, 0, fmt.Errorf("collect: %w", err)
	}
	for _, g := range garbage {
		e.st.blobs.Add(-1)
		e.st.stored.Add(-g.size)
		if g.mirrored {
			e.st.mirrored.Add(-g.size)
		}
		if err := e.st.removeBlob(g.dgst); err != nil {
			return removed, freed, fmt.Errorf("collect %s: %w", g.dgst, err)
		}
		o.Freed(g.dgst, g.size)
		removed++
		freed += g.size
	}
	if removed > 0 {
		e.log.Info("garbage collected", "blobs", removed, "bytes", freed)
	}
	return removed, freed, nil
}

type garbageBlob struct {
	dgst     digest.Digest
	size     int64
	gen      int64    // the record's Gen when it was found unreferenced
	mirrored bool     // mirrored content, not a local project's
	links    [][]byte // the repositories' links to it, which go with it
	rec      blobRecord
}

// collectShared deletes garbage in a fleet, where gcMu orders nothing across nodes: each blob
// under the fleet-wide lock of its digest (which every new reference takes too), and only if no
// reference came since it was found unreferenced (its Gen); the shared object goes before the
// record, while the lock is held. A push that put the object just before is told by the object's
// absence after its commit, and puts it again (ensureShared).
func (e *Evictor) collectShared(ctx context.Context, garbage []garbageBlob, o CollectOptions) (removed int, freed int64, err error) {
	var mu sync.Mutex // guards removed and freed
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Workers)
	for _, gb := range garbage {
		g.Go(func() error {
			gone, err := e.collectOne(gctx, gb)
			if err != nil || !gone {
				return err
			}
			o.Freed(gb.dgst, gb.size)
			mu.Lock()
			removed++
			freed += gb.size
			mu.Unlock()
			return nil
		})
	}
	err = g.Wait()
	if removed > 0 {
		e.log.Info("garbage collected", "blobs", removed, "bytes", freed)
	}
	return removed, freed, err
}

// collectOne deletes one blob of the shared store's garbage, unless a reference came since it
// was marked (see collectShared), and reports whether it went.
func (e *Evictor) collectOne(ctx context.Context, g garbageBlob) (bool, error) {
	gone, err := e.st.dropUnderLock(ctx, g.dgst, func(ct *commitTxn) (bool, error) {
		rec, err := getBlobRecord(ct.Txn, g.dgst)
		if errors.Is(err, ErrBlobUnknown) || (err == nil && rec.Gen != g.gen) {
			return false, nil // gone, or referenced since
		}
		if err != nil {
			return false, err
		}
		for _, k := range g.links {
			if err := ct.Delete(k); err != nil {
				return false, err
			}
		}
		return true, deleteBlobRecord(ct.Txn, g.dgst, rec)
	})
	if err != nil {
		return false, fmt.Errorf("collect %s: %w", g.dgst, err)
	}
	if !gone {
		return false, nil
	}
	e.st.blobs.Add(-1)
	e.st.stored.Add(-g.size)
	if g.mirrored {
		e.st.mirrored.Add(-g.size)
	}
	if err := e.st.removeLocal(g.dgst); err != nil {
		return true, fmt.Errorf("collect %s: %w", g.dgst, err)
	}
	return true, nil
}

// collectOrphans deletes the shared store's objects that no blob record names and that were
// written before grace ago: a push whose record never came (its node stopped, or the metadata
// failed, between the object and the record). Each goes under the fleet-wide lock of its digest,
// after a last look for its record; a push that writes the record later puts the object again
// (ensureShared).
func (e *Evictor) collectOrphans(ctx context.Context, o CollectOptions) (removed int, freed int64, err error) {
	grace := o.Grace
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
			for _, ob := range chunk {
				if _, err := txn.Get(blobKey(ob.dgst)); errors.Is(err, kv.ErrNotFound) {
					orphans = append(orphans, ob)
				} else if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return removed, freed, fmt.Errorf("collect orphan objects: %w", err)
		}
		if o.DryRun {
			for _, ob := range orphans {
				o.Freed(ob.dgst, ob.size)
				removed++
				freed += ob.size
			}
			continue
		}
		for _, ob := range orphans {
			// Under the digest's lock, with a last look for a record written since.
			gone, err := e.st.dropUnderLock(ctx, ob.dgst, func(ct *commitTxn) (bool, error) {
				if _, err := ct.Get(blobKey(ob.dgst)); !errors.Is(err, kv.ErrNotFound) {
					return false, err // recorded since, or the index fails
				}
				return true, nil
			})
			if err != nil {
				return removed, freed, fmt.Errorf("collect orphan object %s: %w", ob.dgst, err)
			}
			if gone {
				o.Freed(ob.dgst, ob.size)
				removed++
				freed += ob.size
			}
		}
	}
	if removed > 0 {
		e.log.Info("garbage collected objects of the shared store that no record names", "objects", removed, "bytes", freed)
	}
	return removed, freed, nil
}

// inFlight is how long a blob linked since any manifest last named it (an upload, a mount), and
// still linked, is kept whatever the time window: a push whose manifest has not come yet. Pushes
// of the largest images take less.
const inFlight = time.Hour

// mark returns the blobs that nothing keeps: no manifest record of any repository is the blob or
// names it (its config, layers, or an index's manifests), its last reference (Linked, Named,
// else Created) is older than grace, and it is not part of a push in flight (see inFlight).
// Repository links alone keep nothing else: a deleted artifact's layers stay linked. Each comes
// with its links, which go with it.
func (e *Evictor) mark(ctx context.Context, grace time.Duration) ([]garbageBlob, error) {
	kept := map[digest.Digest]bool{}
	var unread []digest.Digest // manifests whose records predate Blobs and Children
	links := map[digest.Digest][][]byte{}
	var garbage []garbageBlob
	now := e.st.now()
	cutoff := now.Add(-grace)
	err := e.db.View(e.st.ctx, func(txn kv.Txn) error {
		err := eachJSON(txn, prefixManifest, func(key []byte, m *Manifest) error {
			d := digest.Digest(lastPart(key))
			kept[d] = true
			for _, n := range slices.Concat(m.Blobs, m.Children) {
				kept[n] = true
			}
			if len(m.Blobs) == 0 && len(m.Children) == 0 {
				unread = append(unread, d)
			}
			return ctx.Err()
		})
		if err != nil {
			return err
		}
		return scan(txn, []byte(prefixLink), "", func(key, _ []byte) bool {
			d := digest.Digest(lastPart(key))
			links[d] = append(links[d], bytes.Clone(key))
			return true
		})
	})
	if err != nil {
		return nil, fmt.Errorf("collect: %w", err)
	}
	for _, d := range unread {
		body, err := e.st.manifestBody(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("collect: read manifest %s: %w", d, err)
		}
		blobs, children, err := refs(body)
		if err != nil {
			return nil, fmt.Errorf("collect: %w", err)
		}
		for _, n := range slices.Concat(blobs, children) {
			kept[n] = true
		}
	}
	err = e.db.View(e.st.ctx, func(txn kv.Txn) error {
		return eachBlob(txn, func(dgst digest.Digest, rec blobRecord) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			last := rec.Created
			for _, t := range []time.Time{rec.Linked, rec.Named} {
				if t.After(last) {
					last = t
				}
			}
			// Linked since a manifest last named it, and still linked: a push in flight.
			inFlight := len(links[dgst]) > 0 && rec.Linked.After(rec.Named) && rec.Linked.After(now.Add(-inFlight))
			if !kept[dgst] && last.Before(cutoff) && !inFlight {
				garbage = append(garbage, garbageBlob{dgst: dgst, size: rec.Size, gen: rec.Gen, mirrored: rec.evictable(), links: links[dgst], rec: rec})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("collect: %w", err)
	}
	return garbage, nil
}
