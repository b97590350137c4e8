package cache

// The index's records of blobs, and the transactions that write them: a record per stored blob,
// the links that let repositories read it, and the fleet-wide lock of its digest that every new
// reference and every delete take.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

type blobRecord struct {
	Size      int64     `json:"size"`
	Created   time.Time `json:"created"`
	MediaType string    `json:"mediaType,omitempty"` // set when the blob is a manifest: a marker only
	// Local is set once a local project uses the blob; such a blob is never evicted.
	Local bool `json:"local,omitempty"`
	// Mirrored is set when the blob came from an upstream; it may be evicted unless Local.
	Mirrored bool `json:"mirrored,omitempty"`
	// Accessed is the last read, written in batches; eviction removes the least recent first.
	Accessed time.Time `json:"accessed,omitzero"`
	// Gen counts the references made to the blob (links, manifests): garbage collection deletes
	// a blob only if no reference came since it found the blob unreferenced (in a fleet, a push
	// on another node may link it meanwhile).
	Gen int64 `json:"gen,omitempty"`
	// Linked is when the blob was last linked to a repository (an upload, a mount, a fill) and
	// Named when a manifest last named it. Garbage collection's time window counts from the
	// latest of them and Created; a blob linked after any manifest named it belongs to a push in
	// flight, whose manifest has not come yet, and is kept for inFlight whatever the window.
	Linked time.Time `json:"linked,omitzero"`
	Named  time.Time `json:"named,omitzero"`
}

// evictable reports whether eviction may remove the blob: mirrored content only, never what a
// local project uses, and never manifests (they are small, and a manifest record needs its file).
func (r blobRecord) evictable() bool { return r.Mirrored && !r.Local && r.MediaType == "" }

// origin says where a blob comes from when it is indexed.
type origin int

const (
	originNone     origin = iota // adopted at start: neither yet
	originLocal                  // pushed to or mounted into a local project
	originMirrored               // filled from an upstream
)

// update runs fn in a read-write transaction, retrying a few times when badger reports a
// conflict with a concurrent transaction. Work registered with pending runs once the transaction
// has committed, so that a retried transaction does not count twice.
func (s *Store) update(fn func(ct *commitTxn) error) error {
	// Not on a disk under half its floor: badger's memory-mapped files must never meet a full
	// disk (a SIGBUS); nor on a read-only start.
	if err := s.Disk.WriteCheck(); err != nil {
		return err
	}
	var ct *commitTxn
	err := kv.Retry(s.ctx, s.db, func(txn kv.Txn) error {
		ct = &commitTxn{Txn: txn} // a fresh one for each try: only the committed one's work runs
		return fn(ct)
	})
	if err == nil {
		for _, f := range ct.after {
			f()
		}
	}
	return err
}

// commitTxn is a read-write transaction with work to run once it has committed.
type commitTxn struct {
	kv.Txn
	after []func()
}

// onCommit runs f after the transaction commits, and not at all if it does not.
func (ct *commitTxn) onCommit(f func()) { ct.after = append(ct.after, f) }

// ensureBlobRecord writes the blob record of a placed file unless it exists, marks where it is
// used from, and returns it. mediaType, when not empty, is the media type of a manifest stored
// under dgst: a digest names one media type only, so a manifest already stored under another
// type is refused. The statistics change only after the transaction commits (see counted).
func (s *Store) ensureBlobRecord(ct *commitTxn, dgst digest.Digest, size int64, mediaType string, from origin) (blobRecord, error) {
	rec, err := getBlobRecord(ct.Txn, dgst)
	isNew := errors.Is(err, ErrBlobUnknown)
	if err != nil && !isNew {
		return rec, err
	}
	if isNew {
		rec = blobRecord{Size: size, Created: s.now().UTC()}
		// Pushed content that scrub took out of service (lost/): its repositories still link it,
		// so the same bytes stored again, even by a fill, are pushed content again — never
		// evicted from under them.
		switch _, err := ct.Txn.Get(lostKey(dgst)); {
		case err == nil:
			if err := ct.Txn.Delete(lostKey(dgst)); err != nil {
				return rec, err
			}
			if from == originMirrored {
				if err := s.makeDurable(ct, dgst); err != nil {
					return rec, err
				}
				rec.Local = true
			}
		case !errors.Is(err, kv.ErrNotFound):
			return rec, err
		}
	}
	old := rec
	// The record's media type only marks the blob as a manifest (the first type it was stored
	// under): which type a repository serves it as is that repository's manifest record, so one
	// tenant's push never changes how another's content is served (docs/SECURITY.md 18).
	if rec.MediaType == "" {
		rec.MediaType = mediaType
	}
	switch from {
	case originLocal:
		if !old.Local { // pushed content must not rest on a file a fill placed unsynced
			if err := s.makeDurable(ct, dgst); err != nil {
				return rec, err
			}
		}
		rec.Local = true
	case originMirrored:
		rec.Mirrored = true
		rec.Accessed = s.now().UTC()
	}
	if !isNew && rec == old {
		return rec, nil
	}
	if err := putBlobRecord(ct.Txn, dgst, old, rec); err != nil {
		return rec, err
	}
	ct.onCommit(func() { s.account(old, rec, isNew) })
	return rec, nil
}

