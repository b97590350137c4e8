package cache

import (
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
)

// OpenDB opens the badger database that holds cove's index under dir. It is opened once by the
// binary and handed to every package that keeps records in it, each under its own key prefix.
//
// Writes are synchronous: a push acknowledged to a client survives a crash of the process or the
// machine. The memory budget is kept small, since cove runs beside the hosts it serves.
func OpenDB(dir string, logger *slog.Logger) (*badger.DB, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts := badger.DefaultOptions(dir).
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
