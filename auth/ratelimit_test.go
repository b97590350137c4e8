package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// syncClock is an injected clock that goroutines may share.
type syncClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *syncClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *syncClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// delays records the waits the limiter asks for, and waits none.
type delays struct {
	mu   sync.Mutex
	seen []time.Duration
}

func (d *delays) sleep(ctx context.Context, w time.Duration) error {
	d.mu.Lock()
	d.seen = append(d.seen, w)
	d.mu.Unlock()
	return ctx.Err()
}

func (d *delays) take() []time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.seen
	d.seen = nil
	return out
}

// limitedService is a Service with an injected clock and the limiter's waits recorded. cost is the
// bcrypt cost of its hashes.
func limitedService(t *testing.T, cost int, audit *Audit) (*Service, *syncClock, *delays) {
	t.Helper()
	clock := &syncClock{now: time.Unix(1_800_000_000, 0)}
	s, err := New(context.Background(), openDB(t), Config{
		AdminPassword: "pw", BcryptCost: cost, KeyDir: t.TempDir(), Now: clock.Now, Audit: audit,
	})
	if err != nil {
		t.Fatal(err)
	}
	d := &delays{}
	s.Identity.limiter.sleep = d.sleep
	return s, clock, d
}

// forgetAll empties the cache of verified passwords: every next login is a cold one.
func forgetAll(s *Service) {
	s.Identity.mu.Lock()
	clear(s.Identity.verified)
	s.Identity.mu.Unlock()
}

// Failures are limited per (account, address): ten wrong passwords lock that address out of
// that account, and only that — the account from other addresses, and other accounts from the
// address, are untouched (docs/SECURITY.md 17).
func TestFailuresAreLimitedPerAccountAndAddress(t *testing.T) {
	ctx := context.Background()
	s, clock, _ := limitedService(t, bcrypt.MinCost, nil)
	if _, err := s.Identity.CreateUser(ctx, User{Name: "alice"}, "Passw0rdAlice"); err != nil {
		t.Fatal(err)
	}
	const guesser, other = "198.51.100.1", "198.51.100.2"
	for i := range pairFailures {
		if _, err := s.Identity.Login(ctx, "admin", fmt.Sprintf("wrong%d", i), guesser); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("guess %d = %v, want ErrBadCredentials", i+1, err)
		}
	}
	tests := []struct {
		name             string
		user, pass, addr string
		want             error
	}{
		{"the right password from the address that failed", "admin", "pw", guesser, ErrTooManyAttempts},
		{"the account from another address", "admin", "pw", other, nil},
		{"another account from the address that failed", "alice", "Passw0rdAlice", guesser, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forgetAll(s)
			if _, err := s.Identity.Login(ctx, tt.user, tt.pass, tt.addr); !errors.Is(err, tt.want) {
				t.Errorf("Login(%q) from %s = %v, want %v", tt.user, tt.addr, err, tt.want)
			}
		})
	}
	var te *TooManyAttemptsError
	if _, err := s.Identity.Login(ctx, "admin", "pw", guesser); !errors.As(err, &te) || te.RetryAfter <= 0 || te.RetryAfter > failureWindow {
		t.Errorf("refusal = %v, want a TooManyAttemptsError with a Retry-After within the window", err)
	}
	clock.Advance(failureWindow)
	forgetAll(s)
	if _, err := s.Identity.Login(ctx, "admin", "pw", guesser); err != nil {
		t.Errorf("the right password once the window has passed = %v", err)
	}
}

