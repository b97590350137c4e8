package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cove/internal/kv"
)

func TestAuditRecordsExpireAfterRetention(t *testing.T) {
	db := openDB(t)
	now := time.Unix(1_800_000_000, 0)
	a := NewAudit(db, 48*time.Hour, func() time.Time { return now })
	ctx := context.Background()
	for i, op := range []string{"push", "pull", "delete"} {
		e := Event{Username: "alice", Operation: op, ResourceType: "artifact", Resource: "team/app:v1", Time: now.Add(time.Duration(i) * time.Second)}
		if err := a.Record(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	events, total, err := a.Query(ctx, Filter{}, 1, 2)
	if err != nil || total != 3 || len(events) != 2 || events[0].Operation != "delete" {
		t.Fatalf("Query = %v (%d), %v; want the newest two of three", events, total, err)
	}
	events, _, _ = a.Query(ctx, Filter{Operation: "pull", From: now, To: now.Add(time.Second)}, 1, 10)
	if len(events) != 1 {
		t.Errorf("filtered query = %v", events)
	}
	// Every record carries the retention as its time to live.
	err = db.View(ctx, func(txn kv.Txn) error {
		return txn.Expiries([]byte(keyAudit), func(_ []byte, exp time.Time) (bool, error) {
			if left := time.Until(exp); left < 47*time.Hour || left > 49*time.Hour {
				t.Errorf("record expires in %s, want the 48h retention", left)
			}
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// countAudit counts the records in the index itself, past the queue.
func countAudit(t *testing.T, db kv.DB) int {
	t.Helper()
	n := 0
	if err := db.View(context.Background(), func(txn kv.Txn) error {
		return txn.Scan([]byte(keyAudit), kv.ScanOptions{KeysOnly: true}, func(_, _ []byte) (bool, error) { n++; return true, nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// Reads are written in batches, the same read repeated in a batch as one record with a count; a
// query sees them at once and Close writes what is queued; changes and failures are in the index
// before Record returns.
func TestAuditBatchesReadsNeverChanges(t *testing.T) {
	db := openDB(t)
	a := NewAudit(db, 0, nil)
	ctx := context.Background()
	for _, e := range []Event{
		{Username: "alice", Operation: "push", ResourceType: "artifact", Resource: "team/app:v1"},
		{Username: "alice", Operation: "token", ResourceType: "token", Resource: "team/app", Result: "failure"},
		{Username: "alice", Operation: "delete", ResourceType: "artifact", Resource: "team/app:v1"},
	} {
		if err := a.Record(ctx, e); err != nil {
			t.Fatal(err)
		}
		if n := countAudit(t, db); n == 0 {
			t.Fatalf("%s (%s) was not written before Record returned", e.Operation, e.Result)
		}
	}
	if err := a.Record(ctx, Event{Username: "bob", Operation: "pull", ResourceType: "artifact", Resource: "team/app@sha256:x"}); err != nil {
		t.Fatal(err)
	}
	events, total, err := a.Query(ctx, Filter{Operation: "pull"}, 1, 10)
	if err != nil || total != 1 || events[0].Username != "bob" {
		t.Fatalf("a query right after a pull = %v (%d), %v; want the pull", events, total, err)
	}
	for range 10 {
		if err := a.Record(ctx, Event{Username: "bob", Operation: "token", ResourceType: "token", Resource: "team/app"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Record(ctx, Event{Username: "carol", Operation: "token", ResourceType: "token", Resource: "team/app"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if n := countAudit(t, db); n != 6 {
		t.Fatalf("%d records after Close, want 6: three changes, a pull, bob's ten tokens as one, carol's", n)
	}
	events, _, err = a.Query(ctx, Filter{Operation: "token", Result: "success"}, 1, 10)
	if err != nil || len(events) != 2 {
		t.Fatalf("tokens = %v, %v", events, err)
	}
	for _, e := range events {
		if want := map[string]int{"bob": 10, "carol": 0}[e.Username]; e.Count != want {
			t.Errorf("%s's token record counts %d, want %d", e.Username, e.Count, want)
		}
	}
	// After Close every event is written at once.
	if err := a.Record(ctx, Event{Username: "bob", Operation: "pull", ResourceType: "artifact", Resource: "team/app@sha256:y"}); err != nil {
		t.Fatal(err)
	}
	if n := countAudit(t, db); n != 7 {
		t.Fatalf("%d records, want a pull after Close written at once", n)
	}
}

// One caller's refusals cannot flood the log: past refusalBurst a minute they are counted and
// summed up in one record when the caller's next minute starts; other callers are untouched.
func TestRefusalsAreBoundedPerCaller(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	now := time.Unix(1_800_000_000, 0)
	a := NewAudit(db, 0, func() time.Time { return now })
	defer a.Close()
	refuse := func(user string, i int) {
		if err := a.RecordRefusal(ctx, Event{Username: user, Address: "10.0.0.1", Operation: "push", Resource: fmt.Sprintf("team/r%d", i), Detail: "403 DENIED"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1000 {
		refuse("bob", i)
	}
	refuse("carol", 0)
	if n := countAudit(t, db); n != refusalBurst+1 {
		t.Errorf("%d records after 1000 refusals of one caller and one of another, want %d", n, refusalBurst+1)
	}
	now = now.Add(refusalPeriod)
	refuse("bob", 1000)
	events, _, err := a.Query(ctx, Filter{Username: "bob"}, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	var summed int
	for _, e := range events {
		if e.Count > 1 {
			summed += e.Count
			if e.Result != "failure" || !strings.Contains(e.Detail, "980 more refusals") {
				t.Errorf("summary record = %+v", e)
			}
		}
	}
	if summed != 1000-refusalBurst || len(events) != refusalBurst+2 {
		t.Errorf("bob's records: %d, summed %d; want %d with %d summed", len(events), summed, refusalBurst+2, 1000-refusalBurst)
	}
}

// A log that may not write (a full disk) drops records, counts them, and never fails the caller.
func TestAuditDropsWhatItCannotWrite(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	a := NewAudit(db, 0, nil)
	defer a.Close()
	full := errors.New("disk full")
	var denied atomic.Bool
	a.SetWritable(func() error {
		if denied.Load() {
			return full
		}
		return nil
	})
	denied.Store(true)
	for i := range 5 {
		if err := a.Record(ctx, Event{Username: "x", Operation: "login", Result: "failure", Resource: fmt.Sprint(i)}); err != nil {
			t.Fatalf("Record on a full disk = %v, want the record dropped quietly", err)
		}
	}
	a.Record(ctx, Event{Username: "x", Operation: "pull", Resource: "r"}) // batched
	if err := a.flush(); err != nil {
		t.Fatal(err)
	}
	if n := countAudit(t, db); n != 0 {
		t.Errorf("%d records written on a full disk", n)
	}
	if a.Dropped() != 6 {
		t.Errorf("Dropped = %d, want 6", a.Dropped())
	}
	denied.Store(false)
	a.Record(ctx, Event{Username: "x", Operation: "login", Result: "failure"})
	if n := countAudit(t, db); n != 1 {
		t.Errorf("%d records once space is back, want 1", n)
	}
}
