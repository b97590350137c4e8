package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// daemon is a server process under measurement.
type daemon struct {
	name string
	url  string
	cmd  *exec.Cmd
}

func (d *daemon) stop() {
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			d.cmd.Process.Kill()
			<-done
		}
	}
}

// startCove runs cove as a mirror of the upstream on a temp data directory.
func startCove(ctx context.Context, bin, dir, upstreamURL, password, serverLog string) (*daemon, error) {
	cfg := filepath.Join(dir, "cove.yaml")
	conf := fmt.Sprintf("mirror:\n  tag_ttl: 1h\n  max_size: 1TiB\n  upstreams:\n    docker.io:\n      url: %s\n", upstreamURL)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--config", cfg)
	cmd.Env = append(os.Environ(), "COVE_AUTH_ADMIN_PASSWORD="+password)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var logf *os.File // where cove's own log goes, to look into a run
		if serverLog != "" {
			logf, _ = os.Create(serverLog)
			defer logf.Close()
		}
		for sc.Scan() {
			if logf != nil {
				logf.Write(append(sc.Bytes(), '\n'))
			}
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				select {
				case addr <- rec.Addr:
				default:
				}
			}
		}
	}()
	select {
	case a := <-addr:
		return &daemon{name: "cove", url: "http://" + a, cmd: cmd}, nil
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		return nil, fmt.Errorf("cove did not start")
	}
}

// startPeer runs Debian's docker-registry (CNCF distribution) as a pull-through cache of the
// upstream: the peer mirror the numbers are compared with.
func startPeer(ctx context.Context, dir, upstreamURL string) (*daemon, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, fmt.Errorf("the peer mirror needs docker-registry (apt-get install docker-registry): %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%d\n  secret: bench\nproxy:\n  remoteurl: %s\n",
		filepath.Join(dir, "peer"), port, upstreamURL)
	cfg := filepath.Join(dir, "peer.yml")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "serve", cfg)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &daemon{name: "peer", url: "http://127.0.0.1:" + strconv.Itoa(port), cmd: cmd}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(d.url + "/v2/"); err == nil {
			resp.Body.Close()
			return d, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.stop()
	return nil, fmt.Errorf("docker-registry did not start")
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
