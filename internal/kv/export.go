package kv

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/jackc/pgx/v5"
)

// Export and import: every live record of a store as one stream, read from one consistent
// snapshot, for cove backup and cove restore. The stream is the same for badger and PostgreSQL,
// so a backup of one node restores into either.

// Record is one record of an export: a key with its value and expiry, or a sequence.
type Record struct {
	Key, Value []byte
	Expires    time.Time // zero: never
	// Sequence marks a sequence named Key; Next is the lowest number it may give next.
	Sequence bool
	Next     int64
}

// Exporter is a store that can export itself.
type Exporter interface {
	// Export calls fn with every live record and sequence of one snapshot, records in key order
	// first. isSequence says which keys of a badger store are sequences (PostgreSQL keeps them
	// apart).
	Export(ctx context.Context, isSequence func(key []byte) bool, fn func(Record) error) error
}

// Importer is a store that can take an export.
type Importer interface {
	// Import writes recs into the store, which must hold no record.
	Import(ctx context.Context, next func() (Record, error)) (int, error)
}

// Export implements Exporter on badger's snapshot at the call.
func (b *Badger) Export(ctx context.Context, isSequence func(key []byte) bool, fn func(Record) error) error {
	return b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			if item.IsDeletedOrExpired() {
				continue
			}
			r := Record{Key: item.KeyCopy(nil)}
			val, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if isSequence(r.Key) {
				if len(val) != 8 {
					return fmt.Errorf("sequence %s: a value of %d bytes, want 8", r.Key, len(val))
				}
				// badger keeps the end of the lease it gave: every number below may be in use.
				r.Sequence, r.Next = true, int64(binary.BigEndian.Uint64(val))
			} else {
				r.Value = val
				if exp := item.ExpiresAt(); exp > 0 {
					r.Expires = time.Unix(int64(exp), 0)
				}
			}
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	})
}

// Import implements Importer: records and sequences alike are badger keys.
func (b *Badger) Import(ctx context.Context, next func() (Record, error)) (int, error) {
	empty := true
	if err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		it.Rewind()
		empty = !it.Valid()
		return nil
	}); err != nil {
		return 0, err
	}
	if !empty {
		return 0, errors.New("the target index holds cove records already: restore into a new data directory")
	}
	wb := b.db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	for {
		r, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err
		}
		if err := ctx.Err(); err != nil {
			return n, err
		}
		e := badger.NewEntry(r.Key, r.Value)
		if r.Sequence {
			v := make([]byte, 8)
			binary.BigEndian.PutUint64(v, uint64(r.Next))
			e = badger.NewEntry(r.Key, v)
		} else if !r.Expires.IsZero() {
			e = e.WithTTL(time.Until(r.Expires))
			if !r.Expires.After(time.Now()) {
				continue // expired since the export
			}
		}
		if err := wb.SetEntry(e); err != nil {
			// badger's refusals of a key (empty, reserved, too long) may dump all of it.
			msg, _, _ := strings.Cut(err.Error(), "\n")
			return n, fmt.Errorf("record %d (key %.60q): %s: %w", n+1, r.Key, strings.TrimSuffix(msg, ":"), ErrBadRecord)
		}
		n++
	}
	if err := wb.Flush(); err != nil {
		return n, err
	}
	return n, b.db.Sync()
}

