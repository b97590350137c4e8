package mail

import (
	"bytes"
	"context"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCompose(t *testing.T) {
	date := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	body := "Hello 用户,\nopen https://cove.example.org/reset-password#token=" + strings.Repeat("A", 43) + " within 30 minutes.\n"
	raw, err := Compose("cove <cove@example.org>", Message{To: "alice@example.org", Subject: "cove：重置密码", Body: body}, date)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("ReadMessage: %v\n%s", err, raw)
	}
	for k, want := range map[string]string{
		"From": `"cove" <cove@example.org>`, "To": "<alice@example.org>", "Date": "Fri, 01 May 2026 12:00:00 +0000",
		"Content-Type": "text/plain; charset=utf-8", "Content-Transfer-Encoding": "quoted-printable", "Auto-Submitted": "auto-generated",
		"Mime-Version": "1.0",
	} {
		if got := m.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if subj, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject")); err != nil || subj != "cove：重置密码" {
		t.Errorf("Subject = %q (%v), want the Chinese subject", subj, err)
	}
	if id := m.Header.Get("Message-Id"); !strings.HasSuffix(id, "@example.org>") || !strings.HasPrefix(id, "<") {
		t.Errorf("Message-ID = %q", id)
	}
	got, err := io.ReadAll(quotedprintable.NewReader(m.Body))
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.ReplaceAll(body, "\n", "\r\n"); string(got) != want {
		t.Errorf("body = %q, want %q", got, want)
	}
	for _, line := range strings.Split(string(raw), "\r\n") {
		if len(line) > 78 {
			t.Errorf("line of %d bytes (RFC 5322 wants at most 78): %q", len(line), line)
		}
	}
}

// TestComposeRefusesHeaderInjection: a CR or LF in an address or the subject is an error, never
// a new header line or recipient.
func TestComposeRefusesHeaderInjection(t *testing.T) {
	for _, tt := range []struct {
		name, from, to, subject string
	}{
		{"to with CRLF", "cove@example.org", "alice@example.org\r\nBcc: eve@evil.example", "s"},
		{"to with LF", "cove@example.org", "alice@example.org\nBcc: eve@evil.example", "s"},
		{"to with a name", "cove@example.org", "Alice <alice@example.org>", "s"},
		{"two recipients", "cove@example.org", "alice@example.org, eve@evil.example", "s"},
		{"subject with CRLF", "cove@example.org", "alice@example.org", "hi\r\nBcc: eve@evil.example"},
		{"subject with CR", "cove@example.org", "alice@example.org", "hi\rBcc: eve@evil.example"},
		{"from with LF", "cove@example.org\nBcc: eve@evil.example", "alice@example.org", "s"},
		{"no address", "cove@example.org", "", "s"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := Compose(tt.from, Message{To: tt.to, Subject: tt.subject, Body: "b"}, time.Now())
			if err == nil {
				t.Errorf("Compose = nil error, want a refusal; message:\n%s", raw)
			}
		})
	}
	// A display name with specials is quoted, never read as another address or header.
	raw, err := Compose(`"cove, the registry" <cove@example.org>`, Message{To: "a@example.org", Subject: "s", Body: "b"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m, _ := mail.ReadMessage(bytes.NewReader(raw))
	if from, err := m.Header.AddressList("From"); err != nil || len(from) != 1 || from[0].Address != "cove@example.org" {
		t.Errorf("From = %v (%v), want one address", from, err)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want []string // the keys with problems
	}{
		{"empty: no mail", Config{}, nil},
		{"plain", Config{Server: "smtp.example.org", From: "cove@example.org"}, nil},
		{"full", Config{Server: "smtp.example.org", Port: 587, Username: "u", Password: "p", From: "cove <cove@example.org>", StartTLS: true}, nil},
		{"no from", Config{Server: "smtp.example.org"}, []string{"from"}},
		{"port in server", Config{Server: "smtp.example.org:25", From: "c@example.org"}, []string{"server"}},
		{"URL as server", Config{Server: "smtp://smtp.example.org", From: "c@example.org"}, []string{"server"}},
		{"bad from", Config{Server: "s", From: "not an address"}, []string{"from"}},
		{"from with LF", Config{Server: "s", From: "c@example.org\nBcc: e@example.org"}, []string{"from"}},
		{"port", Config{Server: "s", From: "c@example.org", Port: 70000}, []string{"port"}},
		{"ssl and starttls", Config{Server: "s", From: "c@example.org", SSL: true, StartTLS: true}, []string{"starttls"}},
		{"password without user", Config{Server: "s", From: "c@example.org", Password: "p"}, []string{"password"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var keys []string
			for _, p := range tt.cfg.Validate() {
				keys = append(keys, p.Key)
			}
			if !slices.Equal(keys, tt.want) {
				t.Errorf("Validate(%+v) keys = %v, want %v", tt.cfg, keys, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{Server: "s"}, "s:25"}, {Config{Server: "s", SSL: true}, "s:465"}, {Config{Server: "s", Port: 587}, "s:587"},
	} {
		if got := tt.cfg.Addr(); got != tt.want {
			t.Errorf("Addr(%+v) = %q, want %q", tt.cfg, got, tt.want)
		}
	}
}

// TestSendNeedsAServer: without a server nothing is dialled, and the error says which key.
func TestSendNeedsAServer(t *testing.T) {
	err := Send(context.Background(), Config{}, Message{To: "a@example.org", Subject: "s", Body: "b"})
	if err == nil || !strings.Contains(err.Error(), "email.server") {
		t.Errorf("Send without a server = %v, want an error naming email.server", err)
	}
	err = Send(context.Background(), Config{Server: "127.0.0.1", From: "c@example.org", SSL: true, StartTLS: true}, Message{To: "a@example.org", Subject: "s", Body: "b"})
	if err == nil || !strings.Contains(err.Error(), "email.starttls") {
		t.Errorf("Send with ssl and starttls = %v, want an error naming email.starttls", err)
	}
}

func TestOutbox(t *testing.T) {
	o := NewOutbox(nil)
	var ran atomic.Int32
	done := make(chan struct{})
	for range 3 {
		if !o.Submit(func(context.Context) {
			if ran.Add(1) == 3 {
				close(done)
			}
		}) {
			t.Fatal("Submit refused a job on an empty queue")
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("ran %d of 3 jobs", ran.Load())
	}
	// Close cancels the running job's context and waits for it.
	started, finished := make(chan struct{}), make(chan struct{})
	o.Submit(func(ctx context.Context) { close(started); <-ctx.Done(); close(finished) })
	<-started
	o.Close()
	select {
	case <-finished:
	default:
		t.Error("Close returned before the running job ended")
	}
	if o.Submit(func(context.Context) {}) {
		t.Error("Submit after Close = true, want false")
	}
}
