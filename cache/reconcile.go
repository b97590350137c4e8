package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

// reconcile makes the index and the blob files agree (invariant 2 of the package): a record whose
// file is gone is dropped with every link and manifest that needs it; a placed file without a record
// — a crash between rename and index write — is adopted. Adopting exposes nothing, since no
// repository is linked to it. It also computes the stored-blob statistics.
func (s *Store) reconcile(ctx context.Context) error {
	files := map[digest.Digest]int64{}
	root := filepath.Join(s.dir, "blobs")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		alg, rest, _ := cutPath(rel)
		_, hex, _ := cutPath(rest)
		dgst := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
		if supported(dgst) != nil || s.blobPath(dgst) != path {
			s.log.Warn("foreign file in blob store left alone", "path", path)
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files[dgst] = info.Size()
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk %s: %w", root, err)
	}

	// Evictions cut short: their records are gone, their files go now.
	var evicting [][]byte
	err = s.db.View(s.ctx, func(txn kv.Txn) error {
		return scan(txn, []byte(prefixEvicting), "", func(key, _ []byte) bool {
			evicting = append(evicting, bytes.Clone(key))
			return true
		})
	})
	if err != nil {
		return err
	}
	for _, key := range evicting {
		dgst := digest.Digest(key[len(prefixEvicting):])
		if _, ok := files[dgst]; ok || s.remote != nil { // in fleet mode, the shared object may remain
			has := false
			_ = s.db.View(s.ctx, func(txn kv.Txn) error {
				_, err := txn.Get(blobKey(dgst))
				has = err == nil
				return nil
			})
			if !has { // not stored again since
				if err := s.removeBlob(dgst); err != nil {
					return fmt.Errorf("finish the eviction of %s: %w", dgst, err)
				}
				delete(files, dgst)
				s.log.Info("finished an eviction cut short by a stop", "digest", dgst)
			}
		}
		if err := s.db.Update(s.ctx, func(txn kv.Txn) error { return txn.Delete(key) }); err != nil {
			return err
		}
	}

	var missing []digest.Digest
	err = s.db.View(s.ctx, func(txn kv.Txn) error {
		return scan(txn, []byte(prefixBlob), "", func(key, _ []byte) bool {
			dgst := digest.Digest(key[len(prefixBlob):])
			if size, ok := files[dgst]; ok {
				delete(files, dgst) // indexed and present
				if s.remote != nil {
					s.hot.add(dgst, size, time.Now())
				}
			} else {
				missing = append(missing, dgst)
			}
			return true
		})
	})
	if err != nil {
		return err
	}
	switch {
	case len(missing) > 0 && s.remote != nil:
		// Fleet mode: the blobs are in the shared store; the hot tier holds what this node used.
	case len(missing) > 0 && s.shared:
		// The index is shared with other nodes, whose files these may be: a node never drops
		// records for files it lacks (until blobs are in shared storage, it serves what it has).
		s.log.Warn("index records without blob files on this node left alone (the metadata is shared)", "count", len(missing))
	case len(missing) > 0:
		s.log.Warn("index records without blob files dropped", "count", len(missing))
		if err := s.dropRecords(missing); err != nil {
			return err
		}
	}
	if len(files) > 0 && s.remote != nil {
		// Fleet mode: local copies of blobs whose records are gone (collected or evicted by
		// another node) are dropped, never adopted: their shared objects may be gone too.
		s.log.Info("local copies of blobs no longer indexed removed", "count", len(files))
		for dgst := range files {
			if err := os.Remove(s.blobPath(dgst)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		clear(files)
	}
	if len(files) > 0 {
		s.log.Info("blob files without index records adopted", "count", len(files))
	}
	for dgst, size := range files {
		err := s.update(func(ct *commitTxn) error {
			_, err := s.ensureBlobRecord(ct, dgst, size, "", originNone)
			return err
		})
		if err != nil {
			return err
		}
	}
	return s.recount()
}

// dropRecords removes the blob records of missing, their eviction index entries, and every link,
// manifest, tag, referrer and pull time that names one of them.
func (s *Store) dropRecords(missing []digest.Digest) error {
	gone := map[string]bool{}
	for _, d := range missing {
		gone[d.String()] = true
	}
	var keys [][]byte
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
		for _, prefix := range []string{prefixBlob, prefixEvict, prefixLink, prefixManifest, prefixReferrer, prefixPulled} {
			err := scan(txn, []byte(prefix), "", func(key, _ []byte) bool {
				if gone[lastPart(key)] || (prefix == prefixBlob && gone[string(key[len(prefixBlob):])]) {
					keys = append(keys, append([]byte{}, key...))
				}
				return true
			})
			if err != nil {
				return err
			}
		}
		return scan(txn, []byte(prefixTag), "", func(key, val []byte) bool {
			if gone[string(val)] {
				keys = append(keys, append([]byte{}, key...))
			}
			return true
		})
	})
	if err != nil {
		return err
	}
	return s.db.Write(s.ctx, deletes(keys))
}

// recount recomputes the stored-blob statistics from the records.
func (s *Store) recount() error {
	var n, size, mirrored int64
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
		return eachBlob(txn, func(_ digest.Digest, rec blobRecord) error {
			n++
			size += rec.Size
			if rec.evictable() {
				mirrored += rec.Size
			}
			return nil
		})
	})
	s.blobs.Store(n)
	s.stored.Store(size)
	s.mirrored.Store(mirrored)
	return err
}

func cutPath(p string) (first, rest string, ok bool) {
	for i := 0; i < len(p); i++ {
		if os.IsPathSeparator(p[i]) {
			return p[:i], p[i+1:], true
		}
	}
	return p, "", false
}

// EachBlobRecord calls fn with the digest and size of every blob record of db, in digest order,
// until fn returns an error: for cove migrate, which checks that each has its file.
func EachBlobRecord(ctx context.Context, db kv.DB, fn func(dgst digest.Digest, size int64) error) error {
	return db.View(ctx, func(txn kv.Txn) error {
		return eachBlob(txn, func(dgst digest.Digest, rec blobRecord) error { return fn(dgst, rec.Size) })
	})
}

// BlobPath is where the data directory dir keeps the file of the blob dgst.
func BlobPath(dir string, dgst digest.Digest) string {
	h := dgst.Encoded()
	return filepath.Join(dir, "blobs", string(dgst.Algorithm()), h[:2], h)
}
