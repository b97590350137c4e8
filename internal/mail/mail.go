// Package mail sends cove's e-mail (password reset links, test mails) through an SMTP server
// with the standard library's net/smtp: implicit TLS (ssl), STARTTLS, or plain, with PLAIN
// authentication only over TLS (net/smtp refuses it in clear but to localhost). It composes
// plain-text UTF-8 messages whose header lines never take a CR or LF from their input, so an
// address or subject cannot add headers or recipients (header injection). Outbox runs the sends
// in the background, bounded. The package imports no other of cove's packages.
package mail

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is how to reach the SMTP server (cove's email: keys).
type Config struct {
	Server   string `json:"server"`   // host name or address, without port; empty: no mail is sent
	Port     int    `json:"port"`     // 0: 25, or 465 with SSL
	Username string `json:"username"` // empty: no authentication
	Password string `json:"password"`
	From     string `json:"from"` // the sender, e.g. "cove <cove@example.org>"
	// SSL speaks TLS from the first byte (SMTPS, port 465); StartTLS upgrades a plain connection
	// and refuses to go on when the server offers no STARTTLS. The two exclude each other; with
	// neither, nothing is encrypted.
	SSL      bool `json:"ssl"`
	StartTLS bool `json:"starttls"`
	// InsecureSkipVerify accepts any server certificate (a self-signed one, say).
	InsecureSkipVerify bool `json:"insecure_skip_verify"`
}

// Problem is one invalid value of a Config; Key is its name among the email: keys.
type Problem struct {
	Key, Msg string
}

// Configured reports whether a server is set: without one, cove sends no mail.
func (c Config) Configured() bool { return c.Server != "" }

// Addr is the server's host:port, the port defaulted.
func (c Config) Addr() string {
	port := c.Port
	if port == 0 {
		port = 25
		if c.SSL {
			port = 465
		}
	}
	return net.JoinHostPort(c.Server, strconv.Itoa(port))
}

// Validate reports every problem of c. A Config without a server is valid (no mail is sent).
func (c Config) Validate() []Problem {
	var p []Problem
	bad := func(key, format string, args ...any) { p = append(p, Problem{key, fmt.Sprintf(format, args...)}) }
	if c.Server != "" {
		if strings.ContainsAny(c.Server, " /\t\r\n@") {
			bad("server", "want a host name or address such as smtp.example.org, got %q", c.Server)
		} else if _, _, err := net.SplitHostPort(c.Server); err == nil {
			bad("server", "want the host alone, got %q (the port goes in port)", c.Server)
		}
		if c.From == "" {
			bad("from", "must be set with server: the sender's address, such as cove@example.org")
		}
	}
	if c.From != "" {
		if _, err := ParseAddress(c.From); err != nil {
			bad("from", "%v", err)
		}
	}
	if c.Port < 0 || c.Port > 65535 {
		bad("port", "want 1 to 65535 (0: 25, or 465 with ssl), got %d", c.Port)
	}
	if c.SSL && c.StartTLS {
		bad("starttls", "ssl and starttls exclude each other: ssl speaks TLS from the start (port 465), starttls upgrades a plain connection (port 25 or 587)")
	}
	if c.Password != "" && c.Username == "" {
		bad("password", "is set without username")
	}
	return p
}

// ParseAddress reads one address, with or without a display name ("cove <cove@example.org>").
// CR and LF are refused outright.
func ParseAddress(s string) (*mail.Address, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("an address must not contain a line break")
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("not an e-mail address: %q", s)
	}
	return a, nil
}

// ParseBareAddress reads an address without a display name (a user's e-mail): "a@example.org".
func ParseBareAddress(s string) (string, error) {
	a, err := ParseAddress(s)
	if err != nil {
		return "", err
	}
	if a.Name != "" || a.Address != strings.TrimSpace(s) || len(a.Address) > 254 {
		return "", fmt.Errorf("not a plain e-mail address: %q", s)
	}
	return a.Address, nil
}

// Message is one plain-text mail to one recipient.
type Message struct {
	To      string // a bare address
	Subject string // one line: CR and LF are refused
	Body    string // UTF-8 text; lines end in \n
}

