package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/opencontainers/go-digest"
)

// S3Config is storage.blobs.s3.
type S3Config struct {
	// Endpoint is the URL of the S3 API, with its scheme: http://127.0.0.1:9000 or
	// https://s3.example.com (the scheme says whether TLS is used).
	Endpoint  string
	Bucket    string
	Region    string
	AccessKey string
	SecretKey string
	// Prefix is put before every object name, e.g. "cove/".
	Prefix string
	// PathStyle addresses the bucket in the path (http://host/bucket/key), as most S3-compatible
	// servers want; false addresses it in the host name (http://bucket.host/key), as AWS prefers.
	PathStyle bool
	// Transport is the HTTP transport; nil: a default one.
	Transport http.RoundTripper
}

// partSize is the part of a multipart upload: blobs larger than it go up in parts of it, read
// from the file in place (no part is buffered in memory).
const partSize = 16 << 20

// S3 is a Store in an S3-compatible bucket (minio-go).
type S3 struct {
	c      *minio.Client
	bucket string
	prefix string
}

// NewS3 connects to the bucket. It does not check that the bucket exists: Check does.
func NewS3(cfg S3Config) (*S3, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("storage.blobs.s3.endpoint: want the S3 API's URL with its scheme, such as http://127.0.0.1:9000, got %q", cfg.Endpoint)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("storage.blobs.s3.endpoint: want no path (put the bucket in storage.blobs.s3.bucket), got %q", cfg.Endpoint)
	}
	if cfg.Bucket == "" {
		return nil, errors.New("storage.blobs.s3.bucket: must be set")
	}
	if cfg.Prefix != "" && !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	lookup := minio.BucketLookupDNS
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       u.Scheme == "https",
		Region:       cfg.Region,
		BucketLookup: lookup,
		Transport:    cfg.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("storage.blobs.s3: %w", err)
	}
	return &S3{c: c, bucket: cfg.Bucket, prefix: cfg.Prefix}, nil
}

// Check makes sure the bucket exists and the credentials may use it: for the start, where a
// wrong bucket or key must be a clear error.
func (s *S3) Check(ctx context.Context) error {
	ok, err := s.c.BucketExists(ctx, s.bucket)
	switch code := minio.ToErrorResponse(err).Code; {
	case code == "AccessDenied" || code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch":
		return fmt.Errorf("storage.blobs.s3.access_key, secret_key: the bucket %q at %s refuses them (%s): check the keys and their rights on the bucket", s.bucket, s.c.EndpointURL(), code)
	case err != nil:
		return fmt.Errorf("storage.blobs.s3: the bucket %q cannot be reached at %s: %w", s.bucket, s.c.EndpointURL(), err)
	}
	if !ok {
		return fmt.Errorf("storage.blobs.s3.bucket: the bucket %q does not exist at %s; create it first", s.bucket, s.c.EndpointURL())
	}
	return nil
}

func (s *S3) Ping(ctx context.Context) error {
	if _, err := s.c.BucketExists(ctx, s.bucket); err != nil {
		return fmt.Errorf("the blob store (storage.blobs.s3, %s) does not answer: %w", s.c.EndpointURL(), err)
	}
	return nil
}

func (s *S3) Put(ctx context.Context, dgst digest.Digest, f *os.File, size int64) error {
	// Read through a section of the file: minio-go reads parts at their offsets (ReaderAt), in
	// place, and a caller's file offset is left alone.
	_, err := s.c.PutObject(ctx, s.bucket, Key(s.prefix, dgst), io.NewSectionReader(f, 0, size), size, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    partSize,
		NumThreads:  2,
	})
	if err != nil {
		return fmt.Errorf("put blob %s into the blob store: %w", dgst, err)
	}
	return nil
}

func (s *S3) Get(ctx context.Context, dgst digest.Digest) (io.ReadCloser, int64, error) {
	o, err := s.c.GetObject(ctx, s.bucket, Key(s.prefix, dgst), minio.GetObjectOptions{})
	if err != nil {
		return nil, 0, s.err(ctx, "get", dgst, err)
	}
	st, err := o.Stat() // the request is made here
	if err != nil {
		o.Close()
		return nil, 0, s.err(ctx, "get", dgst, err)
	}
	return o, st.Size, nil
}

func (s *S3) Stat(ctx context.Context, dgst digest.Digest) (int64, error) {
	st, err := s.c.StatObject(ctx, s.bucket, Key(s.prefix, dgst), minio.StatObjectOptions{})
	if err != nil {
		return 0, s.err(ctx, "stat", dgst, err)
	}
	return st.Size, nil
}

func (s *S3) Delete(ctx context.Context, dgst digest.Digest) error {
	if err := s.c.RemoveObject(ctx, s.bucket, Key(s.prefix, dgst), minio.RemoveObjectOptions{}); err != nil {
		if err := s.err(ctx, "delete", dgst, err); !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

func (s *S3) List(ctx context.Context, fn func(dgst digest.Digest, size int64, written time.Time) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the listing when fn stops it
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + "blobs/", Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("list the blob store: %w", o.Err)
		}
		parts := strings.Split(strings.TrimPrefix(o.Key, s.prefix+"blobs/"), "/")
		if len(parts) != 3 {
			continue
		}
		dgst := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[2])
		if dgst.Validate() != nil || Key(s.prefix, dgst) != o.Key {
			continue
		}
		if err := fn(dgst, o.Size, o.LastModified); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (s *S3) PresignGet(ctx context.Context, dgst digest.Digest, ttl time.Duration) (*url.URL, error) {
	u, err := s.c.PresignedGetObject(ctx, s.bucket, Key(s.prefix, dgst), ttl, nil)
	if err != nil {
		return nil, fmt.Errorf("presign blob %s: %w", dgst, err)
	}
	return u, nil
}

// err turns an S3 error into ErrNotFound where it says the object is absent. minio-go names a
// 404 to a HEAD (which has no body) NoSuchKey whatever was missing, so a missing object is
// confirmed by asking for the bucket: a missing bucket is no missing blob.
func (s *S3) err(ctx context.Context, op string, dgst digest.Digest, err error) error {
	r := minio.ToErrorResponse(err)
	if r.Code == "NoSuchKey" || (r.StatusCode == http.StatusNotFound && r.Code != "NoSuchBucket") {
		ok, berr := s.c.BucketExists(ctx, s.bucket)
		switch {
		case berr == nil && ok:
			return fmt.Errorf("%w: %s", ErrNotFound, dgst)
		case berr == nil:
			err = fmt.Errorf("the bucket %q (storage.blobs.s3.bucket) does not exist", s.bucket)
		default:
			err = berr
		}
	}
	return fmt.Errorf("%s blob %s in the blob store: %w", op, dgst, err)
}

var (
	_ Store  = (*S3)(nil)
	_ Lister = (*S3)(nil)
)
