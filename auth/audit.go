package auth

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The audit log: every login, token issued, push, pull and delete, and every change to projects,
// members, users, robots and settings — who, when, from where, what, and the result. Records are
// kept in badger under time-ordered keys, each with the retention as its TTL. No secret is ever
// part of a record (SECURITY.md 13): the callers pass names, never passwords or tokens.

const keyAudit = "audit/" // audit/<big-endian nanoseconds><sequence> → Event

// Event is one audit record.
type Event struct {
	ID           string    `json:"id"`
	Time         time.Time `json:"op_time"`
	Username     string    `json:"username"`
	Address      string    `json:"address,omitempty"`
	Operation    string    `json:"operation"`     // login, token, pull, push, delete, create, update
	ResourceType string    `json:"resource_type"` // user, project, member, robot, repository, artifact, token, settings
	Resource     string    `json:"resource"`
	Result       string    `json:"result"` // success, failure
	Detail       string    `json:"detail,omitempty"`
}

// Audit records and queries events. It is safe for concurrent use.
type Audit struct {
	db        *badger.DB
	now       func() time.Time
	retention time.Duration
	seq       atomic.Uint32
}

// NewAudit returns the audit log over db, keeping records for retention (zero: 90 days).
func NewAudit(db *badger.DB, retention time.Duration, now func() time.Time) *Audit {
	if retention <= 0 {
		retention = 90 * 24 * time.Hour
	}
	if now == nil {
		now = time.Now
	}
	return &Audit{db: db, now: now, retention: retention}
}

// Record writes e, stamping its time and id. A failure to write is returned; callers log it.
func (a *Audit) Record(ctx context.Context, e Event) error {
	if e.Time.IsZero() {
		e.Time = a.now().UTC()
	}
	if e.Result == "" {
		e.Result = "success"
	}
	key := make([]byte, len(keyAudit)+12)
	copy(key, keyAudit)
	binary.BigEndian.PutUint64(key[len(keyAudit):], uint64(e.Time.UnixNano()))
	binary.BigEndian.PutUint32(key[len(keyAudit)+8:], a.seq.Add(1))
	e.ID = fmt.Sprintf("%x", key[len(keyAudit):])
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return a.db.Update(func(txn *badger.Txn) error {
		return txn.SetEntry(badger.NewEntry(key, b).WithTTL(a.retention))
	})
}

// Filter selects events; empty fields match everything. Resource matches by substring, the
// other strings exactly; From and To bound the time (inclusive).
type Filter struct {
	Username, Operation, ResourceType, Resource, Result string
	// ResourcePrefix keeps events whose resource starts with it (one project's: "team/").
	ResourcePrefix string
	From, To       time.Time
}

func (f Filter) match(e Event) bool {
	return (f.Username == "" || e.Username == f.Username) &&
		(f.Operation == "" || e.Operation == f.Operation) &&
		(f.ResourceType == "" || e.ResourceType == f.ResourceType) &&
		(f.Resource == "" || strings.Contains(e.Resource, f.Resource)) &&
		strings.HasPrefix(e.Resource, f.ResourcePrefix) &&
		(f.Result == "" || e.Result == f.Result) &&
		(f.From.IsZero() || !e.Time.Before(f.From)) &&
		(f.To.IsZero() || !e.Time.After(f.To))
}

// Query returns one page of the events that match f, newest first, and how many match in all.
func (a *Audit) Query(ctx context.Context, f Filter, page, size int) ([]Event, int, error) {
	events := []Event{}
	total := 0
	skip := (page - 1) * size
	err := a.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(keyAudit), Reverse: true, PrefetchValues: true})
		defer it.Close()
		// In reverse, seek past the last possible key of the prefix.
		for it.Seek([]byte(keyAudit + "\xff")); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			var e Event
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &e) }); err != nil {
				return err
			}
			if !f.match(e) {
				continue
			}
			if total >= skip && len(events) < size {
				events = append(events, e)
			}
			total++
		}
		return nil
	})
	return events, total, err
}