// Compose returns msg as RFC 5322 bytes from from, dated date. Every header value is checked
// or encoded: a CR or LF in an address or the subject is an error, never a new header line.
func Compose(from string, msg Message, date time.Time) ([]byte, error) {
	sender, err := ParseAddress(from)
	if err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}
	to, err := ParseBareAddress(msg.To)
	if err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	if strings.ContainsAny(msg.Subject, "\r\n") {
		return nil, errors.New("subject: must be one line")
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	_, domain, _ := strings.Cut(sender.Address, "@")
	var b bytes.Buffer
	header := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	header("From", sender.String()) // net/mail encodes a non-ASCII name and quotes specials
	header("To", (&mail.Address{Address: to}).String())
	header("Subject", mime.QEncoding.Encode("utf-8", msg.Subject))
	header("Date", date.Format(time.RFC1123Z))
	header("Message-ID", "<"+hex.EncodeToString(id)+"@"+domain+">")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	header("Auto-Submitted", "auto-generated") // RFC 3834: no vacation replies
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	if _, err := qp.Write([]byte(strings.ReplaceAll(strings.ReplaceAll(msg.Body, "\r\n", "\n"), "\n", "\r\n"))); err != nil {
		return nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// sendTimeout bounds one send, from the connection to QUIT, when ctx has no earlier deadline.
const sendTimeout = 30 * time.Second

// Send delivers msg through the server of cfg. Its error names the step that failed and carries
// what the server answered (never the password); ctx's cancellation ends the conversation.
func Send(ctx context.Context, cfg Config, msg Message) error {
	if !cfg.Configured() {
		return errors.New("no SMTP server is configured (email.server)")
	}
	if p := cfg.Validate(); len(p) > 0 {
		return fmt.Errorf("email.%s: %s", p[0].Key, p[0].Msg)
	}
	raw, err := Compose(cfg.From, msg, time.Now())
	if err != nil {
		return err
	}
	sender, _ := ParseAddress(cfg.From)
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	err = send(ctx, cfg, sender.Address, msg.To, raw)
	if err != nil && cfg.Password != "" && strings.Contains(err.Error(), cfg.Password) {
		// No server should echo it; should one, it goes no further.
		err = errors.New(strings.ReplaceAll(err.Error(), cfg.Password, "***"))
	}
	return err
}

func send(ctx context.Context, cfg Config, from, to string, raw []byte) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", cfg.Addr())
	if err != nil {
		return fmt.Errorf("connect to %s: %w", cfg.Addr(), err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	tlsCfg := &tls.Config{ServerName: cfg.Server, InsecureSkipVerify: cfg.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if cfg.SSL {
		tc := tls.Client(conn, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS with %s (email.ssl): %w", cfg.Addr(), err)
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, cfg.Server)
	if err != nil {
		return fmt.Errorf("greeting of %s: %w", cfg.Addr(), err)
	}
	defer c.Close()
	if err := c.Hello(helloName()); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	if cfg.StartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return fmt.Errorf("%s offers no STARTTLS (email.starttls is on; set it false for a server without TLS, or ssl for port 465)", cfg.Addr())
		}
		if err := c.StartTLS(tlsCfg); err != nil {
			return fmt.Errorf("STARTTLS: %w", err)
		}
	}
	if cfg.Username != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			return fmt.Errorf("%s offers no AUTH, but email.username is set", cfg.Addr())
		}
		if err := c.Auth(smtp.PlainAuth("", cfg.Username, cfg.Password, cfg.Server)); err != nil {
			return fmt.Errorf("AUTH as %s: %w", cfg.Username, err)
		}
	}
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(raw); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if err := c.Quit(); err != nil {
		return fmt.Errorf("QUIT: %w", err)
	}
	return nil
}

// helloName is the name cove gives in EHLO: the host's name when it is one, else localhost.
func helloName() string {
	h, err := os.Hostname()
	if err != nil || h == "" || strings.ContainsAny(h, " \r\n") {
		return "localhost"
	}
	return h
}
