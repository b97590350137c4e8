package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"
)

// The free-space floor (docs/SECURITY.md 5): cove never fills its disk. Before it writes a blob
// (a fill from an upstream, a push) it checks that the data directory's file system keeps at
// least the floor free after the write; mirrored content is evicted to make room, and what still
// does not fit is refused with ErrStorageFull (HTTP 507). The index itself is badger's, whose
// memtables and value logs are memory-mapped files: a write into one on a full disk is a SIGBUS
// that kills the process. So index writes stop too once free space falls under half the floor
// (only something outside cove can take it that far), and the audit log drops what it cannot
// write (counted and logged), instead of crashing.

// ErrStorageFull means the write would take the data directory's disk under its free-space
// floor (storage.min_free), or the disk is full.
var ErrStorageFull = errors.New("the registry's storage is full")

// ErrReadOnly means cove runs read-only: its disk was full at start.
var ErrReadOnly = errors.New("the registry runs read-only: its disk was full when it started; free space and restart it")

// SpaceError is a write refused for space: what it needed, what was free, and the floor.
type SpaceError struct {
	Need, Avail, Floor int64
}

func (e *SpaceError) Error() string {
	if e.Avail > e.Floor && e.Need > 0 {
		return fmt.Sprintf("the registry's storage is full for this: %s does not fit in the %s free above the disk's free-space floor of %s (storage.min_free); free space, or give the data directory a larger disk",
			byteSize(e.Need), byteSize(e.Avail-e.Floor), byteSize(e.Floor))
	}
	return fmt.Sprintf("the registry's storage is full: %s free, under the disk's free-space floor of %s (storage.min_free); free space on the disk",
		byteSize(e.Avail), byteSize(e.Floor))
}

func (e *SpaceError) Is(target error) bool { return target == ErrStorageFull }