// A distributed attack on one account — a few guesses from each of many addresses — gets a
// rising delay, never a lock: the account's owner gets in from an address it never used, and
// waits no longer than maxDelay; from an address it logged in from, it does not wait.
func TestDistributedAttackIsDelayedNotLocked(t *testing.T) {
	ctx := context.Background()
	s, clock, d := limitedService(t, bcrypt.MinCost, nil)
	const addresses, each = 20, pairFailures / 2
	var waits []time.Duration
	for a := range addresses {
		for g := range each {
			_, err := s.Identity.Login(ctx, "admin", fmt.Sprintf("guess%d-%d", a, g), fmt.Sprintf("203.0.113.%d", a))
			if !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("guess from the %dth address = %v, want ErrBadCredentials (a delay, not a refusal)", a+1, err)
			}
			got := d.take()
			if len(got) > 1 {
				t.Fatalf("one guess waited %d times", len(got))
			}
			waits = append(waits, append(got, 0)[0])
		}
		clock.Advance(time.Second)
	}
	for i, w := range waits {
		switch {
		case i < accountFreeFailures && w != 0:
			t.Errorf("guess %d waited %s; the first %d wait nothing", i+1, w, accountFreeFailures)
		case i > 0 && w < waits[i-1]:
			t.Errorf("guess %d waited %s, less than the one before (%s): the delay rises", i+1, w, waits[i-1])
		case w > maxDelay:
			t.Errorf("guess %d waited %s, more than %s", i+1, w, maxDelay)
		}
	}
	if last := waits[len(waits)-1]; last != maxDelay {
		t.Errorf("after %d guesses the delay is %s, want %s", len(waits), last, maxDelay)
	}
	// The owner, from an address it never used: a wait, then in.
	if _, err := s.Identity.Login(ctx, "admin", "pw", "192.0.2.10"); err != nil {
		t.Fatalf("the owner from a clean address during the attack = %v, want in", err)
	}
	if got := d.take(); len(got) != 1 || got[0] > maxDelay {
		t.Errorf("the owner waited %v, want one wait of at most %s", got, maxDelay)
	}
	// From there again, with a cold cache: known, so no wait.
	forgetAll(s)
	if _, err := s.Identity.Login(ctx, "admin", "pw", "192.0.2.10"); err != nil {
		t.Fatalf("the owner again = %v", err)
	}
	if got := d.take(); len(got) != 0 {
		t.Errorf("the owner from an address it logged in from waited %v, want no wait", got)
	}
	// A new guess from a new address still waits.
	s.Identity.Login(ctx, "admin", "guess-from-a-new-address", "203.0.113.250")
	if got := d.take(); len(got) != 1 || got[0] != maxDelay {
		t.Errorf("a guess from a new address waited %v, want %s", got, maxDelay)
	}
}

