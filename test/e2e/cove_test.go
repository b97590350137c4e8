// Package e2e runs the cove binary as users run it, against real clients: the OCI conformance
// suite, go-containerregistry, skopeo. Every server is started and stopped here, on 127.0.0.1.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const adminPassword = "E2e-admin-password1"

// coveBin is the binary under test: $E2E_COVE_BIN, or one built by TestMain.
var coveBin string

func TestMain(m *testing.M) {
	coveBin = os.Getenv("E2E_COVE_BIN")
	var tmp string
	if coveBin == "" {
		var err error
		tmp, err = os.MkdirTemp("", "cove-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		coveBin = filepath.Join(tmp, "cove")
		build := exec.Command("go", "build", "-o", coveBin, "cove/cmd/cove")
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build cove:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	if tmp != "" {
		os.RemoveAll(tmp)
	}
	os.Exit(code)
}

// requireTool finds a program the test needs. A missing tool fails the test (make test installs
// every one): a half-installed machine must not pass with tests not run. Only an explicit opt-out,
// E2E_ALLOW_MISSING=1, turns that into a skip, and says so loudly.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		missing(t, name+" is not installed (make deps installs it)")
	}
	return path
}

// missing fails the test for something it needs that is not there, or skips it loudly when
// E2E_ALLOW_MISSING=1.
func missing(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("E2E_ALLOW_MISSING") == "1" {
		fmt.Fprintf(os.Stderr, "\n*** E2E_ALLOW_MISSING=1: SKIPPING %s: %s ***\n\n", t.Name(), what)
		t.Skipf("SKIPPED (E2E_ALLOW_MISSING=1): %s", what)
	}
	t.Fatalf("%s; set E2E_ALLOW_MISSING=1 to skip such tests instead (not in CI)", what)
}

// server is one running cove process.
type server struct {
	t    *testing.T
	cmd  *exec.Cmd
	dir  string
	addr string // host:port
	url  string

	mu    sync.Mutex
	lines []string // stderr, line by line
	done  chan struct{}
	out   *syncBuffer // stdout
	// httpAddr is the plain-HTTP listener's address when TLS is on.
	httpAddr string
}

// startCove starts cove on a free loopback port with data in dir and waits until it listens.
func startCove(t *testing.T, dir string, env ...string) *server {
	t.Helper()
	return startCoveArgs(t, dir, nil, env...)
}

// startCoveArgs is startCove with extra flags, which win over the defaults given here.
func startCoveArgs(t *testing.T, dir string, args []string, env ...string) *server {
	t.Helper()
	return startCoveBin(t, coveBin, dir, args, env...)
}

// startCoveBin is startCoveArgs with another cove binary (an earlier release's).
func startCoveBin(t *testing.T, bin, dir string, args []string, env ...string) *server {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--data", dir}, args...)...)
	cmd.Env = append(os.Environ(), "COVE_AUTH_ADMIN_PASSWORD="+adminPassword)
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, dir: dir, done: make(chan struct{}), out: &syncBuffer{}}
	cmd.Stdout = s.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.lines = append(s.lines, line)
			s.mu.Unlock()
			var rec struct {
				Msg, Addr string
				HTTPAddr  string `json:"http_addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				s.mu.Lock()
				s.httpAddr = rec.HTTPAddr
				s.mu.Unlock()
				addrc <- rec.Addr
			}
		}
	}()
	select {
	case s.addr = <-addrc:
	case <-s.done:
		cmd.Wait()
		t.Fatalf("cove exited before listening (%v); stderr:\n%s", cmd.ProcessState, s.log())
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("cove did not start listening within 30s; stderr:\n%s", s.log())
	}
	s.url = "http://" + s.addr
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("cove stderr (last lines):\n%s", s.tail(40))
		}
	})
	return s
}

func (s *server) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

func (s *server) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	from := max(len(s.lines)-n, 0)
	return strings.Join(s.lines[from:], "\n")
}

// stop sends SIGTERM and returns the exit status.
func (s *server) stop() int {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
	return s.wait(90 * time.Second)
}

// kill sends SIGKILL: no cleanup of any kind happens in cove.
func (s *server) kill() {
	s.t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		s.t.Fatal(err)
	}
	s.wait(30 * time.Second)
}

func (s *server) wait(limit time.Duration) int {
	s.t.Helper()
	errc := make(chan error, 1)
	go func() { <-s.done; errc <- s.cmd.Wait() }()
	select {
	case <-errc:
	case <-time.After(limit):
		s.cmd.Process.Kill()
		s.t.Fatalf("cove did not exit within %s", limit)
	}
	return s.cmd.ProcessState.ExitCode()
}

// do sends a request to cove as admin (or anonymously when asAdmin is false).
func (s *server) do(method, path string, body io.Reader, asAdmin bool, hdr ...string) (*http.Response, []byte) {
	s.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, s.url+path, body)
	if err != nil {
		s.t.Fatal(err)
	}
	if asAdmin {
		req.SetBasicAuth("admin", adminPassword)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

// createProject creates a project through the Harbor-shaped API.
func (s *server) createProject(name string, public bool) {
	s.t.Helper()
	body := fmt.Sprintf(`{"project_name":%q,"metadata":{"public":"%t"}}`, name, public)
	resp, b := s.do("POST", "/api/v2.0/projects", strings.NewReader(body), true, "Content-Type", "application/json")
	if resp.StatusCode != http.StatusCreated {
		s.t.Fatalf("create project %s = %d %s", name, resp.StatusCode, b)
	}
}

// waitFor polls cond every 10ms until it holds or limit passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tmpBytes returns the total size of the files in cove's tmp directory.
func tmpBytes(dir string) (files int, size int64) {
	ents, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			files++
			size += info.Size()
		}
	}
	return files, size
}

// token gets a registry token for scope from s's token service as user.
func (s *server) token(t *testing.T, user, pass, scope string) string {
	t.Helper()
	resp, body := s.doAs("GET", "/service/token?service=cove&scope="+scope, nil, user, pass)
	var tok struct{ Token string }
	json.Unmarshal(body, &tok)
	if resp.StatusCode != 200 || tok.Token == "" {
		t.Fatalf("token for %s from %s = %d %s", user, s.url, resp.StatusCode, body)
	}
	return tok.Token
}

func execCove(args ...string) *exec.Cmd { return exec.Command(coveBin, args...) }

type httpResponse = http.Response

func newRequest(method, url string, body io.Reader) (*http.Request, error) {
	return http.NewRequest(method, url, body)
}

func doRequest(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

func execCommand(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
