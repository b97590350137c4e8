package tls

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// logBuffer collects JSON log lines; certmagic writes from its own goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (lb *logBuffer) Write(p []byte) (int, error) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.b.Write(p)
}

// lines returns the lines logged so far whose msg contains msg.
func (lb *logBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(lb.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if s, _ := m["msg"].(string); strings.Contains(s, msg) {
			out = append(out, m)
		}
	}
	return out
}

// waitLine polls for a line whose msg contains msg.
func (lb *logBuffer) waitLine(t *testing.T, msg string) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if ls := lb.lines(t, msg); len(ls) > 0 {
			return ls[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q in:\n%s", msg, lb.b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newLog(level slog.Level) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: level})), lb
}

func TestZapLinesReachSlog(t *testing.T) {
	tests := []struct {
		name  string
		write func(*zap.Logger)
		want  string // slog level; "" for no line
	}{
		{"debug", func(l *zap.Logger) { l.Debug("m") }, "DEBUG"},
		{"info", func(l *zap.Logger) { l.Info("m") }, "INFO"},
		{"warn", func(l *zap.Logger) { l.Warn("m") }, "WARN"},
		{"error", func(l *zap.Logger) { l.Error("m") }, "ERROR"},
		{"dpanic", func(l *zap.Logger) { l.DPanic("m") }, "ERROR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log, lb := newLog(slog.LevelDebug)
			zl := zapLogger(log.With("component", "tls").Handler()).Named("renew").With(zap.String("identifier", "registry.example"))
			tc.write(zl)
			got := lb.lines(t, "m")
			if len(got) != 1 {
				t.Fatalf("lines = %v, want one", got)
			}
			if got[0]["level"] != tc.want || got[0]["component"] != "tls" || got[0]["logger"] != "certmagic.renew" || got[0]["identifier"] != "registry.example" {
				t.Errorf("line = %v, want level %s, component tls, logger certmagic.renew, identifier", got[0], tc.want)
			}
		})
	}
	t.Run("fields", func(t *testing.T) {
		log, lb := newLog(slog.LevelDebug)
		zapLogger(log.Handler()).Error("renewing", zap.Error(errors.New("boom")), zap.Strings("names", []string{"a", "b"}),
			zap.Duration("wait", time.Second), zap.Object("obj", zapcore.ObjectMarshalerFunc(func(e zapcore.ObjectEncoder) error {
				e.AddInt("n", 3)
				return nil
			})))
		got := lb.lines(t, "renewing")
		if len(got) != 1 {
			t.Fatalf("lines = %v, want one", got)
		}
		l := got[0]
		if l["err"] != "boom" || l["wait"] != 1e9 || len(l["names"].([]any)) != 2 || l["obj"].(map[string]any)["n"] != 3.0 {
			t.Errorf("line = %v, want err=boom, wait=1e9 (ns), names [a b], obj {n: 3}", l)
		}
	})
	t.Run("level of the handler", func(t *testing.T) {
		log, lb := newLog(slog.LevelInfo)
		zl := zapLogger(log.Handler())
		zl.Debug("hidden")
		zl.Info("shown")
		if len(lb.lines(t, "hidden")) != 0 || len(lb.lines(t, "shown")) != 1 {
			t.Errorf("at level INFO: debug lines %v, info lines %v", lb.lines(t, "hidden"), lb.lines(t, "shown"))
		}
	})
}

