package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// An upstream's health: its circuit breaker and Docker Hub's pull limit as last seen. Both are
// this node's view (each node of a fleet keeps its own), and both are read from what the guard
// sees of every request sent to the upstream.

// The circuit's back-off after a timeout or a refused connection: it doubles while the upstream
// stays down, from minBackoff to maxBackoff. A 429 without a Retry-After opens it for
// defaultRetryAfter; a Retry-After is honoured up to maxRetryAfter (Docker Hub's window).
const (
	minBackoff        = 2 * time.Second
	maxBackoff        = time.Minute
	defaultRetryAfter = time.Minute
	maxRetryAfter     = 6 * time.Hour
	maxThrottle       = 5 * time.Minute // a 429 that is not the pull limit holds requests at most this long
	maxWindow         = 7 * 24 * time.Hour
	// defaultWindow is the pull limit's window when the upstream gives none (Docker Hub's).
	defaultWindow = 6 * time.Hour
)

// Why a circuit is open.
const (
	downTimeout     = "upstream-timeout"     // no answer within the upstream's time budget
	downUnreachable = "upstream-unreachable" // the connection was refused, or the host not found
	downPullLimit   = "pull-limit"           // a 429 of Docker Hub's pull limit
	downThrottled   = "throttled"            // a 429 that is not the pull limit
)

// breaker is an upstream's circuit. Closed, every request goes out. A timeout or a refused
// connection opens it for a back-off; a 429 until its Retry-After. Open, requests fail at once,
// without the network. Once the time is up, one request goes out as a probe (the others still fail
// at once): its success closes the circuit, its failure opens it again for twice as long.
type breaker struct {
	mu       sync.Mutex
	until    time.Time     // open until then; zero when closed
	probe    time.Time     // a probe is out until then (at most a budget)
	backoff  time.Duration // the last back-off, doubled at the next failure
	reason   string        // why it is open (down*)
	openedAt time.Time
}

// circuitError is the error of a request refused because its upstream's circuit is open.
type circuitError struct {
	reason string
	until  time.Time
}

func (e *circuitError) Error() string {
	return fmt.Sprintf("the upstream is marked down (%s) until %s", e.reason, e.until.UTC().Format(time.RFC3339))
}

// refuse is a *circuitError while requests may not go out (open, or a probe out), else nil.
func (b *breaker) refuse(now time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.until.IsZero() && (now.Before(b.until) || now.Before(b.probe)) {
		return &circuitError{reason: b.reason, until: b.until}
	}
	return nil
}

// admit says whether a request may go out now: nil, or a *circuitError. Once the circuit's time is
// up, it admits one request, the probe, and holds the others back until the probe's answer (or
// budget, should the probe meet nothing that counts).
func (b *breaker) admit(now time.Time, budget time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.until.IsZero() {
		return nil
	}
	if now.Before(b.until) || now.Before(b.probe) {
		return &circuitError{reason: b.reason, until: b.until}
	}
	b.probe = now.Add(budget)
	return nil
}

// fail opens the circuit after a timeout or a refused connection; it reports whether it was
// not open before (so that an opening is logged once, not at each probe that fails).
func (b *breaker) fail(now time.Time, reason string) (opened bool, until time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	opened = !now.Before(b.until)
	b.backoff = min(max(2*b.backoff, minBackoff), maxBackoff)
	b.until, b.probe, b.reason = now.Add(b.backoff), time.Time{}, reason
	if opened {
		b.openedAt = now
	}
	return opened, b.until
}

// limit opens the circuit until a 429's Retry-After.
func (b *breaker) limit(now time.Time, reason string, after time.Duration) (opened bool, until time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	opened = !now.Before(b.until)
	if u := now.Add(after); u.After(b.until) {
		b.until = u
	}
	b.probe, b.reason = time.Time{}, reason
	if opened {
		b.openedAt = now
	}
	return opened, b.until
}

// succeed closes the circuit after an answer; it reports whether it was open. An answer to a
// request sent before a 429 does not close a circuit the 429 opened.
func (b *breaker) succeed(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.until.IsZero() {
		b.backoff = 0
		return false
	}
	if (b.reason == downPullLimit || b.reason == downThrottled) && now.Before(b.until) {
		return false
	}
	b.until, b.probe, b.backoff, b.reason = time.Time{}, time.Time{}, 0, ""
	return true
}

// state is the circuit as the status shows it: open (with why and until when) or closed.
func (b *breaker) state(now time.Time) (open bool, reason string, until, since time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.until.IsZero() {
		return false, "", time.Time{}, time.Time{}
	}
	return now.Before(b.until), b.reason, b.until, b.openedAt
}

// downReason says whether a failed request marks its upstream down, and why: a timeout or a
// failed dial does; a caller that gave up does not, nor does anything else (a TLS error, a
// connection reset), which the next request may well not meet.
func downReason(err error) string {
	if errors.Is(err, context.Canceled) {
		return ""
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return downTimeout
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return downUnreachable
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return downUnreachable
	}
	return ""
}

// budgetKey marks a context whose deadline is an upstream's time budget.
type budgetKey struct{}

