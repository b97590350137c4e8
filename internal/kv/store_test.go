package kv

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"cove/internal/pgtest"
)

// The conformance suite of the metadata seam: both stores must pass it, so that what cove
// writes through DB behaves the same on one node (badger) and in a fleet (PostgreSQL).
func TestBadgerConforms(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(t.TempDir(), "index")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b := NewBadger(db)
	t.Cleanup(func() { b.Close() })
	conformance(t, b)
}

func TestPostgresConforms(t *testing.T) {
	srv := pgtest.Start(t)
	p, err := OpenPostgres(context.Background(), srv.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	conformance(t, p)
}

func conformance(t *testing.T, db DB) {
	ctx := context.Background()
	set := func(kvs ...string) {
		t.Helper()
		if err := db.Update(ctx, func(tx Txn) error {
			for i := 0; i+1 < len(kvs); i += 2 {
				if err := tx.Set([]byte(kvs[i]), []byte(kvs[i+1])); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	scan := func(prefix string, opts ScanOptions, limit int) []string {
		t.Helper()
		var got []string
		if err := db.View(ctx, func(tx Txn) error {
			return tx.Scan([]byte(prefix), opts, func(k, v []byte) (bool, error) {
				if opts.KeysOnly && v != nil {
					return false, fmt.Errorf("KeysOnly scan passed a value for %q", k)
				}
				got = append(got, string(k)+"="+string(v))
				return limit <= 0 || len(got) < limit, nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}

	t.Run("get set delete", func(t *testing.T) {
		set("a/1", "one", "a/2", "two")
		// A nil value is an empty one (markers: links, repositories).
		if err := db.Update(ctx, func(tx Txn) error { return tx.Set([]byte("a/0"), nil) }); err != nil {
			t.Fatalf("Set(nil value) = %v", err)
		}
		if got := scan("a/0", ScanOptions{}, 0); !slices.Equal(got, []string{"a/0="}) {
			t.Errorf("a nil value reads %v", got)
		}
		if err := db.Update(ctx, func(tx Txn) error { return tx.Delete([]byte("a/0")) }); err != nil {
			t.Fatal(err)
		}
		err := db.View(ctx, func(tx Txn) error {
			if v, err := tx.Get([]byte("a/1")); err != nil || string(v) != "one" {
				return fmt.Errorf("Get(a/1) = %q, %v", v, err)
			}
			if _, err := tx.Get([]byte("a/9")); !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("Get(absent) = %v, want ErrNotFound", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(ctx, func(tx Txn) error { return errors.Join(tx.Delete([]byte("a/1")), tx.Delete([]byte("a/none"))) }); err != nil {
			t.Fatal(err)
		}
		if got := scan("a/", ScanOptions{}, 0); !slices.Equal(got, []string{"a/2=two"}) {
			t.Errorf("after delete: %v", got)
		}
	})

	t.Run("a failed update keeps nothing", func(t *testing.T) {
		boom := errors.New("boom")
		err := db.Update(ctx, func(tx Txn) error {
			if err := tx.Set([]byte("b/1"), []byte("x")); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update = %v", err)
		}
		if got := scan("b/", ScanOptions{}, 0); len(got) != 0 {
			t.Errorf("a failed update left %v", got)
		}
	})

	t.Run("scans in order, with bounds", func(t *testing.T) {
		// 600 keys, more than a page of the PostgreSQL scan, with bytes that sort above ASCII.
		var want []string
		err := db.Update(ctx, func(tx Txn) error {
			for i := range 600 {
				k := fmt.Sprintf("c/%04d", i)
				want = append(want, k+"=v")
				if err := tx.Set([]byte(k), []byte("v")); err != nil {
					return err
				}
			}
			return errors.Join(tx.Set([]byte("c"), []byte("outside")), tx.Set([]byte("c0"), []byte("outside")),
				tx.Set([]byte("c/\xff\xff"), []byte("high")), tx.Set([]byte("d/0"), []byte("outside")))
		})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, "c/\xff\xff=high")
		if got := scan("c/", ScanOptions{}, 0); !slices.Equal(got, want) {
			t.Errorf("forward scan: %d keys, first %v, last %v", len(got), got[:min(2, len(got))], got[max(0, len(got)-2):])
		}
		rev := slices.Clone(want)
		slices.Reverse(rev)
		if got := scan("c/", ScanOptions{Reverse: true}, 0); !slices.Equal(got, rev) {
			t.Errorf("reverse scan: %d keys, first %v", len(got), got[:min(2, len(got))])
		}
		if got := scan("c/", ScanOptions{From: []byte("c/0598")}, 0); !slices.Equal(got, want[598:]) {
			t.Errorf("scan from c/0598 = %v", got)
		}
		if got := scan("c/", ScanOptions{From: []byte("c/0002"), Reverse: true}, 0); !slices.Equal(got, []string{"c/0002=v", "c/0001=v", "c/0000=v"}) {
			t.Errorf("reverse scan from c/0002 = %v", got)
		}
		if got := scan("c/", ScanOptions{KeysOnly: true}, 2); !slices.Equal(got, []string{"c/0000=", "c/0001="}) {
			t.Errorf("keys-only scan stopped at 2 = %v", got)
		}
		// A nil prefix: every key (the schema's check for an empty store).
		n := 0
		if err := db.View(ctx, func(tx Txn) error {
			return tx.Scan(nil, ScanOptions{KeysOnly: true}, func(k, _ []byte) (bool, error) { n++; return true, nil })
		}); err != nil || n < len(want)+3 {
			t.Errorf("a scan with a nil prefix saw %d keys (%v)", n, err)
		}
	})

	t.Run("expiring records", func(t *testing.T) {
		err := db.Update(ctx, func(tx Txn) error {
			return errors.Join(
				tx.SetExpiring([]byte("e/past"), []byte("x"), time.Now().Add(-time.Hour)),
				tx.SetExpiring([]byte("e/future"), []byte("y"), time.Now().Add(time.Hour)))
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := scan("e/", ScanOptions{}, 0); !slices.Equal(got, []string{"e/future=y"}) {
			t.Errorf("scan with an expired record = %v", got)
		}
		err = db.View(ctx, func(tx Txn) error {
			_, err := tx.Get([]byte("e/past"))
			return err
		})
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(expired) = %v, want ErrNotFound", err)
		}
	})

	t.Run("conflicting updates", func(t *testing.T) {
		set("n/counter", "0")
		// Each update reads the counter and writes it plus one; retried on conflict, none is lost.
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 5 {
					for try := 0; ; try++ {
						err := db.Update(ctx, func(tx Txn) error {
							v, err := tx.Get([]byte("n/counter"))
							if err != nil {
								return err
							}
							var n int
							fmt.Sscan(string(v), &n)
							return tx.Set([]byte("n/counter"), []byte(fmt.Sprint(n+1)))
						})
						if err == nil {
							break
						}
						if !errors.Is(err, ErrConflict) || try > 200 {
							t.Errorf("update: %v", err)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		if got := scan("n/", ScanOptions{}, 0); !slices.Equal(got, []string{"n/counter=40"}) {
			t.Errorf("after 40 increments: %v (lost updates)", got)
		}
	})

	t.Run("sequences", func(t *testing.T) {
		var mu sync.Mutex
		seen := map[int64]bool{}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 10 {
					n, err := db.NextID(ctx, "users")
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if seen[n] || n < 1 {
						t.Errorf("id %d given twice or below 1", n)
					}
					seen[n] = true
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if n, _ := db.NextID(ctx, "projects"); n != 1 {
			t.Errorf("first id of another sequence = %d, want 1", n)
		}
	})
}

func TestWriteConforms(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(t.TempDir(), "index")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	writeSuite(t, NewBadger(db))
	srv := pgtest.Start(t)
	p, err := OpenPostgres(context.Background(), srv.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	writeSuite(t, p)
}

// writeSuite: Write sets, expires and deletes in bulk, more than one batch.
func writeSuite(t *testing.T, db DB) {
	ctx := context.Background()
	var ops []Op
	for i := range 1200 {
		ops = append(ops, Op{Key: []byte(fmt.Sprintf("w/%04d", i)), Value: []byte("v")})
	}
	ops = append(ops, Op{Key: []byte("w/x"), Value: []byte("gone"), Expires: time.Now().Add(-time.Minute)})
	if err := db.Write(ctx, ops); err != nil {
		t.Fatal(err)
	}
	var dels []Op
	for i := range 1000 {
		dels = append(dels, Op{Key: []byte(fmt.Sprintf("w/%04d", i)), Delete: true})
	}
	if err := db.Write(ctx, dels); err != nil {
		t.Fatal(err)
	}
	n := 0
	db.View(ctx, func(tx Txn) error {
		return tx.Scan([]byte("w/"), ScanOptions{KeysOnly: true}, func(k, _ []byte) (bool, error) { n++; return true, nil })
	})
	if n != 200 {
		t.Errorf("%T: %d keys after 1201 writes (one expired) and 1000 deletes, want 200", db, n)
	}
}

// A read-only badger refuses a sequence with an error, never a panic (badger panics).
func TestBadgerReadOnlySequence(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	ro, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithReadOnly(true))
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	b := NewBadger(ro)
	for range 2 { // twice: a panic once left the lock held, and the second call hung
		if _, err := b.NextID(context.Background(), "users"); !errors.Is(err, ErrReadOnly) {
			t.Errorf("NextID read-only = %v, want ErrReadOnly", err)
		}
	}
}

// Fleet-wide locks and the sweep of expired records on PostgreSQL: a lock is held by one caller
// at a time, whatever the connection; RunOnce skips a job another node runs; Sweep deletes only
// what has expired.
func TestPostgresLocksAndSweep(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.Start(t)
	open := func() *Postgres {
		p, err := OpenPostgres(ctx, srv.DSN)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	a, b := open(), open() // two nodes
	release, ok, err := a.TryLock(ctx, "gc")
	if err != nil || !ok {
		t.Fatalf("TryLock on a free lock = %v, %v", ok, err)
	}
	if _, ok, err := b.TryLock(ctx, "gc"); ok || err != nil {
		t.Errorf("a second node took a held lock: %v, %v", ok, err)
	}
	ran, err := RunOnce(ctx, b, "gc", func() error { t.Error("a job ran under another node's lock"); return nil })
	if ran || err != nil {
		t.Errorf("RunOnce under another node's lock = %v, %v", ran, err)
	}
	if rel, ok, _ := b.TryLock(ctx, "evict"); !ok {
		t.Error("another lock's name was held too")
	} else {
		rel()
	}
	release()
	if ran, err := RunOnce(ctx, b, "gc", func() error { return nil }); !ran || err != nil {
		t.Errorf("RunOnce once the lock is free = %v, %v", ran, err)
	}

	if err := a.Update(ctx, func(tx Txn) error {
		if err := tx.SetExpiring([]byte("sweep/old"), []byte("x"), time.Now().Add(-time.Second)); err != nil {
			return err
		}
		if err := tx.SetExpiring([]byte("sweep/new"), []byte("x"), time.Now().Add(time.Hour)); err != nil {
			return err
		}
		return tx.Set([]byte("sweep/kept"), []byte("x"))
	}); err != nil {
		t.Fatal(err)
	}
	if n, err := a.Sweep(ctx); err != nil || n != 1 {
		t.Errorf("Sweep = %d, %v; want the one expired record", n, err)
	}
	var rows int
	if err := a.pool.QueryRow(ctx, "SELECT count(*) FROM kv WHERE key LIKE 'sweep/%'").Scan(&rows); err != nil || rows != 2 {
		t.Errorf("%d rows left, %v; want 2", rows, err)
	}
}

// A job of RunOnceEvery runs once per interval whichever node offers: the next offers within the
// interval skip it.
func TestRunOnceEvery(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(t.TempDir(), "index")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b := NewBadger(db)
	ctx := context.Background()
	runs := 0
	for range 3 { // three nodes' tickers in the same interval
		if _, err := RunOnceEvery(ctx, b, "gc", time.Hour, func() error { runs++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if runs != 1 {
		t.Errorf("the job ran %d times in one interval, want 1", runs)
	}
	if ran, _ := RunOnceEvery(ctx, b, "gc", time.Nanosecond, func() error { runs++; return nil }); !ran || runs != 2 {
		t.Errorf("once the interval has passed the job did not run again (%v, %d runs)", ran, runs)
	}
}
