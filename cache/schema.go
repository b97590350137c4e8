package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"cove/internal/kv"
)

// The schema of the index: which layout of records a data directory (or a fleet's database)
// holds. A cove that finds an older one migrates it at start, once a backup is made; one that
// finds a newer one refuses to start, since it would misread what a newer cove wrote.
//
// The versions:
//
//	1  the records before the eviction index (before issue #16)
//	2  with the eviction index (evict/), its marker cache/evict-index; no schema record
//	3  the schema record itself (cove/schema): the first release that refuses a newer index

// SchemaVersion is the version of the records this cove writes.
const SchemaVersion = 3

// keySchema holds the schema record.
const keySchema = "cove/schema"

// schemaRecord is the value under keySchema.
type schemaRecord struct {
	Version int `json:"version"`
	// By is the version of the cove that wrote it, for the message of an older one.
	By string    `json:"by,omitempty"`
	At time.Time `json:"at"`
}

// ErrSchemaDamaged is a schema record cove cannot read: nothing tells which migrations the index
// needs, so nothing is done to it.
var ErrSchemaDamaged = errors.New("cove cannot tell which records the index holds, and leaves it as it is; restore a backup into a new data directory (cove restore: your last backup, or the one a migration made in DATA/backups/)")

// SchemaTooNewError is the refusal of an index written by a newer cove.
type SchemaTooNewError struct {
	Have int
	By   string
}

func (e *SchemaTooNewError) Error() string {
	by := ""
	if e.By != "" {
		by = " (cove " + e.By + ")"
	}
	return fmt.Sprintf("the index was written by a newer cove%s: its schema is version %d, this cove reads versions up to %d; run that cove or a newer one, or restore a backup made before the upgrade into a new data directory (cove restore)",
		by, e.Have, SchemaVersion)
}

// ReadSchema returns the schema version of db: 0 for a store that holds no record yet (a first
// start), 1 or 2 for a store from before schema records (told apart by the eviction index's
// marker), and by, the cove that wrote the record, when there is one.
func ReadSchema(ctx context.Context, db kv.DB) (version int, by string, err error) {
	err = db.View(ctx, func(txn kv.Txn) error {
		var rec schemaRecord
		switch err := kv.Get(txn, []byte(keySchema), &rec); {
		case err == nil && rec.Version < 1:
			// Never taken for a first start: that would skip the migrations the records need.
			return fmt.Errorf("the index's schema record (%s) is damaged: it names version %d: %w", keySchema, rec.Version, ErrSchemaDamaged)
		case err == nil:
			version, by = rec.Version, rec.By
			return nil
		case errors.Is(err, kv.ErrNotFound):
		default:
			var syntax *json.SyntaxError
			var typ *json.UnmarshalTypeError
			if errors.As(err, &syntax) || errors.As(err, &typ) {
				return fmt.Errorf("the index's schema record (%s) is damaged (%v): %w", keySchema, err, ErrSchemaDamaged)
			}
			return fmt.Errorf("read the index's schema: %w", err)
		}
		if _, err := txn.Get([]byte(keyEvictIndex)); err == nil {
			version = 2
			return nil
		}
		empty := true
		// The heartbeats of a fleet's nodes are written before the store opens.
		err := txn.Scan(nil, kv.ScanOptions{KeysOnly: true}, func(key, _ []byte) (bool, error) {
			empty = bytes.HasPrefix(key, []byte("cluster/"))
			return empty, nil
		})
		if !empty {
			version = 1
		}
		return err
	})
	return version, by, err
}

// CheckSchema refuses (SchemaTooNewError) an index that a newer cove wrote.
func CheckSchema(ctx context.Context, db kv.DB) error {
	v, by, err := ReadSchema(ctx, db)
	if err != nil {
		return err
	}
	if v > SchemaVersion {
		return &SchemaTooNewError{Have: v, By: by}
	}
	return nil
}

// migration takes the records from version to-1 to version to.
type migration struct {
	to   int
	what string
	run  func(ctx context.Context, db kv.DB, log *slog.Logger) error
}

var migrations = []migration{
	{2, "build the eviction index", buildEvictIndex},
	{3, "record the schema version", func(context.Context, kv.DB, *slog.Logger) error { return nil }},
}

// locker is a store whose nodes can take a fleet-wide lock (PostgreSQL).
type locker interface {
	Lock(ctx context.Context, name string) (release func(), err error)
}

// Upgrade migrates db to SchemaVersion, logged step by step: backup is called first, with the
// version found, when there is a migration to make (not on a first start); an error from it
// stops the upgrade before anything changed. In a fleet, the nodes that start together take
// turns: the first migrates, the others find the work done. by is this cove's version.
func Upgrade(ctx context.Context, db kv.DB, by string, backup func(from int) error, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if l, ok := db.(locker); ok {
		release, err := l.Lock(ctx, "schema")
		if err != nil {
			return fmt.Errorf("take the schema lock: %w", err)
		}
		defer release()
	}
	from, wrote, err := ReadSchema(ctx, db)
	if err != nil {
		return err
	}
	if from > SchemaVersion { // read again under the lock: another node may have migrated
		return &SchemaTooNewError{Have: from, By: wrote}
	}
	if from == SchemaVersion {
		return nil
	}
	if from > 0 {
		log.Info("the index's schema is older than this cove's: migrating it", "from", from, "to", SchemaVersion)
		if backup != nil {
			if err := backup(from); err != nil {
				return fmt.Errorf("the backup before migrating the index from schema %d: %w (nothing was migrated)", from, err)
			}
		}
		for _, m := range migrations {
			if m.to <= from {
				continue
			}
			start := time.Now()
			if err := m.run(ctx, db, log); err != nil {
				return fmt.Errorf("migrate the index to schema %d (%s): %w", m.to, m.what, err)
			}
			log.Info("migrated the index", "to", m.to, "step", m.what, "took", time.Since(start))
		}
	} else {
		// A first start: the records written from now on are of this version, and the
		// eviction index is built as they are written.
		if err := db.Update(ctx, func(txn kv.Txn) error { return txn.Set([]byte(keyEvictIndex), []byte(`{}`)) }); err != nil {
			return err
		}
	}
	return db.Update(ctx, func(txn kv.Txn) error {
		return kv.Put(txn, []byte(keySchema), schemaRecord{Version: SchemaVersion, By: by, At: time.Now().UTC()})
	})
}

// SchemaTracker tells the schema version of a store from its records as an export passes them
// (cove backup): See each key, then Version.
type SchemaTracker struct {
	record, evict, any bool
	version            int
}

// See takes one record of the export.
func (t *SchemaTracker) See(key, value []byte) {
	switch string(key) {
	case keySchema:
		var rec schemaRecord
		if json.Unmarshal(value, &rec) == nil {
			t.record, t.version = true, rec.Version
		}
	case keyEvictIndex:
		t.evict = true
	}
	if !bytes.HasPrefix(key, []byte("cluster/")) {
		t.any = true
	}
}

// Version is the schema version of the records seen (as ReadSchema tells it).
func (t *SchemaTracker) Version() int {
	switch {
	case t.record:
		return t.version
	case t.evict:
		return 2
	case t.any:
		return 1
	}
	return 0
}
