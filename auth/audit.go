package auth

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cove/internal/kv"
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
//
// What a caller can make the log hold is bounded (docs/SECURITY.md 18): every field of a record
// has a size bound (clip), and RecordRefusal and RecordLimited keep at most refusalBurst records
// a minute per caller.
//
// Queries use the time order of the keys: a time range is read from its end back to its start,
// not the whole log; the number of records in the log is kept as they are written and expire, so
// an unfiltered page reads that page only.
type Audit struct {
	db        kv.DB
	now       func() time.Time
	retention time.Duration
	seq       atomic.Uint32
	log       *slog.Logger
	// writable, when set, says whether the index may be written (see SetWritable); dropped
	// counts the records it could not be, droppedLog when that was last logged.
	writable   func() error
	dropped    atomic.Int64
	droppedLog atomic.Int64
	// failures counts the failed writes of the queue since failLog, when they were last logged.
	failures atomic.Int64
	failLog  atomic.Int64

	mu      sync.Mutex // guards pending, started and closing
	pending []*pendingRead
	same    map[string]*pendingRead // the reads queued, by who, where, what and how it went
	started bool                    // the writer runs
	closing bool                    // Close was called: every event is written at once
	wake    chan struct{}
	drainMu sync.Mutex // held while a batch is taken and written, so a flush sees it committed

	refusalMu sync.Mutex
	refusals  map[string]*refusalWindow // by who, from where, what, how: guarded by refusalMu
	swept     time.Time                 // when the windows were last summed up, guarded by refusalMu
	overall   map[string]*overallWindow // every caller's limited records in this minute by kind, guarded by refusalMu

	// countMu is held shared by each write from before its commit until it is counted, and
	// exclusively by a recount, so that a recount sees every record exactly once.
	countMu sync.RWMutex
	liveMu  sync.Mutex
	// live counts the records in the index by the Unix second they expire at (badger's clock),
	// and total sums it; both are guarded by liveMu and valid only while counted is set.
	live    map[int64]int
	total   int
	counted bool

	stop   chan struct{}
	done   chan struct{}
	closed sync.Once
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

// batched says whether an event is a read, written in batches (a summary, which has its count
// already, is not).
func batched(e Event) bool {
	return e.Result == "success" && (e.Operation == "pull" || e.Operation == "token") && e.Count == 0
}

// NewAudit returns the audit log over db, keeping records for retention (zero: 90 days).
func NewAudit(db kv.DB, retention time.Duration, now func() time.Time) *Audit {
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

// SetWritable makes the log ask ok before it writes: when ok answers an error (a disk under its
// free-space floor, a read-only start), records are dropped — counted (Dropped) and logged at
// most once a minute — instead of written into badger's memory-mapped files on a full disk,
// which would kill the process. Call it before the log is used.
func (a *Audit) SetWritable(ok func() error) { a.writable = ok }

// Dropped counts the records not written for want of space since start.
func (a *Audit) Dropped() int64 { return a.dropped.Load() }

// drop reports whether n records must be dropped now, counting and logging them.
func (a *Audit) drop(n int) bool {
	if a.writable == nil {
		return false
	}
	err := a.writable()
	if err == nil {
		return false
	}
	a.dropped.Add(int64(n))
	now := time.Now().UnixNano()
	if last := a.droppedLog.Load(); now-last >= int64(time.Minute) && a.droppedLog.CompareAndSwap(last, now) {
		a.log.Error("audit records dropped: the index cannot be written", "dropped_total", a.dropped.Load(), "err", err)
	}
	return true
}

// Close writes the queued events and the summaries of the refusals not recorded one by one, and
// stops the batch writer.
func (a *Audit) Close() error {
	if err := a.writeSummaries(context.Background(), true); err != nil {
		a.log.Error("writing audit records", "err", err)
	}
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
			a.failed(err)
		}
	}
}

// failed logs a failed write of the queue, at most once a minute (an outage of the database
// made one line every 100 ms), with how many failed since the last line.
func (a *Audit) failed(err error) {
	n := a.failures.Add(1)
	now := time.Now().UnixNano()
	if last := a.failLog.Load(); now-last >= int64(time.Minute) && a.failLog.CompareAndSwap(last, now) {
		a.failures.Add(-n)
		a.log.Error("writing audit records (they stay queued and are written once it works again)", "failures", n, "err", err)
	}
}

