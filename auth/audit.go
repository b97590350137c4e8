package auth

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The audit log: every login, token issued, push, pull and delete, and every change to projects,
// members, users, robots and settings — who, when, from where, what, and the result. Records are
// kept in badger under time-ordered keys, each with the retention as its TTL. No secret is ever
// part of a record (docs/SECURITY.md 13): the callers pass names, never passwords or tokens.

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
	// Count is how many times the same read (same user, address, resource and result) happened
	// within one batch, from Time on; absent means once.
	Count int `json:"count,omitempty"`
}

// Audit records and queries events. It is safe for concurrent use.
//
// Reads — successful pulls and tokens issued — come by the thousand a second, and the index syncs
// every commit to disk; so they are queued and written in batches (at most batchDelay later, and
// always before a query reads the log or the log closes), and the same read repeated within a
// batch is one record with a Count. Every other event is written before Record returns. A crash
// can lose the last batchDelay of reads, never a change.
type Audit struct {
	db        *badger.DB
	now       func() time.Time
	retention time.Duration
	seq       atomic.Uint32
	log       *slog.Logger

	mu      sync.Mutex // guards pending, started and closing
	pending []*pendingRead
	same    map[string]*pendingRead // the reads queued, by who, where, what and how it went
	started bool                    // the writer runs
	closing bool                    // Close was called: every event is written at once
	wake    chan struct{}
	drainMu sync.Mutex // held while a batch is taken and written, so a flush sees it committed

	refusalMu sync.Mutex
	refusals  map[string]*refusalWindow // by who, from where, what: guarded by refusalMu
	stop      chan struct{}
	done      chan struct{}
	closed    sync.Once
}

const (
	batchDelay = 100 * time.Millisecond
	batchMax   = 1024
)

type pendingRead struct {
	id  string // who, where, what and how: the reads that coalesce
	key []byte
	e   Event
}

// A caller's refusals are recorded one by one up to refusalBurst in a refusalPeriod; past that
// they are counted, and one record with the count is written when the caller's next window
// opens. One caller cannot flood the log (docs/SECURITY.md 18), and the log still says who was
// refused what, and how often.
const (
	refusalBurst   = 20
	refusalPeriod  = time.Minute
	refusalCallers = 10000 // windows kept at most; past that, expired ones are dropped first
)

type refusalWindow struct {
	start      time.Time
	n          int
	suppressed int
	last       Event // the last refusal not recorded, for the summary
}

// RecordRefusal records a refused request (Result "failure"), at most refusalBurst a minute for
// the same user, address and operation; the rest are summed up in one record.
func (a *Audit) RecordRefusal(ctx context.Context, e Event) error {
	e.Result = "failure"
	key := strings.Join([]string{e.Username, e.Address, e.Operation}, "\x00")
	now := a.now()
	a.refusalMu.Lock()
	if a.refusals == nil {
		a.refusals = map[string]*refusalWindow{}
	}
	w := a.refusals[key]
	var summary *Event
	if w == nil || now.Sub(w.start) >= refusalPeriod {
		if w != nil && w.suppressed > 0 {
			s := w.last
			s.Time, s.Count = w.start, w.suppressed
			s.Detail = fmt.Sprintf("%d more refusals in the minute from %s, not recorded one by one; the last: %s",
				w.suppressed, w.start.UTC().Format(time.RFC3339), w.last.Detail)
			summary = &s
		}
		if w == nil && len(a.refusals) >= refusalCallers {
			for k, old := range a.refusals {
				if now.Sub(old.start) >= refusalPeriod && old.suppressed == 0 {
					delete(a.refusals, k)
				}
			}
		}
		if w == nil && len(a.refusals) >= refusalCallers {
			a.refusalMu.Unlock()
			a.log.WarnContext(ctx, "audit: too many callers refused at once; a refusal was not recorded", "user", e.Username, "address", e.Address)
			return nil
		}
		w = &refusalWindow{start: now}
		a.refusals[key] = w
	}
	record := w.n < refusalBurst
	if record {
		w.n++
	} else {
		w.suppressed++
		w.last = e
	}
	a.refusalMu.Unlock()
	if summary != nil {
		if err := a.Record(ctx, *summary); err != nil {
			return err
		}
	}
	if !record {
		return nil
	}
	return a.Record(ctx, e)
}

