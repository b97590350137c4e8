package webhook

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cove/internal/kv"
)

// scanCounter counts the scans of a key prefix made in read transactions.
type scanCounter struct {
	kv.DB
	prefix string
	n      atomic.Int64
}

func (c *scanCounter) View(ctx context.Context, fn func(kv.Txn) error) error {
	return c.DB.View(ctx, func(txn kv.Txn) error { return fn(countingTxn{txn, c}) })
}

type countingTxn struct {
	kv.Txn
	c *scanCounter
}

func (t countingTxn) Scan(prefix []byte, opts kv.ScanOptions, fn func(k, v []byte) (bool, error)) error {
	if strings.HasPrefix(string(prefix), t.c.prefix) {
		t.c.n.Add(1)
	}
	return t.Txn.Scan(prefix, opts, fn)
}

// A policy whose queue holds nothing due (a receiver in back-off) is not read again every round
// until its first entry falls due; a new event for it is delivered at once.
func TestQuietQueuesAreNotReadEveryRound(t *testing.T) {
	rc := newReceiver(t)
	rc.fail = func(n int) int {
		if n == 1 {
			return http.StatusServiceUnavailable // the first event's retry is minutes away
		}
		return 0
	}
	db := &scanCounter{DB: openDB(t, t.TempDir())}
	d, pol := slowRetryPolicy(t, db, rc)
	db.prefix = queuePrefix(pol.ID)
	d.Notify(Event{Type: DeleteArtifact, Repo: "team/app", Digest: "sha256:ab"})
	waitFor(t, "the first attempt", func() bool { return len(rc.deliveries()) == 1 })
	waitFor(t, "a round that finds the queue quiet", func() bool {
		d.deliverDue()
		d.mu.Lock()
		defer d.mu.Unlock()
		until, ok := d.idleUntil[pol.ID]
		return ok && until.After(time.Now().Add(time.Minute))
	})
	before := db.n.Load()
	for range 5 {
		d.deliverDue()
	}
	if n := db.n.Load() - before; n != 0 {
		t.Errorf("5 rounds read a quiet queue %d times; want none before its entry is due", n)
	}
	d.Notify(Event{Type: DeleteArtifact, Repo: "team/app", Digest: "sha256:cd"})
	waitFor(t, "the new event's delivery", func() bool { return len(rc.deliveries()) == 2 })
}

// slowRetryPolicy is a dispatcher over db whose retries wait the longest back-off, with one
// policy sending delete events to rc.
func slowRetryPolicy(t *testing.T, db kv.DB, rc *receiver) (*Dispatcher, Policy) {
	t.Helper()
	d, err := New(Config{DB: db, AllowPrivate: true, Backoff: time.Hour, MaxAttempts: 4, Timeout: 2 * time.Second,
		Project:     func(context.Context, string) (int64, bool, error) { return 7, false, nil },
		RepoCreated: func(context.Context, string) time.Time { return time.Time{} },
		FirstTag:    func(context.Context, string, string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	pol, err := d.Policies().Create(context.Background(), 7, "team", Policy{Name: "ci", Enabled: true, EventTypes: []string{DeleteArtifact},
		Targets: []Target{{Address: rc.srv.URL}}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	return d, pol
}