// flush writes every queued event in one transaction (or as few as badger allows), and the
// summaries of the refusal windows that have passed.
func (a *Audit) flush() error {
	if err := a.writeSummaries(context.Background(), false); err != nil {
		return err
	}
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
	if a.drop(len(batch)) {
		return nil
	}
	a.countMu.RLock()
	defer a.countMu.RUnlock()
	exp := a.expiry()
	ops := make([]kv.Op, 0, len(batch))
	for _, p := range batch {
		e := p.e
		if e.Count == 1 {
			e.Count = 0
		}
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		ops = append(ops, kv.Op{Key: p.key, Value: b, Expires: time.Unix(int64(exp), 0)})
	}
	err := a.db.Write(context.Background(), ops)
	// A batch that failed may be written in part: then the next query counts the log again.
	a.addCount(exp, len(batch), err != nil)
	return err
}

// expiry is when a record written now expires: after the retention, rounded up to the hour, so
// that the records of an hour expire at once and the count of the live ones needs an entry an
// hour. It is badger's clock, not the injected one, that judges expiry.
func (a *Audit) expiry() uint64 {
	at := time.Now().Unix() + int64(a.retention/time.Second)
	return uint64((at/3600 + 1) * 3600)
}

// addCount adds n records expiring at exp to the count, or, when the write may have made only
// some of them, drops the count (the next query counts the log again).
func (a *Audit) addCount(exp uint64, n int, unsure bool) {
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	switch {
	case !a.counted:
	case unsure:
		a.counted, a.live, a.total = false, nil, 0
	default:
		a.live[int64(exp)] += n
		a.total += n
	}
}

// liveTotal is the number of records in the log: counted once (keys only) at the first query,
// then kept as records are written and expire.
func (a *Audit) liveTotal() (int, error) {
	a.liveMu.Lock()
	ok := a.counted
	a.liveMu.Unlock()
	if !ok {
		if err := a.recount(); err != nil {
			return 0, err
		}
	}
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	now := time.Now().Unix() // badger's clock: a record is gone once ExpiresAt <= now
	for exp, n := range a.live {
		if exp != 0 && exp <= now {
			a.total -= n
			delete(a.live, exp)
		}
	}
	return a.total, nil
}

func (a *Audit) recount() error {
	a.countMu.Lock() // no write is between its commit and its count meanwhile
	defer a.countMu.Unlock()
	live, total := map[int64]int{}, 0
	err := a.db.View(context.Background(), func(txn kv.Txn) error {
		return txn.Expiries([]byte(keyAudit), func(_ []byte, exp time.Time) (bool, error) {
			if exp.IsZero() {
				live[0]++
			} else {
				live[exp.Unix()]++
			}
			total++
			return true, nil
		})
	})
	if err != nil {
		return fmt.Errorf("count the audit log: %w", err)
	}
	a.liveMu.Lock()
	a.live, a.total, a.counted = live, total, true
	a.liveMu.Unlock()
	return nil
}

// Record writes e, stamping its time and id. A failure to write is returned; callers log it.
func (a *Audit) Record(ctx context.Context, e Event) error {
	if e.Time.IsZero() {
		e.Time = a.now().UTC()
	}
	if e.Result == "" {
		e.Result = "success"
	}
	e = bounded(e)
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
			a.startWriterLocked()
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
	if a.drop(1) {
		return nil
	}
	a.countMu.RLock()
	defer a.countMu.RUnlock()
	exp := a.expiry()
	if err := a.db.Update(ctx, func(txn kv.Txn) error { return txn.SetExpiring(key, b, time.Unix(int64(exp), 0)) }); err != nil {
		return err
	}
	a.addCount(exp, 1, false)
	return nil
}

// startWriter starts the batch writer, unless it runs or the log is closing.
func (a *Audit) startWriter() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closing {
		a.startWriterLocked()
	}
}

