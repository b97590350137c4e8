package cache

// Damaged blobs: taking bytes found bad — by scrub, or by the checks of the serving path (a file
// of the wrong size, a manifest whose bytes are not its digest's) — out of service, so that they
// are never served (see scrub.go).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

// condemn takes the blob dgst, whose bytes are corrupt (or, when !corrupt, missing), out of
// service: the corrupt bytes are quarantined, a mirrored blob's records are dropped (the next
// pull fetches it again), and a pushed one's too when dropPushed. It returns what it did.
func (s *Store) condemn(ctx context.Context, dgst digest.Digest, rec blobRecord, found os.FileInfo, corrupt, dropPushed bool) (string, error) {
	var did []string
	if corrupt {
		moved, err := s.quarantine(ctx, dgst, found)
		if err != nil {
			return "", err
		}
		if moved != "" {
			did = append(did, moved)
		}
	}
	// A mirrored blob is fetched again from its upstream, also one that was pushed as well: the
	// bytes fetched again are pushed content again (lost/, dropBad).
	refetchable := rec.Mirrored
	if refetchable || dropPushed {
		dropped, err := s.dropBad(ctx, dgst)
		if err != nil {
			return strings.Join(did, "; "), err
		}
		if dropped {
			if refetchable {
				did = append(did, "record dropped: the next pull fetches it from its upstream")
			} else {
				did = append(did, "record dropped: push it again")
			}
		}
	} else if s.remote != nil {
		did = append(did, "its requests fail until the object is restored from a backup of the bucket (or dropped with --repair and pushed again)")
	} else {
		did = append(did, "requests answer BLOB_UNKNOWN until it is pushed again")
	}
	s.log.Error("scrub: a blob's stored bytes are bad", "digest", dgst, "corrupt", corrupt, "pushed", rec.Local, "did", strings.Join(did, "; "))
	return strings.Join(did, "; "), nil
}

// quarantine moves the corrupt file of dgst (on one node) to <data>/quarantine, where nothing
// serves it and nothing deletes it; in a fleet, it removes the node's copy, and a mirrored
// blob's shared object goes with its record (dropBad). found, when not nil, is the file found
// damaged: a file placed since in its stead (evicted, then filled again and verified) stays. It
// returns what it did.
func (s *Store) quarantine(ctx context.Context, dgst digest.Digest, found os.FileInfo) (string, error) {
	src := s.blobPath(dgst)
	if s.remote != nil {
		if err := s.removeLocal(dgst); err != nil {
			return "", err
		}
		return "", nil
	}
	if found != nil {
		if now, err := os.Stat(src); err != nil || !os.SameFile(now, found) {
			return "", nil // gone, or placed again since
		}
	}
	dst := filepath.Join(s.dir, "quarantine", string(dgst.Algorithm()), dgst.Encoded())
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return "", fmt.Errorf("create the quarantine: %w", err)
	}
	if _, err := os.Stat(dst); err == nil {
		dst += "." + s.now().UTC().Format("20060102T150405.000000000")
	}
	if err := os.Rename(src, dst); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", nil // gone meanwhile (evicted)
		}
		return "", fmt.Errorf("move the corrupt file aside: %w", err)
	}
	return "file moved to " + dst, nil
}

// dropBad drops the records of the bad blob dgst: a layer's record (its links stay: a link
// without a record reads as "not stored", and a push or fill of the digest makes it whole again),
// a manifest's with the manifest records and tags that need it. It reports whether it dropped.
func (s *Store) dropBad(ctx context.Context, dgst digest.Digest) (bool, error) {
	s.gcMu.Lock() // no blob gains a reference while it goes (as forgetLost)
	defer s.gcMu.Unlock()
	var rec blobRecord
	dropped, err := s.dropUnderLock(ctx, dgst, func(ct *commitTxn) (bool, error) {
		var err error
		if rec, err = getBlobRecord(ct.Txn, dgst); err != nil {
			return false, err
		}
		if rec.MediaType != "" {
			return false, nil // a manifest: dropRecords below
		}
		if rec.Local {
			// Its links stay (pushing it again makes it whole): the blob stored again is pushed
			// content (ensureBlobRecord).
			if err := ct.Txn.Set(lostKey(dgst), []byte{}); err != nil {
				return false, err
			}
		}
		return true, deleteBlobRecord(ct.Txn, dgst, rec)
	})
	if errors.Is(err, ErrBlobUnknown) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !dropped && rec.MediaType != "" {
		// A manifest: its records need its bytes.
		if err := s.dropRecords([]digest.Digest{dgst}); err != nil {
			return false, err
		}
		dropped = true
	}
	if dropped {
		s.blobs.Add(-1)
		s.stored.Add(-rec.Size)
		if rec.evictable() {
			s.mirrored.Add(-rec.Size)
		}
	}
	return dropped, nil
}

// badSize handles a blob whose stored size (got) is not its record's (want), met while serving
// it: on one node the file is taken out of service (condemn); in a fleet the node's copy goes and
// the blob is read from the shared store again. It returns the error to answer with:
// ErrBlobUnknown, or ErrNotLocal in a fleet.
func (s *Store) badSize(ctx context.Context, dgst digest.Digest, got, want int64) error {
	detail := fmt.Sprintf("its file holds %d bytes, its record says %d", got, want)
	if s.remote != nil {
		if err := s.removeLocal(dgst); err != nil {
			s.log.Error("remove a damaged copy of a blob", "digest", dgst, "err", err)
		}
		return fmt.Errorf("%w: %s: %s", ErrNotLocal, dgst, detail)
	}
	return s.badBytes(ctx, dgst, ErrBlobUnknown, detail)
}

// badBytes takes the blob dgst, whose stored bytes were found bad (detail) while serving it, out
// of service, and returns sentinel wrapped with the reason.
func (s *Store) badBytes(ctx context.Context, dgst digest.Digest, sentinel error, detail string) error {
	ctx = context.WithoutCancel(ctx) // a client's hang-up does not leave it half done
	var rec blobRecord
	err := s.db.View(ctx, func(txn kv.Txn) error {
		var err error
		rec, err = getBlobRecord(txn, dgst)
		return err
	})
	if err == nil && !s.Disk.readOnly {
		_, err = s.condemn(ctx, dgst, rec, nil, true, false)
	}
	if err != nil && !errors.Is(err, ErrBlobUnknown) {
		s.log.Error("taking a damaged blob out of service failed", "digest", dgst, "err", err)
	}
	s.log.Error("a stored blob is damaged and was not served", "digest", dgst, "detail", detail)
	return fmt.Errorf("%w: the stored bytes of %s are damaged (%s)", sentinel, dgst, detail)
}
