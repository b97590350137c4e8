package cache

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"syscall"

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

// OpenIndex opens the index of the data directory data (data/index). On a disk under half its
// free-space floor (minFree bytes, or minFreePct of the disk; see FreeSpaceFloor), or one that is
// full, it opens it read-only instead of failing, or of writing into badger's memory-mapped files
// on a full disk (a SIGBUS): readOnly then says so, and the Store must be opened read-only too.
func OpenIndex(data string, minFree int64, minFreePct float64, logger *slog.Logger) (db *badger.DB, readOnly bool, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(data, "index")
	avail, total, serr := diskSpace(data)
	floor := FreeSpaceFloor(total, minFree, minFreePct)
	if low := serr == nil && avail < floor/2; !low {
		db, err := OpenDB(dir, logger)
		if err == nil || !errors.Is(err, syscall.ENOSPC) {
			return db, false, err
		}
	}
	db, err = OpenDBReadOnly(dir, logger)
	if err != nil {
		return nil, false, fmt.Errorf("the disk of %s is full (%s free, floor %s: storage.min_free) and the index cannot open read-only either: %w; free space and start cove again",
			data, byteSize(avail), byteSize(floor), err)
	}
	logger.Error("the data directory's disk is full: cove runs READ-ONLY; content is served, but pushes, uploads, fills from upstreams and changes are refused (507); free space and restart cove",
		"data", data, "free", byteSize(avail), "floor", byteSize(floor))
	return db, true, nil
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
