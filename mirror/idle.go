package mirror

import (
	"io"
	"net/http"
	"time"
)

// Transfers have no overall deadline — a large layer over a slow link takes as long as it
// takes — but one that makes no progress for the idle timeout is cut, so a stalled client
// cannot pin a connection, a goroutine and a file (docs/SECURITY.md 12). Each read of a request body and
// each segment written to a response pushes the deadline forward.

// segment is how much of a file is handed to sendfile between two deadline extensions.
const segment = 4 << 20

// idleBody replaces r's body with one that renews the connection's read deadline before every
// read. A read that fails is a *BodyError: the client's fault, not the server's.
func idleBody(w http.ResponseWriter, r *http.Request, idle time.Duration) {
	r.Body = &idleReader{ReadCloser: r.Body, rc: http.NewResponseController(w), idle: idle}
}

type idleReader struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
}

func (i *idleReader) Read(p []byte) (int, error) {
	_ = i.rc.SetReadDeadline(time.Now().Add(i.idle))
	n, err := i.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = &BodyError{Err: err}
	}
	return n, err
}

// BodyError is a failure to read the request body: the client hung up, stalled past the idle
// timeout, or sent less than it announced.
type BodyError struct{ Err error }

func (e *BodyError) Error() string { return "reading request body: " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }

// idleWriter renews the connection's write deadline before every write. Its ReadFrom hands the
// source to the underlying writer in segments, keeping the *os.File inside a single
// *io.LimitedReader so that the kernel's sendfile still does the copy.
type idleWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	idle    time.Duration
	written int // bytes of Write calls so far
}

// smallAnswer is how many bytes of an answer need no write deadline: they fit the socket's send
// buffer (16 KiB at least) whether the client reads or not, so writing them cannot stall. A
// cached manifest is answered without touching the connection's deadline.
const smallAnswer = 8 << 10

func newIdleWriter(w http.ResponseWriter, idle time.Duration) http.ResponseWriter {
	return &idleWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: idle}
}

func (w *idleWriter) extend() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.idle)) }

func (w *idleWriter) Write(p []byte) (int, error) {
	if w.written += len(p); w.written > smallAnswer {
		w.extend()
	}
	return w.ResponseWriter.Write(p)
}

func (w *idleWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{w}, src)
	}
	inner, remaining := src, int64(-1)
	if lr, ok := src.(*io.LimitedReader); ok {
		inner, remaining = lr.R, lr.N
		defer func() { lr.N = remaining }()
	}
	var total int64
	for remaining != 0 {
		n := int64(segment)
		if remaining > 0 {
			n = min(n, remaining)
		}
		w.extend()
		got, err := rf.ReadFrom(&io.LimitedReader{R: inner, N: n})
		total += got
		if remaining > 0 {
			remaining -= got
		}
		if err != nil {
			return total, err
		}
		if got < n { // the source ended
			break
		}
	}
	return total, nil
}

func (w *idleWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
