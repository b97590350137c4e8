package cache

import (
	"context"
	"errors"
	"fmt"
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

// fillChunk is the size of the memory chunks a fill reads the upstream into.
const fillChunk = 256 << 10

// laggardBuffer is the buffer of a reader that reads a filling blob from its file.
const laggardBuffer = 32 << 10

// fillWindow bounds the bytes of one fill held in memory that are not yet both written to its
// file and hashed: the download waits while its file or its hash is that far behind.
const fillWindow = 4 << 20

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

	file *os.File // the temporary file, written by one goroutine; renamed into place on success

	mu sync.Mutex
	// The fields below are guarded by mu. Bytes arrive in memory (received), then are written to
	// the file (flushed) and hashed (hashed) by two goroutines of their own, so that neither sits
	// in the path of the clients: a reader that keeps up is served from chunks, a laggard from
	// the file. A chunk is dropped once it is written and hashed.
	size     int64 // announced by the upstream, -1 when unknown
	received int64
	flushed  int64
	hashed   int64
	chunks   []*chunk // in memory, in order; the first starts at or below flushed and hashed
	verified bool     // every byte is there and matched the digest
	done     bool
	err      error
	changed  chan struct{} // closed and replaced at every change
	readers  int           // open FillReaders, plus one for the download itself
}

// chunk is a part of a filling blob held in memory: data[:n] is the blob from off on. Its bytes
// below n never change while it is in the fill's list or a reader holds it (refs), so a reader
// may use a slice of them without the lock. A full-size chunk goes back to chunkPool when it is
// both dropped from the list and released by its last reader.
type chunk struct {
	off     int64
	data    []byte
	n       int
	refs    int  // readers using a slice of data; guarded by the fill's mu
	dropped bool // out of the fill's list; guarded by the fill's mu
}

// chunkPool holds the buffers of full-size chunks, so that a fill's gigabytes do not pass
// through the allocator and the garbage collector.
var chunkPool = sync.Pool{New: func() any { return new([fillChunk]byte) }}

func newChunk(off, n int64) *chunk {
	if n < fillChunk {
		return &chunk{off: off, data: make([]byte, n)}
	}
	return &chunk{off: off, data: chunkPool.Get().(*[fillChunk]byte)[:]}
}

// drop takes c out of use by the fill; its buffer is reused once no reader holds it. The fill's
// mu is held.
func (c *chunk) drop() {
	c.dropped = true
	c.recycle()
}

func (c *chunk) recycle() {
	if c.dropped && c.refs == 0 && len(c.data) == fillChunk {
		chunkPool.Put((*[fillChunk]byte)(c.data))
		c.data = nil
	}
}

// unref releases a chunk that next handed to a reader.
func (f *Fill) unref(c *chunk) {
	if c == nil {
		return
	}
	f.mu.Lock()
	c.refs--
	c.recycle()
	f.mu.Unlock()
}

func (c *chunk) end() int64 { return c.off + int64(c.n) }

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

	// In tests: beforeWrite runs before each write to a fill's file, windowFull when a download
	// waits for its file and hash to catch up.
	beforeWrite, windowFull func()
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

// download reads the upstream body into memory chunks while one goroutine writes them to the
// fill's file and another hashes them, and checks size and digest at the end. Nothing is kept
// unless both match.
func (fl *Fills) download(ctx context.Context, f *Fill, fetch Fetcher) error {
	body, size, err := fetch(ctx)
	if err != nil {
		return err
	}
	defer body.Close()
	// Room for the blob above the free-space floor: mirrored content makes way, else 507. The
	// writer checks again as it writes (the download runs ahead of it).
	space, err := fl.disk.meterSpace(ctx, size, true)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.size = size
	f.mu.Unlock()
	close(f.started)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	toFile, toHash := make(chan []byte, 64), make(chan []byte, 64)
	h := f.dgst.Algorithm().Hash()
	var wg sync.WaitGroup
	var writeErr error
	wg.Go(func() {
		for seg := range toFile {
			if writeErr != nil {
				continue // drained, so that the download never blocks on a failed writer
			}
			if fl.beforeWrite != nil {
				fl.beforeWrite()
			}
			if err := space.room(ctx, len(seg)); err != nil {
				writeErr = err
				cancel(err)
				continue
			}
			if _, err := f.file.Write(seg); err != nil {
				writeErr = fmt.Errorf("write fill of %s: %w", f.dgst, err)
				cancel(writeErr)
				continue
			}
			f.progress(&f.flushed, len(seg))
		}
	})
	wg.Go(func() {
		for seg := range toHash {
			h.Write(seg)
			f.progress(&f.hashed, len(seg))
		}
	})
	err = f.receive(ctx, body, size, fl.maxBlob, fl.windowFull, toFile, toHash)
	close(toFile)
	close(toHash)
	wg.Wait()
	if writeErr != nil {
		return writeErr
	}
	if err != nil {
		return err
	}
	f.mu.Lock()
	received := f.received
	f.mu.Unlock()
	if size >= 0 && received != size {
		return fmt.Errorf("%w: got %d bytes of %s, upstream announced %d", ErrUpstreamCut, received, f.dgst, size)
	}
	if got := digest.NewDigest(f.dgst.Algorithm(), h); got != f.dgst {
		return fmt.Errorf("%w: content of %s hashes to %s", ErrUpstreamCorrupt, f.dgst, got)
	}
	return nil
}

