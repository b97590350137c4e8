package blobstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cove/internal/s3test"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"
)

func tempBlob(t *testing.T, n int) (*os.File, digest.Digest, []byte) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	f, err := os.Create(filepath.Join(t.TempDir(), "blob"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	return f, digest.FromBytes(b), b
}

func newS3(t *testing.T, srv *s3test.Server, prefix string) *S3 {
	t.Helper()
	s, err := NewS3(S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Region: "us-east-1",
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Prefix: prefix, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The S3 store against a real S3 server (versitygw): blobs go in whole, under the prefix and the
// filesystem's layout, in parts when larger than partSize; come out byte-exact; absent ones are
// ErrNotFound; a presigned URL serves the blob without credentials.
func TestS3(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t)
	s := newS3(t, srv, "fleet")
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1000, partSize + 12345} {
		f, d, want := tempBlob(t, n)
		f.Seek(7, io.SeekStart) // Put reads from the start, whatever the file's offset
		if err := s.Put(ctx, d, f, int64(n)); err != nil {
			t.Fatalf("Put %d bytes: %v", n, err)
		}
		if err := s.Put(ctx, d, f, int64(n)); err != nil {
			t.Fatalf("Put again: %v", err)
		}
		if size, err := s.Stat(ctx, d); err != nil || size != int64(n) {
			t.Errorf("Stat = %d, %v; want %d", size, err, n)
		}
		rc, size, err := s.Get(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || size != int64(n) || !bytes.Equal(got, want) {
			t.Errorf("Get %d bytes = %d bytes (size %d), %v; not byte-exact", n, len(got), size, err)
		}
		if _, err := srv.Client(t).StatObject(ctx, srv.Bucket, "fleet/blobs/sha256/"+d.Encoded()[:2]+"/"+d.Encoded(), minio.StatObjectOptions{}); err != nil {
			t.Errorf("the object is not under the prefix and the filesystem's layout: %v", err)
		}
		u, err := s.PresignGet(ctx, d, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(u.String())
		if err != nil {
			t.Fatal(err)
		}
		got, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(got, want) {
			t.Errorf("the presigned URL = %d, %d bytes", resp.StatusCode, len(got))
		}
		if err := s.Delete(ctx, d); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, d); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat after Delete = %v, want ErrNotFound", err)
		}
		if _, _, err := s.Get(ctx, d); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get after Delete = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, d); err != nil {
			t.Errorf("Delete of an absent blob = %v", err)
		}
	}
}

// A wrong bucket, wrong credentials, a bad endpoint and a server that is down are clear errors
// naming the key to fix, never ErrNotFound.
func TestS3Errors(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t)
	d := digest.FromString("x")
	for _, tt := range []struct {
		name string
		cfg  S3Config
		want string
	}{
		{"no scheme", S3Config{Endpoint: "127.0.0.1:9000", Bucket: "b"}, "storage.blobs.s3.endpoint"},
		{"a path", S3Config{Endpoint: "http://127.0.0.1:9000/cove", Bucket: "b"}, "storage.blobs.s3.endpoint"},
		{"no bucket", S3Config{Endpoint: "http://127.0.0.1:9000"}, "storage.blobs.s3.bucket"},
	} {
		if _, err := NewS3(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: NewS3 = %v, want an error naming %s", tt.name, err, tt.want)
		}
	}
	missing, err := NewS3(S3Config{Endpoint: srv.Endpoint, Bucket: "absent", AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PathStyle: true, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := missing.Check(ctx); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Check of a missing bucket = %v", err)
	}
	if _, err := missing.Stat(ctx, d); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Stat in a missing bucket = %v, want an error that is not ErrNotFound", err)
	}
	wrong, _ := NewS3(S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey, SecretKey: "wrong", PathStyle: true, Region: "us-east-1"})
	if err := wrong.Check(ctx); err == nil || !strings.Contains(err.Error(), "secret_key") {
		t.Errorf("Check with a wrong secret key = %v, want an error naming the keys", err)
	}
	s := newS3(t, srv, "")
	srv.Stop()
	if err := s.Ping(ctx); err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("Ping of a stopped server = %v", err)
	}
	if _, err := s.Stat(ctx, d); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Stat on a stopped server = %v, want an error that is not ErrNotFound", err)
	}
}
