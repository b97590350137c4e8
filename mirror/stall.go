package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
)

// errUpstreamStalled means an upstream sent next to nothing for its whole time budget: no answer,
// or under minProgress bytes of a body that had started (docs/SECURITY.md 12: stalled upstreams
// cannot pin resources).
var errUpstreamStalled = errors.New("the upstream sent (next to) nothing for its time budget")

// minProgress is what an upstream body must bring in each time budget (10 s by default: 6.4
// KB/s): an upstream that trickles a byte every few seconds is as stalled as a silent one.
const minProgress = 64 << 10

// stallWatch cuts an upstream exchange that makes too little progress: at the end of each time
// budget (idle), unless minProgress bytes arrived in it, it cancels the context of the request
// (so a hung connect, token exchange, header wait or body read all return), and the body then
// reads errUpstreamStalled.
type stallWatch struct {
	idle    time.Duration
	timer   atomic.Pointer[time.Timer]
	got     atomic.Int64 // bytes since the budget began
	stalled atomic.Bool
	done    atomic.Bool // the exchange ended: the watch no longer fires
}

// watchStall returns ctx, to be used for the upstream request, and its watch.
func watchStall(ctx context.Context, idle time.Duration, log *slog.Logger, dgst digest.Digest) (context.Context, *stallWatch, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &stallWatch{idle: idle}
	w.timer.Store(time.AfterFunc(idle, func() {
		if w.done.Load() {
			return
		}
		if got := w.got.Swap(0); got >= minProgress {
			w.timer.Load().Reset(idle)
			return
		}
		w.stalled.Store(true)
		log.Warn("upstream stalled: under 64 KiB in the time budget; the blob's fill is cut", "digest", dgst, "timeout", idle)
		cancel(errUpstreamStalled)
	}))
	return ctx, w, cancel
}

// body wraps an upstream body: reads count its progress; once the watch fired, reads fail with
// errUpstreamStalled.
func (w *stallWatch) body(rc io.ReadCloser, cancel context.CancelCauseFunc) io.ReadCloser {
	return &stallReader{ReadCloser: rc, w: w, cancel: cancel}
}

// stop ends the watch, for an exchange that failed before it had a body.
func (w *stallWatch) stop(cancel context.CancelCauseFunc) {
	w.done.Store(true)
	w.timer.Load().Stop()
	cancel(nil)
}

type stallReader struct {
	io.ReadCloser
	w      *stallWatch
	cancel context.CancelCauseFunc
}

func (r *stallReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.w.got.Add(int64(n))
	if err != nil && err != io.EOF && r.w.stalled.Load() {
		err = fmt.Errorf("%w (%v)", errUpstreamStalled, err)
	}
	return n, err
}

func (r *stallReader) Close() error {
	r.w.done.Store(true)
	r.w.timer.Load().Stop()
	err := r.ReadCloser.Close()
	r.cancel(nil)
	return err
}
