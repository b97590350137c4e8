package auth

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"cove/internal/kv"
)

// A token request names at most MaxScopes resources, each by a valid name: more, or a name
// outside the OCI grammar, is a 400 invalid_scope that says why (one request asked for 1,700
// scopes, and got a token of 300 KB).
func TestTokenRequestScopesAreBounded(t *testing.T) {
	s, _ := tokenService(t)
	srv := httptest.NewServer(http.HandlerFunc(s.Tokens.ServeToken))
	defer srv.Close()
	many := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("repository:open/app%d:pull", i))
		}
		return out
	}
	long := "open/" + strings.Repeat("a", maxRepoName-len("open/"))
	tests := []struct {
		name   string
		scopes []string
		want   int
		says   string
	}{
		{"MaxScopes", many(MaxScopes), 200, ""},
		{"one too many", many(MaxScopes + 1), 400, "at most 32 scopes"},
		{"one too many, in one parameter", []string{strings.Join(many(MaxScopes+1), " ")}, 400, "at most 32 scopes"},
		{"the same scope many times", []string{strings.Repeat("repository:open/app:pull ", 1700)}, 200, ""},
		{"a name of 255 bytes", []string{"repository:" + long + ":pull"}, 200, ""},
		{"a name of 256 bytes", []string{"repository:" + long + "a:pull"}, 400, "not a repository name"},
		{"upper case", []string{"repository:open/App:pull"}, 400, "not a repository name"},
		{"an empty component", []string{"repository:open//app:pull"}, 400, "not a repository name"},
		{"a leading separator", []string{"repository:-open/app:pull"}, 400, "not a repository name"},
		{"a registry host with a port", []string{"repository:localhost:5000/app:pull"}, 400, "not a repository name"},
		{"a mirrored name", []string{"repository:docker.io/library/alpine:pull"}, 200, ""},
		{"the catalog", []string{"registry:catalog:*"}, 200, ""},
		{"another registry resource", []string{"registry:other:*"}, 400, "catalog"},
		{"a bad resource type", []string{"Repository:open/app:pull"}, 400, "not a resource type"},
		{"no actions", []string{"repository:open/app:"}, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.PostForm(srv.URL, url.Values{"grant_type": {"password"}, "username": {"admin"}, "password": {"pw"},
				"service": {"cove"}, "scope": tt.scopes})
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tt.want || (tt.want == 400 && (body.Error != "invalid_scope" || !strings.Contains(body.Description, tt.says))) {
				t.Errorf("token request = %d %+v, want %d invalid_scope saying %q", resp.StatusCode, body, tt.want, tt.says)
			}
			if len(body.Description) > 1024 {
				t.Errorf("the error is %d bytes long", len(body.Description))
			}
		})
	}
}

// The largest token cove can issue — MaxScopes scopes of the longest names, every action, for
// the admin (all granted) and for the anonymous (all refused) — stays under maxTokenBytes, and
// the audit record of its request is a few kilobytes.
func TestTokenSizeIsBounded(t *testing.T) {
	ctx := context.Background()
	s, _ := tokenService(t)
	var scopes []Scope
	for i := range MaxScopes {
		name := fmt.Sprintf("team/%02d%s", i, strings.Repeat("x", maxRepoName-len("team/")-2))
		scopes = append(scopes, Scope{Type: "repository", Name: name, Actions: []string{"pull", "push", "delete", "*"}})
	}
	for _, who := range []Principal{accountOf(t, s, "admin"), {}} {
		tok, _, access, err := s.Tokens.IssueToken(ctx, who, "cove", scopes)
		if err != nil {
			t.Fatalf("IssueToken(%q) = %v", who.Name, err)
		}
		if len(tok) > maxTokenBytes {
			t.Errorf("the token of %q is %d bytes, more than %d", who.Name, len(tok), maxTokenBytes)
		}
		t.Logf("the largest token of %q: %d bytes", who.Name, len(tok))
		granted, refused := grantSummary(access)
		e := bounded(Event{Username: who.Name, Operation: "token", Resource: granted, Detail: refused})
		if b, _ := json.Marshal(e); len(b) > 2*maxLongField+1024 {
			t.Errorf("the token's audit record is %d bytes", len(b))
		}
	}
	if _, _, _, err := s.Tokens.IssueToken(ctx, Principal{}, "cove", append(scopes, scopes[0])); err == nil {
		t.Error("IssueToken with more than MaxScopes scopes succeeded")
	}
}

