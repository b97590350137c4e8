// Package s3test starts a private S3 server for a test: versitygw (an S3 gateway, built by
// make into bin/ at the version test/tools/versitygw pins) with its posix backend in a temp dir,
// on a free loopback port, with one bucket, stopped when the test ends. It is for tests only.
package s3test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Version is the versitygw the tests run; the Makefile builds bin/versitygw-<Version>.
const Version = "v1.8.0"

// Server is a running versitygw.
type Server struct {
	Endpoint  string // http://127.0.0.1:port
	Bucket    string
	AccessKey string
	SecretKey string
	Root      string // the posix backend's directory: Root/Bucket holds the objects

	addr string
	cmd  *exec.Cmd
	log  *os.File
	bin  string
}

// Start runs versitygw for t with the bucket "cove". A missing binary fails the test (make test
// builds it) unless E2E_ALLOW_MISSING=1, which skips it loudly.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := binary()
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("E2E_ALLOW_MISSING") == "1" {
			fmt.Fprintf(os.Stderr, "\n*** E2E_ALLOW_MISSING=1: SKIPPING %s: %s is not built ***\n\n", t.Name(), bin)
			t.Skip("SKIPPED (E2E_ALLOW_MISSING=1): versitygw is not built")
		}
		t.Fatalf("versitygw is not built (%v): make test builds it (make %s)", err, "bin/versitygw-"+Version)
	}
	dir := t.TempDir()
	s := &Server{Bucket: "cove", AccessKey: "cove-test-access", SecretKey: "cove-test-secret-key", Root: filepath.Join(dir, "root"), bin: bin}
	if err := os.MkdirAll(s.Root, 0o700); err != nil {
		t.Fatal(err)
	}
	var err error
	if s.log, err = os.Create(filepath.Join(dir, "versitygw.log")); err != nil {
		t.Fatal(err)
	}
	s.addr = freeAddr(t)
	s.Endpoint = "http://" + s.addr
	s.start(t)
	t.Cleanup(func() { s.Stop() })
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v\n%s", err, s.Log())
	}
	return s
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	s.cmd = exec.Command(s.bin, "--port", s.addr, "--access", s.AccessKey, "--secret", s.SecretKey, "posix", s.Root)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw does not listen on %s after 30 s:\n%s", s.addr, s.Log())
		}
		time.Sleep(50 * time.Millisecond) // polling for a port: bounded by the deadline
	}
}

// Stop stops the server (the bucket's content stays for Restart).
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the stopped server again on the same address.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.start(t)
}

// Client is an S3 client of the server, for tests to look into the bucket.
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.addr, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), BucketLookup: minio.BucketLookupPath, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Log is what the server has printed.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.log.Name())
	return string(b)
}

// binary is bin/versitygw-<Version> at the module's root, or $E2E_VERSITYGW_BIN.
func binary() string {
	if p := os.Getenv("E2E_VERSITYGW_BIN"); p != "" {
		return p
	}
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module cove\n") {
				return filepath.Join(dir, "bin", "versitygw-"+Version)
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return filepath.Join("bin", "versitygw-"+Version)
		}
		dir = parent
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
