package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"sync"
	"time"

	"cove/internal/blobstore"
	"cove/internal/kv"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"
)

// Fleet mode (Config.Remote): every blob is also in a blob store shared by the fleet (an S3
// bucket), written there before its record is, so that a record another node reads always has
// its blob; the files under blobs/ are this node's hot tier — copies of the blobs it used
// lately, read from the shared store on a miss and dropped, least recently used first, past
// Config.HotTierMaxSize or under the free-space floor. Without a remote store the files are the
// blobs, as on a single node.

// hotTier tracks the local copies in fleet mode.
type hotTier struct {
	mu    sync.Mutex
	files map[digest.Digest]hotFile // guarded by mu
	bytes int64                     // guarded by mu
	fetch singleflight.Group        // one download from the shared store per digest at a time
}

type hotFile struct {
	size int64
	used time.Time
}

func (h *hotTier) add(dgst digest.Digest, size int64, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.files == nil {
		h.files = map[digest.Digest]hotFile{}
	}
	if old, ok := h.files[dgst]; ok {
		h.bytes -= old.size
	}
	h.files[dgst] = hotFile{size: size, used: now}
	h.bytes += size
}

func (h *hotTier) use(dgst digest.Digest, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f, ok := h.files[dgst]; ok {
		f.used = now
		h.files[dgst] = f
	}
}

func (h *hotTier) drop(dgst digest.Digest) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f, ok := h.files[dgst]; ok {
		h.bytes -= f.size
		delete(h.files, dgst)
	}
}

// HotStats reports the bytes and the number of blobs in the local hot tier (fleet mode).
func (s *Store) HotStats() (bytes int64, blobs int) {
	s.hot.mu.Lock()
	defer s.hot.mu.Unlock()
	return s.hot.bytes, len(s.hot.files)
}

// upload puts the placed, verified blob f into the shared store, before the blob's record is
// written. It is put even when an object of its name is there: that one may be corrupt (a
// same-size object was never repaired) or on its way out (garbage collection on another node).
func (s *Store) upload(ctx context.Context, f *os.File, dgst digest.Digest) error {
	if s.remote == nil {
		return nil
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat blob %s: %w", dgst, err)
	}
	if err := s.remote.Put(ctx, dgst, f, fi.Size()); err != nil {
		return &RemoteError{Err: err}
	}
	return nil
}

// ensureShared makes sure the shared store has the blob dgst once its record is written: garbage
// collection on another node may have deleted the object between this node's put and its commit
// (it holds the digest's lock while it deletes; the commit waited for it). The object is put again
// from f, or from the hot tier's copy when f is nil.
func (s *Store) ensureShared(f *os.File, dgst digest.Digest) error {
	if s.remote == nil {
		return nil
	}
	if _, err := s.remote.Stat(s.ctx, dgst); !errors.Is(err, blobstore.ErrNotFound) {
		return nil // there, or the store fails: the next read says so
	}
	if f == nil {
		hot, err := os.Open(s.blobPath(dgst))
		if err != nil {
			s.log.Error("a blob linked just now is in neither the shared store nor this node's hot tier", "digest", dgst)
			return nil
		}
		defer hot.Close()
		f = hot
	}
	s.log.Warn("the shared store lost a blob to garbage collection on another node while it was linked here: put again", "digest", dgst)
	return s.upload(s.ctx, f, dgst)
}

// RemoteError is a failure of the shared blob store (fleet mode): the request answers 503.
type RemoteError struct{ Err error }

func (e *RemoteError) Error() string {
	return "the shared blob store (storage.blobs) failed: " + e.Err.Error()
}

func (e *RemoteError) Unwrap() error { return e.Err }

// ErrNotLocal means a blob is stored, in the shared store, but not in this node's hot tier: read
// it with Fills.FromShared, which streams it while it fills the hot tier.
var ErrNotLocal = errors.New("blob not in this node's hot tier")

// openLocal opens the file of the blob dgst. In fleet mode a blob not in the hot tier is
// ErrNotLocal when stream is set (blobs: see Fills.FromShared), else read from the shared store into
// the hot tier first, whole (manifests: small).
func (s *Store) openLocal(ctx context.Context, dgst digest.Digest, stream bool) (*os.File, error) {
	f, err := os.Open(s.blobPath(dgst))
	if err == nil || s.remote == nil || !errors.Is(err, fs.ErrNotExist) {
		if err == nil && s.remote != nil {
			s.hot.use(dgst, time.Now())
		}
		return f, err
	}
	if stream {
		return nil, fmt.Errorf("%w: %s", ErrNotLocal, dgst)
	}
	ch := s.hot.fetch.DoChan(dgst.String(), func() (any, error) { return nil, s.hydrate(dgst) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	f, err = os.Open(s.blobPath(dgst))
	if err == nil {
		s.hot.use(dgst, time.Now())
	}
	return f, err
}

// hydrate copies the blob dgst from the shared store into the hot tier, verifying its digest.
func (s *Store) hydrate(dgst digest.Digest) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.Fills.ttl)
	defer cancel()
	rc, size, err := s.remote.Get(ctx, dgst)
	if errors.Is(err, blobstore.ErrNotFound) {
		return fmt.Errorf("%w: %s has a record but is not in the shared blob store", fs.ErrNotExist, dgst)
	}
	if err != nil {
		return &RemoteError{Err: err}
	}
	defer rc.Close()
	if err := s.Disk.ensureSpace(ctx, size, true); err != nil {
		return err
	}
	f, err := os.CreateTemp(s.tmpDir(), "hot-*")
	if err != nil {
		return fmt.Errorf("create temp file: %w", err)
	}
	defer removeTemp(f)
	h := dgst.Algorithm().Hash()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rc, size+1))
	if err != nil {
		return &RemoteError{Err: fmt.Errorf("read blob %s: %w", dgst, err)}
	}
	if got := digest.NewDigest(dgst.Algorithm(), h); n != size || got != dgst {
		return &RemoteError{Err: fmt.Errorf("blob %s in the shared store is corrupt: %d bytes hashing to %s", dgst, n, got)}
	}
	if _, err := s.placeLocal(f, dgst, true); err != nil {
		return err
	}
	s.hot.add(dgst, n, time.Now())
	s.trimHot(0)
	return nil
}

