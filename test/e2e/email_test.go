package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// smtpServer is a real SMTP server, Debian's python3-aiosmtpd, on loopback, delivering every
// mail into a maildir that the test reads.
type smtpServer struct {
	t       *testing.T
	port    int
	maildir string
}

// aiosmtpdPython finds a Python that has aiosmtpd: Debian's, whatever python3 is first on PATH.
func aiosmtpdPython(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(py); err == nil && exec.Command(path, "-c", "import aiosmtpd").Run() == nil {
			return path
		}
	}
	missing(t, "python3-aiosmtpd is not installed (make deps installs it)")
	return ""
}

// startPlainSMTP starts aiosmtpd's own command line: no TLS, no AUTH.
func startPlainSMTP(t *testing.T) *smtpServer {
	t.Helper()
	py := aiosmtpdPython(t)
	s := &smtpServer{t: t, port: freePort(t), maildir: filepath.Join(t.TempDir(), "maildir")}
	s.start(exec.Command(py, "-m", "aiosmtpd", "-n", "-l", fmt.Sprintf("127.0.0.1:%d", s.port), "-c", "aiosmtpd.handlers.Mailbox", s.maildir))
	return s
}

// startTLSSMTP starts aiosmtpd with STARTTLS required, and AUTH as user required over TLS
// (testdata/smtpd.py: the command line takes no authenticator), with a certificate for
// 127.0.0.1 signed by a CA of the test's.
func startTLSSMTP(t *testing.T, user, pass string) *smtpServer {
	t.Helper()
	py := aiosmtpdPython(t)
	dir := t.TempDir()
	ca, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeTestCA(t, ca, cert, key)
	s := &smtpServer{t: t, port: freePort(t), maildir: filepath.Join(dir, "maildir")}
	s.start(exec.Command(py, "testdata/smtpd.py", "--port", fmt.Sprint(s.port), "--maildir", s.maildir,
		"--tlscert", cert, "--tlskey", key, "--user", user, "--password", pass))
	return s
}

func (s *smtpServer) start(cmd *exec.Cmd) {
	t := s.t
	t.Helper()
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("aiosmtpd output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("aiosmtpd exited before listening:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("aiosmtpd did not listen within 30s:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// receivedMail is one delivered message, its body decoded.
type receivedMail struct {
	rcpt, from, subject, body string
}

// mails reads every message delivered so far.
func (s *smtpServer) mails() []receivedMail {
	s.t.Helper()
	files, _ := filepath.Glob(filepath.Join(s.maildir, "new", "*"))
	var out []receivedMail
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			s.t.Fatal(err)
		}
		m, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			s.t.Fatalf("a delivered mail does not parse: %v\n%s", err, raw)
		}
		var body io.Reader = m.Body
		if strings.EqualFold(m.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(m.Body)
		}
		b, err := io.ReadAll(body)
		if err != nil {
			s.t.Fatalf("a delivered mail's body: %v", err)
		}
		subject, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
		if err != nil {
			s.t.Fatalf("a delivered mail's subject %q: %v", m.Header.Get("Subject"), err)
		}
		// aiosmtpd's handler adds X-RcptTo: the envelope's recipients.
		out = append(out, receivedMail{rcpt: m.Header.Get("X-RcptTo"), from: m.Header.Get("From"), subject: subject, body: string(b)})
	}
	return out
}

// mailsTo is the messages delivered to addr.
func (s *smtpServer) mailsTo(addr string) []receivedMail {
	var out []receivedMail
	for _, m := range s.mails() {
		if strings.EqualFold(m.rcpt, addr) {
			out = append(out, m)
		}
	}
	return out
}

// waitMails waits until n messages reached addr, and returns them.
func (s *smtpServer) waitMails(addr string, n int) []receivedMail {
	s.t.Helper()
	var got []receivedMail
	waitFor(s.t, 30*time.Second, fmt.Sprintf("%d mail(s) to %s", n, addr), func() bool {
		got = s.mailsTo(addr)
		return len(got) >= n
	})
	return got
}

