package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// MemoryCommand is the argument of cove bench that serves one manifest from memory, in a process of
// its own: the in-memory handler that cove's cached manifests are measured against. The upstream
// answers from memory too, but inside the harness, whose load generator shares its process and
// runtime: in a process of its own, like cove, the handler is the limit of answering from memory.
const MemoryCommand = "memory-server"

// ServeMemory is cove bench memory-server ADDR FILE MEDIA-TYPE DIGEST: it serves the manifest in
// FILE under every /v2/…/manifests/<ref> path (GET and HEAD, with the headers a registry sends),
// prints "listening <addr>" and serves until its standard input closes.
func ServeMemory(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) != 4 {
		return fmt.Errorf("usage: cove bench %s ADDR FILE MEDIA-TYPE DIGEST", MemoryCommand)
	}
	body, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	mediaType, dgst, length := args[2], args[3], strconv.Itoa(len(body))
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", mediaType)
		h.Set("Docker-Content-Digest", dgst)
		h.Set("Content-Length", length)
		if r.Method == http.MethodGet {
			w.Write(body)
		}
	})}
	go srv.Serve(ln)
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	_, _ = io.Copy(io.Discard, stdin)
	return srv.Close()
}

// memoryServer is a running ServeMemory process.
type memoryServer struct {
	url   string
	stdin io.WriteCloser
	cmd   *exec.Cmd
}

// startMemory runs cove bench memory-server for the manifest m, listening on addr.
func startMemory(ctx context.Context, bin, dir, addr string, m manifest) (*memoryServer, error) {
	file := filepath.Join(dir, "memory-manifest")
	if err := os.WriteFile(file, m.body, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "bench", MemoryCommand, addr, file, m.mediaType, m.digest)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ms := &memoryServer{stdin: stdin, cmd: cmd}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	got, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		ms.stop()
		return nil, fmt.Errorf("the in-memory handler did not start: %q, %v", line, err)
	}
	ms.url = baseURL(got)
	return ms, nil
}

func (ms *memoryServer) stop() {
	ms.stdin.Close()
	done := make(chan struct{})
	go func() { _ = ms.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = ms.cmd.Process.Kill()
		<-done
	}
}
