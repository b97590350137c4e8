package cache

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"cove/internal/blobstore"
	"cove/internal/kv"

	"github.com/opencontainers/go-digest"
)

// holdBack is how many of the last bytes of a filling blob readers may not see until the whole
// blob has matched its digest: a wrong or cut blob never reaches a client complete (docs/SECURITY.md 1).
const holdBack = 64 << 10

// fillBuffer is the size of the copy buffer of one fill.
const fillBuffer = 256 << 10

// Fetcher opens an upstream blob: its body and its length (-1 when the upstream did not say).
// It is called once per fill, with a context that ends with the fill.
type Fetcher func(ctx context.Context) (body io.ReadCloser, size int64, err error)

// Fill is one download of a mirrored blob into the store. However many clients ask for the blob at
// once, there is one Fill and one upstream request (invariant: at most one upstream GET per digest
// in flight); each client reads it through its own FillReader as the temporary file grows.
//
// The download runs under the store's lifetime and Config.FillTimeout, not under any client's
// request: a client that hangs up does not stop it for the others.
type Fill struct {
	dgst    digest.Digest
	repo    string        // the repository the fill was started for, and is linked to
	from    origin        // originMirrored from an upstream; originNone from the shared store
	started chan struct{} // closed when size is known or the fill failed

	mu sync.Mutex
	// file, size, written, verified, done, err, changed and readers are guarded by mu.
	file     *os.File // the temporary file; renamed into place on success
	size     int64    // announced by the upstream, -1 when unknown
	written  int64
	verified bool // every byte is there and matched the digest
	done     bool
	err      error
	changed  chan struct{} // closed and replaced at every change
	readers  int           // open FillReaders, plus one for the download itself
}

// Fills are the downloads in progress into the store: from upstreams (FromUpstream) and, in a
// fleet, from the shared blob store into the hot tier (FromShared); one per digest at a time. It is
// safe for concurrent use.
type Fills struct {
	st      *Store
	ev      *Evictor
	disk    *Disk
	log     *slog.Logger
	ttl     time.Duration // bounds one download (Config.FillTimeout)
	maxBlob int64         // bound on an upstream blob of unknown size; 0: none but the floor
	// ctx is the context of every fill; cut ends them (Cut, at shutdown).
	ctx context.Context
	cut context.CancelCauseFunc

	mu sync.Mutex
	// fills are the downloads in progress by digest, guarded by mu.
	fills map[digest.Digest]*Fill
}

// busy reports whether dgst is being filled: eviction and the hot tier leave it alone.
func (fl *Fills) busy(dgst digest.Digest) bool {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.fills[dgst] != nil
}

// FromUpstream returns the fill of dgst for repo, a mirrored repository: the one in progress, or a
// new one that calls fetch. joined reports whether it joined a fill in progress. On success the
// blob is stored, linked to repo and marked mirrored, and Evict runs.
func (fl *Fills) FromUpstream(dgst digest.Digest, repo string, fetch Fetcher) (f *Fill, joined bool, err error) {
	return fl.fill(dgst, repo, originMirrored, fetch)
}

func (fl *Fills) fill(dgst digest.Digest, repo string, from origin, fetch Fetcher) (f *Fill, joined bool, err error) {
	if err := supported(dgst); err != nil {
		return nil, false, err
	}
	fl.mu.Lock()
	if f := fl.fills[dgst]; f != nil {
		fl.mu.Unlock()
		return f, true, nil
	}
	file, err := os.CreateTemp(fl.st.tmpDir(), "fill-*")
	if err != nil {
		fl.mu.Unlock()
		return nil, false, fmt.Errorf("create fill file: %w", err)
	}
	f = &Fill{dgst: dgst, repo: repo, from: from, file: file, size: -1, started: make(chan struct{}), changed: make(chan struct{}), readers: 1}
	fl.fills[dgst] = f
	fl.mu.Unlock()
	fl.st.wg.Go(func() { fl.run(f, repo, fetch) })
	return f, false, nil
}

// Cut ends every fill in progress, and any started later, with cause: at shutdown, so that
// clients waiting for a slow or stalled upstream do not hold the process (their requests end
// with an error; they retry elsewhere, or after the restart).
func (fl *Fills) Cut(cause error) { fl.cut(cause) }

// Repo is the repository the fill was started for. A client of another repository that joins it
// must first have the upstream confirm that its repository has the blob (a digest alone is not a
// capability).
func (f *Fill) Repo() string { return f.repo }