// startMailCove starts cove on a port known beforehand (public_url, the links' base, names it)
// with the e-mail settings given.
func startMailCove(t *testing.T, email string, env ...string) *server {
	t.Helper()
	port := freePort(t)
	config := fmt.Sprintf("public_url: http://127.0.0.1:%d\nemail:\n%s", port, email)
	path := filepath.Join(t.TempDir(), "cove.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return startCoveArgs(t, t.TempDir(), []string{"--listen", fmt.Sprintf("127.0.0.1:%d", port)}, append(env, "COVE_CONFIG="+path)...)
}

var resetLink = regexp.MustCompile(`(http://[^\s/]+)/reset-password#token=([A-Za-z0-9_-]{43})\b`)

// TestPasswordResetByMail runs the reset through real SMTP servers: plain, and STARTTLS with
// AUTH. The mail arrives, its link works once; an unknown address gets the same 202 and no
// mail; the test mail arrives; the settings never show the password.
func TestPasswordResetByMail(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		smtp := startPlainSMTP(t)
		s := startMailCove(t, fmt.Sprintf("  server: 127.0.0.1\n  port: %d\n  from: \"cove <cove@example.org>\"\n  starttls: false\n", smtp.port))
		// A server without STARTTLS is refused while starttls is on, and says so.
		s.putSettings(t, `{"email_starttls":true}`)
		if resp, b := s.doAs("POST", "/api/v2.0/email/ping", strings.NewReader(`{"to":"ops@example.org"}`), "admin", adminPassword); resp.StatusCode != 502 || !strings.Contains(string(b), "offers no STARTTLS") {
			t.Errorf("ping with starttls against a plain server = %d %s, want 502 saying it offers no STARTTLS", resp.StatusCode, b)
		}
		s.putSettings(t, `{"email_starttls":false}`)
		resetFlow(t, s, smtp, "")
	})
	t.Run("starttls", func(t *testing.T) {
		const secret = "Smtp-secret-9f3a"
		smtp := startTLSSMTP(t, "cove-mailer", secret)
		s := startMailCove(t, fmt.Sprintf("  server: 127.0.0.1\n  port: %d\n  username: cove-mailer\n  from: \"cove <cove@example.org>\"\n  starttls: true\n  insecure_skip_verify: true\n", smtp.port),
			"COVE_EMAIL_PASSWORD="+secret)
		// The certificate is checked unless insecure_skip_verify says otherwise.
		s.putSettings(t, `{"email_insecure":false}`)
		if resp, b := s.doAs("POST", "/api/v2.0/email/ping", strings.NewReader(`{"to":"ops@example.org"}`), "admin", adminPassword); resp.StatusCode != 502 || !strings.Contains(string(b), "certificate") {
			t.Errorf("ping with an unknown CA's certificate = %d %s, want 502 naming the certificate", resp.StatusCode, b)
		}
		s.putSettings(t, `{"email_insecure":true}`)
		// A wrong password: the server's refusal, and not the password.
		s.putSettings(t, `{"email_password":"Wrong-secret-1"}`)
		resp, b := s.doAs("POST", "/api/v2.0/email/ping", strings.NewReader(`{"to":"ops@example.org"}`), "admin", adminPassword)
		if resp.StatusCode != 502 || !strings.Contains(string(b), "535") || strings.Contains(string(b), "Wrong-secret-1") {
			t.Errorf("ping with a wrong password = %d %s, want 502 with the server's 535 and no password", resp.StatusCode, b)
		}
		s.putSettings(t, `{"email_password":"`+secret+`"}`)
		resetFlow(t, s, smtp, secret)
	})
}

func (s *server) putSettings(t *testing.T, body string) {
	t.Helper()
	if resp, b := s.doAs("PUT", "/api/v2.0/configurations", strings.NewReader(body), "admin", adminPassword); resp.StatusCode != 200 {
		t.Fatalf("PUT configurations %s = %d %s", body, resp.StatusCode, b)
	}
}

