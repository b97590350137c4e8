package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"cove/internal/kv"
	"github.com/opencontainers/go-digest"
)

// flushInterval is how often the access times of reads are written to the index: in batches,
// not one write per read.
const flushInterval = 10 * time.Second

// Evictor removes what the store may lose: mirrored blobs beyond the cap, least recently used
// first (Evict), a mirrored repository on request (EvictRepository), and unreferenced blobs
// (Collect, garbage collection). It keeps the access times that order eviction. It is safe for
// concurrent use.
type Evictor struct {
	st      *Store
	fills   *Fills
	disk    *Disk
	db      kv.DB
	log     *slog.Logger
	maxSize int64        // cap on mirrored bytes; 0: no cap
	evicted atomic.Int64 // blobs evicted since start

	mu sync.Mutex
	// accessed holds reads not yet written to the index, pulls the manifest pulls per repository
	// not yet counted there, and pulledAt the last pull of each manifest per repository not yet
	// written there; all guarded by mu.
	accessed map[digest.Digest]time.Time
	pulls    map[string]int64
	pulledAt map[repoDigest]time.Time

	// afterMark, in tests, runs between garbage collection's mark and its deletes.
	afterMark func()
}

// Stats reports the bytes of evictable mirrored content and how many blobs were evicted.
func (e *Evictor) Stats() (bytes, evicted int64) { return e.st.mirrored.Load(), e.evicted.Load() }

// repoDigest names a manifest of a repository.
type repoDigest struct {
	repo string
	dgst digest.Digest
}

// pulled records a pull of the manifest dgst of repo: a read of the blob (eviction's order), a
// pull counted for the repository, and the repository's own last pull of that manifest, which
// another repository holding the same digest does not share. flushAccess writes them later.
func (e *Evictor) pulled(repo string, dgst digest.Digest) {
	now := e.st.now().UTC()
	e.mu.Lock()
	if e.pulls == nil {
		e.pulls = map[string]int64{}
	}
	if e.pulledAt == nil {
		e.pulledAt = map[repoDigest]time.Time{}
	}
	e.accessed[dgst] = now
	e.pulls[repo]++
	e.pulledAt[repoDigest{repo, dgst}] = now
	e.mu.Unlock()
}

// touch records a read of dgst; flushAccess writes it later.
func (e *Evictor) touch(dgst digest.Digest) {
	e.mu.Lock()
	e.accessed[dgst] = e.st.now().UTC()
	e.mu.Unlock()
}

func (e *Evictor) flushLoop() {
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-e.st.ctx.Done():
			if err := e.flushAccess(); err != nil {
				e.log.Warn("writing access times", "err", err)
			}
			return
		case <-t.C:
			if err := e.flushAccess(); err != nil {
				e.log.Warn("writing access times", "err", err)
			}
		}
	}
}

