package mail

import (
	"context"
	"log/slog"
	"sync"
)

// Outbox runs mail jobs in the background, one at a time, from a bounded queue: a request that
// sends mail answers at once and in the same time whatever the job finds to do (a password
// reset for an address that has no account answers like one that has). It owns its worker:
// Close stops it and waits. It is safe for concurrent use.
type Outbox struct {
	log    *slog.Logger
	jobs   chan func(context.Context)
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// closed is guarded by mu; Submit never sends on a closed queue.
	closed bool
}

// OutboxSize bounds the jobs waiting: beyond it Submit refuses.
const OutboxSize = 256

// NewOutbox starts an Outbox; log (nil: discard) receives what jobs could not be queued.
func NewOutbox(log *slog.Logger) *Outbox {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := &Outbox{log: log.With("component", "mail"), jobs: make(chan func(context.Context), OutboxSize), ctx: ctx, cancel: cancel}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case job := <-o.jobs:
				job(ctx)
			}
		}
	}()
	return o
}

// Submit queues job, which runs under the Outbox's lifetime context. It reports false when the
// queue is full or closed: the job will not run.
func (o *Outbox) Submit(job func(ctx context.Context)) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	select {
	case o.jobs <- job:
		return true
	default:
		o.log.Warn("the mail queue is full: a mail job was dropped", "queued", OutboxSize)
		return false
	}
}

// Close cancels the job running, drops those waiting, and waits for the worker.
func (o *Outbox) Close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.cancel()
	o.wg.Wait()
	if n := len(o.jobs); n > 0 {
		o.log.Warn("shutting down: mail jobs not run", "dropped", n)
	}
}
