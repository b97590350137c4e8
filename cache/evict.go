package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"cove/internal/kv"
	"github.com/opencontainers/go-digest"
)

// flushInterval is how often the access times of reads are written to the index: in batches,
// not one write per read.
const flushInterval = 10 * time.Second

// hold marks dgst as being read until the returned func is called; eviction skips it meanwhile.
func (s *Store) hold(dgst digest.Digest) (release func()) {
	s.mu.Lock()
	s.inUse[dgst]++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.inUse[dgst]--; s.inUse[dgst] <= 0 {
			delete(s.inUse, dgst)
		}
		s.mu.Unlock()
	}
}

// touch records a read of dgst; flushAccess writes it later.
func (s *Store) touch(dgst digest.Digest) {
	s.mu.Lock()
	s.accessed[dgst] = s.now().UTC()
	s.mu.Unlock()
}

func (s *Store) flushLoop() {
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			if err := s.flushAccess(); err != nil {
				s.log.Warn("writing access times", "err", err)
			}
			return
		case <-t.C:
			if err := s.flushAccess(); err != nil {
				s.log.Warn("writing access times", "err", err)
			}
		}
	}
}

// flushAccess writes the access times recorded since the last flush, in one transaction.
func (s *Store) flushAccess() error {
	s.mu.Lock()
	batch := s.accessed
	s.accessed = map[digest.Digest]time.Time{}
	s.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	return s.update(func(ct *commitTxn) error {
		for dgst, at := range batch {
			rec, err := getBlobRecord(ct.Txn, dgst)
			if errors.Is(err, ErrBlobUnknown) {
				continue // evicted or collected meanwhile
			}
			if err != nil {
				return err
			}
			if at.After(rec.Accessed) {
				rec.Accessed = at
				if err := kv.Put(ct.Txn, blobKey(dgst), rec); err != nil {
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
func (s *Store) Evict(ctx context.Context) (int, error) {
	if s.maxSize <= 0 || s.mirrored.Load() <= s.maxSize {
		return 0, nil
	}
	return s.evict(ctx, func(int64) bool { return s.mirrored.Load() <= s.maxSize })
}

// evictFleetEvery is how often the fleet's shared tier is evicted, by whichever node offers first.
const evictFleetEvery = time.Minute

// EvictFleet is Evict for the fleet's shared tier: run once per evictFleetEvery across the fleet
// (kv.RunOnceEvery: the count below is a scan of every blob record), with the mirrored bytes counted afresh from the shared index, since every node's
// fills add to them. It returns how many blobs it removed, and 0 when another node is at it.
func (s *Store) EvictFleet(ctx context.Context) (int, error) {
	if s.remote == nil {
		return 0, nil // one node's store evicts after its fills
	}
	var n int
	_, err := kv.RunOnceEvery(ctx, s.db, "evict", evictFleetEvery, func() error {
		if err := s.recount(); err != nil {
			return err
		}
		var err error
		n, err = s.Evict(ctx)
		return err
	})
	return n, err
}

// evictBytes removes least recently used mirrored blobs until n bytes are freed, or none is left
// to remove: room above the free-space floor.
func (s *Store) evictBytes(ctx context.Context, n int64) (int, error) {
	return s.evict(ctx, func(freed int64) bool { return freed >= n })
}

// evict removes evictable blobs, least recently used first, until done says so (given the bytes
// freed so far).
func (s *Store) evict(ctx context.Context, done func(freed int64) bool) (int, error) {
	if !s.deletable() {
		return 0, nil // even deletions write into the index: not on a disk this full
	}
	if err := s.flushAccess(); err != nil {
		return 0, err
	}
	s.gcMu.Lock() // no blob gains a reference while it goes
	defer s.gcMu.Unlock()
	type candidate struct {
		dgst digest.Digest
		rec  blobRecord
	}
	var cands []candidate
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
		return eachBlob(txn, func(dgst digest.Digest, rec blobRecord) error {
			if rec.evictable() {
				cands = append(cands, candidate{dgst, rec})
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("evict: %w", err)
	}
	slices.SortFunc(cands, func(a, b candidate) int { return a.rec.Accessed.Compare(b.rec.Accessed) })
	evicted := 0
	var freed int64
	for _, c := range cands {
		if done(freed) || ctx.Err() != nil {
			break
		}
		s.mu.Lock()
		busy := s.inUse[c.dgst] > 0 || s.fills[c.dgst] != nil
		s.mu.Unlock()
		if busy {
			continue
		}
		// Record first, then file: the index never points at a missing file. (Deleting frees
		// index space too, so it goes on under the floor: db.Update, not s.update.)
		ct := &commitTxn{}
		err := s.db.Update(s.ctx, func(txn kv.Txn) error {
			ct.Txn = txn
			rec, err := getBlobRecord(txn, c.dgst)
			if err != nil || !rec.evictable() {
				return err // gone, or no longer evictable: leave it
			}
			if err := txn.Delete(blobKey(c.dgst)); err != nil {
				return err
			}
			// The file goes next: should cove stop in between, the next start removes it
			// (reconcile) instead of adopting it as a blob nobody would ever free.
			if err := txn.Set([]byte(prefixEvicting+c.dgst.String()), nil); err != nil {
				return err
			}
			ct.onCommit(func() {
				s.blobs.Add(-1)
				s.stored.Add(-rec.Size)
				s.mirrored.Add(-rec.Size)
				s.evicted.Add(1)
				evicted++
				freed += rec.Size
			})
			return nil
		})
		if err == nil {
			for _, f := range ct.after {
				f()
			}
		}
		if errors.Is(err, ErrBlobUnknown) || errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return evicted, fmt.Errorf("evict %s: %w", c.dgst, err)
		}
		if err := s.removeBlob(c.dgst); err != nil {
			return evicted, fmt.Errorf("evict %s: %w", c.dgst, err)
		}
		// The marker has done its work; one left behind is cleared at the next start.
		_ = s.db.Update(s.ctx, func(txn kv.Txn) error { return txn.Delete([]byte(prefixEvicting + c.dgst.String())) })
	}
	if evicted > 0 {
		s.log.Info("evicted mirrored blobs", "count", evicted, "freed_bytes", freed, "mirrored_bytes", s.mirrored.Load(), "max", s.maxSize)
	}
	return evicted, nil
}
