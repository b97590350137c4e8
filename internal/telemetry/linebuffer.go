package telemetry

import (
	"io"
	"sync"
	"time"
)

// lineBufferMax is how many bytes of lines a LineBuffer holds before it writes them at once.
const lineBufferMax = 64 << 10

// LineBuffer holds whole log lines (a slog handler writes a record in one Write) for at most a
// given time and writes them out together: under a load of tens of thousands of requests a second,
// one write a batch instead of one per access-log line. Flush writes at once: Middleware calls
// it after the line of a 5xx or a cut request, and serve at a stop. It is safe for concurrent use.
type LineBuffer struct {
	w     io.Writer
	every time.Duration

	mu sync.Mutex
	// buf and pending are guarded by mu; pending is a flush scheduled for what buf holds.
	buf     []byte
	pending bool
}

// NewLineBuffer returns a LineBuffer that writes to w what it was given at most every later.
func NewLineBuffer(w io.Writer, every time.Duration) *LineBuffer {
	return &LineBuffer{w: w, every: every}
}

func (b *LineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) >= lineBufferMax {
		return len(p), b.flushLocked()
	}
	if !b.pending {
		b.pending = true
		time.AfterFunc(b.every, func() { _ = b.Flush() })
	}
	return len(p), nil
}

// Flush writes what the buffer holds.
func (b *LineBuffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *LineBuffer) flushLocked() error {
	b.pending = false
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.w.Write(b.buf)
	if cap(b.buf) > 4*lineBufferMax {
		b.buf = nil // one burst of long lines does not keep its memory
	} else {
		b.buf = b.buf[:0]
	}
	return err
}
