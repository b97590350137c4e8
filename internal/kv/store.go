package kv

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"time"
)

// The metadata seam of fleet mode (issue "Fleet mode"): everything cove keeps besides blob files
// is records under ordered byte keys, read and written in transactions — badger on one node,
// PostgreSQL for a fleet. DB is that seam: small, so that a feature written once (through
// cache and auth) works on both, and so that the two implementations can pass one conformance
// suite (store_test.go). It is the subset of badger's API cove uses: point reads and writes,
// writes that expire, ordered scans of a prefix, sequences, and optimistic transactions that
// fail with ErrConflict when another transaction changed what they read.

// DB is a transactional, ordered key-value store. It is safe for concurrent use.
type DB interface {
	// View runs fn in a read-only transaction that sees one consistent state.
	View(ctx context.Context, fn func(Txn) error) error
	// Update runs fn in a read-write transaction and commits it when fn returns nil. It returns
	// ErrConflict when a concurrent transaction changed what fn read: the caller may run it
	// again. Nothing fn wrote is kept unless Update returns nil.
	Update(ctx context.Context, fn func(Txn) error) error
	// NextID returns the next number of the named sequence, from 1; numbers are never given
	// twice, and may be skipped. On badger the name is the sequence's key: it must not be a
	// key of a record.
	NextID(ctx context.Context, name string) (int64, error)
	// Write applies ops outside of any transaction, in batches: bulk work whose parts need not
	// be atomic together (collecting garbage, writing audit batches). Each op is applied at most
	// once; on an error some may have been.
	Write(ctx context.Context, ops []Op) error
	// Close releases the store.
	Close() error
}

// Txn is one transaction. Values handed to callbacks are theirs to keep.
type Txn interface {
	// Get returns the value of key, or ErrNotFound (also for an expired key).
	Get(key []byte) ([]byte, error)
	// Set writes value under key.
	Set(key, value []byte) error
	// SetExpiring writes value under key until expires; after that the key reads as absent.
	SetExpiring(key, value []byte, expires time.Time) error
	// Delete removes key; removing an absent key is no error.
	Delete(key []byte) error
	// Scan calls fn for each live key under prefix in key order (or reverse), starting at
	// opts.From when set (inclusive), until fn returns false or an error.
	Scan(prefix []byte, opts ScanOptions, fn func(key, value []byte) (bool, error)) error
	// Expiries calls fn for each live key under prefix, in key order, with when it expires
	// (the zero time: never), until fn returns false or an error. fn must not use the
	// transaction (on PostgreSQL the rows are still being read).
	Expiries(prefix []byte, fn func(key []byte, expires time.Time) (bool, error)) error
}

// ScanOptions shape a Scan.
type ScanOptions struct {
	// From is the first key to visit (the last, reversed); nil: the start of the prefix.
	From []byte
	// Reverse visits keys from the greatest down.
	Reverse bool
	// KeysOnly passes nil values, for scans that need the keys only (cheaper on both stores).
	KeysOnly bool
}

var (
	// ErrNotFound means the key has no live value.
	ErrNotFound = errors.New("kv: key not found")
	// ErrConflict means a concurrent transaction changed what this one read; run it again.
	ErrConflict = errors.New("kv: transaction conflict; retry")
	// ErrReadOnly means the store was opened read-only.
	ErrReadOnly = errors.New("kv: the store is read-only")
	// ErrUnavailable means the store cannot be reached (PostgreSQL down or unreachable): the
	// request may succeed later.
	ErrUnavailable = errors.New("the metadata database (storage.metadata) cannot be reached")
)

// prefixEnd is the first key after every key starting with prefix, nil when there is none.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Retry runs fn in db.Update until it commits without a conflict (at most retries times, with a
// short random pause between tries, so that transactions that collided do not collide again).
func Retry(ctx context.Context, db DB, fn func(Txn) error) error {
	var err error
	for try := range retries {
		if err = db.Update(ctx, fn); !errors.Is(err, ErrConflict) {
			return err
		}
		select {
		case <-time.After(time.Duration(rand.Int64N(int64(time.Millisecond) << min(try, 5)))):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

// retries bounds Retry.
const retries = 20

// Op is one write of DB.Write: a value under Key (until Expires, when set), or Key's removal.
type Op struct {
	Key, Value []byte
	Expires    time.Time
	Delete     bool
}

// Get decodes the JSON value of key into v; ErrNotFound when there is none.
func Get(txn Txn, key []byte, v any) error {
	b, err := txn.Get(key)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Put writes v as the JSON value of key.
func Put(txn Txn, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return txn.Set(key, b)
}

// Locker is a DB with fleet-wide locks (PostgreSQL); on one node (badger) every job runs there.
type Locker interface {
	TryLock(ctx context.Context, name string) (release func(), ok bool, err error)
}

// RunOnce runs fn unless another node of the fleet holds the lock name (db a Locker), and says
// whether it ran. On a DB without locks it always runs fn.
func RunOnce(ctx context.Context, db DB, name string, fn func() error) (bool, error) {
	l, ok := db.(Locker)
	if !ok {
		return true, fn()
	}
	release, got, err := l.TryLock(ctx, name)
	if err != nil || !got {
		return false, err
	}
	defer release()
	return true, fn()
}

// RunOnceEvery is RunOnce for a job the fleet runs once per interval: under the lock, fn runs only
// when the last run, kept under "kv/jobs/<name>", began interval (less a tenth) ago or more.
// Without it every node's ticker ran the job in turn: N runs an interval.
func RunOnceEvery(ctx context.Context, db DB, name string, interval time.Duration, fn func() error) (bool, error) {
	ran := false
	_, err := RunOnce(ctx, db, name, func() error {
		key := []byte("kv/jobs/" + name)
		now := time.Now().UTC()
		var last time.Time
		if err := db.View(ctx, func(txn Txn) error { return Get(txn, key, &last) }); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if now.Sub(last) < interval-interval/10 {
			return nil // another node ran it this interval
		}
		if err := db.Update(ctx, func(txn Txn) error { return Put(txn, key, now) }); err != nil {
			return err
		}
		ran = true
		return fn()
	})
	return ran, err
}

// Lock takes the fleet-wide lock name and holds it until release, across transactions, when the
// store has such locks (PostgreSQL); on one node (badger) it does nothing.
func Lock(ctx context.Context, db DB, name string) (release func(), err error) {
	if l, ok := db.(interface {
		Lock(ctx context.Context, name string) (func(), error)
	}); ok {
		return l.Lock(ctx, name)
	}
	return func() {}, nil
}

// LockTxn takes the fleet-wide lock name for the rest of txn, when the store has such locks
// (PostgreSQL); on one node (badger) it does nothing: its writers are ordered in the process.
func LockTxn(txn Txn, name string) error {
	if l, ok := txn.(interface{ Lock(string) error }); ok {
		return l.Lock(name)
	}
	return nil
}
