package main

import (
	"context"
	"log/slog"
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
