package auth

import (
	"sync"
	"time"
)

// Failed logins are limited per user and per address (docs/SECURITY.md 9): past maxFailures in
// failureWindow, further attempts are refused until the window has passed, right password or not.
const (
	maxFailures   = 10
	failureWindow = 5 * time.Minute
	maxTracked    = 100_000 // entries kept at most; older windows are dropped first
)

type failures struct {
	count int
	since time.Time
}

// limiter counts recent failed logins by key ("u:<user>", "a:<address>"). It is safe for
// concurrent use.
type limiter struct {
	now func() time.Time

	mu sync.Mutex
	// seen holds the failure windows, guarded by mu.
	seen map[string]*failures
}

func newLimiter(now func() time.Time) *limiter {
	return &limiter{now: now, seen: map[string]*failures{}}
}

// take counts an attempt for each key, unless one of them has reached the limit already, in
// which case nothing is counted and ErrTooManyAttempts returned.
func (l *limiter) take(keys ...string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, k := range keys {
		if f := l.seen[k]; f != nil && now.Sub(f.since) < failureWindow && f.count >= maxFailures {
			return ErrTooManyAttempts
		}
	}
	if len(l.seen) > maxTracked {
		for k, f := range l.seen {
			if now.Sub(f.since) >= failureWindow {
				delete(l.seen, k)
			}
		}
	}
	for _, k := range keys {
		f := l.seen[k]
		if f == nil || now.Sub(f.since) >= failureWindow {
			f = &failures{since: now}
			l.seen[k] = f
		}
		f.count++
	}
	return nil
}

// giveBack uncounts an attempt that did not fail (a right password, or a directory that could not
// be asked).
func (l *limiter) giveBack(keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		if f := l.seen[k]; f != nil && f.count > 0 {
			f.count--
		}
	}
}

// reset forgets the failures of keys, after a successful login.
func (l *limiter) reset(keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		delete(l.seen, k)
	}
}