// account moves the statistics from the old record of a blob to the new one.
func (s *Store) account(old, rec blobRecord, isNew bool) {
	if isNew {
		s.blobs.Add(1)
		s.stored.Add(rec.Size)
	} else if old.evictable() {
		s.mirrored.Add(-old.Size)
	}
	if rec.evictable() {
		s.mirrored.Add(rec.Size)
	}
}

// eachBlob calls fn with every blob record, in digest order, until fn returns an error.
func eachBlob(txn kv.Txn, fn func(dgst digest.Digest, rec blobRecord) error) error {
	return txn.Scan([]byte(prefixBlob), kv.ScanOptions{}, func(key, val []byte) (bool, error) {
		var rec blobRecord
		if err := json.Unmarshal(val, &rec); err != nil {
			return false, err
		}
		return true, fn(digest.Digest(key[len(prefixBlob):]), rec)
	})
}

// putBlobRecord writes rec as the record of the blob dgst, whose record was old (the zero record
// for a new blob), and keeps the eviction index in step in the same transaction: the blob's entry
// moves with its last read, and exists only while the blob is evictable. Every write of a blob
// record goes through it, and every delete through deleteBlobRecord: eviction reads the index,
// never the records (issue #16, point 4: its work must not grow with the blobs stored).
func putBlobRecord(txn kv.Txn, dgst digest.Digest, old, rec blobRecord) error {
	if err := kv.Put(txn, blobKey(dgst), rec); err != nil {
		return err
	}
	if old.evictable() && (!rec.evictable() || !old.Accessed.Equal(rec.Accessed)) {
		if err := txn.Delete(evictKey(old.Accessed, dgst)); err != nil {
			return err
		}
	}
	if rec.evictable() && (!old.evictable() || !old.Accessed.Equal(rec.Accessed)) {
		return txn.Set(evictKey(rec.Accessed, dgst), nil)
	}
	return nil
}

// deleteBlobRecord removes the record rec of the blob dgst and its eviction index entry.
func deleteBlobRecord(txn kv.Txn, dgst digest.Digest, rec blobRecord) error {
	if err := txn.Delete(blobKey(dgst)); err != nil {
		return err
	}
	return txn.Delete(evictKey(rec.Accessed, dgst)) // none unless evictable: no error
}

// blobRecordKeys are the keys that go with the record rec of the blob dgst, for the deletes of
// DB.Write: the record's and its eviction index entry's.
func blobRecordKeys(dgst digest.Digest, rec blobRecord) [][]byte {
	if rec.evictable() {
		return [][]byte{blobKey(dgst), evictKey(rec.Accessed, dgst)}
	}
	return [][]byte{blobKey(dgst)}
}

// blobCount is the part of a blob record that the statistics count: decoding only it skips the
// record's four times, the most of its decoding (reconcile and recount read every record).
type blobCount struct {
	Size      int64  `json:"size"`
	MediaType string `json:"mediaType,omitempty"`
	Local     bool   `json:"local,omitempty"`
	Mirrored  bool   `json:"mirrored,omitempty"`
}

// evictable is blobRecord.evictable.
func (c blobCount) evictable() bool {
	return blobRecord{Mirrored: c.Mirrored, Local: c.Local, MediaType: c.MediaType}.evictable()
}