// receive reads body into chunks, publishing each read to the readers and handing it to the file
// writer and the hasher. It waits while more than fillWindow bytes are not yet written and hashed.
func (f *Fill) receive(ctx context.Context, body io.Reader, size, maxBlob int64, windowFull func(), toFile, toHash chan<- []byte) error {
	// c is the chunk being filled, buf its data and filled how much of it is: kept here, since
	// the other goroutines may drop c (and take its data) as soon as it is full.
	var c *chunk
	var buf []byte
	var off int64
	filled := 0
	for {
		if c == nil || filled == len(buf) {
			if err := f.waitWindow(ctx, windowFull); err != nil {
				return err
			}
			f.mu.Lock()
			n := int64(fillChunk)
			if size >= 0 {
				n = max(min(n, size-f.received), 1) // a small blob gets a small chunk
			}
			c = newChunk(f.received, n)
			buf, off, filled = c.data, c.off, 0
			f.chunks = append(f.chunks, c)
			f.mu.Unlock()
		}
		n, rerr := body.Read(buf[filled:])
		if size < 0 && maxBlob > 0 && off+int64(filled+n) > maxBlob {
			return fmt.Errorf("%w: %s sent more than mirror.max_blob_size (%d bytes) without announcing a size", ErrUpstreamCut, f.dgst, maxBlob)
		}
		if size >= 0 && off+int64(filled+n) > size {
			return fmt.Errorf("%w: %s sent more than the %d bytes it announced", ErrUpstreamCorrupt, f.dgst, size)
		}
		if n > 0 {
			seg := buf[filled : filled+n]
			filled += n
			f.mu.Lock()
			c.n = filled
			f.received += int64(n)
			f.changedLocked()
			f.mu.Unlock()
			toFile <- seg
			toHash <- seg
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
				return cause
			}
			return fmt.Errorf("%w: download of %s cut short: %v", ErrUpstreamCut, f.dgst, rerr)
		}
	}
}

