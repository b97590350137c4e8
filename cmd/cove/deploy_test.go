package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The systemd unit passes systemd-analyze verify (its directives, sandboxing and dependencies),
// with ExecStart pointing at a cove binary built for the test, since the unit's own
// /usr/local/bin/cove is where an install puts it, not this machine.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is not installed (make test installs Debian's systemd): %v", err)
	}
	unit, err := os.ReadFile("../../deploy/systemd/cove.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DynamicUser=yes", "StateDirectory=cove", "ProtectSystem=strict", "NoNewPrivileges=yes",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE", "Restart=on-failure", "ExecStart=/usr/local/bin/cove serve"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "cove")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "cove.service")
	if err := os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/local/bin/cove"), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// Under systemd (stdout is the journal, JOURNAL_STREAM set) the generated admin password goes to
// a file only its owner may read, and the log names the file, not the password; elsewhere it is
// printed once.
func TestGeneratedPasswordStaysOutOfTheJournal(t *testing.T) {
	data := t.TempDir()
	var out bytes.Buffer
	if err := showAdminPassword(&out, data, "S3cret-generated", "http://127.0.0.1:5000/", true); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(data, adminPasswordFile)
	got, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(got)) != "S3cret-generated" {
		t.Fatalf("the password file holds %q, %v", got, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o400 {
		t.Errorf("the password file's mode is %v, want 0400", fi.Mode().Perm())
	}
	if strings.Contains(out.String(), "S3cret-generated") || !strings.Contains(out.String(), path) {
		t.Errorf("the journal got %q: want the file's path and not the password", out.String())
	}
	out.Reset()
	other := t.TempDir()
	if err := showAdminPassword(&out, other, "S3cret-printed", "http://127.0.0.1:5000/", false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "S3cret-printed") {
		t.Errorf("outside systemd the password is not printed: %q", out.String())
	}
	if _, err := os.Stat(filepath.Join(other, adminPasswordFile)); !os.IsNotExist(err) {
		t.Errorf("outside systemd a password file was written: %v", err)
	}
}
