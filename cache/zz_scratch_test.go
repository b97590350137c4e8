package cache

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"cove/internal/kv"
	"github.com/dgraph-io/badger/v4"
)

func TestScratchOpen(t *testing.T) {
	dir := os.Getenv("SCRATCH_DIR")
	if dir == "" {
		t.Skip()
	}
	t0 := time.Now()
	bdb, err := OpenDB(filepath.Join(dir, "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	t.Logf("badger open %v", time.Since(t0))
	bdb.Update(func(txn *badger.Txn) error { return txn.Delete([]byte(keyCleanStop)) })
	t0 = time.Now()
	s, err := Open(context.Background(), Config{Dir: dir, DB: kv.NewBadger(bdb)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cache open %v", time.Since(t0))
	s.stop()
}
