package cache

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// OpenDB opens the badger database that holds cove's index under dir. It is opened once by the
// binary and handed to every package that keeps records in it, each under its own key prefix.
//
// Writes are synchronous: a push acknowledged to a client survives a crash of the process or the
// machine. The memory budget is kept small, since cove runs beside the hosts it serves.
func OpenDB(dir string, logger *slog.Logger) (*badger.DB, error) {
	return openDB(dir, logger, false)
}

// OpenDBReadOnly opens the index without writing anything (no lock file, no replay): for a start
// on a full disk, where cove serves what it has and refuses every write (Config.ReadOnly). It
// fails when the index needs writing to open (an unclean stop left entries to replay).
func OpenDBReadOnly(dir string, logger *slog.Logger) (*badger.DB, error) {
	return openDB(dir, logger, true)
}

// Index is the index of a data directory (data/index) with its reserve: a file of indexReserve
// bytes (data/index.reserve) that cove deletes when another program fills the disk, so that
// badger, which writes into memory-mapped files (a write there on a full disk is a SIGBUS, not
// an error), still has room to flush, compact, close and replay after a kill -9.
type Index struct {
	DB *badger.DB
	// ReadOnly says the disk was under half its floor at start: cove must refuse writes (the
	// Store's Config.ReadOnly).
	ReadOnly bool

	data, reserve string
	floor         int64
	log           *slog.Logger
	diskSpace     func(dir string) (avail, total int64, err error)
	// released is set while the reserve is released: its bytes are not cove's to write, and
	// DiskSpace does not count them.
	released atomic.Bool
	stop     chan struct{}
	done     chan struct{}
}

// DiskSpace is the free space of dir's file system for the Store (Config.DiskSpace): while the
// reserve is released, its bytes are not counted, so that releasing it gives room to the index
// alone and not to the next push or fill.
func (ix *Index) DiskSpace(dir string) (avail, total int64, err error) {
	avail, total, err = ix.diskSpace(dir)
	if ix.released.Load() {
		avail = max(avail-indexReserve, 0)
	}
	return avail, total, err
}

// reserveCheckEvery is how often a running index checks that the disk still has room for it.
const reserveCheckEvery = time.Second

// OpenIndex opens the index of the data directory data (data/index). On a disk under half its
// free-space floor (minFree bytes, or minFreePct of the disk; see FreeSpaceFloor), or one that is
// full, it releases the reserve, so that the index can replay what a kill -9 left, and runs
// read-only (ReadOnly); with no reserve and no room it opens the index without writing anything.
// It never writes into badger's memory-mapped files on a full disk.
func OpenIndex(data string, minFree int64, minFreePct float64, logger *slog.Logger) (*Index, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ix := &Index{data: data, reserve: filepath.Join(data, "index.reserve"), log: logger, diskSpace: diskSpace,
		stop: make(chan struct{}), done: make(chan struct{})}
	dir := filepath.Join(data, "index")
	avail, total, serr := diskSpace(data)
	floor := FreeSpaceFloor(total, minFree, minFreePct)
	ix.floor = floor
	// A reserve that is missing (released, or never made) is owed: its bytes are not cove's.
	ix.released.Store(!ix.hasReserve())
	eff, _, _ := ix.DiskSpace(data)
	low := serr == nil && eff < floor/2
	if low && ix.release("the disk is under half its free-space floor at start") {
		avail, _, serr = diskSpace(data)
	}
	// badger replays its memtables through shared memory maps; on some file systems (tmpfs)
	// even reading a hole of such a map takes a page, which on a full disk is a SIGBUS. Refused
	// with a clear error instead, before badger is opened at all.
	if holes := holeBytes(dir); serr == nil && holes > 0 && avail < holes+(1<<20) {
		return nil, fmt.Errorf("the disk of %s is full (%s free): the index needs %s free to be read (its memory-mapped files have holes that reading fills); free space and start cove again",
			data, byteSize(avail), byteSize(holes+(1<<20)))
	}
	if !low || (serr == nil && avail >= indexReserve/2) {
		db, err := OpenDB(dir, logger)
		switch {
		case err == nil:
			ix.DB, ix.ReadOnly = db, low
		case !errors.Is(err, syscall.ENOSPC):
			return nil, err
		default:
			low = true
		}
	}
	if ix.DB == nil {
		db, err := OpenDBReadOnly(dir, logger)
		if err != nil {
			return nil, fmt.Errorf("the disk of %s is full (%s free, floor %s: storage.min_free) and the index cannot open read-only either: %w; free space and start cove again",
				data, byteSize(avail), byteSize(floor), err)
		}
		ix.DB, ix.ReadOnly = db, true
	}
	if ix.ReadOnly {
		logger.Error("the data directory's disk is full: cove runs READ-ONLY; content is served, but pushes, uploads, fills from upstreams and changes are refused (507); free space and restart cove",
			"data", data, "free", byteSize(avail), "floor", byteSize(floor))
	} else if err := ix.ensureReserve(floor); err != nil {
		logger.Warn("the index's reserve could not be made; a disk filled by another program may stop cove", "path", ix.reserve, "err", err)
	}
	go ix.watch()
	return ix, nil
}

