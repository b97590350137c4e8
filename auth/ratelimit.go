package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Failed logins are limited so that nobody can lock out someone else (docs/SECURITY.md 9 and 17):
//
//   - Per (account, address): pairFailures wrong secrets within failureWindow refuse that
//     address for that account until the window ends, right secret or not. Other addresses and
//     other accounts are untouched: a pod with a stale secret locks out only itself.
//   - Per account, from every address (a distributed attack): past accountFreeFailures in the
//     window, every attempt from an address that has not logged in to the account lately waits
//     a delay that doubles every accountStepFailures failures, up to maxDelay, before its secret
//     is checked. It is a delay, never a refusal: the account's owner gets in from any address.
//   - Per address, over accounts (a spray): once an address's secrets failed for sprayAccounts
//     distinct accounts within the window, its attempts at accounts it has not logged in to
//     lately are slowed, not refused: sprayChecks at a time, each after a delay that starts at
//     firstDelay and doubles every sprayAccounts failures, up to maxDelay: a spray gets about
//     24 guesses a minute once the delay is at its most, and a spray that goes on across the
//     window's end stays one. A right secret from behind the same NAT still gets in, late. Only
//     when sprayWaiting such attempts already wait is one more refused: a flood of connections
//     cannot hold the limiter's memory. Behind a reverse proxy, trusted_proxies makes the
//     address the client's own.
//
// A secret is checked at most once at a time per (account, address), and at most
// addressChecks at a time per address, so parallel guesses cannot outrun the limits; attempts
// in flight are waited for, never counted as failures, so a right secret sent by many clients
// at once with a cold credential cache is never refused.
const (
	pairFailures        = 10
	failureWindow       = 5 * time.Minute
	accountFreeFailures = 10
	accountStepFailures = 10
	firstDelay          = 250 * time.Millisecond
	maxDelay            = 5 * time.Second
	sprayAccounts       = 20
	addressChecks       = 8
	sprayChecks         = 2
	sprayWaiting        = 16
	// knownFor is how long a successful login makes its address known for the account: no
	// delay, and no spray refusal, from there.
	knownFor = 24 * time.Hour
	// maxTracked bounds each of the limiter's maps (pairs, accounts, addresses); past it,
	// expired entries are dropped first, then others not in use.
	maxTracked = 65536
)

// TooManyAttemptsError is the refusal of a login attempt; it matches ErrTooManyAttempts.
type TooManyAttemptsError struct {
	// Reason says which limit refused it.
	Reason string
	// RetryAfter is when the limit ends.
	RetryAfter time.Duration
	// spray is set when the address sprays accounts: the record names no account.
	spray bool
}

func (e *TooManyAttemptsError) Error() string {
	if e.RetryAfter > 0 {
		return "too many failed logins (" + e.Reason + "); try again in " + e.RetryAfter.Round(time.Second).String()
	}
	return "too many failed logins (" + e.Reason + "); try again later"
}

// Is makes errors.Is(err, ErrTooManyAttempts) hold.
func (e *TooManyAttemptsError) Is(target error) bool { return target == ErrTooManyAttempts }

// RetryAfter is the Retry-After value (whole seconds, at least 1) for a refusal of the failed-login
// limits: when its limit ends.
func RetryAfter(err error) string {
	var e *TooManyAttemptsError
	if errors.As(err, &e) && e.RetryAfter > 0 {
		return strconv.Itoa(int((e.RetryAfter + time.Second - 1) / time.Second))
	}
	return "300"
}

// window counts failures from start on, for failureWindow.
type window struct {
	start time.Time
	n     int
}

func (w *window) live(now time.Time) bool { return w.n > 0 && now.Sub(w.start) < failureWindow }

func (w *window) add(now time.Time) {
	if !w.live(now) {
		*w = window{start: now}
	}
	w.n++
}

// pairState is one (account, address).
type pairState struct {
	failed window
	known  time.Time     // a login succeeded from here until then
	slot   chan struct{} // one check at a time
	users  int           // attempts holding or waiting for slot: the entry stays while > 0
}

// knownAt says whether a login succeeded from the pair's address lately.
func (p *pairState) knownAt(now time.Time) bool { return p != nil && now.Before(p.known) }

// addrState is one address.
type addrState struct {
	start    time.Time
	accounts []string      // distinct accounts failed since start, at most sprayAccounts
	failures int           // failures since start
	last     time.Time     // the last failure
	sem      chan struct{} // addressChecks checks at a time
	spraySem chan struct{} // sprayChecks checks at a time of a spraying address
	waiting  int           // attempts of a spraying address waiting for spraySem or a delay
	users    int
}

// spraying: failures for sprayAccounts accounts within the window, or a spray that goes on
// past it (a failure within the last minute).
func (a *addrState) spraying(now time.Time) bool {
	return len(a.accounts) >= sprayAccounts && (now.Sub(a.start) < failureWindow || now.Sub(a.last) < time.Minute)
}

