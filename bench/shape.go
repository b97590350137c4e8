package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Shaping makes the generated upstream answer like a registry across a WAN, such as Docker Hub
// and its CDN seen from a company's network (#16, point 5), so that a run can show what users
// see: a cold pull at the upstream's pace, a warm one at the disk's. The zero Shaping is the
// loopback upstream of the standard run.
type Shaping struct {
	// Latency is one round trip: it is added before the first byte of every answer (the
	// request's way there and the answer's way back), and once more on a new connection,
	// before its first request is read (TCP's handshake; a TLS handshake would add one or two
	// more, which the plain-HTTP upstream does not model).
	Latency time.Duration
	// Rate bounds the body of each blob answer, in bytes per second, on its own: per
	// connection, as a CDN limits each download, not the total. 0 is no bound.
	Rate int64
}

// On reports whether the upstream is shaped at all.
func (s Shaping) On() bool { return s.Latency > 0 || s.Rate > 0 }

func (s Shaping) String() string {
	if !s.On() {
		return "none (loopback)"
	}
	var parts []string
	if s.Latency > 0 {
		parts = append(parts, fmt.Sprintf("%v round trip per answer and per new connection", s.Latency))
	}
	if s.Rate > 0 {
		parts = append(parts, FormatRate(s.Rate)+" per connection on blob bodies")
	}
	return strings.Join(parts, ", ")
}

// rateUnits are the units ParseRate knows, in bytes: SI prefixes are powers of ten (MB/s is
// 10⁶ bytes a second, as network rates are written), IEC ones powers of two, and bit rates
// are divided by eight.
var rateUnits = map[string]float64{
	"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
	"kbit": 1e3 / 8, "Mbit": 1e6 / 8, "Gbit": 1e9 / 8,
}

// ParseRate reads a rate such as 100MB/s, 1GB/s, 50MiB/s or 800Mbit/s (the "/s" may be left
// out) and returns bytes per second, which must be at least one.
func ParseRate(s string) (int64, error) {
	v := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	i := strings.IndexFunc(v, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i <= 0 {
		return 0, fmt.Errorf("rate %q: want a number and a unit, such as 100MB/s, 1GB/s, 50MiB/s or 800Mbit/s", s)
	}
	n, err := strconv.ParseFloat(v[:i], 64)
	unit, known := rateUnits[strings.TrimSpace(v[i:])]
	if err != nil || !known {
		return 0, fmt.Errorf("rate %q: want a number and a unit (B, kB, MB, GB, KiB, MiB, GiB, kbit, Mbit or Gbit, per second), such as 100MB/s", s)
	}
	b := n * unit
	if b < 1 || b > math.MaxInt64/2 {
		return 0, fmt.Errorf("rate %q: want between 1 B/s and a few EB/s", s)
	}
	return int64(b), nil
}

// FormatRate writes bytes per second in the units ParseRate reads.
func FormatRate(bps int64) string {
	for _, u := range []struct {
		name string
		n    float64
	}{{"GB/s", 1e9}, {"MB/s", 1e6}, {"kB/s", 1e3}} {
		if float64(bps) >= u.n {
			return strconv.FormatFloat(float64(bps)/u.n, 'f', -1, 64) + u.name
		}
	}
	return strconv.FormatInt(bps, 10) + "B/s"
}

// wait blocks for d, or until ctx is done; it reports whether the whole of d went by.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// pacer is a token bucket on a writer: rate bytes a second, in bursts of at most burst bytes.
// It keeps the schedule from its first write, so that the bound holds over the whole body
// however late each wait wakes (a late wake is made up by the next write going at once), and
// it never sends a byte ahead of its time by more than one burst. Its clock is a field so that
// a test can run it without waiting.
type pacer struct {
	w     io.Writer
	rate  int64 // bytes a second, > 0
	burst int
	now   func() time.Time
	sleep func(time.Duration) bool // false: give up (the client went away)

	start time.Time
	sent  int64
}

func newPacer(ctx context.Context, w io.Writer, rate int64) *pacer {
	return &pacer{w: w, rate: rate, burst: burstFor(rate), now: time.Now, sleep: func(d time.Duration) bool { return wait(ctx, d) }}
}

// burstFor is the pacer's burst at a rate: 1/100 s of it, between 4 KiB and 256 KiB, small
// enough that a small body is paced, large enough that a fast rate does not wake the writer
// too often.
func burstFor(rate int64) int { return int(min(max(rate/100, 4<<10), 256<<10)) }

func (p *pacer) Write(b []byte) (int, error) {
	if p.start.IsZero() {
		p.start = p.now()
	}
	written := 0
	for len(b) > 0 {
		// The bytes sent so far may not leave before sent/rate seconds from the start.
		due := p.start.Add(time.Duration(float64(p.sent) / float64(p.rate) * float64(time.Second)))
		if d := due.Sub(p.now()); d > 0 && !p.sleep(d) {
			return written, context.Canceled
		}
		n := min(len(b), p.burst)
		m, err := p.w.Write(b[:n])
		written += m
		p.sent += int64(m)
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

// pacedWriter is a ResponseWriter whose body goes through a pacer. It has no ReadFrom, so a
// file is copied through a buffer and paced, not handed to sendfile whole.
type pacedWriter struct {
	http.ResponseWriter
	p *pacer
}

func (w *pacedWriter) Write(b []byte) (int, error) { return w.p.Write(b) }

func (w *pacedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// shapedListener delays the first read of every new connection by one round trip: the TCP
// handshake a client across a WAN waits for before its first request goes out.
type shapedListener struct {
	net.Listener
	rtt time.Duration
}

func (l shapedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil || l.rtt <= 0 {
		return c, err
	}
	return &shapedConn{Conn: c, rtt: l.rtt}, nil
}

// shapedConn waits one round trip before its first read; its reads run on the connection's
// own goroutine, so no other connection waits for it.
type shapedConn struct {
	net.Conn
	rtt     time.Duration
	started atomic.Bool
}

func (c *shapedConn) Read(b []byte) (int, error) {
	if !c.started.Swap(true) {
		time.Sleep(c.rtt)
	}
	return c.Conn.Read(b)
}

// ReadFrom keeps the connection's own ReadFrom (sendfile) for bodies that are not paced.
func (c *shapedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite keeps the half-close net/http does before closing a connection on an error.
func (c *shapedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