// holeBytes is how many bytes of the index's memtable files are holes (allocated on first touch).
func holeBytes(dir string) int64 {
	files, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	var n int64
	for _, f := range files {
		var st syscall.Stat_t
		if syscall.Stat(f, &st) == nil {
			n += max(st.Size-st.Blocks*512, 0)
		}
	}
	return n
}

// ensureReserve writes the reserve file when it is missing and the disk has room for it above
// half the floor; its blocks are allocated, not sparse.
func (ix *Index) ensureReserve(floor int64) error {
	if ix.hasReserve() {
		ix.released.Store(false)
		return nil
	}
	avail, _, err := ix.diskSpace(ix.data)
	if err != nil || avail-indexReserve < floor/2 {
		return err
	}
	f, err := os.OpenFile(ix.reserve, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, indexReserve); err != nil {
		f.Close()
		os.Remove(ix.reserve)
		return fmt.Errorf("allocate %s: %w", ix.reserve, err)
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return err
	}
	ix.released.Store(false)
	return nil
}

func (ix *Index) hasReserve() bool {
	fi, err := os.Stat(ix.reserve)
	return err == nil && fi.Size() == indexReserve
}

// release deletes the reserve, if there is one, and says whether it did.
func (ix *Index) release(why string) bool {
	if err := os.Remove(ix.reserve); err != nil {
		return false
	}
	ix.released.Store(true)
	ix.log.Error("the index's reserve was released: "+why+"; cove refuses writes until space is freed",
		"path", ix.reserve, "bytes", indexReserve)
	return true
}

// watch releases the reserve as soon as the disk has under a quarter of it free: another program
// filled the disk, and badger's next flush or compaction needs the room.
func (ix *Index) watch() {
	defer close(ix.done)
	t := time.NewTicker(reserveCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ix.stop:
			return
		case <-t.C:
		}
		avail, _, err := ix.diskSpace(ix.data)
		switch {
		case err != nil:
		case avail < indexReserve/4:
			ix.release("another program filled the disk")
		case ix.released.Load() && !ix.ReadOnly && avail >= ix.floor+indexReserve:
			// Space is back: the reserve is made again, and cove writes again.
			if err := ix.ensureReserve(ix.floor); err == nil {
				ix.log.Info("the disk has room again: the index's reserve is back", "path", ix.reserve)
			}
		}
	}
}

// Room says whether the disk has room for the index's last writes (badger's flush at close,
// the release of sequences), releasing the reserve if it must.
func (ix *Index) Room() bool {
	avail, _, err := ix.diskSpace(ix.data)
	if err == nil && avail < indexReserve/2 && ix.release("the disk is full at shutdown") {
		avail, _, err = ix.diskSpace(ix.data)
	}
	return err != nil || avail >= indexReserve/4
}

// Close closes the index. On a disk with too little room for badger's last flush even with the
// reserve released, it leaves the index as a kill -9 would (every write was synced to its log,
// and the next start replays it) rather than fault in a memory-mapped file.
func (ix *Index) Close() error {
	close(ix.stop)
	<-ix.done
	if !ix.Room() && !ix.ReadOnly {
		ix.log.Error("the disk is full: the index is left unflushed, as after a crash; its log is complete and is replayed at the next start",
			"data", ix.data)
		return nil
	}
	return ix.DB.Close()
}

func openDB(dir string, logger *slog.Logger, readOnly bool) (*badger.DB, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts := badger.DefaultOptions(dir).
		WithReadOnly(readOnly).
		WithLogger(badgerLogger{logger.With("component", "badger")}).
		WithSyncWrites(true).
		WithNumVersionsToKeep(1).
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithBaseTableSize(2 << 20).
		WithValueLogFileSize(64 << 20).
		WithBlockCacheSize(16 << 20).
		WithIndexCacheSize(8 << 20).
		WithNumCompactors(2).
		WithNumGoroutines(4).
		WithCompactL0OnClose(true)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", dir, err)
	}
	return db, nil
}

// badgerLogger sends badger's own messages to slog; its info chatter goes to Debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.l.Debug(fmt.Sprintf(f, a...)) }
