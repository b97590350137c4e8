// Package cache is cove's content-addressed blob store and its badger index.
//
// Blob files live under <dir>/blobs/<algorithm>/<first two hex>/<hex> and never change once placed.
// Everything else — which blobs a repository may read (links), manifests, tags, referrers — is a
// record in badger under a key prefix of its own (blob/, link/, repo/, manifest/, tag/, referrer/).
//
// Invariants, kept by every write path and checked at start-up by Open:
//  1. A blob file is complete and verified before it is placed: bytes go to a file in <dir>/tmp while
//     they are hashed, then the file is fsync'ed, renamed into place and the directory fsync'ed.
//  2. The index never points at a missing file: the file is placed first, the record written second.
//     Open drops records whose file is gone and adopts placed files that have no record.
//  3. A blob is readable in a repository only through a link record for that repository.
//
// A Store is safe for concurrent use.
package cache

import (
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

// Errors returned by Store methods; callers compare them with errors.Is.
var (
	// ErrBlobUnknown means the blob does not exist or is not linked to the repository.
	ErrBlobUnknown = errors.New("blob unknown to repository")
	// ErrManifestUnknown means no manifest with that tag or digest exists in the repository.
	ErrManifestUnknown = errors.New("manifest unknown")
	// ErrInUse means a blob or manifest to delete is named by a manifest of the repository.
	ErrInUse = errors.New("in use by a manifest of the repository")
	// ErrChanged means a job's delete found the artifact changed since it chose it (tagged).
	ErrChanged = errors.New("changed since it was chosen")
	// ErrTagExists means a tag to add already names a manifest of the repository.
	ErrTagExists = errors.New("the tag exists")
	// ErrNameUnknown means the repository has no content at all.
	ErrNameUnknown = errors.New("repository name not known to registry")
	// ErrUploadUnknown means there is no upload session with that id for the repository.
	ErrUploadUnknown = errors.New("blob upload unknown to registry")
	// ErrDigestMismatch means the content does not hash to the digest it was given under.
	ErrDigestMismatch = errors.New("content does not match digest")
	// ErrDigestUnsupported means the digest's algorithm is not one cove stores (sha256, sha512).
	ErrDigestUnsupported = errors.New("digest algorithm not supported")
	// ErrRangeInvalid means a chunk does not start where the upload currently ends.
	ErrRangeInvalid = errors.New("chunk does not continue the upload")
	// ErrSizeInvalid means the content length differs from the length announced for it.
	ErrSizeInvalid = errors.New("content length does not match")
	// ErrMediaTypeConflict means the repository already holds a manifest of that digest with
	// another media type.
	ErrMediaTypeConflict = errors.New("digest already stored with another media type")
	// ErrTooManyUploads means the store holds as many open upload sessions as it allows.
	ErrTooManyUploads = errors.New("too many open uploads")
)

// MissingError is returned by Manifests.Put when the manifest references content that the
// repository does not have: a blob (config or layer) or a child manifest of an index.
type MissingError struct {
	Digest   digest.Digest
	Manifest bool // true: a child manifest is missing; false: a blob
}

func (e *MissingError) Error() string {
	if e.Manifest {
		return fmt.Sprintf("referenced manifest %s is not in the repository", e.Digest)
	}
	return fmt.Sprintf("referenced blob %s is not in the repository", e.Digest)
}

// supported reports whether cove stores content under dgst's algorithm, and that dgst is
// well formed.
func supported(dgst digest.Digest) error {
	if err := dgst.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrDigestUnsupported, err)
	}
	switch dgst.Algorithm() {
	case digest.SHA256, digest.SHA512:
		return nil
	}
	return fmt.Errorf("%w: %s", ErrDigestUnsupported, dgst.Algorithm())
}

// ErrMetadataUnavailable means the metadata database (storage.metadata: PostgreSQL) cannot be
// reached: requests answer 503 saying so, and succeed once it is back.
var ErrMetadataUnavailable = kv.ErrUnavailable

// InUseError is a delete refused because a manifest of the repository names what it would delete.
type InUseError struct {
	Digest, By digest.Digest
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("%s is named by the manifest %s of this repository: delete that one first", e.Digest, e.By)
}

func (e *InUseError) Is(target error) bool { return target == ErrInUse }
