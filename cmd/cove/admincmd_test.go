package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"cove/auth"
	"cove/cache"
	"cove/mirror"

	"cove/internal/kv"
)

// cli runs cove with args and stdin, returning its exit code, stdout and stderr.
func cli(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, nil, strings.NewReader(stdin), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// checkLogin opens the data dir's index and checks name's password, as cove would.
func checkLogin(t *testing.T, data, name, password string) (auth.Principal, error) {
	t.Helper()
	db, err := cache.OpenDB(filepath.Join(data, "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	svc, err := auth.New(context.Background(), kv.NewBadger(db), auth.Config{KeyDir: filepath.Join(data, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	return svc.Identity.CheckPassword(context.Background(), name, password)
}

func TestAdminResetPasswordAndCreateUser(t *testing.T) {
	data := t.TempDir()
	// Never a new index made by a mistyped --data: the data dir must be one cove has run on.
	if code, _, errOut := cli(t, "", "admin", "reset-password", "admin", "--data", data); code != 1 || !strings.Contains(errOut, "no index/") {
		t.Fatalf("reset-password on a directory cove never ran on = %d, %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(data, "index")); err == nil {
		t.Fatal("reset-password on a wrong directory made an index there")
	}
	db, err := cache.OpenDB(filepath.Join(data, "index"), nil) // as the first start leaves it
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	// A lost admin password before the admin even exists: reset-password creates it.
	code, out, errOut := cli(t, "", "admin", "reset-password", "admin", "--data", data)
	if code != 0 {
		t.Fatalf("reset-password = %d: %s", code, errOut)
	}
	m := regexp.MustCompile(`password of admin: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("reset-password printed no password: %q", out)
	}
	if p, err := checkLogin(t, data, "admin", m[1]); err != nil || !p.Admin {
		t.Fatalf("the generated password does not log the admin in: %v, %v", p, err)
	}

	// A chosen password from stdin, flags before the name.
	if code, _, errOut := cli(t, "Chosen-pass1\n", "admin", "reset-password", "--data", data, "--password-stdin", "admin"); code != 0 {
		t.Fatalf("reset-password --password-stdin = %d: %s", code, errOut)
	}
	if _, err := checkLogin(t, data, "admin", m[1]); !errors.Is(err, auth.ErrBadCredentials) {
		t.Errorf("the old password still works: %v", err)
	}
	if _, err := checkLogin(t, data, "admin", "Chosen-pass1"); err != nil {
		t.Errorf("the new password does not work: %v", err)
	}

	// create-user, as a system admin, for automation.
	if code, out, errOut := cli(t, "Robot-ish-pass2\n", "admin", "create-user", "ci-bot", "--admin", "--email", "ci@example.org", "--password-stdin", "--data", data); code != 0 || !strings.Contains(out, "created user ci-bot") {
		t.Fatalf("create-user = %d, %q: %s", code, out, errOut)
	}
	if p, err := checkLogin(t, data, "ci-bot", "Robot-ish-pass2"); err != nil || !p.Admin {
		t.Errorf("created user: %+v, %v", p, err)
	}
	if code, _, errOut := cli(t, "Robot-ish-pass2\n", "admin", "create-user", "ci-bot", "--password-stdin", "--data", data); code != 1 || !strings.Contains(errOut, "ci-bot") {
		t.Errorf("creating an existing user = %d: %s", code, errOut)
	}

	// Bad input: a weak password, no name, an unknown user, flags of the other command.
	for _, tc := range []struct {
		stdin string
		args  []string
		code  int
		say   string
	}{
		{"weak\n", []string{"admin", "reset-password", "admin", "--password-stdin", "--data", data}, 2, "at least 8 characters"},
		{"", []string{"admin", "reset-password", "--data", data}, 2, "exactly one user name"},
		{"", []string{"admin", "reset-password", "nobody", "--data", data}, 1, "nobody"},
		{"", []string{"admin", "reset-password", "admin", "--admin", "--data", data}, 2, "create-user"},
		{"", []string{"admin", "create-user", "admin", "--data", data}, 2, "not a user name"},
		{"", []string{"admin", "create-user", "bad name", "--data", data}, 2, "not a user name"},
		{"", []string{"admin", "frobnicate"}, 2, "unknown command"},
	} {
		code, _, errOut := cli(t, tc.stdin, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.say) {
			t.Errorf("cove %q = %d, %q; want %d saying %q", tc.args, code, errOut, tc.code, tc.say)
		}
	}

	// While cove runs on the data dir (its index open), the command refuses with a clear error.
	db, err = cache.OpenDB(filepath.Join(data, "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	code, _, errOut = cli(t, "", "admin", "reset-password", "admin", "--data", data)
	db.Close()
	if code != 1 || !strings.Contains(errOut, "stop cove first") {
		t.Errorf("reset-password on a data dir in use = %d, %q", code, errOut)
	}
}

func TestVersionAndHelp(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		code, out, _ := cli(t, "", arg)
		if code != 0 || !strings.HasPrefix(out, "cove "+version+" (commit ") || !strings.Contains(out, runtime.Version()) {
			t.Errorf("cove %s = %d, %q; want the version, commit and %s", arg, code, out, runtime.Version())
		}
	}
	for _, args := range [][]string{{"serve", "--help"}, {"serve", "-h"}, {"admin", "--help"}, {"help"}} {
		code, out, errOut := cli(t, "", args...)
		if code != 0 || out == "" || errOut != "" {
			t.Errorf("cove %q = %d, stdout %q, stderr %q; want its help on stdout and 0", args, code, out, errOut)
		}
	}
	if _, out, _ := cli(t, "", "serve", "--help"); !strings.Contains(out, "-listen") || !strings.Contains(out, "-data") {
		t.Errorf("serve --help does not list its flags: %q", out)
	}
	// A usage error goes to stderr with exit 2.
	if code, out, errOut := cli(t, "", "serve", "--no-such-flag"); code != 2 || out != "" || !strings.Contains(errOut, "-listen") {
		t.Errorf("serve --no-such-flag = %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestAdminPasswordFromConfigFollowsThePolicy(t *testing.T) {
	for _, tc := range []struct {
		pw string
		ok bool
	}{
		{"short1A", false},
		{strings.Repeat("Aa1", 25), false}, // 75 bytes: over bcrypt's 72
		{"nodigitsHere", false},
		{"Good-password1", true},
	} {
		path := filepath.Join(t.TempDir(), "cove.yaml")
		if err := os.WriteFile(path, []byte("auth:\n  admin_password: \""+tc.pw+"\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadConfig(path, nil, nil)
		if tc.ok != (err == nil) {
			t.Errorf("admin_password of %d bytes: %v, want ok=%v", len(tc.pw), err, tc.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), "auth.admin_password") || strings.Contains(err.Error(), tc.pw)) {
			t.Errorf("error %q should name the key and never the password", err)
		}
	}
}

// An upstream URL with credentials in it never reaches the admin API or page (docs/SECURITY.md 13).
func TestAdminStatusRedactsUpstreamURLs(t *testing.T) {
	st := adminStatus(mirror.Status{Upstreams: []mirror.UpstreamStatus{{Name: "x", URL: "http://upuser:UpSecret99@up.example:5000/"}}})
	if got := st.Upstreams[0].URL; strings.Contains(got, "UpSecret99") || !strings.Contains(got, "up.example:5000") {
		t.Errorf("mirror status URL = %q", got)
	}
}
