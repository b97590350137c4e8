package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
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
func byteSize(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

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

// space reports the free bytes of the data directory and its floor.
func (s *Store) space() (avail, floor int64, err error) {
	avail, total, err := s.diskSpace(s.dir)
	if err != nil {
		return 0, 0, err
	}
	return avail, FreeSpaceFloor(total, s.minFree, s.minFreePct), nil
}

// ensureSpace makes sure that writing need more bytes keeps the floor free, evicting mirrored
// content (least recently used first) to make room when evict is set. It returns a *SpaceError
// when the room cannot be made.
func (s *Store) ensureSpace(ctx context.Context, need int64, evict bool) error {
	if s.readOnly {
		return ErrReadOnly
	}
	avail, floor, err := s.space()
	if err != nil {
		return err
	}
	if avail-need >= floor {
		return nil
	}
	if s.remote != nil {
		// Fleet mode: the room is made in the hot tier, whose copies are all in the shared
		// store; one node's small disk never evicts the fleet's content.
		s.trimHot(floor + need - avail)
		if avail, floor, err = s.space(); err != nil {
			return err
		}
		if avail-need >= floor {
			return nil
		}
		evict = false
	}
	// Evict only when that can make the room: a blob larger than the disk could ever hold
	// above its floor must not empty the cache on its way to a 507.
	if evict && avail+s.mirrored.Load()-need >= floor {
		if _, err := s.evictBytes(ctx, floor+need-avail); err != nil {
			return err
		}
		if avail, floor, err = s.space(); err != nil {
			return err
		}
		if avail-need >= floor {
			return nil
		}
	}
	s.spaceRefusals.Add(1)
	e := &SpaceError{Need: need, Avail: avail, Floor: floor}
	s.warnSpace(e)
	return e
}

// WriteCheck is nil when the index may be written, else why not (ErrReadOnly, or a
// *SpaceError): for the other packages that keep records in the index (auth), whose writes go
// into the same memory-mapped files.
func (s *Store) WriteCheck() error {
	if s.readOnly {
		return ErrReadOnly
	}
	avail, floor, err := s.space()
	if err != nil {
		return err
	}
	if avail < floor/2 {
		s.spaceRefusals.Add(1)
		e := &SpaceError{Avail: avail, Floor: floor}
		s.warnSpace(e)
		return e
	}
	return nil
}

// deletable reports whether the index may take deletions (evictions, garbage collection): they
// free space, but write tombstones through the same memtables, so they need some room too.
func (s *Store) deletable() bool {
	if s.readOnly {
		return false
	}
	avail, _, err := s.space()
	return err == nil && avail >= indexReserve/2
}

// warnSpace logs a refusal for space, at most once a minute.
func (s *Store) warnSpace(e *SpaceError) {
	now := time.Now().UnixNano()
	last := s.spaceWarned.Load()
	if now-last < int64(time.Minute) || !s.spaceWarned.CompareAndSwap(last, now) {
		return
	}
	s.log.Error("a write was refused to keep the data directory's free-space floor (storage.min_free)",
		"cause", e.Error(), "dir", s.dir)
}

// SpaceRefusals counts the writes refused for space since start.
func (s *Store) SpaceRefusals() int64 { return s.spaceRefusals.Load() }

// spaceReader checks the floor every spaceCheckEvery bytes of a streamed write whose size is not
// known in advance.
type spaceReader struct {
	io.Reader
	ctx   context.Context
	s     *Store
	evict bool
	since int64
}

func (r *spaceReader) Read(p []byte) (int, error) {
	if r.since >= spaceCheckEvery {
		if err := r.s.ensureSpace(r.ctx, spaceCheckEvery, r.evict); err != nil {
			return 0, err
		}
		r.since = 0
	}
	n, err := r.Reader.Read(p)
	r.since += int64(n)
	return n, err
}

// guardSpace returns body wrapped so that writing it keeps the floor: a first check for size
// bytes (or spaceCheckEvery when unknown), then one every spaceCheckEvery bytes.
func (s *Store) guardSpace(ctx context.Context, body io.Reader, size int64) (io.Reader, error) {
	return s.guardSpaceFor(ctx, body, size, true)
}

// guardPushSpace is guardSpace for a client's body: room is made as the bytes arrive, not for
// the size the client announced (a push that announces much and sends little must not empty
// the mirror's cache).
func (s *Store) guardPushSpace(ctx context.Context, body io.Reader, size int64) (io.Reader, error) {
	return s.guardSpaceFor(ctx, body, size, false)
}

func (s *Store) guardSpaceFor(ctx context.Context, body io.Reader, size int64, upfront bool) (io.Reader, error) {
	need := size
	if need < 0 || (!upfront && need > spaceCheckEvery) {
		need = spaceCheckEvery
	}
	if err := s.ensureSpace(ctx, need, true); err != nil {
		return nil, err
	}
	if size >= 0 && size <= spaceCheckEvery {
		return body, nil
	}
	return &spaceReader{Reader: body, ctx: ctx, s: s, evict: true, since: min(need, spaceCheckEvery)}, nil
}

// spaceState is the Store's part of the floor.
type spaceState struct {
	minFree       int64
	minFreePct    float64
	readOnly      bool
	diskSpace     func(dir string) (avail, total int64, err error)
	spaceRefusals atomic.Int64
	spaceWarned   atomic.Int64
}

// Space reports the free bytes of the data directory's disk and its free-space floor.
func (s *Store) Space() (avail, floor int64, err error) { return s.space() }
