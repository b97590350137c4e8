package webhook

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cove/internal/kv"
)

// queueOnScan queues an event for a policy while a delivery round reads that policy's queue in a
// snapshot taken before the event was written.
type queueOnScan struct {
	kv.DB
	prefix atomic.Pointer[string]
	hook   func()
}

func (c *queueOnScan) View(ctx context.Context, fn func(kv.Txn) error) error {
	return c.DB.View(ctx, func(txn kv.Txn) error { return fn(queueOnScanTxn{txn, c}) })
}

type queueOnScanTxn struct {
	kv.Txn
	c *queueOnScan
}

func (t queueOnScanTxn) Scan(prefix []byte, opts kv.ScanOptions, fn func(k, v []byte) (bool, error)) error {
	if p := t.c.prefix.Load(); p != nil && strings.HasPrefix(string(prefix), *p) && t.c.prefix.CompareAndSwap(p, nil) {
		t.c.hook()
	}
	return t.Txn.Scan(prefix, opts, fn)
}

// An event queued while a round reads its policy's (empty) queue must still be delivered within
// a round or two: the round must not mark the policy idle over an entry it could not see.
func TestEventQueuedDuringARoundIsNotLeftIdle(t *testing.T) {
	rc := newReceiver(t)
	db := &queueOnScan{DB: openDB(t, t.TempDir())}
	d, pol := slowRetryPolicy(t, db, rc)
	db.hook = func() { d.write([]Event{{Type: DeleteArtifact, Repo: "team/app", Digest: "sha256:ab"}}) }
	p := queuePrefix(pol.ID)
	db.prefix.Store(&p)
	waitUpTo(t, 10*time.Second, "a round that reads the queue", func() bool { return db.prefix.Load() == nil })
	start := time.Now()
	waitUpTo(t, 45*time.Second, "the delivery of the event queued during that round", func() bool { return len(rc.deliveries()) == 1 })
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the event queued during a round was delivered %v later; want within a round or two", took.Round(time.Second))
	}
}
