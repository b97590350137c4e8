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

// errUpstreamStalled means an upstream sent nothing for its whole time budget: no answer, or no
// byte of a body that had started (docs/SECURITY.md 12: stalled upstreams cannot pin resources).
var errUpstreamStalled = errors.New("the upstream sent nothing for its time budget")

// stallWatch cuts an upstream exchange that makes no progress for idle: it cancels the context
// of the request (so a hung connect, token exchange, header wait or body read all return), and
// the body then reads errUpstreamStalled. Each byte that arrives gives the exchange idle more.
type stallWatch struct {
	idle    time.Duration
	timer   *time.Timer
	stalled atomic.Bool
}

// watchStall returns ctx, to be used for the upstream request, and its watch.
func watchStall(ctx context.Context, idle time.Duration, log *slog.Logger, dgst digest.Digest) (context.Context, *stallWatch, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &stallWatch{idle: idle}
	w.timer = time.AfterFunc(idle, func() {
		w.stalled.Store(true)
		log.Warn("upstream stalled: no bytes for the time budget; the blob's fill is cut", "digest", dgst, "timeout", idle)
		cancel(errUpstreamStalled)
	})
	return ctx, w, cancel
}

// body wraps an upstream body: each read that brings bytes resets the watch; once the watch
// fired, reads fail with errUpstreamStalled.
func (w *stallWatch) body(rc io.ReadCloser, cancel context.CancelCauseFunc) io.ReadCloser {
	return &stallReader{ReadCloser: rc, w: w, cancel: cancel}
}

// stop ends the watch, for an exchange that failed before it had a body.
func (w *stallWatch) stop(cancel context.CancelCauseFunc) {
	w.timer.Stop()
	cancel(nil)
}

type stallReader struct {
	io.ReadCloser
	w      *stallWatch
	cancel context.CancelCauseFunc
}

func (r *stallReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if n > 0 && !r.w.stalled.Load() {
		r.w.timer.Reset(r.w.idle)
	}
	if err != nil && err != io.EOF && r.w.stalled.Load() {
		err = fmt.Errorf("%w (%v)", errUpstreamStalled, err)
	}
	return n, err
}

func (r *stallReader) Close() error {
	r.w.timer.Stop()
	err := r.ReadCloser.Close()
	r.cancel(nil)
	return err
}
