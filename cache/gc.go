package cache

import (
	"context"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

// Collect removes the blob files that nothing references any more — no repository links them and
// no repository has them as a manifest — and that are older than grace. It is garbage collection
// of local content: a blob leaves the store only by delete plus Collect.
//
// Open uploads are files in tmp/ with no record, so Collect never sees them. A blob being read
// stays readable to its reader: the file is unlinked, not truncated. Collect removes the record
// before the file, so the index never points at a missing file; a crash in between leaves a file
// that the next Open adopts and the next Collect removes.
func (s *Store) Collect(ctx context.Context, grace time.Duration) (removed int, freed int64, err error) {
	// Mark without the lock, so pushes go on meanwhile; then, under the lock, keep the marks only
	// if no reference was added since (refs counts those), else mark again under the lock.
	gen := s.refs.Load()
	garbage, err := s.mark(ctx, grace)
	if err != nil {
		return 0, 0, err
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	if s.refs.Load() != gen {
		if garbage, err = s.mark(ctx, grace); err != nil {
			return 0, 0, err
		}
	}
	if !s.deletable() {
		avail, floor, _ := s.space()
		return 0, 0, &SpaceError{Avail: avail, Floor: floor}
	}
	keys := make([][]byte, len(garbage))
	for i, g := range garbage {
		keys[i] = blobKey(g.dgst)
	}
	if err := s.db.Write(ctx, deletes(keys)); err != nil {
		return 0, 0, fmt.Errorf("collect: %w", err)
	}
	for _, g := range garbage {
		s.blobs.Add(-1)
		s.stored.Add(-g.size)
		if err := s.removeBlob(g.dgst); err != nil {
			return removed, freed, fmt.Errorf("collect %s: %w", g.dgst, err)
		}
		removed++
		freed += g.size
	}
	if removed > 0 {
		s.log.Info("garbage collected", "blobs", removed, "bytes", freed)
	}
	return removed, freed, nil
}

type garbageBlob struct {
	dgst digest.Digest
	size int64
}

// mark returns the blobs that nothing references and that were stored before grace ago.
func (s *Store) mark(ctx context.Context, grace time.Duration) ([]garbageBlob, error) {
	referenced := map[digest.Digest]bool{}
	var garbage []garbageBlob
	cutoff := s.now().Add(-grace)
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
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
				garbage = append(garbage, garbageBlob{dgst, rec.Size})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("collect: %w", err)
	}
	return garbage, nil
}
