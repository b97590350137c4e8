// Package blobstore is the blob-storage seam: where immutable, content-addressed blobs live
// besides a node's own disk. The filesystem under data/blobs is always a node's working copy (its
// hot tier, served with sendfile); in fleet mode (storage.blobs.kind: s3) every blob is also in
// an S3-compatible bucket shared by the fleet, and a node that lacks a blob locally reads it from
// there. Objects are written whole, once, under their digest, and never changed: nothing mutable
// is kept in the bucket (docs/DESIGN.md, "Fleet mode").
package blobstore

import (
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
)

// ErrNotFound means the store has no blob of that digest.
var ErrNotFound = errors.New("blob not in the blob store")

// Store keeps blobs by digest. Implementations are safe for concurrent use.
type Store interface {
	// Put stores the verified file f, of size bytes, as dgst. The blob appears whole or not at
	// all; putting a blob that is there already is no error.
	Put(ctx context.Context, dgst digest.Digest, f *os.File, size int64) error
	// Get reads the blob dgst; its size is returned with it. ErrNotFound when absent.
	Get(ctx context.Context, dgst digest.Digest) (io.ReadCloser, int64, error)
	// Stat returns the size of the blob dgst, or ErrNotFound.
	Stat(ctx context.Context, dgst digest.Digest) (int64, error)
	// Delete removes the blob dgst; an absent blob is no error.
	Delete(ctx context.Context, dgst digest.Digest) error
	// Ping checks that the store answers, for /readyz.
	Ping(ctx context.Context) error
	// PresignGet returns a URL that serves the blob for ttl without credentials (a redirect
	// target for clients), or an error when the store cannot make one.
	PresignGet(ctx context.Context, dgst digest.Digest, ttl time.Duration) (*url.URL, error)
}

// Lister is a Store that can list its blobs: garbage collection removes the objects that no
// record names (a push cut between its object and its record).
type Lister interface {
	// List calls fn with the digest, size and time of writing of each blob, until fn returns an
	// error, which List returns. Objects that are not blobs of Key's layout are skipped.
	List(ctx context.Context, fn func(dgst digest.Digest, size int64, written time.Time) error) error
}

// Key is the object name of a blob: prefix + blobs/<algorithm>/<first two hex>/<hex>, the
// filesystem's layout.
func Key(prefix string, dgst digest.Digest) string {
	h := dgst.Encoded()
	return prefix + "blobs/" + string(dgst.Algorithm()) + "/" + h[:2] + "/" + h
}