// An address whose passwords failed for many accounts is slowed, not refused, for every account
// it has not logged in to: a right password from behind the same NAT still gets in, after the
// delay; an account it logged in to before, and other addresses, wait nothing.
func TestSprayingAddressIsSlowed(t *testing.T) {
	ctx := context.Background()
	s, clock, delays := limitedService(t, bcrypt.MinCost, nil)
	if _, err := s.Identity.CreateUser(ctx, User{Name: "alice"}, "Passw0rdAlice"); err != nil {
		t.Fatal(err)
	}
	const sprayer = "198.51.100.66"
	if _, err := s.Identity.Login(ctx, "admin", "pw", sprayer); err != nil { // the admin, behind the same NAT
		t.Fatal(err)
	}
	for i := range sprayAccounts {
		if _, err := s.Identity.Login(ctx, fmt.Sprintf("user%d", i), "guess", sprayer); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("guess for the %dth account = %v, want ErrBadCredentials", i+1, err)
		}
	}
	if d := delays.take(); len(d) != 0 {
		t.Fatalf("the first %d failures waited %v", sprayAccounts, d)
	}
	tests := []struct {
		name             string
		user, pass, addr string
		want             error
		wait             time.Duration
	}{
		{"a new account from the sprayer", "user999", "guess", sprayer, ErrBadCredentials, firstDelay},
		{"a right password from the sprayer, never used there", "alice", "Passw0rdAlice", sprayer, nil, firstDelay},
		{"an account the sprayer logged in to before", "admin", "pw", sprayer, nil, 0},
		{"an account from another address", "alice", "Passw0rdAlice", "198.51.100.67", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forgetAll(s)
			if _, err := s.Identity.Login(ctx, tt.user, tt.pass, tt.addr); !errors.Is(err, tt.want) {
				t.Errorf("Login(%q) from %s = %v, want %v", tt.user, tt.addr, err, tt.want)
			}
			var want []time.Duration
			if tt.wait > 0 {
				want = []time.Duration{tt.wait}
			}
			if got := delays.take(); !slices.Equal(got, want) {
				t.Errorf("waited %v, want %v", got, want)
			}
		})
	}
	// The delay rises with the spray, up to maxDelay.
	for i := range 8 * sprayAccounts {
		s.Identity.Login(ctx, fmt.Sprintf("more%d", i), "guess", sprayer)
	}
	if got := delays.take(); got[len(got)-1] != maxDelay || got[sprayAccounts] <= firstDelay {
		t.Errorf("the delays of a long spray were %v; want rising to %v", got, maxDelay)
	}
	// A spray that goes on across the window's end stays one: no fresh burst of fast guesses.
	clock.Advance(failureWindow - 30*time.Second)
	s.Identity.Login(ctx, "late1", "guess", sprayer)
	delays.take()
	clock.Advance(31 * time.Second)
	s.Identity.Login(ctx, "late2", "guess", sprayer)
	if d := delays.take(); len(d) == 0 || d[0] <= firstDelay {
		t.Errorf("the first guess of a spray going on past its window waited %v, want a raised delay", d)
	}
	// A spray that stopped for a whole window is over.
	clock.Advance(failureWindow + time.Minute)
	forgetAll(s)
	if _, err := s.Identity.Login(ctx, "bob", "guess", sprayer); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("once the window has passed = %v, want a plain failure", err)
	}
	if d := delays.take(); len(d) != 0 {
		t.Errorf("once the window has passed, waited %v", d)
	}
}

// Parallel guesses at many accounts from one spraying address cannot outrun the limit: at most
// sprayChecks are checked per delay, and past sprayWaiting attempts waiting, more are refused
// at once, so a flood of connections holds nothing.
func TestParallelSprayCannotOutrunTheLimit(t *testing.T) {
	ctx := context.Background()
	s, _, _ := limitedService(t, bcrypt.MinCost, nil)
	const sprayer = "198.51.100.9"
	for i := range sprayAccounts {
		s.Identity.Login(ctx, fmt.Sprintf("user%d", i), "guess", sprayer)
	}
	// The delays block until released: every attempt admitted past the spray rule waits in it.
	release := make(chan struct{})
	var inDelay atomic.Int32
	s.Identity.limiter.sleep = func(ctx context.Context, d time.Duration) error {
		inDelay.Add(1)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var refused, checked atomic.Int32
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			_, err := s.Identity.Login(ctx, fmt.Sprintf("next%d", i), "guess", sprayer)
			switch {
			case errors.Is(err, ErrTooManyAttempts):
				refused.Add(1)
			case errors.Is(err, ErrBadCredentials):
				checked.Add(1)
			default:
				t.Errorf("Login = %v", err)
			}
		})
	}
	// 100 - sprayWaiting attempts are refused at once; the others wait, sprayChecks of them in
	// their delay.
	deadline := time.Now().Add(10 * time.Second)
	for refused.Load() < 100-sprayWaiting && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	for inDelay.Load() < sprayChecks && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if n := refused.Load(); n != 100-sprayWaiting {
		t.Errorf("%d attempts were refused at once, want %d", n, 100-sprayWaiting)
	}
	if n := inDelay.Load(); n != sprayChecks {
		t.Errorf("%d attempts are in their delay at once, want %d", n, sprayChecks)
	}
	close(release)
	wg.Wait()
	if n := checked.Load(); n != sprayWaiting {
		t.Errorf("%d waiting attempts were checked in the end, want %d", n, sprayWaiting)
	}
}

