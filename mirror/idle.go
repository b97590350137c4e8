package mirror

import (
	"io"
	"net/http"
	"time"
)

// Blob transfers have no overall deadline — a large layer over a slow link takes as long as it
// takes — but a transfer that makes no progress for the idle timeout is cut, so a stalled client
// cannot pin a connection, a goroutine and a file (SECURITY.md 12). Each read of a request body and
// each segment written to a response pushes the deadline forward.

// segment is how much of a file is handed to sendfile between two deadline extensions.
const segment = 4 << 20

// idleBody returns r's body, with the connection's read deadline renewed before every read.
func idleBody(w http.ResponseWriter, r *http.Request, idle time.Duration) io.Reader {
	if idle <= 0 {
		return r.Body
	}
	return &idleReader{r: r.Body, rc: http.NewResponseController(w), idle: idle}
}

type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
}

func (i *idleReader) Read(p []byte) (int, error) {
	_ = i.rc.SetReadDeadline(time.Now().Add(i.idle))
	return i.r.Read(p)
}

// idleWriter renews the connection's write deadline before every write. Its ReadFrom hands the
// source to the underlying writer in segments, keeping the *os.File inside a single
// *io.LimitedReader so that the kernel's sendfile still does the copy.
type idleWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func newIdleWriter(w http.ResponseWriter, idle time.Duration) http.ResponseWriter {
	if idle <= 0 {
		return w
	}
	return &idleWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: idle}
}

func (w *idleWriter) extend() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.idle)) }

func (w *idleWriter) Write(p []byte) (int, error) {
	w.extend()
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