// TestACMELogsReachSlog: certmagic's own lines (its maintenance starting) reach cove's logger.
func TestACMELogsReachSlog(t *testing.T) {
	log, lb := newLog(slog.LevelDebug)
	s, err := New(context.Background(), Config{Mode: ModeACME, Dir: t.TempDir(), Domains: []string{"registry.example"},
		Email: "ops@example.org", ACMECA: "https://127.0.0.1:1/directory", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	l := lb.waitLine(t, "started background certificate maintenance")
	if l["level"] != "INFO" || l["component"] != "tls" || l["logger"] != "certmagic.maintenance" {
		t.Errorf("line = %v, want INFO, component tls, logger certmagic.maintenance", l)
	}
}

// TestACMENeverPrompts: with no email, obtaining in the foreground (Start) asks nothing on stdout
// and says in the log that the account has no contact.
func TestACMENeverPrompts(t *testing.T) {
	log, lb := newLog(slog.LevelDebug)
	s, err := New(context.Background(), Config{Mode: ModeACME, Dir: t.TempDir(), Domains: []string{"registry.example"},
		ACMECA: "https://127.0.0.1:1/directory", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	if l := lb.waitLine(t, "tls.email is not set"); l["level"] != "WARN" {
		t.Errorf("line = %v, want WARN", l)
	}
	// certmagic prompts on os.Stdout and reads os.Stdin: both are swapped for pipes here.
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, stdin := os.Stdout, os.Stdin
	os.Stdout, os.Stdin = outW, inR
	inW.Close() // a prompt reads EOF at once
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = s.Start(ctx)
	os.Stdout, os.Stdin = stdout, stdin
	outW.Close()
	inR.Close()
	printed, _ := io.ReadAll(outR)
	if err == nil {
		t.Fatal("Start with an unreachable CA succeeded")
	}
	if len(printed) > 0 {
		t.Errorf("Start printed %q, want nothing", printed)
	}
}

// TestFilesReloadFailureIsLogged: files that fail to load are logged once, with their paths and
// the error, the previous certificate stays in service, and a later good pair is loaded and logged.
func TestFilesReloadFailureIsLogged(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, err := makeCert(nil, nil, pkixName("test CA"), nil, 48*time.Hour, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first, _, err := makeCert(ca, caKey, pkixName("registry.example"), []string{"registry.example"}, 72*time.Hour, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	log, lb := newLog(slog.LevelDebug)
	fc := &fileCert{certFile: certFile, keyFile: keyFile, log: log}
	if err := fc.load(); err != nil {
		t.Fatal(err)
	}
	handshake := func() *tls.Certificate {
		t.Helper()
		fc.mu.Lock()
		fc.checked = time.Time{} // due for a check
		fc.mu.Unlock()
		c, err := fc.get(&tls.ClientHelloInfo{ServerName: "registry.example"})
		if err != nil || c == nil {
			t.Fatalf("get = %v, %v", c, err)
		}
		return c
	}
	if err := writeFile(certFile, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if c := handshake(); !c.Leaf.Equal(first) {
			t.Errorf("after a failed reload, served %v, want the previous certificate", c.Leaf.Subject)
		}
	}
	got := lb.lines(t, "reload certificate files failed")
	if len(got) != 1 {
		t.Fatalf("failure lines = %d, want 1 (once per change of the files):\n%s", len(got), lb.b.String())
	}
	if l := got[0]; l["level"] != "ERROR" || l["cert_file"] != certFile || l["key_file"] != keyFile || !strings.Contains(l["err"].(string), "PEM") {
		t.Errorf("line = %v, want ERROR with cert_file, key_file and the error", l)
	}
	if c := fc.certificates(); len(c) != 1 || !c[0].NotAfter.Equal(first.NotAfter) {
		t.Errorf("certificates() = %v, want the previous certificate's NotAfter %v", c, first.NotAfter)
	}

	second, _, err := makeCert(ca, caKey, pkixName("registry.example"), []string{"registry.example"}, 96*time.Hour, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if c := handshake(); !c.Leaf.Equal(second) {
		t.Errorf("after the files were fixed, served %v, want the new certificate", c.Leaf.NotAfter)
	}
	if got := lb.lines(t, "certificate files reloaded"); len(got) != 1 || got[0]["level"] != "INFO" {
		t.Errorf("reloaded lines = %v, want one at INFO", got)
	}
	if c := fc.certificates(); len(c) != 1 || c[0] != (Certificate{Name: "registry.example", NotAfter: second.NotAfter}) {
		t.Errorf("certificates() = %v, want registry.example until %v", c, second.NotAfter)
	}
}
