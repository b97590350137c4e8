package kv

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Badger is the DB of a single node: cove's embedded index. It does not own the badger database
// (the caller opens and closes it).
type Badger struct {
	db *badger.DB

	mu sync.Mutex
	// seqs holds one badger sequence per name for the life of the store, guarded by mu: a
	// sequence taken per call conflicts under concurrency.
	seqs map[string]*badger.Sequence
}

// NewBadger returns the DB over an open badger database.
func NewBadger(db *badger.DB) *Badger { return &Badger{db: db, seqs: map[string]*badger.Sequence{}} }

// View implements DB.
func (b *Badger) View(ctx context.Context, fn func(Txn) error) error {
	return b.db.View(func(txn *badger.Txn) error { return fn(badgerTxn{txn}) })
}

// Update implements DB.
func (b *Badger) Update(ctx context.Context, fn func(Txn) error) error {
	err := b.db.Update(func(txn *badger.Txn) error { return fn(badgerTxn{txn}) })
	if errors.Is(err, badger.ErrConflict) {
		return ErrConflict
	}
	return err
}

// idBandwidth is how many numbers a badger sequence leases at once.
const idBandwidth = 32

// NextID implements DB.
func (b *Badger) NextID(ctx context.Context, name string) (int64, error) {
	if b.db.Opts().ReadOnly {
		return 0, ErrReadOnly // badger panics on a sequence in read-only mode
	}
	seq, err := b.sequence(name)
	if err != nil {
		return 0, err
	}
	n, err := seq.Next()
	return int64(n) + 1, err
}

func (b *Badger) sequence(name string) (*badger.Sequence, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if seq := b.seqs[name]; seq != nil {
		return seq, nil
	}
	// The sequence's key is its name, as auth's sequences were kept before the seam
	// ("auth/seq/user"): ids go on from where they were.
	seq, err := b.db.GetSequence([]byte(name), idBandwidth)
	if err != nil {
		return nil, err
	}
	b.seqs[name] = seq
	return seq, nil
}

// Write implements DB with a badger write batch.
func (b *Badger) Write(ctx context.Context, ops []Op) error {
	wb := b.db.NewWriteBatch()
	defer wb.Cancel()
	for _, op := range ops {
		var err error
		switch {
		case op.Delete:
			err = wb.Delete(op.Key)
		case !op.Expires.IsZero():
			e := badger.NewEntry(op.Key, op.Value)
			e.ExpiresAt = uint64(max(op.Expires.Unix(), 1))
			err = wb.SetEntry(e)
		default:
			err = wb.Set(op.Key, op.Value)
		}
		if err != nil {
			return err
		}
	}
	return wb.Flush()
}

// Close releases the sequences' unused numbers; the badger database stays open.
func (b *Badger) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for name, seq := range b.seqs {
		errs = append(errs, seq.Release())
		delete(b.seqs, name)
	}
	return errors.Join(errs...)
}

type badgerTxn struct{ txn *badger.Txn }

func (t badgerTxn) Get(key []byte) ([]byte, error) {
	item, err := t.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func (t badgerTxn) Set(key, value []byte) error { return t.txn.Set(key, value) }

func (t badgerTxn) SetExpiring(key, value []byte, expires time.Time) error {
	e := badger.NewEntry(key, value)
	if secs := expires.Unix(); secs > 0 {
		e.ExpiresAt = uint64(secs)
	}
	return t.txn.SetEntry(e)
}

func (t badgerTxn) Delete(key []byte) error { return t.txn.Delete(key) }

func (t badgerTxn) Scan(prefix []byte, opts ScanOptions, fn func(key, value []byte) (bool, error)) error {
	it := t.txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: opts.Reverse, PrefetchValues: !opts.KeysOnly, PrefetchSize: 64})
	defer it.Close()
	start := opts.From
	switch {
	case opts.Reverse && start == nil:
		// The greatest key with the prefix: seeking to the first key after the prefix would stop
		// at once should that key exist (it is outside the prefix).
		start = append(bytes.Clone(prefix), bytes.Repeat([]byte{0xff}, 256)...)
	case !opts.Reverse && bytes.Compare(start, prefix) < 0:
		start = prefix
	}
	for it.Seek(start); it.Valid(); it.Next() {
		item := it.Item()
		key := item.KeyCopy(nil)
		var val []byte
		if !opts.KeysOnly {
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			val = v
		}
		more, err := fn(key, val)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

func (t badgerTxn) Expiries(prefix []byte, fn func(key []byte, expires time.Time) (bool, error)) error {
	it := t.txn.NewIterator(badger.IteratorOptions{Prefix: prefix}) // keys only
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		var exp time.Time
		if at := it.Item().ExpiresAt(); at > 0 {
			exp = time.Unix(int64(at), 0)
		}
		more, err := fn(it.Item().KeyCopy(nil), exp)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

var _ DB = (*Badger)(nil)

// CopyTo copies every live record of b into dst, an empty PostgreSQL store, with its expiry: the
// move of one node's metadata into a fleet (cove migrate). Keys for which sequence says so hold
// badger sequences (a leased count): they become dst's sequences of the same name, continuing
// above every number badger may have handed out. It returns how many records it copied.
func (b *Badger) CopyTo(ctx context.Context, dst *Postgres, sequence func(key []byte) bool) (int, error) {
	if err := dst.CheckEmpty(ctx); err != nil {
		return 0, err
	}
	copied := 0
	var ops []Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		err := dst.Write(ctx, ops)
		copied += len(ops)
		ops = ops[:0]
		return err
	}
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if item.IsDeletedOrExpired() {
				continue
			}
			key := item.KeyCopy(nil)
			val, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if sequence(key) {
				if len(val) != 8 {
					return fmt.Errorf("sequence %s: a value of %d bytes, want 8", key, len(val))
				}
				if _, err := dst.pool.Exec(ctx, "INSERT INTO kv_sequence (name, value) VALUES ($1, $2)",
					string(key), int64(binary.BigEndian.Uint64(val))); err != nil {
					return fmt.Errorf("sequence %s: %w", key, err)
				}
				continue
			}
			op := Op{Key: key, Value: val}
			if exp := item.ExpiresAt(); exp > 0 {
				op.Expires = time.Unix(int64(exp), 0)
			}
			ops = append(ops, op)
			if len(ops) >= 1000 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return copied, err
	}
	return copied, flush()
}