func TestClip(t *testing.T) {
	long := strings.Repeat("a", 40<<10)
	tests := []struct {
		name string
		in   string
		n    int
		want string
	}{
		{"short", "alice", 64, "alice"},
		{"exactly n", strings.Repeat("b", 64), 64, strings.Repeat("b", 64)},
		{"long", long, 64, strings.Repeat("a", 64-len("…(40960 bytes)")) + "…(40960 bytes)"},
		{"between characters", strings.Repeat("é", 100), 21, "ééé…(200 bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := clip(tt.in, tt.n)
			if got != tt.want || len(got) > tt.n {
				t.Errorf("clip(%d bytes, %d) = %q (%d bytes), want %q", len(tt.in), tt.n, got, len(got), tt.want)
			}
			if again := clip(got, tt.n); again != got {
				t.Errorf("clip(clip(s)) = %q, want %q", again, got)
			}
		})
	}
}

// auditBytes sums the sizes of the audit records in the index.
func auditBytes(t *testing.T, db kv.DB) int {
	t.Helper()
	n := 0
	if err := db.View(context.Background(), func(txn kv.Txn) error {
		return txn.Scan([]byte(keyAudit), kv.ScanOptions{}, func(k, v []byte) (bool, error) { n += len(k) + len(v); return true, nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// auditedService is a Service with an audit log of its own (in db), on an injected clock.
func auditedService(t *testing.T) (*Service, *Audit, kv.DB, *syncClock) {
	t.Helper()
	db := openDB(t)
	clock := &syncClock{now: time.Unix(1_800_000_000, 0)}
	audit := NewAudit(db, 0, clock.Now)
	t.Cleanup(func() { audit.Close() })
	s, err := New(context.Background(), openDB(t), Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir(),
		Now: clock.Now, Audit: audit, AnonymousMirrorPull: true})
	if err != nil {
		t.Fatal(err)
	}
	return s, audit, db, clock
}

// What an anonymous caller can make the audit log hold is bounded (docs/SECURITY.md 18):
// failed logins with 40 KB user names, rate-limited attempts, a spray over hundreds of names
// and anonymous tokens for ever other scopes make at most refusalBurst records a minute per
// caller, each of a bounded size, and the rest are summed up once the minute has passed.
func TestAnonymousFloodsAreBoundedInTheAuditLog(t *testing.T) {
	ctx := context.Background()
	s, audit, db, clock := auditedService(t)
	s.Identity.limiter.sleep = (&delays{}).sleep
	sum := func(f Filter) (records, count int, events []Event) {
		t.Helper()
		events, records, err := audit.Query(ctx, f, 1, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			count += max(e.Count, 1)
		}
		return records, count, events
	}

	t.Run("failed and rate-limited logins", func(t *testing.T) {
		for range 200 {
			s.Identity.Login(ctx, "admin", "wrong", "198.51.100.1")
		}
		f := Filter{Operation: "login", Result: "failure", Username: "admin"}
		if n, _, _ := sum(f); n != refusalBurst {
			t.Errorf("%d records of 200 failed or refused logins, want %d", n, refusalBurst)
		}
		clock.Advance(refusalPeriod)
		n, count, _ := sum(f)
		if n != refusalBurst+1 || count != 200 {
			t.Errorf("a minute later: %d records counting %d attempts, want %d counting 200", n, count, refusalBurst+1)
		}
	})

	t.Run("a spray of 40 KB names", func(t *testing.T) {
		before := auditBytes(t, db)
		const names = 500
		for i := range names {
			user := fmt.Sprintf("%03d", i) + strings.Repeat("x", 40<<10)
			s.Identity.Login(ctx, user, "guess", "198.51.100.2")
		}
		clock.Advance(refusalPeriod)
		_, _, events := sum(Filter{Operation: "login", Result: "failure", ResourceType: "user"})
		var records, count int
		for _, e := range events {
			if e.Address != "198.51.100.2" {
				continue
			}
			records++
			count += max(e.Count, 1)
			if len(e.Username) > maxFailedUserField || len(e.Resource) > maxFailedUserField {
				t.Errorf("a record holds a name of %d bytes (resource %d)", len(e.Username), len(e.Resource))
			}
		}
		if most := sprayAccounts + refusalBurst + 1; records > most || count != names {
			t.Errorf("%d records of the spray count %d attempts; want at most %d, counting all %d", records, count, most, names)
		}
		if grown := auditBytes(t, db) - before; grown > 100<<10 {
			t.Errorf("the spray grew the audit log by %d bytes", grown)
		}
	})

	// tokens asks for 200 tokens from addr, as user when set, each for other scopes, and checks
	// that refusalBurst records are written at once and one more counts them all a minute later.
	tokens := func(t *testing.T, user, addr string, query func(i int) string) {
		for i := range 200 {
			r := httptest.NewRequest(http.MethodGet, TokenPath+"?service=cove&"+query(i), nil)
			if user != "" {
				r.SetBasicAuth(user, "pw")
			}
			r.RemoteAddr = addr + ":5000"
			w := httptest.NewRecorder()
			s.Tokens.ServeToken(w, r)
			if w.Code != 200 {
				t.Fatalf("token = %d %s", w.Code, w.Body)
			}
		}
		f := Filter{Operation: "token", Username: user}
		if n, _, _ := sum(f); n != refusalBurst {
			t.Errorf("%d records of 200 tokens, want %d", n, refusalBurst)
		}
		clock.Advance(refusalPeriod)
		if n, count, _ := sum(f); n != refusalBurst+1 || count != 200 {
			t.Errorf("a minute later: %d records counting %d tokens, want %d counting 200", n, count, refusalBurst+1)
		}
	}
	t.Run("anonymous tokens", func(t *testing.T) {
		tokens(t, "", "198.51.100.3", func(i int) string { return fmt.Sprintf("scope=repository:library/app%d:pull", i) })
	})
	t.Run("a signed-in client asking tokens for ever other scopes", func(t *testing.T) {
		tokens(t, "admin", "198.51.100.4", func(i int) string {
			scopes := make([]string, 0, 32)
			for j := range 32 {
				scopes = append(scopes, "scope="+url.QueryEscape(fmt.Sprintf("repository:library/%s%d-%d:pull", strings.Repeat("n", 150), i, j)))
			}
			return strings.Join(scopes, "&")
		})
	})
}

// Over all callers the limited records are bounded too: anonymous tokens from 3,000 addresses
// in one minute make at most 2*overallBurst+1 (2,001) records, and every token is counted.
func TestAFloodFromManyAddressesIsBoundedInTheAuditLog(t *testing.T) {
	ctx := context.Background()
	s, audit, _, clock := auditedService(t)
	const addrs, each = 3000, 2
	for i := range addrs {
		for range each {
			r := httptest.NewRequest(http.MethodGet, TokenPath+"?service=cove&scope=repository:library/app:pull", nil)
			r.RemoteAddr = fmt.Sprintf("10.%d.%d.1:5000", i/250, i%250)
			w := httptest.NewRecorder()
			s.Tokens.ServeToken(w, r)
			if w.Code != 200 {
				t.Fatalf("anonymous token = %d %s", w.Code, w.Body)
			}
		}
	}
	// In the same minute, failed logins of another caller are recorded one by one: the flood of
	// tokens does not take their budget (they vanished into the tokens' summary).
	for i := range 9 {
		s.Identity.Login(ctx, "admin", fmt.Sprintf("wrong%d", i), "198.51.100.77")
	}
	clock.Advance(refusalPeriod)
	if err := audit.Close(); err != nil {
		t.Fatal(err)
	}
	if _, n, err := audit.Query(ctx, Filter{Operation: "login", Result: "failure", Username: "admin"}, 1, 100); err != nil || n != 9 {
		t.Errorf("%d records of 9 failed logins during a flood of tokens, %v", n, err)
	}
	events, records, err := audit.Query(ctx, Filter{Operation: "token"}, 1, 5000)
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, e := range events {
		count += max(e.Count, 1)
	}
	// The bound is written out: a test of 6,000 tokens that took its bound from overallBurst
	// would pass with any overallBurst.
	const most = 2001
	if records > most || count != addrs*each {
		t.Errorf("%d records counting %d tokens; want at most %d, counting all %d", records, count, most, addrs*each)
	}
}

// What a caller sends never makes a field of a record longer than its bound.
func TestAuditFieldsAreBounded(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	a := NewAudit(db, 0, nil)
	defer a.Close()
	huge := strings.Repeat("z", 100<<10)
	for _, e := range []Event{
		{Username: huge, Address: huge, Operation: "login", ResourceType: "user", Resource: huge, Detail: huge, Result: "failure"},
		{Username: huge, Address: huge, Operation: huge, ResourceType: huge, Resource: huge, Detail: huge},
		{Username: huge, Operation: "token", ResourceType: "token", Resource: huge}, // batched
	} {
		if err := a.Record(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	events, _, err := a.Query(ctx, Filter{}, 1, 10)
	if err != nil || len(events) != 3 {
		t.Fatalf("Query = %d events, %v", len(events), err)
	}
	for _, e := range events {
		user := maxUserField
		if e.Result == "failure" {
			user = maxFailedUserField
		}
		for field, bound := range map[string]int{e.Username: user, e.Address: maxShortField, e.Operation: maxShortField,
			e.ResourceType: maxShortField, e.Resource: maxLongField, e.Detail: maxLongField} {
			if len(field) > bound {
				t.Errorf("a field of %d bytes in %s, bound %d", len(field), e.Operation, bound)
			}
		}
		if !strings.HasSuffix(e.Username, "bytes)") {
			t.Errorf("a clipped user name has no marker: %q", e.Username)
		}
	}
	if b := auditBytes(t, db); b > 3*(2*maxLongField+1024) {
		t.Errorf("three records take %d bytes", b)
	}
}

// putRaw writes a record of value b at time at, as Record would key it.
func putRaw(t *testing.T, db kv.DB, at time.Time, b []byte, ttl time.Duration) {
	t.Helper()
	key := binary.BigEndian.AppendUint64([]byte(keyAudit), uint64(at.UnixNano()))
	key = binary.BigEndian.AppendUint32(key, 0xfffffff0)
	if err := db.Update(context.Background(), func(txn kv.Txn) error { return txn.SetExpiring(key, b, time.Now().Add(ttl)) }); err != nil {
		t.Fatal(err)
	}
}

// A query reads the records of its time range only, and an unfiltered page those of the page
// only: a record it must not read — here one that does not decode — does not stop it (the
// whole log was read for every page: 0.75 s at 120,000 records).
func TestAuditQueryReadsItsRangeOnly(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	now := time.Unix(1_800_000_000, 0).UTC()
	a := NewAudit(db, 0, func() time.Time { return now })
	defer a.Close()
	for i := range 10 {
		if err := a.Record(ctx, Event{Username: "alice", Operation: "push", Resource: fmt.Sprintf("team/app:%d", i), Time: now.Add(-time.Duration(i) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	putRaw(t, db, now.Add(-100*time.Hour), []byte("not json"), time.Hour) // older than all
	tests := []struct {
		name       string
		f          Filter
		page, size int
		want       []string // resources
		total      int
	}{
		{"newest page", Filter{}, 1, 3, []string{"team/app:0", "team/app:1", "team/app:2"}, 11},
		{"a page further on", Filter{}, 3, 3, []string{"team/app:6", "team/app:7", "team/app:8"}, 11},
		{"a range, bounds inclusive", Filter{From: now.Add(-5 * time.Hour), To: now.Add(-3 * time.Hour)}, 1, 10, []string{"team/app:3", "team/app:4", "team/app:5"}, 3},
		{"a range and a filter", Filter{Username: "alice", From: now.Add(-2 * time.Hour)}, 1, 10, []string{"team/app:0", "team/app:1", "team/app:2"}, 3},
		{"a range, second page", Filter{From: now.Add(-9 * time.Hour), To: now}, 2, 4, []string{"team/app:4", "team/app:5", "team/app:6", "team/app:7"}, 10},
		{"a range with nothing", Filter{From: now.Add(time.Hour)}, 1, 10, nil, 0},
		{"bounds past what nanoseconds hold", Filter{From: time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC), To: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, 1, 1, []string{"team/app:0"}, 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, total, err := a.Query(ctx, tt.f, tt.page, tt.size)
			var got []string
			for _, e := range events {
				got = append(got, e.Resource)
			}
			if err != nil || strings.Join(got, " ") != strings.Join(tt.want, " ") || total != tt.total {
				t.Errorf("Query = %v of %d, %v; want %v of %d", got, total, err, tt.want, tt.total)
			}
		})
	}
}

// The number of records (X-Total-Count of an unfiltered query) is counted as records are
// written and expire, and agrees with the index: after writes of every kind, for a new Audit
// over the same index, and once a record has expired.
func TestAuditTotalIsCounted(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	a := NewAudit(db, 0, nil)
	write := func(a *Audit) {
		for i := range 5 {
			a.Record(ctx, Event{Username: "alice", Operation: "push", Resource: "team/app"})
			a.Record(ctx, Event{Username: "bob", Operation: "pull", Resource: fmt.Sprintf("team/app:%d", i)})
			a.RecordRefusal(ctx, Event{Username: "eve", Operation: "login"})
		}
	}
	total := func(a *Audit) int {
		t.Helper()
		_, n, err := a.Query(ctx, Filter{}, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	write(a)
	if got, want := total(a), countAudit(t, db); got != want || got != 15 {
		t.Errorf("total = %d, the index holds %d; want 15", got, want)
	}
	write(a) // counted on from here
	if got, want := total(a), countAudit(t, db); got != want || got != 30 {
		t.Errorf("total = %d, the index holds %d; want 30", got, want)
	}
	a.Close()
	b := NewAudit(db, 0, nil)
	defer b.Close()
	if got := total(b); got != 30 {
		t.Errorf("a new Audit counts %d, want 30", got)
	}
	// Records expire on the hour after their retention: one count an hour.
	if err := db.View(context.Background(), func(txn kv.Txn) error {
		return txn.Expiries([]byte(keyAudit), func(_ []byte, exp time.Time) (bool, error) {
			if exp.Unix()%3600 != 0 || time.Until(exp) < 90*24*time.Hour {
				t.Errorf("a record expires at %s, want on the hour after 90 days", exp)
			}
			return true, nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	putRaw(t, db, time.Now(), []byte(`{}`), time.Second) // as an older cove wrote them: any second
	b2 := NewAudit(db, 0, nil)
	defer b2.Close()
	if got := total(b2); got != 31 {
		t.Errorf("total with a record about to expire = %d, want 31", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for total(b2) != 30 {
		if time.Now().After(deadline) {
			t.Fatalf("total = %d after the record expired, the index holds %d; want 30", total(b2), countAudit(t, db))
		}
		time.Sleep(50 * time.Millisecond) // badger's clock: expiry is in whole seconds
	}
}
