// Package pgtest starts a private PostgreSQL server for a test: Debian's PostgreSQL binaries,
// a cluster made with initdb in a temp dir, run as the postgres user on a free loopback port,
// stopped when the test ends. It is for tests only; cove itself never starts PostgreSQL.
package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Server is a running PostgreSQL.
type Server struct {
	// DSN connects to the database "cove" as the superuser, with a password.
	DSN  string
	Port int
	dir  string
	bin  string
}

// password of the test superuser: only a loopback test server ever has it.
const password = "cove-test-pw"

// Start runs a PostgreSQL server for t. A missing PostgreSQL fails the test (make test installs
// it) unless E2E_ALLOW_MISSING=1, which skips it loudly.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := binDir()
	if bin == "" {
		if os.Getenv("E2E_ALLOW_MISSING") == "1" {
			fmt.Fprintf(os.Stderr, "\n*** E2E_ALLOW_MISSING=1: SKIPPING %s: PostgreSQL is not installed ***\n\n", t.Name())
			t.Skip("SKIPPED (E2E_ALLOW_MISSING=1): PostgreSQL is not installed")
		}
		t.Fatal("PostgreSQL is not installed (make deps installs Debian's postgresql); set E2E_ALLOW_MISSING=1 to skip")
	}
	pg, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("no postgres user: %v", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	dir, err := os.MkdirTemp("", "cove-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{dir, filepath.Join(dir, "data"), filepath.Join(dir, "sock")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatalf("chown %s: %v (the tests run as root)", d, err)
		}
	}
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(pwfile, uid, gid)
	s := &Server{dir: dir, bin: bin, Port: freePort(t)}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres", "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
	run(filepath.Join(bin, "pg_ctl"), "-D", filepath.Join(dir, "data"), "-l", filepath.Join(dir, "log"), "-w", "-t", "60",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", s.Port, filepath.Join(dir, "sock")), "start")
	t.Cleanup(func() { s.Stop() })
	run(filepath.Join(bin, "psql"), "-h", filepath.Join(dir, "sock"), "-p", strconv.Itoa(s.Port), "-U", "postgres", "-c", "CREATE DATABASE cove")
	s.DSN = fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/cove?sslmode=disable", password, s.Port)
	return s
}

// Stop stops the server (fast shutdown); Start's cleanup calls it too.
func (s *Server) Stop() {
	exec.Command("runuser", "-u", "postgres", "--", filepath.Join(s.bin, "pg_ctl"), "-D", filepath.Join(s.dir, "data"), "-m", "fast", "-w", "-t", "30", "stop").Run()
}

// Restart starts a stopped server again on the same port and data.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	cmd := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(s.bin, "pg_ctl"), "-D", filepath.Join(s.dir, "data"),
		"-l", filepath.Join(s.dir, "log"), "-w", "-t", "60",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", s.Port, filepath.Join(s.dir, "sock")), "start")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl start: %v\n%s", err, out)
	}
}

// binDir is the newest installed PostgreSQL's bin directory, or "".
func binDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		b, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return a > b
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// CreateDB creates another database on the server and returns its DSN: for tests that need
// several empty databases.
func (s *Server) CreateDB(t testing.TB, name string) string {
	t.Helper()
	cmd := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(s.bin, "psql"), "-h", filepath.Join(s.dir, "sock"),
		"-p", strconv.Itoa(s.Port), "-U", "postgres", "-c", "CREATE DATABASE "+name)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("create database %s: %v\n%s", name, err, out)
	}
	return strings.Replace(s.DSN, "/cove?", "/"+name+"?", 1)
}