// resetFlow: the settings, the test mail, a reset for a known and an unknown address, the link
// used twice.
func resetFlow(t *testing.T, s *server, smtp *smtpServer, secret string) {
	t.Helper()
	resp, b := s.doAs("GET", "/api/v2.0/configurations", nil, "admin", adminPassword)
	var cfg map[string]struct{ Value any }
	if err := json.Unmarshal(b, &cfg); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET configurations = %d %s", resp.StatusCode, b)
	}
	if cfg["email_host"].Value != "127.0.0.1" || cfg["email_port"].Value != float64(smtp.port) {
		t.Errorf("configurations = %s: want the email_* keys of the file", b)
	}
	if _, ok := cfg["email_password"]; ok || (secret != "" && strings.Contains(string(b), secret)) {
		t.Errorf("GET configurations answers the password: %s", b)
	}

	if resp, b := s.doAs("POST", "/api/v2.0/email/ping", strings.NewReader(`{"to":"ops@example.org"}`), "admin", adminPassword); resp.StatusCode != 200 {
		t.Fatalf("email ping = %d %s", resp.StatusCode, b)
	}
	if m := smtp.waitMails("ops@example.org", 1)[0]; m.subject != "cove: test mail" || !strings.Contains(m.from, "cove@example.org") {
		t.Errorf("the test mail = %+v", m)
	}

	const oldPass, newPass = "Alice-passw0rd1", "Alice-new-passw0rd2"
	body := `{"username":"alice","email":"alice@example.org","password":"` + oldPass + `"}`
	if resp, b := s.doAs("POST", "/api/v2.0/users", strings.NewReader(body), "admin", adminPassword); resp.StatusCode != 201 {
		t.Fatalf("create alice = %d %s", resp.StatusCode, b)
	}
	// The unknown address first: the outbox works in order, so once alice's mail is in, the
	// unknown address's request has been dealt with.
	var answers []string
	for _, addr := range []string{"nobody@example.org", "alice@example.org"} {
		resp, b := s.doAs("POST", "/api/v2.0/users/password-reset", strings.NewReader(`{"email":"`+addr+`"}`), "", "")
		if resp.StatusCode != 202 {
			t.Fatalf("reset for %s = %d %s, want 202", addr, resp.StatusCode, b)
		}
		answers = append(answers, fmt.Sprintf("%d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), b))
	}
	if answers[0] != answers[1] {
		t.Errorf("the answers tell the addresses apart: %s / %s", answers[0], answers[1])
	}
	m := smtp.waitMails("alice@example.org", 1)[0]
	if got := smtp.mailsTo("nobody@example.org"); len(got) != 0 {
		t.Errorf("%d mails to an address without an account", len(got))
	}
	link := resetLink.FindStringSubmatch(m.body)
	if link == nil || link[1] != s.url || !strings.Contains(m.body, "alice") || m.subject != "cove: reset your password" {
		t.Fatalf("the reset mail (subject %q) has no link to %s:\n%s", m.subject, s.url, m.body)
	}
	t.Logf("the reset mail, %q:\n%s", m.subject, m.body)
	token := link[2]
	// The link opens the page (its token in the fragment, which no request carries).
	if resp, b := s.do("GET", "/reset-password", nil, false); resp.StatusCode != 200 || !strings.Contains(string(b), "resetpw-form") {
		t.Errorf("GET /reset-password = %d", resp.StatusCode)
	}
	confirm := `{"token":"` + token + `","new_password":"` + newPass + `"}`
	if resp, b := s.doAs("POST", "/api/v2.0/users/password-reset/confirm", strings.NewReader(confirm), "", ""); resp.StatusCode != 200 {
		t.Fatalf("confirm = %d %s", resp.StatusCode, b)
	}
	if resp, b := s.doAs("GET", "/api/v2.0/users/current", nil, "alice", newPass); resp.StatusCode != 200 {
		t.Errorf("the new password = %d %s", resp.StatusCode, b)
	}
	if resp, _ := s.doAs("GET", "/service/token?service=cove&scope=", nil, "alice", newPass); resp.StatusCode != 200 {
		t.Errorf("a registry token with the new password = %d", resp.StatusCode)
	}
	if resp, _ := s.doAs("GET", "/service/token?service=cove&scope=", nil, "alice", oldPass); resp.StatusCode != 401 {
		t.Errorf("a registry token with the old password = %d, want 401", resp.StatusCode)
	}
	again := `{"token":"` + token + `","new_password":"Alice-third-passw0rd3"}`
	if resp, b := s.doAs("POST", "/api/v2.0/users/password-reset/confirm", strings.NewReader(again), "", ""); resp.StatusCode != 400 || !strings.Contains(string(b), "used already") {
		t.Errorf("the link a second time = %d %s, want 400 saying it was used", resp.StatusCode, b)
	}
	if resp, _ := s.doAs("GET", "/api/v2.0/users/current", nil, "alice", newPass); resp.StatusCode != 200 {
		t.Errorf("the second use changed the password: %d", resp.StatusCode)
	}
	if strings.Contains(s.log(), token) {
		t.Error("cove's log shows the reset token")
	}
}