// flushAccess writes the access times recorded since the last flush, in one transaction.
func (e *Evictor) flushAccess() error {
	e.mu.Lock()
	batch, pulls, pulledAt := e.accessed, e.pulls, e.pulledAt
	e.accessed, e.pulls, e.pulledAt = map[digest.Digest]time.Time{}, nil, nil
	e.mu.Unlock()
	if len(batch) == 0 && len(pulls) == 0 && len(pulledAt) == 0 {
		return nil
	}
	return e.st.update(func(ct *commitTxn) error {
		if err := addPulls(ct.Txn, pulls); err != nil {
			return err
		}
		for rd, at := range pulledAt {
			if err := setPulled(ct.Txn, rd.repo, rd.dgst, at); err != nil {
				return err
			}
		}
		for dgst, at := range batch {
			rec, err := getBlobRecord(ct.Txn, dgst)
			if errors.Is(err, ErrBlobUnknown) {
				continue // evicted or collected meanwhile
			}
			if err != nil {
				return err
			}
			if at.After(rec.Accessed) {
				old := rec
				rec.Accessed = at
				if err := putBlobRecord(ct.Txn, dgst, old, rec); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Evict removes the least recently used mirrored blobs until mirrored content fits the cap
// (Config.MaxMirrored). It never removes local content, manifests, or a blob being read. An
// evicted blob is fetched again from upstream when next asked for: the repository links stay, and
// a link without a blob record reads as "not stored". It returns how many blobs it removed.
func (e *Evictor) Evict(ctx context.Context) (int, error) {
	if e.maxSize <= 0 || e.st.mirrored.Load() <= e.maxSize {
		return 0, nil
	}
	return e.evict(ctx, func(int64) bool { return e.st.mirrored.Load() <= e.maxSize })
}

// evictFleetEvery is how often the fleet's shared tier is evicted, by whichever node offers first.
const evictFleetEvery = time.Minute

// EvictFleet is Evict for the fleet's shared tier: run once per evictFleetEvery across the fleet
// (kv.RunOnceEvery: the count below is a scan of every blob record), with the mirrored bytes counted afresh from the shared index, since every node's
// fills add to them. It returns how many blobs it removed, and 0 when another node is at it.
func (e *Evictor) EvictFleet(ctx context.Context) (int, error) {
	if e.st.remote == nil {
		return 0, nil // one node's store evicts after its fills
	}
	var n int
	_, err := kv.RunOnceEvery(ctx, e.db, "evict", evictFleetEvery, func() error {
		if err := e.st.recount(); err != nil {
			return err
		}
		var err error
		if n, err = e.Evict(ctx); err != nil {
			return err
		}
		// The fleet's figures, for every node's dashboard and metrics (each node's own counters
		// see only its own fills).
		return e.db.Update(ctx, func(txn kv.Txn) error {
			return kv.Put(txn, []byte(keyFleetStats), fleetStats{Blobs: e.st.blobs.Load(), Stored: e.st.stored.Load(), Mirrored: e.st.mirrored.Load()})
		})
	})
	if err != nil {
		return n, err
	}
	var fs fleetStats
	if err := e.db.View(ctx, func(txn kv.Txn) error { return kv.Get(txn, []byte(keyFleetStats), &fs) }); err == nil {
		e.st.blobs.Store(fs.Blobs)
		e.st.stored.Store(fs.Stored)
		e.st.mirrored.Store(fs.Mirrored)
	}
	return n, nil
}

// keyFleetStats holds the fleet's blob counts as the last EvictFleet counted them.
const keyFleetStats = "cache/fleet-stats"

type fleetStats struct {
	Blobs, Stored, Mirrored int64
}

// evictBytes removes least recently used mirrored blobs until n bytes are freed, or none is left
// to remove: room above the free-space floor.
func (e *Evictor) evictBytes(ctx context.Context, n int64) (int, error) {
	return e.evict(ctx, func(freed int64) bool { return freed >= n })
}

// evict removes evictable blobs, least recently used first, until done says so (given the bytes
// freed so far).
func (e *Evictor) evict(ctx context.Context, done func(freed int64) bool) (int, error) {
	if !e.disk.deletable() {
		return 0, nil // even deletions write into the index: not on a disk this full
	}
	start := time.Now()
	if err := e.flushAccess(); err != nil {
		return 0, err
	}
	e.st.gcMu.Lock() // no blob gains a reference while it goes
	defer e.st.gcMu.Unlock()
	evicted := 0
	var freed int64
	// The candidates come from the eviction index, least recently read first, a page at a time:
	// a decision reads the entries it passes over (blobs in use), not every record.
	var after []byte // the last entry visited: the next page starts past it
	for !done(freed) && ctx.Err() == nil {
		page, err := e.candidates(after)
		if err != nil {
			return evicted, fmt.Errorf("evict: %w", err)
		}
		if len(page) == 0 {
			break // nothing evictable left
		}
		after = page[len(page)-1].key
		for _, c := range page {
			if done(freed) || ctx.Err() != nil {
				break
			}
			if c.stale {
				// An entry whose record is gone, no longer evictable or read since: written by a
				// node of an older version, or by an index build racing a read. It goes.
				_ = e.db.Update(e.st.ctx, func(txn kv.Txn) error { return txn.Delete(c.key) })
				continue
			}
			busy := e.st.reading(c.dgst) || e.fills.busy(c.dgst)
			if busy {
				continue
			}
			// Record first, then file (and in a fleet, object): the index never points at a missing
			// file. Under the digest's fleet-wide lock, and only if nothing referenced the blob since
			// it was chosen (dropUnderLock).
			gone, err := e.st.dropUnderLock(ctx, c.dgst, func(ct *commitTxn) (bool, error) {
				rec, err := getBlobRecord(ct.Txn, c.dgst)
				if err != nil || !rec.evictable() || rec.Gen != c.rec.Gen {
					return false, nil // gone, no longer evictable, or referenced since: leave it
				}
				if err := deleteBlobRecord(ct.Txn, c.dgst, rec); err != nil {
					return false, err
				}
				// The file goes next: should cove stop in between, the next start removes it
				// (reconcile) instead of adopting it as a blob nobody would ever free.
				if err := ct.Set([]byte(prefixEvicting+c.dgst.String()), nil); err != nil {
					return false, err
				}
				ct.onCommit(func() {
					e.st.blobs.Add(-1)
					e.st.stored.Add(-rec.Size)
					e.st.mirrored.Add(-rec.Size)
					e.evicted.Add(1)
					evicted++
					freed += rec.Size
				})
				return true, nil
			})
			if errors.Is(err, kv.ErrConflict) || (err == nil && !gone) {
				continue
			}
			if err != nil {
				return evicted, fmt.Errorf("evict %s: %w", c.dgst, err)
			}
			if err := e.st.removeLocal(c.dgst); err != nil {
				return evicted, fmt.Errorf("evict %s: %w", c.dgst, err)
			}
			// The marker has done its work; one left behind is cleared at the next start.
			_ = e.db.Update(e.st.ctx, func(txn kv.Txn) error { return txn.Delete([]byte(prefixEvicting + c.dgst.String())) })
		}
	}
	if evicted > 0 {
		e.log.Info("evicted mirrored blobs", "count", evicted, "freed_bytes", freed, "mirrored_bytes", e.st.mirrored.Load(), "max", e.maxSize,
			"took", time.Since(start)) // cove bench --scale reads it
	}
	return evicted, nil
}

// evictPage is how many eviction index entries evict reads at once.
const evictPage = 8

// evictCandidate is an entry of the eviction index with the blob's record.
type evictCandidate struct {
	key   []byte
	dgst  digest.Digest
	rec   blobRecord
	stale bool // the entry does not match the record: it is no candidate, and goes
}

// candidates returns the next evictPage entries of the eviction index after the key after (from
// the first when nil), least recently read first, each with its blob's record.
func (e *Evictor) candidates(after []byte) ([]evictCandidate, error) {
	var page []evictCandidate
	err := e.db.View(e.st.ctx, func(txn kv.Txn) error {
		page = page[:0]
		var from []byte
		if after != nil {
			from = append(bytes.Clone(after), 0) // the first key past after
		}
		err := txn.Scan([]byte(prefixEvict), kv.ScanOptions{From: from, KeysOnly: true}, func(key, _ []byte) (bool, error) {
			page = append(page, evictCandidate{key: key, dgst: digest.Digest(lastPart(key))})
			return len(page) < evictPage, nil
		})
		if err != nil {
			return err
		}
		for i := range page {
			c := &page[i]
			rec, err := getBlobRecord(txn, c.dgst)
			if err != nil && !errors.Is(err, ErrBlobUnknown) {
				return err
			}
			c.rec = rec
			c.stale = err != nil || !rec.evictable() || !bytes.Equal(evictKey(rec.Accessed, c.dgst), c.key)
		}
		return nil
	})
	return page, err
}

// EvictRepository forgets a mirrored repository: its manifests, tags and links go, and its blobs
// that nothing else uses leave the disk now. It refuses a repository that holds local content.
func (e *Evictor) EvictRepository(ctx context.Context, repo string) (int, error) {
	e.st.gcMu.Lock()
	defer e.st.gcMu.Unlock()
	var keys [][]byte
	candidates := map[digest.Digest]bool{}
	err := e.db.View(e.st.ctx, func(txn kv.Txn) error {
		if _, err := txn.Get(repoKey(repo)); err != nil {
			return notFound(err, ErrNameUnknown)
		}
		for _, kind := range []string{prefixLink, prefixManifest, prefixTag, prefixChecked, prefixReferrer, prefixPulled} {
			err := scan(txn, repoPrefix(kind, repo), "", func(key, _ []byte) bool {
				keys = append(keys, append([]byte{}, key...))
				if kind == prefixLink || kind == prefixManifest {
					candidates[digest.Digest(lastPart(key))] = true
				}
				return true
			})
			if err != nil {
				return err
			}
		}
		for d := range candidates {
			var rec blobRecord
			if kv.Get(txn, blobKey(d), &rec) == nil && rec.Local {
				return fmt.Errorf("%w: %s holds local content", ErrNotMirrored, repo)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	keys = append(keys, repoKey(repo))
	if !e.disk.deletable() {
		avail, floor, _ := e.disk.Space()
		return 0, &SpaceError{Avail: avail, Floor: floor}
	}
	if err := e.db.Write(ctx, deletes(keys)); err != nil {
		return 0, err
	}
	// Remove the blobs no other repository uses.
	garbage, err := e.mark(ctx, -time.Hour*24*365*100)
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, g := range garbage {
		if !candidates[g.dgst] {
			continue
		}
		if e.st.reading(g.dgst) {
			continue
		}
		// As eviction: under the digest's lock, only if nothing referenced it since it was
		// marked (a push on another node) and no local project uses it.
		gone, err := e.st.dropUnderLock(ctx, g.dgst, func(ct *commitTxn) (bool, error) {
			rec, err := getBlobRecord(ct.Txn, g.dgst)
			if err != nil || rec.Local || rec.Gen != g.gen {
				return false, err
			}
			for _, k := range g.links {
				if err := ct.Delete(k); err != nil {
					return false, err
				}
			}
			if err := deleteBlobRecord(ct.Txn, g.dgst, rec); err != nil {
				return false, err
			}
			ct.onCommit(func() {
				e.st.blobs.Add(-1)
				e.st.stored.Add(-rec.Size)
				if rec.evictable() {
					e.st.mirrored.Add(-rec.Size)
				}
			})
			return true, nil
		})
		if err != nil && !errors.Is(err, ErrBlobUnknown) {
			return removed, err
		}
		if !gone {
			continue
		}
		if err := e.st.removeLocal(g.dgst); err != nil {
			e.log.Warn("remove an evicted repository's blob", "digest", g.dgst, "err", err)
		}
		removed++
	}
	return removed, nil
}

// forgetLost handles a blob that the shared blob store lost or damaged (cause): a mirrored blob's
// record goes, with the damaged object, so that the next pull fetches it from its upstream (the
// repositories' links stay: a link without a record reads as "not stored"). Pushed content
// cannot be fetched again: it is logged for the operator, and its requests answer 503.
func (e *Evictor) forgetLost(ctx context.Context, dgst digest.Digest, cause error) {
	e.st.gcMu.Lock() // no blob gains a reference while it goes
	defer e.st.gcMu.Unlock()
	var rec blobRecord
	dropped, err := e.st.dropUnderLock(ctx, dgst, func(ct *commitTxn) (bool, error) {
		var err error
		if rec, err = getBlobRecord(ct.Txn, dgst); err != nil || !rec.evictable() {
			return false, err
		}
		return true, deleteBlobRecord(ct.Txn, dgst, rec)
	})
	switch {
	case errors.Is(err, ErrBlobUnknown):
		return
	case err != nil:
		e.log.Error("a blob the shared store lost keeps its record: dropping it failed", "digest", dgst, "cause", cause, "err", err)
		return
	case !dropped:
		e.log.Error("the shared blob store lost pushed content: restore the object from a backup of the bucket", "digest", dgst, "cause", cause)
		return
	}
	e.st.blobs.Add(-1)
	e.st.stored.Add(-rec.Size)
	e.st.mirrored.Add(-rec.Size)
	if err := e.st.removeLocal(dgst); err != nil {
		e.log.Warn("remove a lost blob's copy", "digest", dgst, "err", err)
	}
	e.log.Warn("the shared blob store lost a mirrored blob: its record is dropped, the next pull fetches it from its upstream", "digest", dgst, "cause", cause)
}

// keyEvictIndex marks the eviction index (prefixEvict) as built: a data directory from before it
// (issue #16) gets it once, at its first start, from the records.
const keyEvictIndex = "cache/evict-index"

// buildEvictIndex writes the eviction index entry of every evictable blob, once: from then on
// every write of a record keeps it (putBlobRecord). It is the migration to schema 2 (schema.go).
func buildEvictIndex(ctx context.Context, db kv.DB, log *slog.Logger) error {
	var built bool
	err := db.View(ctx, func(txn kv.Txn) error {
		_, err := txn.Get([]byte(keyEvictIndex))
		built = err == nil
		if errors.Is(err, kv.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil || built {
		return err
	}
	start := time.Now()
	var ops []kv.Op
	err = db.View(ctx, func(txn kv.Txn) error {
		return eachBlob(txn, func(dgst digest.Digest, rec blobRecord) error {
			if rec.evictable() {
				ops = append(ops, kv.Op{Key: evictKey(rec.Accessed, dgst), Value: []byte{}})
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("build the eviction index: %w", err)
	}
	// A read that changes a record meanwhile (a node of a fleet serving) may leave an entry
	// behind: eviction drops those it meets (Evictor.candidates).
	if err := db.Write(ctx, ops); err != nil {
		return fmt.Errorf("build the eviction index: %w", err)
	}
	// The marker after the entries: a start cut short builds the index again.
	err = db.Update(ctx, func(txn kv.Txn) error { return txn.Set([]byte(keyEvictIndex), []byte(`{}`)) })
	if err != nil {
		return fmt.Errorf("build the eviction index: %w", err)
	}
	log.Info("built the eviction index", "entries", len(ops), "took", time.Since(start))
	return nil
}
