package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// daemon is a server process under measurement.
type daemon struct {
	name   string
	url    string
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has exited and been waited for
	out    *tail         // the last lines of its stderr
	// evictions receives how long each of cove's eviction passes took, from its log ("evicted
	// mirrored blobs"), when there is room; nil for the peer.
	evictions chan time.Duration
}

// stop interrupts the daemon and waits for it, killing it after 30 s.
func (d *daemon) stop() {
	d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// died is the error of a daemon that exited while starting, with the end of its log.
func (d *daemon) died(addr string) error {
	return fmt.Errorf("%s exited before it listened on %s (%v); the end of its log:\n%s", d.name, addr, d.cmd.ProcessState, d.out)
}

// tail keeps the last lines written to it.
type tail struct {
	mu    sync.Mutex
	lines []string // guarded by mu
	part  []byte   // guarded by mu: a line not yet ended
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.part = append(t.part, p...)
	for {
		i := bytes.IndexByte(t.part, '\n')
		if i < 0 {
			break
		}
		t.lines = append(t.lines, string(t.part[:i]))
		t.part = t.part[i+1:]
		if len(t.lines) > 10 {
			t.lines = t.lines[1:]
		}
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := slices.Clone(t.lines)
	if len(t.part) > 0 {
		lines = append(lines, string(t.part))
	}
	return strings.Join(lines, "\n")
}

// startCove runs cove as a mirror of the upstream on a temp data directory, listening on addr
// (port 0: cove picks one and logs it).
// maxSize is mirror.max_size ("1TiB" when empty).
func startCove(ctx context.Context, bin, dir, addr, upstreamURL, password, serverLog, maxSize string) (*daemon, error) {
	cfg := filepath.Join(dir, "cove.yaml")
	conf := fmt.Sprintf("mirror:\n  tag_ttl: 1h\n  max_size: %s\n  upstreams:\n    docker.io:\n      url: %s\n", cmp.Or(maxSize, "1TiB"), upstreamURL)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "serve", "--listen", addr, "--data", filepath.Join(dir, "data"), "--config", cfg)
	cmd.Env = append(os.Environ(), "COVE_AUTH_ADMIN_PASSWORD="+password)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	var logf *os.File // where cove's own log goes, to look into a run
	if serverLog != "" {
		// Appended to: cove bench --scale starts cove several times (Run and RunScale empty it
		// first).
		if logf, err = os.OpenFile(serverLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
			return nil, fmt.Errorf("server log: %w", err)
		}
	}
	if err := cmd.Start(); err != nil {
		if logf != nil {
			logf.Close()
		}
		return nil, err
	}
	d := &daemon{name: "cove", cmd: cmd, exited: make(chan struct{}), out: &tail{}, evictions: make(chan time.Duration, 64)}
	listening := make(chan string, 1)
	go func() {
		defer close(d.exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if logf != nil {
				logf.Write(append(sc.Bytes(), '\n'))
			}
			d.out.Write(append(sc.Bytes(), '\n'))
			// Only the lines the harness waits for are parsed: parsing every access-log line
			// would load the machine the bench measures on.
			line := sc.Bytes()
			if !bytes.Contains(line, []byte(`"msg":"listening"`)) && !bytes.Contains(line, []byte(`"msg":"evicted mirrored blobs"`)) {
				continue
			}
			var rec struct {
				Msg, Addr string
				Took      time.Duration // nanoseconds, as slog's JSON handler writes a duration
			}
			if json.Unmarshal(line, &rec) != nil {
				continue
			}
			switch rec.Msg {
			case "listening":
				select {
				case listening <- rec.Addr:
				default:
				}
			case "evicted mirrored blobs":
				select {
				case d.evictions <- rec.Took:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // a line over the scanner's limit: drain to EOF
		if logf != nil {
			logf.Close()
		}
		cmd.Wait() // after the last read from the pipe, as exec requires
	}()
	select {
	case a := <-listening:
		d.url = baseURL(a)
		return d, nil
	case <-d.exited:
		return nil, d.died(addr)
	case <-time.After(60 * time.Second):
		d.stop()
		return nil, fmt.Errorf("cove did not listen on %s within 60 s; the end of its log:\n%s", addr, d.out)
	}
}

// startPeer runs Debian's docker-registry (CNCF distribution) as a pull-through cache of the
// upstream, listening on addr: the peer mirror the numbers are compared with.
func startPeer(ctx context.Context, dir, addr, upstreamURL string) (*daemon, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, fmt.Errorf("the peer mirror needs docker-registry (apt-get install docker-registry): %w", err)
	}
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n  secret: bench\nproxy:\n  remoteurl: %s\n",
		filepath.Join(dir, "peer"), addr, upstreamURL)
	cfg := filepath.Join(dir, "peer.yml")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "serve", cfg)
	d := &daemon{name: "peer", url: baseURL(addr), cmd: cmd, exited: make(chan struct{}), out: &tail{}}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(d.exited)
		cmd.Wait()
	}()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-d.exited:
			return nil, d.died(addr)
		default:
		}
		if resp, err := http.Get(d.url + "/v2/"); err == nil {
			resp.Body.Close()
			return d, nil
		}
	}
	d.stop()
	return nil, fmt.Errorf("docker-registry did not answer on %s within 30 s; the end of its log:\n%s", addr, d.out)
}

// peakRSS returns a process's peak resident memory (VmHWM) in bytes, and resets it when reset
// (returning 0, or -1 when the kernel refused).
func peakRSS(pid int, reset bool) int64 {
	if reset {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0o200); err != nil {
			return -1
		}
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return -1
}