// Many requests with one account's right secret at once, with a cold credential cache, are
// never refused: from many addresses (a fleet pulling with one robot: 30 of 40 were refused when
// the attempts in flight counted against the account) and from one.
func TestConcurrentRightSecretsWithAColdCache(t *testing.T) {
	ctx := context.Background()
	// A real bcrypt cost, so that the checks overlap.
	s, _, _ := limitedService(t, 8, nil)
	if _, err := s.Policy.CreateProject(ctx, "team", false, "admin"); err != nil {
		t.Fatal(err)
	}
	robot, secret, err := s.CreateRobot(ctx, "team", "ci", []Action{ActionPull}, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		addr func(i int) string
	}{
		{"40 addresses", func(i int) string { return fmt.Sprintf("10.0.0.%d", i) }},
		{"one address", func(int) string { return "10.0.1.1" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forgetAll(s)
			start := make(chan struct{})
			var wg sync.WaitGroup
			var refused atomic.Int32
			for i := range 40 {
				wg.Go(func() {
					<-start
					if _, err := s.Identity.Login(ctx, robot.Name, secret, tc.addr(i)); err != nil {
						refused.Add(1)
						t.Errorf("Login = %v", err)
					}
				})
			}
			close(start)
			wg.Wait()
			if n := refused.Load(); n > 0 {
				t.Errorf("%d of 40 right secrets were refused", n)
			}
		})
	}
}