// eachBlobCount is eachBlob for what the statistics count.
func eachBlobCount(txn kv.Txn, fn func(dgst digest.Digest, c blobCount) error) error {
	return txn.Scan([]byte(prefixBlob), kv.ScanOptions{}, func(key, val []byte) (bool, error) {
		var c blobCount
		if err := json.Unmarshal(val, &c); err != nil {
			return false, err
		}
		return true, fn(digest.Digest(key[len(prefixBlob):]), c)
	})
}

func getBlobRecord(txn kv.Txn, dgst digest.Digest) (blobRecord, error) {
	var rec blobRecord
	err := kv.Get(txn, blobKey(dgst), &rec)
	return rec, notFound(err, ErrBlobUnknown)
}

// link lets repo read the blob dgst of size bytes, counting it in repo's project's quota when
// the link is new.
func (s *Store) link(ct *commitTxn, repo string, dgst digest.Digest, size int64) error {
	txn := ct.Txn
	if err := referenced(txn, dgst, s.now(), false); err != nil {
		return err
	}
	if _, err := txn.Get(linkKey(repo, dgst)); errors.Is(err, kv.ErrNotFound) {
		if err := s.held(ct, repo, dgst, size, 1); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if err := txn.Set(linkKey(repo, dgst), nil); err != nil {
		return err
	}
	return txn.Set(repoKey(repo), nil)
}

// referenced notes a new reference to the blob dgst in txn: under the fleet-wide lock of the
// digest (garbage collection takes it too), its record's Gen goes up, and Named (a manifest
// names it) or Linked (a repository links it) is now.
func referenced(txn kv.Txn, dgst digest.Digest, now time.Time, named bool) error {
	if err := kv.LockTxn(txn, "blob:"+dgst.String()); err != nil {
		return err
	}
	rec, err := getBlobRecord(txn, dgst)
	if errors.Is(err, ErrBlobUnknown) {
		return nil
	}
	if err != nil {
		return err
	}
	old := rec
	rec.Gen++
	if named {
		rec.Named = now.UTC()
	} else {
		rec.Linked = now.UTC()
	}
	return putBlobRecord(txn, dgst, old, rec)
}

// dropRepoIfEmpty removes repo from the catalog when it has no manifest and no blob link left.
func dropRepoIfEmpty(txn kv.Txn, repo string) error {
	for _, kind := range []string{prefixManifest, prefixLink} {
		if hasPrefix(txn, repoPrefix(kind, repo)) {
			return nil
		}
	}
	if err := txn.Delete([]byte(prefixRepoInfo + repo)); err != nil {
		return err
	}
	return txn.Delete(repoKey(repo))
}

func hasPrefix(txn kv.Txn, prefix []byte) bool {
	found := false
	_ = txn.Scan(prefix, kv.ScanOptions{KeysOnly: true}, func([]byte, []byte) (bool, error) {
		found = true
		return false, nil
	})
	return found
}

// deletes is the ops of DB.Write that remove keys.
func deletes(keys [][]byte) []kv.Op {
	ops := make([]kv.Op, len(keys))
	for i, k := range keys {
		ops[i] = kv.Op{Key: k, Delete: true}
	}
	return ops
}

// notFound translates badger's missing key into the store's own sentinel.
func notFound(err, sentinel error) error {
	if errors.Is(err, kv.ErrNotFound) {
		return sentinel
	}
	return err
}

// manifestBody reads the stored manifest dgst, whichever repository holds it.
func (s *Store) manifestBody(ctx context.Context, dgst digest.Digest) ([]byte, error) {
	f, err := s.openLocal(ctx, dgst, false)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
}

// BlobOfRecord decodes a blob record as an export passes it (cove backup): ok is false for a
// record of another kind.
func BlobOfRecord(key, value []byte) (dgst digest.Digest, size int64, ok bool) {
	if !bytes.HasPrefix(key, []byte(prefixBlob)) {
		return "", 0, false
	}
	var rec blobRecord
	if json.Unmarshal(value, &rec) != nil {
		return "", 0, false
	}
	dgst = digest.Digest(key[len(prefixBlob):])
	return dgst, rec.Size, dgst.Validate() == nil
}

// lostKey marks dgst as pushed content whose record scrub dropped (prefixLost).
func lostKey(dgst digest.Digest) []byte { return []byte(prefixLost + dgst.String()) }