// byteSize writes n in MiB with one decimal.
func byteSize(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// spaceCheckEvery is how many bytes a streamed write takes between two checks of the floor.
const spaceCheckEvery = 1 << 20

// diskSpace reports the bytes available to cove and the size of the file system of dir.
func diskSpace(dir string) (avail, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// FreeSpaceFloor is the floor for a file system of total bytes: minFree when set (bytes), or
// minFreePct of total when set, else the smaller of 1 GiB and 5 % of total.
// It is never under MinFloor: badger flushes whole memtables (8 MiB each) into tables, and a
// flush that meets a full disk is a SIGBUS; half the floor is kept for the index alone.
func FreeSpaceFloor(total, minFree int64, minFreePct float64) int64 {
	var f int64
	switch {
	case minFree > 0:
		f = minFree
	case minFreePct > 0:
		f = int64(float64(total) * minFreePct / 100)
	default:
		f = min(1<<30, total/20)
	}
	return max(f, MinFloor)
}

// MinFloor is the least free-space floor: twice indexReserve.
const MinFloor = 2 * indexReserve

// indexReserve is the free space kept for the index's own writes and flushes (memtables of
// 8 MiB, two of them, and the tables they become); index writes stop under it.
const indexReserve = 32 << 20

// Disk keeps the free-space floor of the data directory's file system: every write of the store
// asks it first. It is safe for concurrent use.
type Disk struct {
	dir        string
	log        *slog.Logger
	minFree    int64
	minFreePct float64
	readOnly   bool
	diskSpace  func(dir string) (avail, total int64, err error)
	refusals   atomic.Int64
	warned     atomic.Int64
	st         *Store   // its hot tier and mirrored bytes: the room that can be made
	ev         *Evictor // makes room by evicting mirrored content
}

// Space reports the free bytes of the data directory's disk and its free-space floor.
func (d *Disk) Space() (avail, floor int64, err error) {
	avail, total, err := d.diskSpace(d.dir)
	if err != nil {
		return 0, 0, err
	}
	return avail, FreeSpaceFloor(total, d.minFree, d.minFreePct), nil
}

// ensureSpace makes sure that writing need more bytes keeps the floor free, evicting mirrored
// content (least recently used first) to make room when evict is set. It returns a *SpaceError
// when the room cannot be made.
func (d *Disk) ensureSpace(ctx context.Context, need int64, evict bool) error {
	if d.readOnly {
		return ErrReadOnly
	}
	avail, floor, err := d.Space()
	if err != nil {
		return err
	}
	if avail-need >= floor {
		return nil
	}
	if d.st.remote != nil {
		// Fleet mode: the room is made in the hot tier, whose copies are all in the shared
		// store; one node's small disk never evicts the fleet's content.
		d.st.trimHot(floor + need - avail)
		if avail, floor, err = d.Space(); err != nil {
			return err
		}
		if avail-need >= floor {
			return nil
		}
		evict = false
	}
	// Evict only when that can make the room: a blob larger than the disk could ever hold
	// above its floor must not empty the cache on its way to a 507.
	if evict && avail+d.st.mirrored.Load()-need >= floor {
		if _, err := d.ev.evictBytes(ctx, floor+need-avail); err != nil {
			return err
		}
		if avail, floor, err = d.Space(); err != nil {
			return err
		}
		if avail-need >= floor {
			return nil
		}
	}
	d.refusals.Add(1)
	e := &SpaceError{Need: need, Avail: avail, Floor: floor}
	d.warnSpace(e)
	return e
}

// WriteCheck is nil when the index may be written, else why not (ErrReadOnly, or a
// *SpaceError): for the other packages that keep records in the index (auth), whose writes go
// into the same memory-mapped files.
func (d *Disk) WriteCheck() error {
	if d.readOnly {
		return ErrReadOnly
	}
	avail, floor, err := d.Space()
	if err != nil {
		return err
	}
	if avail < floor/2 {
		d.refusals.Add(1)
		e := &SpaceError{Avail: avail, Floor: floor}
		d.warnSpace(e)
		return e
	}
	return nil
}

// deletable reports whether the index may take deletions (evictions, garbage collection): they
// free space, but write tombstones through the same memtables, so they need some room too.
func (d *Disk) deletable() bool {
	if d.readOnly {
		return false
	}
	avail, _, err := d.Space()
	return err == nil && avail >= indexReserve/2
}

// warnSpace logs a refusal for space, at most once a minute.
func (d *Disk) warnSpace(e *SpaceError) {
	now := time.Now().UnixNano()
	last := d.warned.Load()
	if now-last < int64(time.Minute) || !d.warned.CompareAndSwap(last, now) {
		return
	}
	d.log.Error("a write was refused to keep the data directory's free-space floor (storage.min_free)",
		"cause", e.Error(), "dir", d.dir)
}

// Refusals counts the writes refused for space since start.
func (d *Disk) Refusals() int64 { return d.refusals.Load() }

// spaceMeter checks the floor every spaceCheckEvery bytes of a streamed write whose size is not
// known in advance (or is larger than that).
type spaceMeter struct {
	d     *Disk
	evict bool
	since int64
	off   bool // a write of known size within the first check: nothing more to check
}

// room is called before n more bytes are written: it checks the floor when spaceCheckEvery bytes
// were written since the last check.
func (m *spaceMeter) room(ctx context.Context, n int) error {
	if m.off {
		return nil
	}
	if m.since >= spaceCheckEvery {
		if err := m.d.ensureSpace(ctx, spaceCheckEvery, m.evict); err != nil {
			return err
		}
		m.since = 0
	}
	m.since += int64(n)
	return nil
}

// meterSpace makes the first check of a write of size bytes (or spaceCheckEvery when unknown)
// and returns the meter for the rest of it.
func (d *Disk) meterSpace(ctx context.Context, size int64, upfront bool) (*spaceMeter, error) {
	need := size
	if need < 0 || (!upfront && need > spaceCheckEvery) {
		need = spaceCheckEvery
	}
	if err := d.ensureSpace(ctx, need, true); err != nil {
		return nil, err
	}
	return &spaceMeter{d: d, evict: true, since: min(need, spaceCheckEvery), off: size >= 0 && size <= spaceCheckEvery}, nil
}

// spaceReader meters a body that is written as it is read.
type spaceReader struct {
	io.Reader
	ctx context.Context
	m   *spaceMeter
}

func (r *spaceReader) Read(p []byte) (int, error) {
	if err := r.m.room(r.ctx, 0); err != nil {
		return 0, err
	}
	n, err := r.Reader.Read(p)
	r.m.since += int64(n)
	return n, err
}

// guardSpace returns body wrapped so that writing it keeps the floor: a first check for size
// bytes (or spaceCheckEvery when unknown), then one every spaceCheckEvery bytes.
func (d *Disk) guardSpace(ctx context.Context, body io.Reader, size int64) (io.Reader, error) {
	return d.guardSpaceFor(ctx, body, size, true)
}

// guardPushSpace is guardSpace for a client's body: room is made as the bytes arrive, not for
// the size the client announced (a push that announces much and sends little must not empty
// the mirror's cache).
func (d *Disk) guardPushSpace(ctx context.Context, body io.Reader, size int64) (io.Reader, error) {
	return d.guardSpaceFor(ctx, body, size, false)
}

func (d *Disk) guardSpaceFor(ctx context.Context, body io.Reader, size int64, upfront bool) (io.Reader, error) {
	m, err := d.meterSpace(ctx, size, upfront)
	if err != nil {
		return nil, err
	}
	if m.off {
		return body, nil
	}
	return &spaceReader{Reader: body, ctx: ctx, m: m}, nil
}

// Usage reports the free and total bytes of the data directory's disk.
func (d *Disk) Usage() (avail, total int64, err error) { return d.diskSpace(d.dir) }