// Export implements Exporter on one repeatable-read transaction: the records and the sequences
// of the same moment.
func (p *Postgres) Export(ctx context.Context, _ func(key []byte) bool, fn func(Record) error) error {
	return unavailable(pgx.BeginTxFunc(ctx, p.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT key, value, expires_at FROM kv WHERE expires_at IS NULL OR expires_at > now() ORDER BY key")
		if err != nil {
			return err
		}
		for rows.Next() {
			var r Record
			var exp *time.Time
			if err := rows.Scan(&r.Key, &r.Value, &exp); err != nil {
				rows.Close()
				return err
			}
			if exp != nil {
				r.Expires = *exp
			}
			if err := fn(r); err != nil {
				rows.Close()
				return err
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		var recs []Record
		seqs, err := tx.Query(ctx, "SELECT name, value FROM kv_sequence ORDER BY name")
		if err != nil {
			return err
		}
		for seqs.Next() {
			var name string
			var v int64
			if err := seqs.Scan(&name, &v); err != nil {
				seqs.Close()
				return err
			}
			recs = append(recs, Record{Key: []byte(name), Sequence: true, Next: v + 1})
		}
		seqs.Close()
		if err := seqs.Err(); err != nil {
			return err
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}))
}

// Import implements Importer.
func (p *Postgres) Import(ctx context.Context, next func() (Record, error)) (int, error) {
	if err := p.CheckEmpty(ctx); err != nil {
		return 0, errors.New("the target database holds cove records already: restore into an empty database")
	}
	n := 0
	var ops []Op
	for {
		r, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err
		}
		if r.Sequence {
			// PostgreSQL keeps the last number given.
			if _, err := p.pool.Exec(ctx, "INSERT INTO kv_sequence (name, value) VALUES ($1, $2)", string(r.Key), r.Next-1); err != nil {
				return n, unavailable(err)
			}
			n++
			continue
		}
		if !r.Expires.IsZero() && !r.Expires.After(time.Now()) {
			continue
		}
		ops = append(ops, Op{Key: r.Key, Value: r.Value, Expires: r.Expires})
		if len(ops) >= writeBatch {
			if err := p.Write(ctx, ops); err != nil {
				return n, err
			}
			n += len(ops)
			ops = ops[:0]
		}
	}
	if err := p.Write(ctx, ops); err != nil {
		return n, err
	}
	return n + len(ops), nil
}

// The stream format: a header line, then per record a kind byte (recordKV or recordSeq), the
// key and value with their uvarint lengths, and the expiry in Unix seconds (0: never) or the
// sequence's next number as a varint; recordEnd and the record count close it, so that a cut
// stream is told from a whole one.
const (
	streamHeader = "cove-records 1\n"
	recordEnd    = 0
	recordKV     = 1
	recordSeq    = 2
)

// ErrBadRecord is a record of a stream that the store cannot hold: no store wrote it.
var ErrBadRecord = errors.New("no cove writes such a record")

// StreamWriter writes records in the stream format.
type StreamWriter struct {
	w   *bufio.Writer
	n   int64
	buf [binary.MaxVarintLen64]byte
}

// NewStreamWriter starts a stream on w.
func NewStreamWriter(w io.Writer) (*StreamWriter, error) {
	sw := &StreamWriter{w: bufio.NewWriterSize(w, 64<<10)}
	_, err := sw.w.WriteString(streamHeader)
	return sw, err
}

func (sw *StreamWriter) uvarint(v uint64) {
	sw.w.Write(sw.buf[:binary.PutUvarint(sw.buf[:], v)])
}

func (sw *StreamWriter) varint(v int64) {
	sw.w.Write(sw.buf[:binary.PutVarint(sw.buf[:], v)])
}

// Write appends r.
func (sw *StreamWriter) Write(r Record) error {
	kind, tail := byte(recordKV), int64(0)
	if r.Sequence {
		kind, tail = recordSeq, r.Next
	} else if !r.Expires.IsZero() {
		tail = r.Expires.Unix()
	}
	sw.w.WriteByte(kind)
	sw.uvarint(uint64(len(r.Key)))
	sw.w.Write(r.Key)
	sw.uvarint(uint64(len(r.Value)))
	sw.w.Write(r.Value)
	sw.varint(tail)
	sw.n++
	return nil
}

// Close ends the stream (the count of its records) and flushes it; it returns the count.
func (sw *StreamWriter) Close() (int64, error) {
	sw.w.WriteByte(recordEnd)
	sw.uvarint(uint64(sw.n))
	return sw.n, sw.w.Flush()
}

// StreamReader reads a stream written by StreamWriter.
type StreamReader struct {
	r *bufio.Reader
	n int64
}

// ErrBadStream means a stream is not one StreamWriter wrote whole.
var ErrBadStream = errors.New("not a whole stream of cove records (cut, or damaged)")

// NewStreamReader checks the header of the stream r.
func NewStreamReader(r io.Reader) (*StreamReader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head := make([]byte, len(streamHeader))
	if _, err := io.ReadFull(br, head); err != nil || string(head) != streamHeader {
		return nil, ErrBadStream
	}
	return &StreamReader{r: br}, nil
}

// maxRecordPart bounds a key or value read from a stream: no cove record comes near it, and a
// damaged length must not allocate gigabytes.
const maxRecordPart = 64 << 20

// Next returns the next record, io.EOF after the last of a whole stream, ErrBadStream for a cut
// or damaged one.
func (sr *StreamReader) Next() (Record, error) {
	kind, err := sr.r.ReadByte()
	if err != nil {
		return Record{}, ErrBadStream
	}
	if kind == recordEnd {
		count, err := binary.ReadUvarint(sr.r)
		if err != nil || int64(count) != sr.n {
			return Record{}, ErrBadStream
		}
		return Record{}, io.EOF
	}
	if kind != recordKV && kind != recordSeq {
		return Record{}, ErrBadStream
	}
	part := func() ([]byte, error) {
		n, err := binary.ReadUvarint(sr.r)
		if err != nil || n > maxRecordPart {
			return nil, ErrBadStream
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(sr.r, b); err != nil {
			return nil, ErrBadStream
		}
		return b, nil
	}
	var r Record
	if r.Key, err = part(); err != nil {
		return r, err
	}
	if r.Value, err = part(); err != nil {
		return r, err
	}
	tail, err := binary.ReadVarint(sr.r)
	if err != nil {
		return r, ErrBadStream
	}
	switch {
	case kind == recordSeq:
		r.Sequence, r.Next, r.Value = true, tail, nil
	case tail != 0:
		r.Expires = time.Unix(tail, 0)
	}
	sr.n++
	return r, nil
}
