package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

// reconcile makes the index and the blob files agree (invariant 2 of the package): a record whose
// file is gone is dropped with every link and manifest that needs it; a placed file without a record
// — a crash between rename and index write — is adopted. Adopting exposes nothing, since no
// repository is linked to it. It also computes the stored-blob statistics.
//
// It walks every blob file and reads every record: at a million blobs, seconds (issue #16, point
// 4). After a clean stop, which is what a crash would break, start skips it (resumeCleanStop).
func (s *Store) reconcile(ctx context.Context) error {
	files := newFileSet()
	root := filepath.Join(s.dir, "blobs")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		alg, rest, _ := cutPath(rel)
		_, hex, _ := cutPath(rest)
		dgst := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
		if !wellFormed(dgst) || s.blobPath(dgst) != path {
			s.log.Warn("foreign file in blob store left alone", "path", path)
			return nil
		}
		files.add(dgst)
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk %s: %w", root, err)
	}
	if err := s.finishEvictions(files); err != nil {
		return err
	}

	// One read of every record: which have files, and the statistics.
	var missing []digest.Digest
	var n, size, mirrored int64
	err = s.db.View(s.ctx, func(txn kv.Txn) error {
		return eachBlobCount(txn, func(dgst digest.Digest, rec blobCount) error {
			if !files.remove(dgst) { // else indexed and present
				missing = append(missing, dgst)
				return nil
			}
			if s.remote != nil {
				s.hot.add(dgst, s.fileSize(dgst), time.Now())
			}
			n++
			size += rec.Size
			if rec.evictable() {
				mirrored += rec.Size
			}
			return nil
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
	if files.len() > 0 && s.remote != nil {
		// Fleet mode: local copies of blobs whose records are gone (collected or evicted by
		// another node) are dropped, never adopted: their shared objects may be gone too.
		s.log.Info("local copies of blobs no longer indexed removed", "count", files.len())
		for _, dgst := range files.all() {
			if err := os.Remove(s.blobPath(dgst)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		files = newFileSet()
	}
	adopt := files.all()
	if len(adopt) > 0 {
		s.log.Info("blob files without index records adopted", "count", len(adopt))
	}
	for _, dgst := range adopt {
		err := s.update(func(ct *commitTxn) error {
			_, err := s.ensureBlobRecord(ct, dgst, s.fileSize(dgst), "", originNone)
			return err
		})
		if err != nil {
			return err
		}
	}
	if len(missing) > 0 || len(adopt) > 0 {
		return s.recount() // records dropped or adopted: count again
	}
	s.blobs.Store(n)
	s.stored.Store(size)
	s.mirrored.Store(mirrored)
	return nil
}

// fileSet is the blob files reconcile found. A sha256 digest is kept as its 32 bytes in a sorted
// slice, not as a 71-character string in a map: at a million blobs the set takes 32 MiB instead of
// hundreds (issue #16, point 4: resident memory ≤ 256 MiB). reconcile adds every file first; the
// first look sorts the slice, and an add after a look has the next one sort it again.
type fileSet struct {
	sha256 [][sha256.Size]byte
	gone   []bool // removed, by index in sha256
	sorted bool
	other  map[digest.Digest]struct{} // sha512
	n      int                        // files in the set
}

func newFileSet() *fileSet { return &fileSet{other: map[digest.Digest]struct{}{}} }

// short returns the bytes of a sha256 digest, and false for any other.
func short(dgst digest.Digest) ([sha256.Size]byte, bool) {
	var b [sha256.Size]byte
	if dgst.Algorithm() != digest.SHA256 {
		return b, false
	}
	n, err := hex.Decode(b[:], []byte(dgst.Encoded()))
	return b, err == nil && n == sha256.Size
}

// add puts dgst in the set; it must not be there yet (a walk finds each file once).
func (f *fileSet) add(dgst digest.Digest) {
	if b, ok := short(dgst); ok {
		if f.sorted { // drop the removed ones: the next look sorts again and marks none
			kept := f.sha256[:0]
			for i, x := range f.sha256 {
				if !f.gone[i] {
					kept = append(kept, x)
				}
			}
			f.sha256, f.gone = kept, nil
		}
		f.sha256 = append(f.sha256, b)
		f.sorted = false
	} else {
		f.other[dgst] = struct{}{}
	}
	f.n++
}

// find returns the index of dgst's bytes in the sorted slice, or -1.
func (f *fileSet) find(b [sha256.Size]byte) int {
	if !f.sorted {
		slices.SortFunc(f.sha256, func(x, y [sha256.Size]byte) int { return bytes.Compare(x[:], y[:]) })
		f.gone = make([]bool, len(f.sha256))
		f.sorted = true
	}
	i, found := slices.BinarySearchFunc(f.sha256, b, func(x, y [sha256.Size]byte) int { return bytes.Compare(x[:], y[:]) })
	if !found || f.gone[i] {
		return -1
	}
	return i
}

func (f *fileSet) has(dgst digest.Digest) bool {
	if b, ok := short(dgst); ok {
		return f.find(b) >= 0
	}
	_, found := f.other[dgst]
	return found
}

// remove takes dgst out of the set and reports whether it was there.
func (f *fileSet) remove(dgst digest.Digest) bool {
	if b, ok := short(dgst); ok {
		i := f.find(b)
		if i < 0 {
			return false
		}
		f.gone[i] = true
	} else {
		if _, found := f.other[dgst]; !found {
			return false
		}
		delete(f.other, dgst)
	}
	f.n--
	return true
}

func (f *fileSet) len() int { return f.n }

// all returns the digests of the set.
func (f *fileSet) all() []digest.Digest {
	ds := make([]digest.Digest, 0, f.n)
	for i, b := range f.sha256 {
		if f.sorted && f.gone[i] {
			continue
		}
		ds = append(ds, digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(b[:])))
	}
	for d := range f.other {
		ds = append(ds, d)
	}
	return ds
}

// fileSize is the size of the blob file of dgst; 0 when it cannot be read (reconcile asks only
// of files it has just found).
func (s *Store) fileSize(dgst digest.Digest) int64 {
	info, err := os.Stat(s.blobPath(dgst))
	if err != nil {
		return 0
	}
	return info.Size()
}

// wellFormed reports whether dgst is a supported digest, as supported does, without its regular
// expression: reconcile asks it of every file.
func wellFormed(dgst digest.Digest) bool {
	enc := dgst.Encoded()
	switch dgst.Algorithm() {
	case digest.SHA256:
		if len(enc) != 64 {
			return false
		}
	case digest.SHA512:
		if len(enc) != 128 {
			return false
		}
	default:
		return false
	}
	for _, c := range []byte(enc) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// finishEvictions removes the files of evictions cut short (their records are gone) and their
// markers. files, when not nil, holds the blob files found, and loses the removed ones; when
// nil, each file is looked for.
func (s *Store) finishEvictions(files *fileSet) error {
	var evicting [][]byte
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
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
		present := false
		if files != nil {
			present = files.has(dgst)
		} else {
			_, err := os.Stat(s.blobPath(dgst))
			present = err == nil
		}
		if present || s.remote != nil { // in fleet mode, the shared object may remain
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
				if files != nil {
					files.remove(dgst)
				}
				s.log.Info("finished an eviction cut short by a stop", "digest", dgst)
			}
		}
		if err := s.db.Update(s.ctx, func(txn kv.Txn) error { return txn.Delete(key) }); err != nil {
			return err
		}
	}
	return nil
}

// keyCleanStop holds the blob statistics as a clean stop left them (Store.Close): the next start
// takes them and skips reconcile, whose walk of every blob file and read of every record take
// seconds at a million blobs. That start deletes it first, so that a crash after it finds none and
// reconciles. Only a node's own index has it: a fleet's nodes share theirs (PostgreSQL), and each
// walks its files for its hot tier.
const keyCleanStop = "cache/clean-stop"

// cleanStop is the value under keyCleanStop.
type cleanStop struct {
	Blobs    int64 `json:"blobs"`
	Stored   int64 `json:"stored"`
	Mirrored int64 `json:"mirrored"`
}

// ownIndex reports whether the index is this node's alone (badger), not a fleet's.
func (s *Store) ownIndex() bool { return !s.shared && s.remote == nil }

// resumeCleanStop takes the statistics of a clean stop, deleting them from the index, and
// reports whether there were any (else the start must reconcile).
func (s *Store) resumeCleanStop(ctx context.Context) (bool, error) {
	if !s.ownIndex() {
		return false, nil
	}
	var cs cleanStop
	found := false
	err := s.db.Update(ctx, func(txn kv.Txn) error {
		err := kv.Get(txn, []byte(keyCleanStop), &cs)
		if errors.Is(err, kv.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return txn.Delete([]byte(keyCleanStop))
	})
	if err != nil || !found {
		return false, err
	}
	s.blobs.Store(cs.Blobs)
	s.stored.Store(cs.Stored)
	s.mirrored.Store(cs.Mirrored)
	return true, s.finishEvictions(nil)
}

// markCleanStop records the statistics for the next start (see keyCleanStop), once the store's
// own work has ended. Without it the next start reconciles: a failure costs time, not data.
func (s *Store) markCleanStop() {
	if !s.ownIndex() || s.Disk.readOnly || s.Disk.WriteCheck() != nil {
		return
	}
	cs := cleanStop{Blobs: s.blobs.Load(), Stored: s.stored.Load(), Mirrored: s.mirrored.Load()}
	err := s.db.Update(context.Background(), func(txn kv.Txn) error { return kv.Put(txn, []byte(keyCleanStop), cs) })
	if err != nil {
		s.log.Warn("recording a clean stop: the next start reconciles the index with the blob files", "err", err)
	}
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
		return eachBlobCount(txn, func(_ digest.Digest, rec blobCount) error {
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

// Transient says whether the record under key describes this run of the store rather than its
// content, and so has no place in a backup: the clean stop's counts (a restored directory is
// walked at its first start), and the marks of files not yet synced (a backup's copies are).
func Transient(key []byte) bool {
	return string(key) == keyCleanStop || bytes.HasPrefix(key, []byte(prefixUnsynced))
}
