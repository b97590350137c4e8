package bench

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The token scenario: issuance with a remembered password, and with a first check of each.

// scenarioTokens is the token scenario's name. It measures two rates, named so that neither is
// read as the other (#16, point 6). cove remembers a password it checked right for a minute
// (auth's credTTL), so that a pull storm does not run one bcrypt comparison per request: a load
// with one account measures that remembered path. The other load spends one new account per
// request, so that every request is the first check of its password: a bcrypt comparison (or,
// with LDAP, a bind), what a login, or a CI job's first pull with new credentials, costs.
const scenarioTokens = "tokens"

// The token scenario's rates.
const (
	metricTokens      = "cove tokens, remembered password"
	metricTokensFirst = "cove tokens, first check of each password"
)

// tokenURL is the token request of both loads: pull of a mirrored repository.
func (e *env) tokenURL() string {
	return e.cove.url + "/service/token?service=cove&scope=repository:library/bench:pull"
}

// token asks cove for a token with Basic credentials.
func (e *env) token(user, password string) error {
	req, err := http.NewRequest(http.MethodGet, e.tokenURL(), nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(user, password)
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("token for %s: %s", user, resp.Status)
	}
	return nil
}

// tokens: token issuance at the configured concurrency. The remembered load uses the admin's
// Basic credentials, with one request before each load to have the password checked (by bcrypt,
// unless still remembered), so that every request of the load is answered from the remembered
// check. The first-check load uses FirstChecks accounts made for it through the admin API, each
// once: the load ends after its duration or when they are used up, whichever comes first.
func (e *env) tokens(s *Scenario) error {
	var rates, errs, firstRates, firstErrs, firstN, bcryptRates []float64
	for r := range e.cfg.Reps {
		e.progress("tokens %d/%d: remembered password", r+1, e.cfg.Reps)
		if err := e.token(adminName, e.password); err != nil {
			return fmt.Errorf("the token request before the load: %w", err)
		}
		res := load(e.cfg.Concurrency, e.cfg.Duration, func() error { return e.token(adminName, e.password) })
		rates, errs = append(rates, res.PerSec), append(errs, float64(res.Errors))
		if res.Errors > 0 {
			e.progress("tokens: %d requests failed, the first with: %s", res.Errors, res.FirstErr)
		}
		if e.cfg.FirstChecks <= 0 {
			continue
		}
		e.progress("tokens %d/%d: creating %d accounts for first checks", r+1, e.cfg.Reps, e.cfg.FirstChecks)
		users, err := e.createUsers(e.cfg.FirstChecks)
		if err != nil {
			return err
		}
		e.progress("tokens %d/%d: first check of each password", r+1, e.cfg.Reps)
		var next atomic.Int64
		res = load(e.cfg.Concurrency, e.cfg.Duration, func() error {
			i := next.Add(1) - 1
			if i >= int64(len(users)) {
				return errLoadDone
			}
			return e.token(users[i], e.password)
		})
		firstRates, firstErrs = append(firstRates, res.PerSec), append(firstErrs, float64(res.Errors))
		firstN = append(firstN, float64(res.Requests+res.Errors))
		if res.Errors > 0 {
			e.progress("tokens, first checks: %d requests failed, the first with: %s", res.Errors, res.FirstErr)
		}
		e.progress("tokens %d/%d: bcrypt on every core, the limit of first checks", r+1, e.cfg.Reps)
		// At least 2 s: a bcrypt comparison takes tens of milliseconds, and a short count on a
		// shared machine gave --quick limits under cove's own figure.
		rate, err := bcryptRate(max(e.cfg.Duration, 2*time.Second))
		if err != nil {
			return err
		}
		bcryptRates = append(bcryptRates, rate)
	}
	s.Metrics[metricTokens] = summarize("tokens/s", rates)
	s.Metrics["cove tokens errors"] = summarize("failed requests", errs)
	s.Note = "remembered: cove remembers a password checked right for a minute, and one request before each load " +
		"has it checked, so that load measures the remembered path, not bcrypt"
	if len(firstRates) > 0 {
		s.Metrics[metricTokensFirst] = summarize("tokens/s", firstRates)
		s.Metrics["cove tokens errors, first check"] = summarize("failed requests", firstErrs)
		s.Metrics["first-check requests"] = summarize("requests (one account each)", firstN)
		s.Metrics[metricBcrypt] = summarize("comparisons/s", bcryptRates)
		s.setRatio("first check/bcrypt limit", firstRates, bcryptRates)
		s.Note += "; first check: one new account per request, so every request is a bcrypt comparison " +
			"(cove's failed-login limiter does not slow right passwords; it checks at most 8 at a time per address)"
	}
	return nil
}

// metricBcrypt is the limit of first checks: bcrypt comparisons a second on every core at once,
// in the harness's own process, at the cost cove hashes passwords with (bcrypt.DefaultCost).
const metricBcrypt = "bcrypt limit, every core"

// bcryptRate runs bcrypt comparisons at cove's cost on every core for about d and returns how
// many it did a second.
func bcryptRate(d time.Duration) (float64, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte("bench-Passw0rd"), bcrypt.DefaultCost)
	if err != nil {
		return 0, err
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range runtime.NumCPU() {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				_ = bcrypt.CompareHashAndPassword(hash, []byte("bench-Passw0rd"))
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// adminName is cove's built-in administrator.
const adminName = "admin"

// errLoadDone ends a load's worker early, without counting as a request: its work is used up.
var errLoadDone = errors.New("load done")

// createUsers makes n accounts, with the admin's password, through cove's Harbor-shaped admin
// API, a few at a time (each costs a bcrypt hash), and returns their names.
func (e *env) createUsers(n int) ([]string, error) {
	names := make([]string, n)
	for i := range names {
		e.users++
		names[i] = fmt.Sprintf("bench%06d", e.users)
	}
	g := make(chan struct{}, 4)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for _, name := range names {
		g <- struct{}{}
		wg.Go(func() {
			defer func() { <-g }()
			body := fmt.Sprintf(`{"username":%q,"email":"%s@bench.invalid","realname":"bench","password":%q}`, name, name, e.password)
			req, err := http.NewRequest(http.MethodPost, e.cove.url+"/api/v2.0/users", strings.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			req.Header.Set("Content-Type", "application/json")
			req.SetBasicAuth(adminName, e.password)
			resp, err := e.client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				errs <- fmt.Errorf("create user %s: %s: %s", name, resp.Status, strings.TrimSpace(string(msg)))
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return names, nil
}
