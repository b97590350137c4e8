package cache

import (
	"bytes"
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

// gateDB runs onSet before every Set of a read-write transaction (a hook to hold a
// fill's commit between the placing of its file and the commit of its record).
type gateDB struct {
	kv.DB
	onSet func(key []byte)
}

func (g *gateDB) Update(ctx context.Context, fn func(kv.Txn) error) error {
	return g.DB.Update(ctx, func(txn kv.Txn) error { return fn(gateTxn{Txn: txn, onSet: g.onSet}) })
}

type gateTxn struct {
	kv.Txn
	onSet func(key []byte)
}

func (t gateTxn) Set(key, value []byte) error {
	t.onSet(key)
	return t.Txn.Set(key, value)
}

// A push of a digest whose mirrored fill has placed its file (unsynced) but not yet committed its
// record: the push finds the file there, does not place (nor sync) its own, finds no unsynced key
// yet, and is acknowledged; then the fill commits and marks the digest unsynced. A kill -9 before
// the next batch sync makes the next start drop the file of an acknowledged push
// (docs/SECURITY.md 3).
func TestAPushDuringAFillsCommitSurvivesACrash(t *testing.T) {
	ctx := context.Background()
	noBatchSync(t)
	s, reopen := newStore(t)
	if s.syncer == nil {
		t.Skip("fleet mode")
	}
	data := randomBytes(t, 100<<10)
	dgst := digest.FromBytes(data)
	inTxn, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.db = &gateDB{DB: s.db, onSet: func(key []byte) {
		if bytes.HasPrefix(key, []byte(prefixUnsynced)) {
			once.Do(func() { close(inTxn); <-release })
		}
	}}
	filled := make(chan error, 1)
	go func() { filled <- fill(t, s, data, int64(len(data))) }()
	select {
	case <-inTxn:
	case <-time.After(10 * time.Second):
		t.Fatal("the fill never reached its commit")
	}
	if _, err := os.Stat(s.blobPath(dgst)); err != nil {
		t.Fatalf("the fill's file is not placed before its commit: %v", err)
	}
	pushed := make(chan error, 1)
	go func() {
		_, err := s.PutBlob(ctx, "team/app", dgst, bytes.NewReader(data), int64(len(data)))
		pushed <- err
	}()
	select {
	case err := <-pushed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Skip("the push waits for the fill's commit: no race")
	}
	close(release)
	if err := <-filled; err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); s.Fills.busy(dgst) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if hasUnsyncedKey(t, s, dgst) {
		t.Error("an acknowledged push's blob is marked unsynced: the next start after a crash drops it")
	}
	// kill -9 before the batch sync.
	s.syncer.mu.Lock()
	s.syncer.pending = nil
	s.syncer.mu.Unlock()
	s = reopen(crash)
	if _, err := s.StatBlob(ctx, "team/app", dgst); err != nil {
		t.Errorf("the pushed blob after a crash: %v", err)
	}
	if _, err := os.Stat(s.blobPath(dgst)); err != nil {
		t.Errorf("the pushed blob's file after a crash: %v", err)
	}
}

// renameNoReplace never replaces a file placed meanwhile: the second writer's file stays where it
// was, and the first's is kept.
func TestRenameNoReplace(t *testing.T) {
	dir := t.TempDir()
	a, b, dst := dir+"/a", dir+"/b", dir+"/dst"
	for _, f := range []string{a, b} {
		if err := os.WriteFile(f, []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := renameNoReplace(a, dst); !ok || err != nil {
		t.Fatalf("the first rename = %v, %v", ok, err)
	}
	if ok, err := renameNoReplace(b, dst); ok || err != nil {
		t.Fatalf("a rename over an existing file = %v, %v; want false, nil", ok, err)
	}
	if got, _ := os.ReadFile(dst); string(got) != a {
		t.Errorf("dst holds %q, want the first file's", got)
	}
	if _, err := os.Stat(b); err != nil {
		t.Errorf("the second file is gone: %v", err)
	}
}
