package main

// The control socket: DATA/cove.sock, a Unix socket only the data directory's owner (and root)
// can open, on which a running cove answers the commands that must go through it because it
// holds the index — an online backup of its records (cove backup).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"cove/auth"
	"cove/cache"
	"cove/internal/cluster"
	"cove/internal/kv"
)

// controlSocket is the control socket's name in the data directory.
const controlSocket = "cove.sock"

// maxSocketPath is the longest path a Unix socket may have on Linux (sun_path, with its NUL).
const maxSocketPath = 107

// socketAddr is the address to bind or dial for the socket at path: path itself, or, when it is
// too long for a socket address, the same file reached through the directory opened by this
// process (/proc/self/fd/N/NAME); done closes that directory once the bind or dial is made.
func socketAddr(path string) (addr string, done func(), err error) {
	if len(path) <= maxSocketPath {
		return path, func() {}, nil
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return "", nil, err
	}
	addr = fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path))
	if len(addr) > maxSocketPath {
		dir.Close()
		return "", nil, fmt.Errorf("the socket name %s is too long", filepath.Base(path))
	}
	return addr, func() { dir.Close() }, nil
}

// serveControl listens on the control socket of data until stop is called (ctx ending cancels the
// exports in flight).
func serveControl(ctx context.Context, data string, meta kv.DB, log *slog.Logger) (stop func()) {
	path := filepath.Join(data, controlSocket)
	// A socket a killed cove left: this cove holds the index, so no other cove listens on it.
	os.Remove(path)
	addr, done, err := socketAddr(path)
	var ln net.Listener
	if err == nil {
		ln, err = net.Listen("unix", addr)
		done()
	}
	if err != nil {
		log.Warn("no control socket; cove backup works only while cove is stopped", "path", path, "err", err)
		return func() {}
	}
	// The directory's descriptor is closed: its number may name another directory by the close.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		log.Warn("no control socket; cove backup works only while cove is stopped", "path", path, "err", err)
		return func() {}
	}
	// stop ends the exports in flight and waits for them: the index closes after it.
	var (
		mu      sync.Mutex
		stopped bool
		exports sync.WaitGroup
	)
	ectx, cancel := context.WithCancel(ctx)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /records", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if stopped {
			mu.Unlock()
			http.Error(w, "cove is stopping: run the backup while it is stopped, or once it runs again", http.StatusServiceUnavailable)
			return
		}
		exports.Add(1)
		mu.Unlock()
		defer exports.Done()
		rctx, stop := context.WithCancel(r.Context())
		defer stop()
		defer context.AfterFunc(ectx, stop)()
		exp, ok := meta.(kv.Exporter)
		if !ok {
			http.Error(w, "this store cannot export its records", http.StatusNotImplemented)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		sw, err := kv.NewStreamWriter(w)
		if err == nil {
			err = exportRecords(rctx, exp, sw.Write)
		}
		if err == nil {
			_, err = sw.Close()
		}
		if err != nil {
			// The stream ends without its count: the client knows it is cut.
			log.Error("control socket: export the records for a backup", "err", err)
			panic(http.ErrAbortHandler)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go srv.Serve(ln)
	return func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		cancel()
		srv.Close()
		exports.Wait()
		os.Remove(path)
	}
}

// exportRecords passes every record of exp that a backup keeps to fn, from one snapshot.
func exportRecords(ctx context.Context, exp kv.Exporter, fn func(kv.Record) error) error {
	isSeq := func(key []byte) bool { return bytes.HasPrefix(key, []byte(auth.SequencePrefix)) }
	return exp.Export(ctx, isSeq, func(r kv.Record) error {
		if !r.Sequence && (cache.Transient(r.Key) || cluster.Transient(r.Key)) {
			return nil
		}
		return fn(r)
	})
}

// controlRecords asks the cove running on data for its records; the stream is the caller's to
// read and close.
func controlRecords(ctx context.Context, data string) (io.ReadCloser, error) {
	path := filepath.Join(data, controlSocket)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		addr, done, err := socketAddr(path)
		if err != nil {
			return nil, err
		}
		defer done()
		var d net.Dialer
		return d.DialContext(ctx, "unix", addr)
	}}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://cove/records", nil)
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) || isRefused(err) {
			return nil, fmt.Errorf("the data directory %s is in use (its index is locked), and nothing answers on %s (%v): another cove command (backup, restore, admin, migrate) may hold it, then run cove backup again once it ends; a cove serve opens its socket after its start's migrations and walk of blobs/, and one older than this cove has none: stop it and run cove backup again, or upgrade it", data, path, err)
		}
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("the running cove refused the backup: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return resp.Body, nil
}

func isRefused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
