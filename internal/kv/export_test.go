package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"cove/internal/pgtest"
)

// An export of either store imports into either, whole: every live record with its expiry, no
// expired one, and sequences that never give a number the source gave.
func TestExportImport(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.Start(t)
	newBadger := func() DB {
		db, err := badger.Open(badger.DefaultOptions(filepath.Join(t.TempDir(), "index")).WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		b := NewBadger(db)
		t.Cleanup(func() { b.Close(); db.Close() })
		return b
	}
	dbs := 0
	newPostgres := func() DB {
		dbs++
		dsn := srv.CreateDB(t, fmt.Sprintf("export%d", dbs))
		p, err := OpenPostgres(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	isSeq := func(key []byte) bool { return bytes.HasPrefix(key, []byte("seq/")) }
	stores := map[string]func() DB{"badger": newBadger, "postgres": newPostgres}
	for _, from := range []string{"badger", "postgres"} {
		for _, to := range []string{"badger", "postgres"} {
			t.Run(from+" to "+to, func(t *testing.T) {
				src, dst := stores[from](), stores[to]()
				later := time.Now().Add(time.Hour).Truncate(time.Second)
				if err := src.Update(ctx, func(tx Txn) error {
					for i := range 1200 { // more than one batch of Write
						if err := tx.Set(fmt.Appendf(nil, "rec/%04d", i), fmt.Appendf(nil, "value %d", i)); err != nil {
							return err
						}
					}
					if err := tx.SetExpiring([]byte("exp/later"), []byte("soon"), later); err != nil {
						return err
					}
					return tx.SetExpiring([]byte("exp/gone"), []byte("x"), time.Now().Add(-time.Second))
				}); err != nil {
					t.Fatal(err)
				}
				var given int64
				for range 5 {
					n, err := src.NextID(ctx, "seq/user")
					if err != nil {
						t.Fatal(err)
					}
					given = n
				}
				var buf bytes.Buffer
				sw, err := NewStreamWriter(&buf)
				if err != nil {
					t.Fatal(err)
				}
				if err := src.(Exporter).Export(ctx, isSeq, sw.Write); err != nil {
					t.Fatal(err)
				}
				if _, err := sw.Close(); err != nil {
					t.Fatal(err)
				}
				whole := buf.Bytes()
				sr, err := NewStreamReader(bytes.NewReader(whole))
				if err != nil {
					t.Fatal(err)
				}
				n, err := dst.(Importer).Import(ctx, sr.Next)
				if err != nil {
					t.Fatal(err)
				}
				if n != 1202 { // 1200 records, the expiring one, the sequence; not the expired one
					t.Errorf("imported %d, want 1202", n)
				}
				if err := dst.View(ctx, func(tx Txn) error {
					count := 0
					err := tx.Scan([]byte("rec/"), ScanOptions{}, func(k, v []byte) (bool, error) {
						if want := fmt.Sprintf("rec/%04d=value %d", count, count); string(k)+"="+string(v) != want {
							return false, fmt.Errorf("record %d: %s=%s, want %s", count, k, v, want)
						}
						count++
						return true, nil
					})
					if err == nil && count != 1200 {
						err = fmt.Errorf("%d records, want 1200", count)
					}
					if err != nil {
						return err
					}
					if _, err := tx.Get([]byte("exp/gone")); !errors.Is(err, ErrNotFound) {
						return fmt.Errorf("the expired record: %v", err)
					}
					return tx.Expiries([]byte("exp/"), func(k []byte, exp time.Time) (bool, error) {
						if string(k) != "exp/later" || !exp.Equal(later) {
							return false, fmt.Errorf("%s expires %v, want exp/later at %v", k, exp, later)
						}
						return true, nil
					})
				}); err != nil {
					t.Fatal(err)
				}
				next, err := dst.NextID(ctx, "seq/user")
				if err != nil {
					t.Fatal(err)
				}
				if next <= given {
					t.Errorf("the sequence gave %d after the import; the source had given %d", next, given)
				}
				// The target now holds records: a second import is refused, nothing written.
				sr, _ = NewStreamReader(bytes.NewReader(whole))
				if _, err := dst.(Importer).Import(ctx, sr.Next); err == nil || !strings.Contains(err.Error(), "holds cove records already") {
					t.Errorf("an import into a store with records: %v", err)
				}
			})
		}
	}
}

// A cut or damaged stream is refused, never taken for a whole one.
func TestStreamCutOrDamaged(t *testing.T) {
	var buf bytes.Buffer
	sw, _ := NewStreamWriter(&buf)
	for i := range 10 {
		sw.Write(Record{Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")})
	}
	sw.Write(Record{Key: []byte("seq"), Sequence: true, Next: 42})
	if _, err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	read := func(b []byte) (int, error) {
		sr, err := NewStreamReader(bytes.NewReader(b))
		if err != nil {
			return 0, err
		}
		n := 0
		for {
			r, err := sr.Next()
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			if err != nil {
				return n, err
			}
			if r.Sequence && r.Next != 42 {
				return n, fmt.Errorf("sequence next %d, want 42", r.Next)
			}
			n++
		}
	}
	whole := buf.Bytes()
	if n, err := read(whole); err != nil || n != 11 {
		t.Fatalf("the whole stream: %d records, %v", n, err)
	}
	for cut := 0; cut < len(whole); cut++ {
		if _, err := read(whole[:cut]); !errors.Is(err, ErrBadStream) {
			t.Fatalf("the stream cut at %d of %d bytes: %v, want ErrBadStream", cut, len(whole), err)
		}
	}
	bad := bytes.Clone(whole)
	bad[len(bad)-1]++ // the count
	if _, err := read(bad); !errors.Is(err, ErrBadStream) {
		t.Errorf("a wrong count: %v", err)
	}
}

// A record badger cannot hold (an empty key, one of badger's own, one over its size) fails the
// import with the record's number and the start of its key, never a dump of all of it.
func TestImportOfABadRecord(t *testing.T) {
	for _, key := range [][]byte{nil, []byte("!badger!head"), bytes.Repeat([]byte("k"), 70000)} {
		db, err := badger.Open(badger.DefaultOptions(filepath.Join(t.TempDir(), "index")).WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		b := NewBadger(db)
		recs := []Record{{Key: []byte("a"), Value: []byte("1")}, {Key: key, Value: []byte("2")}}
		next := func() (Record, error) {
			if len(recs) == 0 {
				return Record{}, io.EOF
			}
			r := recs[0]
			recs = recs[1:]
			return r, nil
		}
		_, err = b.Import(context.Background(), next)
		if !errors.Is(err, ErrBadRecord) || !strings.HasPrefix(err.Error(), "record 2 (key ") || len(err.Error()) > 300 {
			t.Errorf("an import of the key %.20q…: %.400v", key, err)
		}
		b.Close()
		db.Close()
	}
}