func (a *Audit) startWriterLocked() {
	if !a.started {
		a.started = true
		go a.writer()
	}
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

// fieldsOnly is f without its time bounds: what a record's value must be read for.
func (f Filter) fieldsOnly() Filter {
	f.From, f.To = time.Time{}, time.Time{}
	return f
}

// needles are byte strings that a record's JSON holds when it can match f: a quick test before
// the record is decoded. Only plain values get one (their JSON is the value in quotes); a field
// name in quotes followed by a colon cannot occur inside a JSON string, where quotes are escaped.
func (f Filter) needles() [][]byte {
	var out [][]byte
	add := func(field, v string, prefix bool) {
		if v == "" || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e || strings.ContainsRune(`"\\<>&`, r) }) {
			return
		}
		n := `"` + field + `":"` + v
		if !prefix {
			n += `"`
		}
		out = append(out, []byte(n))
	}
	add("username", f.Username, false)
	add("operation", f.Operation, false)
	add("resource_type", f.ResourceType, false)
	add("result", f.Result, false)
	add("resource", f.ResourcePrefix, true)
	return out
}

// The time bounds of a query in the keys' nanoseconds.
func nanoBounds(f Filter) (from, to int64) {
	from, to = math.MinInt64, math.MaxInt64
	// UnixNano is defined from 1678 to 2262: past those, the bound bounds nothing.
	if lo := time.Unix(0, math.MinInt64); !f.From.IsZero() && f.From.After(lo) && f.From.Before(time.Unix(0, math.MaxInt64)) {
		from = f.From.UnixNano()
	}
	if hi := time.Unix(0, math.MaxInt64); !f.To.IsZero() && f.To.Before(hi) && f.To.After(time.Unix(0, math.MinInt64)) {
		to = f.To.UnixNano()
	}
	return from, to
}

// Query returns one page of the events that match f, newest first, and how many match in all.
//
// The keys are in time order, so a query reads from f.To back to f.From only. A page with no
// filter at all reads that page only: its total is the count kept of the records. A filter on
// other fields reads the value of every record in the time range (all of them without one),
// with a quick byte test before each is decoded.
func (a *Audit) Query(ctx context.Context, f Filter, page, size int) ([]Event, int, error) {
	if err := a.flush(); err != nil { // read your writes: the queued reads first
		return nil, 0, err
	}
	page, size = max(page, 1), max(size, 0)
	skip := (page - 1) * size
	everything := f == (Filter{})
	fields := f.fieldsOnly()
	byValue := fields != (Filter{})
	needles := fields.needles()
	from, to := nanoBounds(f)
	seek := []byte(keyAudit + "\xff")
	if to != math.MaxInt64 {
		seek = binary.BigEndian.AppendUint64([]byte(keyAudit), uint64(to))
		seek = append(seek, 0xff, 0xff, 0xff, 0xff)
	}
	events := []Event{}
	n := 0 // matches so far
	err := a.db.View(ctx, func(txn kv.Txn) error {
		var pageKeys [][]byte // without a filter on values, the page's values are read last
		read := 0
		err := txn.Scan([]byte(keyAudit), kv.ScanOptions{From: seek, Reverse: true, KeysOnly: !byValue}, func(k, b []byte) (bool, error) {
			if read++; read%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return false, err
				}
			}
			if len(k) != len(keyAudit)+12 {
				return true, nil
			}
			at := int64(binary.BigEndian.Uint64(k[len(keyAudit):]))
			if at > to {
				return true, nil
			}
			if at < from {
				return false, nil
			}
			inPage := n >= skip && len(events)+len(pageKeys) < size
			if byValue {
				for _, nd := range needles {
					if !bytes.Contains(b, nd) {
						return true, nil
					}
				}
				var e Event
				if err := json.Unmarshal(b, &e); err != nil {
					return false, err
				}
				if !fields.match(e) {
					return true, nil
				}
				if inPage {
					events = append(events, e)
				}
			} else if inPage {
				pageKeys = append(pageKeys, k)
			}
			n++
			if everything && len(pageKeys) == size && n >= skip {
				return false, nil // the total is counted apart
			}
			return true, nil
		})
		if err != nil {
			return err
		}
		for _, k := range pageKeys {
			var e Event
			if err := kv.Get(txn, k, &e); err != nil {
				return err
			}
			events = append(events, e)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	if !everything {
		return events, n, nil
	}
	total, err := a.liveTotal()
	return events, max(total, n), err
}