// trimHot drops local copies, least recently used first and never one being read, until the hot
// tier is under its maximum less room bytes. It returns the bytes it freed. Only in fleet mode:
// a dropped copy is still in the shared store.
func (s *Store) trimHot(room int64) int64 {
	if s.remote == nil {
		return 0
	}
	var freed int64
	for {
		s.hot.mu.Lock()
		if room <= 0 && (s.hotMax <= 0 || s.hot.bytes <= s.hotMax) {
			s.hot.mu.Unlock()
			return freed
		}
		var victim digest.Digest
		var oldest time.Time
		for d, f := range s.hot.files {
			if s.reading(d) || s.Fills.busy(d) {
				continue
			}
			if victim == "" || f.used.Before(oldest) {
				victim, oldest = d, f.used
			}
		}
		s.hot.mu.Unlock()
		if victim == "" {
			return freed
		}
		s.hot.mu.Lock()
		size := s.hot.files[victim].size
		s.hot.mu.Unlock()
		if err := os.Remove(s.blobPath(victim)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("drop a local copy", "digest", victim, "err", err)
			return freed
		}
		s.hot.drop(victim)
		freed += size
		room -= size
	}
}

// removeLocal removes the blob's file on this node (in a fleet, its hot copy): called once its
// record and, in a fleet, its shared object are gone.
func (s *Store) removeLocal(dgst digest.Digest) error {
	if err := os.Remove(s.blobPath(dgst)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if s.remote != nil {
		s.hot.drop(dgst)
	}
	return nil
}

// removeBlob removes the blob's file, and in fleet mode its object in the shared store: called
// once its record is gone (eviction, garbage collection, a repository's removal).
func (s *Store) removeBlob(dgst digest.Digest) error {
	if err := os.Remove(s.blobPath(dgst)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if s.remote == nil {
		return nil
	}
	s.hot.drop(dgst)
	if err := s.remote.Delete(s.ctx, dgst); err != nil {
		return &RemoteError{Err: err}
	}
	return nil
}

// BlobURL is a presigned URL of the blob dgst in the shared store, valid for ttl, for a redirect
// (storage.blobs.s3.redirect); ok is false when there is no shared store.
func (s *Store) BlobURL(ctx context.Context, dgst digest.Digest, ttl time.Duration) (u *url.URL, ok bool, err error) {
	if s.remote == nil {
		return nil, false, nil
	}
	u, err = s.remote.PresignGet(ctx, dgst, ttl)
	return u, true, err
}

// PingRemote checks the shared blob store (nil without one), for /readyz.
func (s *Store) PingRemote(ctx context.Context) error {
	if s.remote == nil {
		return nil
	}
	return s.remote.Ping(ctx)
}

// dropUnderLock deletes a blob that decide says may go: under the digest's fleet-wide lock, taken
// before the transaction begins and held across it and what follows, decide reads the record and
// deletes it (and what goes with it) in one transaction; once that has committed, the blob's
// shared object goes (fleet mode). A push of the digest on another node waits for the lock, then
// writes the record anew and puts the object again (ensureShared).
//
// The lock is taken outside the transaction because PostgreSQL takes a serializable
// transaction's snapshot when its first statement starts, before a lock that statement then waits
// for: a lock taken inside saw a record as it was before the push that held the lock, and the
// object deleted on that view was the push's (the attack lost pushed blobs this way). The object
// goes after the record, so the index never names a blob the bucket lacks; an object whose delete
// fails is an orphan, which garbage collection removes.
func (s *Store) dropUnderLock(ctx context.Context, dgst digest.Digest, decide func(ct *commitTxn) (bool, error)) (bool, error) {
	// Each holder keeps a database connection for its lock while it needs another for its
	// transaction: a bound on the holders keeps them from taking the whole pool.
	select {
	case s.dropSlots <- struct{}{}:
		defer func() { <-s.dropSlots }()
	case <-ctx.Done():
		return false, ctx.Err()
	}
	release, err := kv.Lock(ctx, s.db, "blob:"+dgst.String())
	if err != nil {
		return false, err
	}
	defer release()
	var ct *commitTxn
	gone := false
	err = kv.Retry(ctx, s.db, func(txn kv.Txn) error {
		ct = &commitTxn{Txn: txn}
		var err error
		gone, err = decide(ct)
		return err
	})
	if err != nil || !gone {
		return false, err
	}
	for _, f := range ct.after {
		f()
	}
	if s.remote != nil {
		if err := s.remote.Delete(ctx, dgst); err != nil {
			s.log.Warn("a blob's shared object could not be deleted: garbage collection removes it later", "digest", dgst, "err", err)
		}
	}
	return true, nil
}