func (fl *Fills) run(f *Fill, repo string, fetch Fetcher) {
	ctx, cancel := context.WithTimeout(fl.ctx, fl.ttl)
	defer cancel()
	err := fl.download(ctx, f, fetch)
	if f.from == originNone && errors.Is(err, ErrUpstreamCorrupt) {
		err = fmt.Errorf("%w: %w", ErrSharedLost, err)
	}
	if f.from == originNone && (errors.Is(err, ErrUpstreamCut) || errors.Is(err, ErrSharedLost)) {
		err = &RemoteError{Err: fmt.Errorf("the copy from the shared store: %w", err)}
	}
	if errors.Is(err, ErrSharedLost) {
		// Before the clients hear of it: a client that asks again finds the record gone.
		fl.ev.forgetLost(ctx, f.dgst, err)
	}
	if err == nil {
		// The bytes are right: readers may have the held-back end now, while the file is synced
		// and indexed (for a large blob, syncing takes seconds no client should wait for).
		f.verify()
		if err = fl.commit(ctx, f, repo); err != nil {
			// The clients had their right bytes; only the cache lost the blob: the next pull
			// downloads it again.
			fl.log.Error("storing a mirrored blob failed", "digest", f.dgst, "err", err)
		}
	}
	fl.mu.Lock()
	delete(fl.fills, f.dgst)
	fl.mu.Unlock()
	f.finish(err)
	if err != nil {
		_ = os.Remove(f.file.Name())
	}
	f.release()
	if err == nil && fl.st.remote == nil { // a fleet evicts its shared tier once, on one node (EvictFleet)
		if _, err := fl.ev.Evict(ctx); err != nil {
			fl.log.Error("eviction failed", "err", err)
		}
	}
}

// download copies the upstream body into the fill's file while hashing it, and checks size and
// digest at the end. Nothing is kept unless both match.
func (fl *Fills) download(ctx context.Context, f *Fill, fetch Fetcher) error {
	body, size, err := fetch(ctx)
	if err != nil {
		return err
	}
	defer body.Close()
	// Room for the blob above the free-space floor: mirrored content makes way, else 507.
	guarded, err := fl.disk.guardSpace(ctx, body, size)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.size = size
	f.mu.Unlock()
	close(f.started)
	var h hash.Hash = f.dgst.Algorithm().Hash()
	buf := make([]byte, fillBuffer)
	for {
		n, rerr := guarded.Read(buf)
		if size < 0 && fl.maxBlob > 0 && f.writtenBytes()+int64(n) > fl.maxBlob {
			return fmt.Errorf("%w: %s sent more than mirror.max_blob_size (%d bytes) without announcing a size", ErrUpstreamCut, f.dgst, fl.maxBlob)
		}
		if n > 0 {
			if _, err := f.file.Write(buf[:n]); err != nil {
				return fmt.Errorf("write fill of %s: %w", f.dgst, err)
			}
			h.Write(buf[:n])
			f.advance(int64(n))
		}
		if rerr == io.EOF {
			break
		}
		if errors.Is(rerr, ErrStorageFull) || errors.Is(rerr, ErrReadOnly) {
			return rerr
		}
		if rerr != nil {
			return fmt.Errorf("%w: download of %s cut short: %v", ErrUpstreamCut, f.dgst, rerr)
		}
	}
	f.mu.Lock()
	written := f.written
	f.mu.Unlock()
	if size >= 0 && written != size {
		return fmt.Errorf("%w: got %d bytes of %s, upstream announced %d", ErrUpstreamCut, written, f.dgst, size)
	}
	if got := digest.NewDigest(f.dgst.Algorithm(), h); got != f.dgst {
		return fmt.Errorf("%w: content of %s hashes to %s", ErrUpstreamCorrupt, f.dgst, got)
	}
	return nil
}

// commit places the verified file and indexes it as mirrored content linked to repo. A copy from
// the shared store (originNone) only fills the hot tier: its record is there already, and if
// eviction or garbage collection took it meanwhile, the copy goes too (a record written again
// here would name a blob the bucket no longer has).
func (fl *Fills) commit(ctx context.Context, f *Fill, repo string) error {
	fl.st.gcMu.RLock()
	defer fl.st.gcMu.RUnlock()
	defer fl.st.refs.Add(1) // after the index write, before RUnlock: see Collect
	placed, err := fl.st.place(f.file, f.dgst, f.from == originNone)
	if err != nil {
		return err
	}
	if f.from == originNone {
		if !fl.st.HasBlob(ctx, f.dgst) && placed {
			return fl.st.removeLocal(f.dgst)
		}
		return nil
	}
	err = fl.st.update(func(ct *commitTxn) error {
		if err := kv.LockTxn(ct.Txn, "blob:"+f.dgst.String()); err != nil {
			return err
		}
		if _, err := fl.st.ensureBlobRecord(ct, f.dgst, f.writtenBytes(), "", f.from); err != nil {
			return err
		}
		return fl.st.link(ct, repo, f.dgst, f.writtenBytes())
	})
	if err != nil {
		fl.st.unplace(placed, f.dgst)
		return err
	}
	return fl.st.ensureShared(f.file, f.dgst)
}