// budgeted marks ctx: its deadline is the upstream's time budget, and a request that meets it
// marks the upstream down.
func budgeted(ctx context.Context, cancel context.CancelFunc) (context.Context, context.CancelFunc) {
	return context.WithValue(ctx, budgetKey{}, true), cancel
}

func isBudgeted(ctx context.Context) bool { return ctx.Value(budgetKey{}) != nil }

// retryAfter reads a Retry-After header: seconds or an HTTP date; ok false when absent or bad.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
		return seconds(n, maxRetryAfter), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter), true
	}
	return 0, false
}

// seconds is n seconds, at most limit (n*time.Second would overflow past 292 years).
func seconds(n int64, limit time.Duration) time.Duration {
	if n > int64(limit/time.Second) {
		return limit
	}
	return time.Duration(n) * time.Second
}

// PullLimit is Docker Hub's pull limit as an upstream's manifest answers last told it
// (ratelimit-limit, ratelimit-remaining, docker-ratelimit-source).
type PullLimit struct {
	Limit, Remaining int64 // -1 when never seen
	Window           time.Duration
	Source           string // docker-ratelimit-source: the address or account counted
	Credential       string // the account cove pulls with upstream; "" for anonymous
	Seen             time.Time
	// Reset is when the window is full again at the latest: a ratelimit-reset header when
	// the upstream sends one, else the window's length after the first pull seen counted in it.
	Reset time.Time
}

// pullLimit keeps an upstream's PullLimit.
type pullLimit struct {
	mu      sync.Mutex
	pl      PullLimit
	reserve func(limit int64) int64
}

// observe reads the rate-limit headers of an upstream answer; it reports whether there were any.
func (p *pullLimit) observe(h http.Header, now time.Time) bool {
	rem, remWin, okRem := rateValue(h.Get("Ratelimit-Remaining"))
	lim, limWin, okLim := rateValue(h.Get("Ratelimit-Limit"))
	if !okRem && !okLim {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := p.pl
	if okLim {
		p.pl.Limit = lim
		p.pl.Window = limWin
	}
	if okRem {
		p.pl.Remaining = rem
		if remWin > 0 {
			p.pl.Window = remWin
		}
	}
	if src := h.Get("Docker-Ratelimit-Source"); src != "" {
		p.pl.Source = src
	}
	p.pl.Seen = now
	if p.pl.Window <= 0 {
		p.pl.Window = defaultWindow
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(h.Get("Ratelimit-Reset")), 10, 64); err == nil && n >= 0 {
		p.pl.Reset = now.Add(seconds(n, maxWindow))
	} else if prev.Seen.IsZero() || p.pl.Remaining > prev.Remaining || now.After(prev.Reset) {
		// A new window (or the first look at one): it is full again at the latest a window
		// from now.
		p.pl.Reset = now.Add(p.pl.Window)
	}
	return true
}

// low reports whether the remaining pulls are under the reserve: cached tags are then served
// without asking the upstream, and what is left goes to cold pulls.
func (p *pullLimit) low(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.pl
	if pl.Limit <= 0 || pl.Remaining < 0 || (!pl.Reset.IsZero() && now.After(pl.Reset)) {
		return false
	}
	return pl.Remaining < p.reserve(pl.Limit)
}

func (p *pullLimit) get() PullLimit {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pl
}

// rateValue parses "76;w=21600" (the IETF draft's form, as Docker Hub sends it): the count and
// the window.
func rateValue(v string) (n int64, window time.Duration, ok bool) {
	if v == "" {
		return 0, 0, false
	}
	parts := strings.Split(v, ";")
	n, err := strconv.ParseInt(strings.TrimSpace(parts[0]), 10, 64)
	if err != nil || n < 0 {
		return 0, 0, false
	}
	for _, p := range parts[1:] {
		if w, found := strings.CutPrefix(strings.TrimSpace(p), "w="); found {
			if s, err := strconv.ParseInt(w, 10, 64); err == nil && s > 0 {
				window = seconds(s, maxWindow)
			}
		}
	}
	return n, window, true
}

// ParseReserve reads mirror.upstreams.X.ratelimit_reserve: a count ("20") or a share of the
// limit ("10%"). It returns the reserve for a given limit.
func ParseReserve(s string) (func(limit int64) int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		s = "10%"
	}
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		p, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
		if err != nil || p < 0 || p > 100 {
			return nil, fmt.Errorf("want a count such as 20 or a share such as 10%%, got %q", s)
		}
		return func(limit int64) int64 { return int64(float64(limit) * p / 100) }, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("want a count such as 20 or a share such as 10%%, got %q", s)
	}
	return func(int64) int64 { return n }, nil
}

// pullLimitHit reports whether a 429 is Docker Hub's pull limit rather than a plain throttle:
// its remaining count is 0, or its body says so. The body is peeked (at most 4 KiB) and put back.
func pullLimitHit(resp *http.Response) bool {
	if n, _, ok := rateValue(resp.Header.Get("Ratelimit-Remaining")); ok && n == 0 {
		return true
	}
	if resp.Body == nil {
		return false
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	return err == nil && bytes.Contains(bytes.ToLower(head), []byte("pull rate limit"))
}
