package auth

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"

	"cove/internal/kv"
)

// records is how Identity and Policy reach the metadata store: each keeps its own records, under
// its own keys, in the one database. It holds no state of its own.
type records struct {
	db kv.DB
	// writable, when set, is asked before every write (Config.Writable).
	writable func() error
}

// update is db.Update once the index may be written (Config.Writable).
func (rs records) update(fn func(txn kv.Txn) error) error {
	if rs.writable != nil {
		if err := rs.writable(); err != nil {
			return err
		}
	}
	return kv.Retry(context.Background(), rs.db, fn)
}

// SequencePrefix starts the keys of auth's sequences (ids of users, projects, members, robots):
// on badger, sequences are records under these keys; a move into PostgreSQL makes them sequences
// there (cove migrate).
const SequencePrefix = "auth/seq/"

// nextID draws the next number of the sequence key (the metadata seam's NextID: numbers are
// never given twice, and may be skipped); ids start at 1.
func (rs records) nextID(key string) (int64, error) {
	if rs.writable != nil {
		if err := rs.writable(); err != nil {
			return 0, err // a full disk or a read-only start, said as such
		}
	}
	return rs.db.NextID(context.Background(), key)
}

// nameByID reads the name an id index (prefix + decimal id → name) holds.
func (rs records) nameByID(prefix string, id int64) (string, error) {
	var name string
	err := rs.db.View(context.Background(), func(txn kv.Txn) error {
		v, err := txn.Get([]byte(prefix + strconv.FormatInt(id, 10)))
		name = string(v)
		return err
	})
	return name, err
}

// eachJSON decodes every value under prefix into a fresh T and hands it to fn.
func eachJSON[T any](txn kv.Txn, prefix string, fn func(*T)) error {
	return txn.Scan([]byte(prefix), kv.ScanOptions{}, func(_, val []byte) (bool, error) {
		v := new(T)
		if err := json.Unmarshal(val, v); err != nil {
			return false, err
		}
		fn(v)
		return true, nil
	})
}

// events writes the audit events of Identity (logins) and Tokens (token issues) to an Audit,
// logging (not failing on) a write error. A nil audit records nothing.
type events struct {
	audit *Audit
	log   *slog.Logger
}

// record writes an audit event, logging (not failing on) a write error.
func (ev events) record(ctx context.Context, e Event) {
	if ev.audit == nil {
		return
	}
	if err := ev.audit.Record(ctx, e); err != nil {
		ev.log.ErrorContext(ctx, "writing an audit record", "err", err)
	}
}

// recordRefusal writes the audit event of a refusal, at most refusalBurst a minute per caller.
func (ev events) recordRefusal(ctx context.Context, e Event) {
	e.Result = "failure"
	ev.recordLimited(ctx, e)
}

// recordLimited writes an audit event at most refusalBurst a minute per caller (Audit.RecordLimited).
func (ev events) recordLimited(ctx context.Context, e Event) {
	if ev.audit == nil {
		return
	}
	if err := ev.audit.RecordLimited(ctx, e); err != nil {
		ev.log.ErrorContext(ctx, "writing an audit record", "err", err)
	}
}