// batched says whether an event is a read, written in batches.
func batched(e Event) bool {
	return e.Result == "success" && (e.Operation == "pull" || e.Operation == "token")
}

// NewAudit returns the audit log over db, keeping records for retention (zero: 90 days).
func NewAudit(db *badger.DB, retention time.Duration, now func() time.Time) *Audit {
	if retention <= 0 {
		retention = 90 * 24 * time.Hour
	}
	if now == nil {
		now = time.Now
	}
	return &Audit{db: db, now: now, retention: retention, log: slog.Default(),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// SetLogger sets where failures to write a batch are logged.
func (a *Audit) SetLogger(l *slog.Logger) {
	if l != nil {
		a.log = l
	}
}

// Close writes the queued events and stops the batch writer.
func (a *Audit) Close() error {
	a.closed.Do(func() {
		a.mu.Lock()
		started := a.started
		a.closing = true
		a.mu.Unlock()
		close(a.stop)
		if started {
			<-a.done
		}
	})
	return a.flush()
}

// writer writes the queue every batchDelay, or at once when it grows past batchMax.
func (a *Audit) writer() {
	defer close(a.done)
	t := time.NewTicker(batchDelay)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		case <-a.wake:
		}
		if err := a.flush(); err != nil {
			a.log.Error("writing audit records", "err", err)
		}
	}
}

// flush writes every queued event in one transaction (or as few as badger allows).
func (a *Audit) flush() error {
	a.drainMu.Lock()
	defer a.drainMu.Unlock()
	a.mu.Lock()
	batch := a.pending
	a.pending, a.same = nil, nil
	a.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := a.write(batch)
	if err != nil {
		// Queued again for the next flush, unless the queue is past its bound: then they are
		// dropped, and the log says how many.
		a.mu.Lock()
		if len(batch)+len(a.pending) <= 4*batchMax {
			a.pending = append(batch, a.pending...)
			a.same = map[string]*pendingRead{}
			for _, p := range a.pending {
				a.same[p.id] = p
			}
		} else {
			a.log.Error("audit records dropped: the index refuses writes", "records", len(batch), "err", err)
		}
		a.mu.Unlock()
	}
	return err
}

func (a *Audit) write(batch []*pendingRead) error {
	wb := a.db.NewWriteBatch()
	defer wb.Cancel()
	for _, p := range batch {
		e := p.e
		if e.Count == 1 {
			e.Count = 0
		}
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := wb.SetEntry(badger.NewEntry(p.key, b).WithTTL(a.retention)); err != nil {
			return err
		}
	}
	return wb.Flush()
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
	if batched(e) {
		a.mu.Lock()
		if !a.closing {
			id := strings.Join([]string{e.Username, e.Address, e.Operation, e.ResourceType, e.Resource, e.Result, e.Detail}, "\x00")
			if p, ok := a.same[id]; ok {
				p.e.Count++
				a.mu.Unlock()
				return nil
			}
			e.Count = 1
			p := &pendingRead{id: id, key: key, e: e}
			if a.same == nil {
				a.same = map[string]*pendingRead{}
			}
			a.same[id] = p
			a.pending = append(a.pending, p)
			n := len(a.pending)
			if !a.started {
				a.started = true
				go a.writer()
			}
			a.mu.Unlock()
			switch {
			case n >= 4*batchMax: // the writer is behind: the caller writes, and so waits
				return a.flush()
			case n >= batchMax:
				select {
				case a.wake <- struct{}{}:
				default:
				}
			}
			return nil
		}
		a.mu.Unlock()
	}
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
	if err := a.flush(); err != nil { // read your writes: the queued reads first
		return nil, 0, err
	}
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
