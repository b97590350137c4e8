package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"cove/internal/kv"
	"cove/internal/mail"
)

// resetService is tokenService with a local user eve (eve@example.org), signed in on the page
// and holding an access token.
func resetService(t *testing.T) (*Service, *testClock) {
	t.Helper()
	s, clock := tokenService(t)
	if _, err := s.Identity.CreateUser(context.Background(), User{Name: "eve", Email: "Eve@Example.org"}, "Eve-password1"); err != nil {
		t.Fatal(err)
	}
	return s, clock
}

func issueOne(t *testing.T, s *Service, addr string) ResetTicket {
	t.Helper()
	tickets, err := s.Identity.IssuePasswordResets(context.Background(), addr)
	if err != nil || len(tickets) != 1 {
		t.Fatalf("IssuePasswordResets(%q) = %d tickets, %v; want 1", addr, len(tickets), err)
	}
	return tickets[0]
}

// TestResetTokenIsStoredHashed: the store holds the token's SHA-256, never the token.
func TestResetTokenIsStoredHashed(t *testing.T) {
	s, _ := resetService(t)
	tk := issueOne(t, s, "eve@example.org")
	if len(tk.Token) != resetTokenLen || tk.User.Name != "eve" {
		t.Fatalf("ticket = %+v", tk)
	}
	var keys []string
	err := s.Identity.db.View(context.Background(), func(txn kv.Txn) error {
		return txn.Scan([]byte("auth/"), kv.ScanOptions{}, func(k, v []byte) (bool, error) {
			if strings.Contains(string(k), tk.Token) || strings.Contains(string(v), tk.Token) {
				t.Errorf("the token is stored in the clear under %s", k)
			}
			if strings.HasPrefix(string(k), keyReset) {
				keys = append(keys, string(k))
			}
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := string(resetKey(tk.Token)); len(keys) != 1 || keys[0] != want {
		t.Errorf("reset records = %v, want one under %s", keys, want)
	}
}

// TestResetTokenWorksOnce: the token sets the password once; a second use fails; the old
// password, the sessions and the tokens of the account end.
func TestResetTokenWorksOnce(t *testing.T) {
	ctx := context.Background()
	s, _ := resetService(t)
	eve, err := s.Identity.CheckPassword(ctx, "eve", "Eve-password1")
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	if err := s.Identity.NewSession(ctx, rec, httptest.NewRequest("POST", "/login", nil), eve); err != nil {
		t.Fatal(err)
	}
	session := func() *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		r.AddCookie(rec.Result().Cookies()[0])
		return r
	}
	tok, _, _, err := s.Tokens.IssueToken(ctx, eve, "cove", scopes(t, "repository:open/app:pull"))
	if err != nil {
		t.Fatal(err)
	}
	tk := issueOne(t, s, "eve@example.org")
	// A password against the policy is refused and leaves the token usable.
	if _, err := s.Identity.ResetPassword(ctx, tk.Token, "short"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ResetPassword with a weak password = %v, want ErrInvalid", err)
	}
	u, err := s.Identity.ResetPassword(ctx, tk.Token, "New-password2")
	if err != nil || u.Name != "eve" {
		t.Fatalf("ResetPassword = %+v, %v", u, err)
	}
	if _, err := s.Identity.CheckPassword(ctx, "eve", "New-password2"); err != nil {
		t.Errorf("the new password: %v", err)
	}
	if _, err := s.Identity.CheckPassword(ctx, "eve", "Eve-password1"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("the old password after the reset = %v, want ErrBadCredentials", err)
	}
	if p, err := s.Tokens.Authenticate(ctx, session()); err != nil || !p.Anonymous() {
		t.Errorf("the session after the reset stands for %+v (%v)", p, err)
	}
	if _, err := s.Tokens.Authenticate(ctx, bearer(tok)); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("the access token after the reset = %v, want ErrBadCredentials", err)
	}
	_, err = s.Identity.ResetPassword(ctx, tk.Token, "Third-password3")
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "used already") {
		t.Errorf("a second use = %v, want ErrInvalid saying it was used", err)
	}
	if _, err := s.Identity.CheckPassword(ctx, "eve", "New-password2"); err != nil {
		t.Errorf("the second use changed the password: %v", err)
	}
	for _, bad := range []string{"", "x", strings.Repeat("A", resetTokenLen), strings.Repeat("!", resetTokenLen)} {
		if _, err := s.Identity.ResetPassword(ctx, bad, "Other-password4"); !errors.Is(err, ErrInvalid) {
			t.Errorf("ResetPassword(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

// TestResetTokenExpires: 30 minutes, by cove's clock.
func TestResetTokenExpires(t *testing.T) {
	ctx := context.Background()
	s, clock := resetService(t)
	early := issueOne(t, s, "eve@example.org")
	clock.now = clock.now.Add(ResetTTL - time.Second)
	late := issueOne(t, s, "eve@example.org")
	clock.now = clock.now.Add(2 * time.Second) // early is 30 min 1 s old, late 2 s
	_, err := s.Identity.ResetPassword(ctx, early.Token, "New-password2")
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("a token past %s = %v, want ErrInvalid saying it expired", ResetTTL, err)
	}
	if _, err := s.Identity.ResetPassword(ctx, late.Token, "New-password2"); err != nil {
		t.Errorf("a token within %s: %v", ResetTTL, err)
	}
}

// TestResetLinksEndWithTheAccountsChange: a password changed otherwise voids the links sent
// before, as does a reset through another link.
func TestResetLinksEndWithTheAccountsChange(t *testing.T) {
	ctx := context.Background()
	s, _ := resetService(t)
	first, second := issueOne(t, s, "eve@example.org"), issueOne(t, s, "eve@example.org")
	if err := s.Identity.SetPassword(ctx, "eve", "Changed-pw2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Identity.ResetPassword(ctx, first.Token, "New-password2"); !errors.Is(err, ErrInvalid) {
		t.Errorf("a link sent before a password change = %v, want ErrInvalid", err)
	}
	third := issueOne(t, s, "eve@example.org")
	if _, err := s.Identity.ResetPassword(ctx, third.Token, "New-password3"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Identity.ResetPassword(ctx, second.Token, "New-password4"); !errors.Is(err, ErrInvalid) {
		t.Errorf("another link after a reset = %v, want ErrInvalid", err)
	}
}

// TestResetMailsAreLimited: ResetPerAddress per address per ResetWindow; the next window
// allows again. Unknown addresses and LDAP accounts get nothing, and leave no record.
func TestResetMailsAreLimited(t *testing.T) {
	ctx := context.Background()
	s, clock := resetService(t)
	for range ResetPerAddress {
		issueOne(t, s, "eve@example.org")
	}
	tickets, err := s.Identity.IssuePasswordResets(ctx, "EVE@example.org")
	if !errors.Is(err, ErrResetLimited) || len(tickets) != 0 {
		t.Errorf("reset %d within %s = %d tickets, %v; want ErrResetLimited", ResetPerAddress+1, ResetWindow, len(tickets), err)
	}
	clock.now = clock.now.Add(ResetWindow)
	issueOne(t, s, "eve@example.org")

	if _, err := s.Identity.insertUser(User{Name: "dirk", Email: "dirk@example.org", LDAP: true}, nil); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"nobody@example.org", "dirk@example.org", "", "eve@example.org.evil"} {
		tickets, err := s.Identity.IssuePasswordResets(ctx, addr)
		if err != nil || len(tickets) != 0 {
			t.Errorf("IssuePasswordResets(%q) = %d tickets, %v; want none", addr, len(tickets), err)
		}
	}
	rates := 0
	_ = s.Identity.db.View(ctx, func(txn kv.Txn) error {
		return txn.Scan([]byte(keyResetRate), kv.ScanOptions{KeysOnly: true}, func(k, _ []byte) (bool, error) { rates++; return true, nil })
	})
	if rates != 1 {
		t.Errorf("%d rate records, want 1 (eve's): addresses without accounts must leave none", rates)
	}
}

// TestResetMailsAreLimitedPerNode: ResetPerNode mails per window from one node, all addresses.
func TestResetMailsAreLimitedPerNode(t *testing.T) {
	s, _ := resetService(t)
	for range ResetPerNode {
		if !s.Identity.admitReset() {
			t.Fatal("refused under the node's limit")
		}
	}
	if _, err := s.Identity.IssuePasswordResets(context.Background(), "eve@example.org"); !errors.Is(err, ErrResetLimited) {
		t.Errorf("over the node's limit = %v, want ErrResetLimited", err)
	}
}

// TestEmailSettings: the file's values, API-set keys over them one by one, checked before stored.
func TestEmailSettings(t *testing.T) {
	ctx := context.Background()
	file := mail.Config{Server: "smtp.example.org", Port: 587, Username: "cove", Password: "file-secret", From: "cove@example.org", StartTLS: true}
	db := openDB(t)
	s, err := New(ctx, db, Config{AdminPassword: "pw", KeyDir: t.TempDir(), Email: file})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Policy.EmailSettings(ctx); got != file {
		t.Errorf("EmailSettings before any change = %+v, want the file's", got)
	}
	from := "registry@example.org"
	if _, err := s.Policy.UpdateEmailSettings(ctx, EmailChange{From: &from}); err != nil {
		t.Fatal(err)
	}
	bad := true
	var invalid *EmailSettingsError
	if _, err := s.Policy.UpdateEmailSettings(ctx, EmailChange{SSL: &bad}); !errors.As(err, &invalid) || !errors.Is(err, ErrInvalid) || invalid.Problems[0].Key != "starttls" {
		t.Errorf("ssl with starttls = %v, want an EmailSettingsError on starttls", err)
	}
	// A second change of every key: each takes its new value, over the first.
	first, second, port := "one.example.org", "two.example.org", 2525
	user, pw, no, yes := "u2", "p2", false, true
	if _, err := s.Policy.UpdateEmailSettings(ctx, EmailChange{Server: &first, Username: &user, Password: &pw}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Policy.UpdateEmailSettings(ctx, EmailChange{Server: &second, Port: &port, Username: &user, Password: &pw, StartTLS: &no, InsecureSkipVerify: &yes})
	if err != nil || got.Server != second || got.Port != port || got.Username != user || got.Password != pw || got.From != from || got.StartTLS || !got.InsecureSkipVerify {
		t.Fatalf("settings after two changes = %+v, %v", got, err)
	}
	file.Server, file.Port, file.Username, file.Password, file.StartTLS, file.InsecureSkipVerify = second, port, user, pw, false, true
	// A restart with another file: the keys set through the API stay (here the file says the
	// same as they do), and the others follow the file.
	s, err = New(ctx, db, Config{AdminPassword: "pw", KeyDir: t.TempDir(), Email: file})
	if err != nil {
		t.Fatal(err)
	}
	want := file
	want.From = from
	if got, _ := s.Policy.EmailSettings(ctx); got != want {
		t.Errorf("EmailSettings after a restart = %+v, want %+v", got, want)
	}
}