// limiter applies the limits above. It is safe for concurrent use; its memory is bounded by
// maxTracked entries per map (plus the attempts in flight).
type limiter struct {
	now func() time.Time
	// sleep waits d or until ctx is done; the injected clock's timer.
	sleep func(ctx context.Context, d time.Duration) error

	mu sync.Mutex
	// pairs, accounts and addrs are guarded by mu. Keys: account hash, account hash + address,
	// address.
	pairs    map[string]*pairState
	accounts map[string]*window
	addrs    map[string]*addrState
}

func newLimiter(now func() time.Time) *limiter {
	return &limiter{now: now, sleep: sleepCtx,
		pairs: map[string]*pairState{}, accounts: map[string]*window{}, addrs: map[string]*addrState{}}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// accountKey names an account in the limiter: case and surrounding space do not make another
// account, and a name of any length takes 16 bytes.
func accountKey(user string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(user))))
	return string(sum[:16])
}

// attempt is one admitted check; report its outcome with done.
type attempt struct {
	l          *limiter
	acct, addr string
	pair       *pairState
	ad         *addrState
	sem        chan struct{} // the address semaphore held: ad.sem, or ad.spraySem
	// spray is set when the address sprays accounts: its failures are recorded by address.
	spray bool
}

type outcome int

const (
	outcomeNone  outcome = iota // nothing was judged (a directory that could not be asked)
	outcomeWrong                // a wrong secret
	outcomeRight                // a right secret
)

// admit waits for the turn of an attempt at user's secret from addr: for the pair's previous
// check to finish, the delay of an account under attack, and a free check of the address. It
// returns a *TooManyAttemptsError when a limit refuses the attempt, or ctx's error.
func (l *limiter) admit(ctx context.Context, user, addr string) (*attempt, error) {
	at := &attempt{l: l, acct: accountKey(user), addr: addr}
	l.mu.Lock()
	now := l.now()
	// Refused at once, before any entry is made for the attempt: a flood of refused attempts
	// costs the limiter nothing.
	if err := refused(l.pairs[at.acct+addr], now); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	at.pair, at.ad = l.pairLocked(at.acct, addr, now), l.addrLocked(addr, now)
	at.pair.users++
	at.ad.users++
	l.mu.Unlock()
	select {
	case at.pair.slot <- struct{}{}:
	case <-ctx.Done():
		at.leave()
		return nil, ctx.Err()
	}
	l.mu.Lock()
	now = l.now()
	err := refused(at.pair, now) // the pair's previous check may have locked it
	d := l.delayLocked(at, now)
	at.sem = at.ad.sem
	spraying := err == nil && at.ad.spraying(now) && !at.pair.knownAt(now)
	if spraying {
		if at.ad.waiting >= sprayWaiting {
			err = &TooManyAttemptsError{
				Reason:     fmt.Sprintf("failures for %d accounts from this address, and %d attempts waiting", len(at.ad.accounts), at.ad.waiting),
				RetryAfter: maxDelay,
				spray:      true,
			}
		} else {
			at.ad.waiting++
			at.sem, at.spray = at.ad.spraySem, true
			d = max(d, sprayDelay(at.ad))
		}
	}
	l.mu.Unlock()
	if err != nil {
		at.release()
		return nil, err
	}
	// A spraying address's attempt waits its delay holding one of the address's few spray
	// checks: sprayChecks guesses per delay, whatever the number of connections.
	if spraying {
		err = l.waitSpray(ctx, at, d)
	} else if d > 0 {
		err = l.sleep(ctx, d)
	}
	if err != nil {
		at.release()
		return nil, err
	}
	if !spraying {
		select {
		case at.sem <- struct{}{}:
		case <-ctx.Done():
			at.release()
			return nil, ctx.Err()
		}
	}
	l.mu.Lock()
	err = refused(at.pair, l.now())
	l.mu.Unlock()
	if err != nil {
		<-at.sem
		at.release()
		return nil, err
	}
	return at, nil
}