// Under load, the admin's right-password token requests are never refused: beside a client on
// the same address sending a wrong password for another account twice a second (a pod with a
// stale pull secret), and one sending a wrong password for the admin from another address as
// often. Six minutes of the injected clock, in half-second steps, the admin's requests of a step
// at once, and the credential cache emptied every six seconds, so that the admin's checks are
// cold ones too, each after a dozen failures of each of the others.
func TestRightPasswordUnderLoadIsNeverRefused(t *testing.T) {
	ctx := context.Background()
	audit := NewAudit(openDB(t), 0, nil)
	defer audit.Close()
	s, clock, _ := limitedService(t, bcrypt.MinCost, audit)
	if _, err := s.Policy.CreateProject(ctx, "team", false, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Identity.CreateUser(ctx, User{Name: "ci"}, "Passw0rdCi"); err != nil {
		t.Fatal(err)
	}
	token := func(user, pass, addr string) int {
		form := url.Values{"grant_type": {"password"}, "username": {user}, "password": {pass},
			"service": {"cove"}, "scope": {"repository:team/app:pull,push"}}
		r := httptest.NewRequest(http.MethodPost, TokenPath, strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.RemoteAddr = addr + ":40000"
		w := httptest.NewRecorder()
		s.Tokens.ServeToken(w, r)
		return w.Code
	}
	const (
		office   = "192.0.2.50" // the admin and the stale pod, behind one NAT
		attacker = "203.0.113.7"
		steps    = 720 // 6 minutes: past the failure window
		perStep  = 4
	)
	var admin, staleRefused, attackerRefused int
	codes := map[int]int{}
	for step := range steps {
		if step%12 == 0 {
			forgetAll(s)
		}
		results := make(chan int, perStep)
		var wg sync.WaitGroup
		for range perStep {
			wg.Go(func() { results <- token("admin", "pw", office) })
		}
		wg.Go(func() {
			if token("ci", "stale-secret", office) == http.StatusTooManyRequests {
				staleRefused++
			}
		})
		wg.Go(func() {
			if token("admin", fmt.Sprintf("guess%d", step), attacker) == http.StatusTooManyRequests {
				attackerRefused++
			}
		})
		wg.Wait()
		close(results)
		for c := range results {
			codes[c]++
			admin++
		}
		clock.Advance(500 * time.Millisecond)
	}
	if codes[http.StatusOK] != admin {
		t.Errorf("the admin's %d token requests answered %v, want all 200", admin, codes)
	}
	// The limits held the guesser back; the stale pod's one wrong secret, sent again and again,
	// is no guessing: it is answered wrong, never counted (nor refused).
	if attackerRefused == 0 {
		t.Errorf("the attacker was refused %d times; want it limited", attackerRefused)
	}
	if staleRefused != 0 {
		t.Errorf("the stale pod was refused %d times: its repeated secret was counted as guesses", staleRefused)
	}
}

// The limiter's memory is bounded: a flood of attempts from ever new addresses at ever new
// accounts keeps at most maxTracked entries in each of its maps, and entries whose window has
// passed make room first.
func TestLimiterMemoryIsBounded(t *testing.T) {
	ctx := context.Background()
	clock := &syncClock{now: time.Unix(1_800_000_000, 0)}
	l := newLimiter(clock.Now)
	l.sleep = (&delays{}).sleep
	for i := range maxTracked + maxTracked/4 {
		at, err := l.admit(ctx, fmt.Sprintf("user%d", i), fmt.Sprintf("addr%d", i))
		if err != nil {
			t.Fatalf("admit %d = %v", i, err)
		}
		at.done(outcomeWrong)
	}
	l.mu.Lock()
	sizes := []int{len(l.pairs), len(l.accounts), len(l.addrs)}
	l.mu.Unlock()
	for i, n := range sizes {
		if n > maxTracked {
			t.Errorf("map %d holds %d entries, more than %d", i, n, maxTracked)
		}
	}
	// Once the window has passed, the old entries go first: the new failures are all kept.
	clock.Advance(failureWindow)
	const more = maxTracked / 4
	for i := range more {
		at, err := l.admit(ctx, fmt.Sprintf("late%d", i), fmt.Sprintf("addr-late%d", i))
		if err != nil {
			t.Fatal(err)
		}
		at.done(outcomeWrong)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := 0
	for i := range more {
		if l.pairs[accountKey(fmt.Sprintf("late%d", i))+fmt.Sprintf("addr-late%d", i)] != nil {
			kept++
		}
	}
	if kept != more || len(l.pairs) > maxTracked {
		t.Errorf("after the window: %d pairs, %d of the %d new ones kept", len(l.pairs), kept, more)
	}
}

// Retry-After says when the limit that refused ends, in whole seconds.
func TestRetryAfterSaysWhenTheLimitEnds(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&TooManyAttemptsError{RetryAfter: 90 * time.Second}, "90"},
		{&TooManyAttemptsError{RetryAfter: 1500 * time.Millisecond}, "2"},
		{fmt.Errorf("wrapped: %w", &TooManyAttemptsError{RetryAfter: 4 * time.Minute}), "240"},
		{ErrTooManyAttempts, "300"},
	} {
		if got := RetryAfter(tc.err); got != tc.want {
			t.Errorf("RetryAfter(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// The case: a pod with a stale secret for the admin, on the admin's own address, sends
// it twice a second for four minutes; the admin's right password from that address is never
// refused, and a change of the password that makes the stale secret right lets it in at once.
func TestStaleSecretOnTheSameAddressLocksNothing(t *testing.T) {
	ctx := context.Background()
	s, clock, _ := limitedService(t, bcrypt.MinCost, nil)
	const office = "192.0.2.60"
	for step := range 480 { // four minutes, two a second
		if _, err := s.Identity.Login(ctx, "admin", "Stale-secret1", office); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("stale secret, step %d = %v, want ErrBadCredentials", step, err)
		}
		if step%20 == 0 {
			s.Identity.forget("admin") // the right password is checked again, not only remembered
			if _, err := s.Identity.Login(ctx, "admin", "pw", office); err != nil {
				t.Fatalf("the admin's right password at step %d = %v", step, err)
			}
		}
		clock.Advance(500 * time.Millisecond)
	}
	if err := s.Identity.SetPassword(ctx, "admin", "Stale-secret1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Identity.Login(ctx, "admin", "Stale-secret1", office); err != nil {
		t.Errorf("the secret made right by a password change is refused: %v", err)
	}
}