// waitWindow waits until fewer than fillWindow received bytes are still to be written or hashed.
func (f *Fill) waitWindow(ctx context.Context, windowFull func()) error {
	for {
		f.mu.Lock()
		behind := f.received - min(f.flushed, f.hashed)
		changed := f.changed
		f.mu.Unlock()
		if behind < fillWindow {
			return nil
		}
		if windowFull != nil {
			windowFull()
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// progress adds n bytes to one of the fill's counters (flushed or hashed) and drops the chunks
// that are both written and hashed.
func (f *Fill) progress(counter *int64, n int) {
	f.mu.Lock()
	*counter += int64(n)
	done := min(f.flushed, f.hashed)
	k := 0
	for k < len(f.chunks) && f.chunks[k].n == len(f.chunks[k].data) && f.chunks[k].end() <= done {
		f.chunks[k].drop()
		f.chunks[k] = nil
		k++
	}
	if k > 0 {
		f.chunks = f.chunks[k:]
	}
	f.changedLocked()
	f.mu.Unlock()
}

// changedLocked wakes everyone waiting for a change of the fill. f.mu is held.
func (f *Fill) changedLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// commit places the verified file and indexes it as mirrored content linked to repo. A copy from
// the shared store (originNone) only fills the hot tier: its record is there already, and if
// eviction or garbage collection took it meanwhile, the copy goes too (a record written again
// here would name a blob the bucket no longer has).
func (fl *Fills) commit(ctx context.Context, f *Fill, repo string) error {
	fl.st.gcMu.RLock()
	defer fl.st.gcMu.RUnlock()
	defer fl.st.refs.Add(1) // after the index write, before RUnlock: see Collect
	// A mirrored blob can be fetched again: on one node a small one's file is synced in a batch
	// (durable.go). A large one syncs here, off its clients' path, as before: a batch's syncfs of a
	// gigabyte would run beside whatever the node serves next.
	synced := fl.st.syncer == nil || f.from != originMirrored || f.writtenBytes() > batchSyncMax
	placed, err := fl.st.placeSynced(f.file, f.dgst, f.from == originNone, synced)
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
		rec, err := fl.st.ensureBlobRecord(ct, f.dgst, f.writtenBytes(), "", f.from)
		if err != nil {
			return err
		}
		// Pushed meanwhile: the push synced the file (makeDurable), and it must never be marked
		// for dropping.
		if placed && !synced && !rec.Local {
			mark := fl.st.syncer.mark()
			if err := ct.Txn.Set(unsyncedKey(f.dgst), mark); err != nil {
				return err
			}
			ct.onCommit(func() { fl.st.syncer.placed(f.dgst, mark) })
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
	return f.flushed
}

func (f *Fill) verify() {
	f.mu.Lock()
	f.verified = true
	f.changedLocked()
	f.mu.Unlock()
}

func (f *Fill) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	for _, c := range f.chunks {
		c.drop()
	}
	f.chunks = nil
	f.changedLocked()
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

// Whole waits until every byte of the blob is there and matched its digest, and returns its
// length; or the fill's error. For a client that could not tell a cut answer from a whole one.
func (r *FillReader) Whole(ctx context.Context) (int64, error) {
	f := r.f
	for {
		f.mu.Lock()
		verified, done, err, n, changed := f.verified, f.done, f.err, f.received, f.changed
		f.mu.Unlock()
		if verified {
			return n, nil
		}
		if done && err != nil {
			return 0, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Size is the blob's length as the upstream announced it, or -1.
func (r *FillReader) Size() int64 {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	return r.f.size
}

// next waits for bytes at the reader's offset and returns up to limit of them: a slice of a chunk
// in memory (mem, of the chunk c, which the caller gives back with unref), or the length of a run
// to read from the file (file > 0). At the end of a verified blob it returns io.EOF; a failed fill
// returns its error.
func (r *FillReader) next(limit int64) (mem []byte, c *chunk, file int64, err error) {
	f := r.f
	for {
		f.mu.Lock()
		avail := f.received
		if !f.verified {
			avail -= holdBack
			if f.size >= 0 {
				avail = min(f.received, f.size-holdBack)
			}
		}
		verified, changed := f.verified, f.changed
		if !verified && f.done && f.err != nil {
			f.mu.Unlock()
			return nil, nil, 0, f.err
		}
		if r.off < avail {
			end := min(avail, r.off+limit)
			memStart := f.received
			if len(f.chunks) > 0 {
				memStart = f.chunks[0].off
			}
			if r.off < memStart { // written to the file and dropped from memory
				f.mu.Unlock()
				return nil, nil, min(end, memStart) - r.off, nil
			}
			for _, c = range f.chunks {
				if r.off < c.end() {
					break
				}
			}
			c.refs++
			mem = c.data[r.off-c.off : min(end, c.end())-c.off]
			f.mu.Unlock()
			return mem, c, 0, nil
		}
		f.mu.Unlock()
		if verified {
			return nil, nil, 0, io.EOF
		}
		select {
		case <-changed:
		case <-r.ctx.Done():
			return nil, nil, 0, r.ctx.Err()
		}
	}
}

func (r *FillReader) Read(p []byte) (int, error) {
	mem, c, file, err := r.next(int64(len(p)))
	if err != nil {
		return 0, err
	}
	if file > 0 {
		n, err := r.f.file.ReadAt(p[:file], r.off)
		r.off += int64(n)
		if err == io.EOF {
			err = nil
		}
		return n, err
	}
	n := copy(p, mem)
	r.f.unref(c)
	r.off += int64(n)
	return n, nil
}

// WriteTo writes the blob to w as it arrives: what is still in memory straight from its chunks,
// what is only in the file through a buffer.
func (r *FillReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	var buf []byte
	for {
		mem, c, file, err := r.next(fillChunk)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if file > 0 {
			if buf == nil {
				// A reader behind the fill's memory: a small buffer of its own, since a thousand
				// slow clients of one cold blob are a thousand such readers.
				buf = make([]byte, laggardBuffer)
			}
			n, err := r.f.file.ReadAt(buf[:min(file, laggardBuffer)], r.off)
			if err != nil && err != io.EOF {
				return total, err
			}
			mem = buf[:n]
		}
		n, err := w.Write(mem)
		r.f.unref(c)
		r.off += int64(n)
		total += int64(n)
		if err != nil {
			return total, err
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