// waitSpray takes one of a spraying address's checks and waits d holding it.
func (l *limiter) waitSpray(ctx context.Context, at *attempt, d time.Duration) error {
	defer func() {
		l.mu.Lock()
		at.ad.waiting--
		l.mu.Unlock()
	}()
	select {
	case at.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := l.sleep(ctx, d); err != nil {
		<-at.sem
		return err
	}
	return nil
}

// sprayDelay is the delay of a spraying address's attempt: firstDelay, doubling every
// sprayAccounts failures past the first sprayAccounts, up to maxDelay.
func sprayDelay(ad *addrState) time.Duration {
	d := firstDelay
	for i := 2 * sprayAccounts; i <= ad.failures && d < maxDelay; i += sprayAccounts {
		d *= 2
	}
	return min(d, maxDelay)
}

// done records the outcome of an admitted attempt and lets the next one in.
func (at *attempt) done(o outcome) {
	l := at.l
	l.mu.Lock()
	now := l.now()
	switch o {
	case outcomeWrong:
		at.pair.failed.add(now)
		w := l.accounts[at.acct]
		if w == nil {
			l.makeRoom(len(l.accounts), func() { l.sweepAccounts(now) })
			w = &window{}
			l.accounts[at.acct] = w
		}
		w.add(now)
		ad := at.ad
		if len(ad.accounts) == 0 || now.Sub(ad.start) >= failureWindow {
			if ad.spraying(now) {
				// A spray that goes on across the window's end stays a spray, at half its
				// failures: the end of a window is no fresh start of fast guesses.
				ad.start, ad.failures = now, ad.failures/2
			} else {
				ad.start, ad.accounts, ad.failures = now, nil, 0
			}
		}
		ad.failures++
		ad.last = now
		if len(ad.accounts) < sprayAccounts && !slices.Contains(ad.accounts, at.acct) {
			ad.accounts = append(ad.accounts, at.acct)
		}
	case outcomeRight:
		// The pair's failures are forgotten; the account's and the address's are not: the
		// owner's login says nothing about the others' guesses.
		at.pair.failed = window{}
		at.pair.known = now.Add(knownFor)
	}
	l.mu.Unlock()
	<-at.sem
	at.release()
}

// release gives the pair's slot back and leaves.
func (at *attempt) release() {
	<-at.pair.slot
	at.leave()
}

func (at *attempt) leave() {
	at.l.mu.Lock()
	at.pair.users--
	at.ad.users--
	at.l.mu.Unlock()
}

// refused says whether the pair's limit refuses an attempt of the pair p now (nil: nothing
// known of it).
func refused(p *pairState, now time.Time) error {
	if p != nil && p.failed.live(now) && p.failed.n >= pairFailures {
		return &TooManyAttemptsError{
			Reason:     fmt.Sprintf("%d failures for this account from this address", p.failed.n),
			RetryAfter: p.failed.start.Add(failureWindow).Sub(now),
		}
	}
	return nil
}

// delayLocked is how long an attempt waits before its check: nothing from an address known for
// the account or while the account has few failures; then firstDelay, doubling every
// accountStepFailures failures, up to maxDelay.
func (l *limiter) delayLocked(at *attempt, now time.Time) time.Duration {
	w := l.accounts[at.acct]
	if w == nil || !w.live(now) || w.n < accountFreeFailures || now.Before(at.pair.known) {
		return 0
	}
	d := firstDelay
	for i := accountFreeFailures + accountStepFailures; i <= w.n && d < maxDelay; i += accountStepFailures {
		d *= 2
	}
	return min(d, maxDelay)
}

func (l *limiter) pairLocked(acct, addr string, now time.Time) *pairState {
	k := acct + addr
	p := l.pairs[k]
	if p == nil {
		l.makeRoom(len(l.pairs), func() { l.sweepPairs(now) })
		p = &pairState{slot: make(chan struct{}, 1)}
		l.pairs[k] = p
	}
	return p
}

func (l *limiter) addrLocked(addr string, now time.Time) *addrState {
	a := l.addrs[addr]
	if a == nil {
		l.makeRoom(len(l.addrs), func() { l.sweepAddrs(now) })
		a = &addrState{sem: make(chan struct{}, addressChecks), spraySem: make(chan struct{}, sprayChecks)}
		l.addrs[addr] = a
	}
	return a
}

// makeRoom runs sweep when a map is full. Sweeps drop expired entries, and then, while the map
// is over nine tenths of maxTracked, entries not in use (in map order, that is at random): a
// flood of new keys costs the limiter memory it bounds, at worst some old failures forgotten.
func (l *limiter) makeRoom(n int, sweep func()) {
	if n >= maxTracked {
		sweep()
	}
}

const sweepTo = maxTracked * 9 / 10

func (l *limiter) sweepPairs(now time.Time) {
	for k, p := range l.pairs {
		if p.users == 0 && !p.failed.live(now) && !now.Before(p.known) {
			delete(l.pairs, k)
		}
	}
	for k, p := range l.pairs {
		if len(l.pairs) <= sweepTo {
			break
		}
		if p.users == 0 {
			delete(l.pairs, k)
		}
	}
}

func (l *limiter) sweepAccounts(now time.Time) {
	for k, w := range l.accounts {
		if !w.live(now) {
			delete(l.accounts, k)
		}
	}
	for k := range l.accounts {
		if len(l.accounts) <= sweepTo {
			break
		}
		delete(l.accounts, k)
	}
}

func (l *limiter) sweepAddrs(now time.Time) {
	for k, a := range l.addrs {
		if a.users == 0 && (len(a.accounts) == 0 || now.Sub(a.start) >= failureWindow) {
			delete(l.addrs, k)
		}
	}
	for k, a := range l.addrs {
		if len(l.addrs) <= sweepTo {
			break
		}
		if a.users == 0 {
			delete(l.addrs, k)
		}
	}
}