func (f *Fill) writtenBytes() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written
}

func (f *Fill) advance(n int64) {
	f.mu.Lock()
	f.written += n
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (f *Fill) verify() {
	f.mu.Lock()
	f.verified = true
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (f *Fill) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	select {
	case <-f.started:
	default:
		close(f.started)
	}
}

// release drops one user of the file; the last one closes it.
func (f *Fill) release() {
	f.mu.Lock()
	f.readers--
	last := f.readers == 0
	f.mu.Unlock()
	if last {
		_ = f.file.Close()
	}
}

// Reader waits until the upstream has answered, then returns a reader of the blob from its first
// byte. It fails with the fill's error when the upstream refused or could not be reached.
func (f *Fill) Reader(ctx context.Context) (*FillReader, error) {
	select {
	case <-f.started:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// A failed fill fails the joiner; a verified fill whose storing failed still serves the readers
	// it has, but one arriving after them has no file to read and the blob is not stored.
	if f.done && f.err != nil && (!f.verified || f.readers == 0) {
		return nil, f.err
	}
	if f.readers == 0 { // finished and closed between lookup and now: the caller asks again
		return nil, fmt.Errorf("%w: fill of %s already ended", errFillEnded, f.dgst)
	}
	f.readers++
	return &FillReader{f: f, ctx: ctx}, nil
}

// errFillEnded means a fill ended while a reader was joining it; the blob is stored by then.
var errFillEnded = errors.New("fill ended")

// ErrUpstreamCut means the upstream's answer ended before the blob did.
var ErrUpstreamCut = errors.New("upstream download cut short")

// ErrUpstreamCorrupt means the upstream sent a blob that does not match its digest.
var ErrUpstreamCorrupt = errors.New("upstream sent content that does not match its digest")

// IsFillEnded reports whether err means the fill had ended: read the stored blob instead.
func IsFillEnded(err error) bool { return errors.Is(err, errFillEnded) }

// FillReader reads a blob while it is being downloaded. Read blocks until more verified bytes are
// there; it returns the fill's error if the download fails, so a client never receives a wrong or
// cut blob as complete. Close it when done.
type FillReader struct {
	f      *Fill
	ctx    context.Context
	off    int64
	closed bool
}

// Size is the blob's length as the upstream announced it, or -1.
func (r *FillReader) Size() int64 {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	return r.f.size
}

func (r *FillReader) Read(p []byte) (int, error) {
	f := r.f
	for {
		f.mu.Lock()
		avail := f.written
		if !f.verified {
			avail -= holdBack
			if f.size >= 0 {
				avail = min(f.written, f.size-holdBack)
			}
		}
		verified, done, err, changed := f.verified, f.done, f.err, f.changed
		f.mu.Unlock()
		if !verified && done && err != nil {
			return 0, err
		}
		if r.off < avail {
			n, rerr := f.file.ReadAt(p[:min(int64(len(p)), avail-r.off)], r.off)
			r.off += int64(n)
			if rerr == io.EOF {
				rerr = nil
			}
			return n, rerr
		}
		if verified {
			return 0, io.EOF
		}
		select {
		case <-changed:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

// Close lets the fill close its file once nobody reads it.
func (r *FillReader) Close() error {
	if !r.closed {
		r.closed = true
		r.f.release()
	}
	return nil
}

// FromShared returns the fill that copies the blob dgst, which repo may read, from the shared
// store into the hot tier: the one in progress or a new one. Its clients read it as it arrives,
// as they read a fill from an upstream (FromUpstream); the bytes are checked against the digest.
func (fl *Fills) FromShared(dgst digest.Digest, repo string) (*Fill, bool, error) {
	if fl.st.remote == nil {
		return nil, false, ErrBlobUnknown
	}
	return fl.fill(dgst, repo, originNone, func(ctx context.Context) (io.ReadCloser, int64, error) {
		rc, size, err := fl.st.remote.Get(ctx, dgst)
		if errors.Is(err, blobstore.ErrNotFound) {
			return nil, 0, &RemoteError{Err: fmt.Errorf("%w: %s has a record but is not in the shared blob store", ErrSharedLost, dgst)}
		}
		if err != nil {
			return nil, 0, &RemoteError{Err: err}
		}
		return rc, size, nil
	})
}

// ErrSharedLost means that the shared blob store has lost or damaged a blob that the index
// records. A mirrored blob's record is then dropped (Evictor.forgetLost), so that the next pull
// fetches it from its upstream again; pushed content must come back from a backup of the bucket.
var ErrSharedLost = errors.New("the shared blob store lost a blob")
