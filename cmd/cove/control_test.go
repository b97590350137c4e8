package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cove/internal/kv"
)

// blockingExporter is a store whose export runs until its context ends, and then a little
// longer, as one reading a record when the stop comes.
type blockingExporter struct {
	kv.DB
	started  chan struct{}
	returned atomic.Bool
}

func (b *blockingExporter) Export(ctx context.Context, _ func([]byte) bool, fn func(kv.Record) error) error {
	close(b.started)
	<-ctx.Done()
	time.Sleep(50 * time.Millisecond) // the record being read when the stop came
	b.returned.Store(true)
	return ctx.Err()
}

// The control socket's stop returns only once the exports in flight have ended: the index is
// closed after it, and an export must never read a closed index.
func TestControlStopWaitsForTheExport(t *testing.T) {
	data := t.TempDir()
	meta := &blockingExporter{started: make(chan struct{})}
	stop := serveControl(context.Background(), data, meta, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	read := make(chan error, 1)
	go func() {
		body, err := controlRecords(ctx, data)
		if err == nil {
			sr, serr := kv.NewStreamReader(body)
			for err = serr; err == nil; _, err = sr.Next() {
			}
			body.Close()
		}
		read <- err
	}()
	select {
	case <-meta.started:
	case err := <-read:
		t.Fatalf("the export did not start: %v", err)
	case <-ctx.Done():
		t.Fatal("the export did not start in 10 s")
	}
	stop()
	if !meta.returned.Load() {
		t.Error("stop returned while the export still ran")
	}
	if err := <-read; err == nil {
		t.Error("a stream cut by the stop was read as whole")
	}
}

// oneRecordExporter is a store of one record.
type oneRecordExporter struct{ kv.DB }

func (oneRecordExporter) Export(_ context.Context, _ func([]byte) bool, fn func(kv.Record) error) error {
	return fn(kv.Record{Key: []byte("auth/user/x"), Value: []byte("{}")})
}

// A data directory whose path is too long for a socket address (107 bytes) still gets its control
// socket, reached through the directory's descriptor: an online backup works there too.
func TestControlSocketOfALongPath(t *testing.T) {
	data := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	stop := serveControl(context.Background(), data, oneRecordExporter{}, slog.New(slog.DiscardHandler))
	defer stop()
	fi, err := os.Stat(filepath.Join(data, controlSocket))
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the control socket: %v, %v", fi, err)
	}
	body, err := controlRecords(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	sr, err := kv.NewStreamReader(body)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := sr.Next(); err != nil || string(r.Key) != "auth/user/x" {
		t.Errorf("the record: %q, %v", r.Key, err)
	}
	if _, err := sr.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("the end of the stream: %v", err)
	}
	stop()
	if _, err := os.Lstat(filepath.Join(data, controlSocket)); !os.IsNotExist(err) {
		t.Errorf("the socket is left after the stop (%v)", err)
	}
}
