package cache

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// An upload is one blob upload session: a temporary file that grows chunk by chunk while a
// sha256 hash follows it. Sessions live in memory and hold no open file between requests; a
// restart ends them and Open removes their files.
type upload struct {
	id    string
	repo  string
	owner string // the account that opened it, for the per-account cap
	path  string

	mu sync.Mutex
	// size, h, touched and ended are guarded by mu.
	size    int64
	h       hash.Hash
	touched time.Time
	ended   bool
}

// discard ends the session and removes its file. The caller holds u.mu.
func (u *upload) discard() {
	if !u.ended {
		u.ended = true
		_ = os.Remove(u.path)
	}
}

// NewUpload opens an upload session for repo on behalf of owner (the account pushing) and returns
// its id, which is random and unguessable. When owner, repo's project or the whole store already
// holds its maximum of sessions it returns an *UploadLimitError (errors.Is ErrTooManyUploads).
func (s *Store) NewUpload(ctx context.Context, repo, owner string) (string, error) {
	if s.readOnly {
		return "", ErrReadOnly
	}
	s.expireUploads()
	project, _, _ := strings.Cut(repo, "/")
	s.mu.Lock()
	total, mine, theirs := len(s.uploads), 0, 0
	for _, u := range s.uploads {
		if u.owner == owner {
			mine++
		}
		if p, _, _ := strings.Cut(u.repo, "/"); p == project {
			theirs++
		}
	}
	s.mu.Unlock()
	switch {
	case mine >= s.maxPerAcct:
		return "", &UploadLimitError{Scope: "account " + owner, Limit: s.maxPerAcct}
	case theirs >= s.maxPerProj:
		return "", &UploadLimitError{Scope: "project " + project, Limit: s.maxPerProj}
	case total >= s.maxUploads:
		return "", &UploadLimitError{Scope: "registry", Limit: s.maxUploads}
	}
	f, err := os.CreateTemp(s.tmpDir(), "upload-*")
	if err != nil {
		return "", fmt.Errorf("create upload file: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("create upload file: %w", err)
	}
	id := s.upPrefix + rand.Text()
	u := &upload{id: id, repo: repo, owner: owner, path: f.Name(), h: sha256.New(), touched: s.now()}
	s.mu.Lock()
	s.uploads[id] = u
	s.mu.Unlock()
	return id, nil
}

// UploadLimitError is a refused upload session: Scope ("account alice", "project team",
// "registry") has Limit sessions open already.
type UploadLimitError struct {
	Scope string
	Limit int
}

func (e *UploadLimitError) Error() string {
	return fmt.Sprintf("the %s has %d uploads in progress, its limit: finish or cancel some, or retry later", e.Scope, e.Limit)
}

func (e *UploadLimitError) Is(target error) bool { return target == ErrTooManyUploads }

// expireUploads ends the sessions that have been idle longer than the upload TTL.
func (s *Store) expireUploads() {
	cutoff := s.now().Add(-s.ttl)
	var old []*upload
	s.mu.Lock()
	for id, u := range s.uploads {
		if u.mu.TryLock() { // a session in use is not idle
			if u.touched.Before(cutoff) {
				old = append(old, u)
				delete(s.uploads, id)
			}
			u.mu.Unlock()
		}
	}
	s.mu.Unlock()
	for _, u := range old {
		u.mu.Lock()
		u.discard()
		u.mu.Unlock()
	}
}

// session finds the upload id of repo, locked; the caller unlocks it.
func (s *Store) session(repo, id string) (*upload, error) {
	s.mu.Lock()
	u, ok := s.uploads[id]
	s.mu.Unlock()
	if !ok || u.repo != repo {
		return nil, ErrUploadUnknown
	}
	u.mu.Lock()
	if u.ended { // ended while we waited for the lock
		u.mu.Unlock()
		return nil, ErrUploadUnknown
	}
	return u, nil
}

// end removes u from the sessions and deletes its file. The caller holds u.mu.
func (s *Store) end(u *upload) {
	s.mu.Lock()
	delete(s.uploads, u.id)
	s.mu.Unlock()
	u.discard()
}

// UploadSize returns how many bytes the upload id of repo holds.
func (s *Store) UploadSize(ctx context.Context, repo, id string) (int64, error) {
	u, err := s.session(repo, id)
	if err != nil {
		return 0, err
	}
	defer u.mu.Unlock()
	return u.size, nil
}

// AppendUpload adds the content of r to the upload id of repo and returns the new size. start is
// the offset the chunk claims to begin at, or -1 when the client gave none; a chunk that does not
// begin where the upload ends is refused with ErrRangeInvalid and changes nothing. When r fails
// part way the upload is rolled back to where it was, so a retried chunk starts clean.
func (s *Store) AppendUpload(ctx context.Context, repo, id string, start int64, r io.Reader) (int64, error) {
	u, err := s.session(repo, id)
	if err != nil {
		return 0, err
	}
	defer u.mu.Unlock()
	if r, err = s.guardSpace(ctx, r, -1); err != nil {
		return u.size, err
	}
	if err := u.append(start, r); err != nil {
		return u.size, err
	}
	u.touched = s.now()
	return u.size, nil
}

// append writes a chunk at the end of the upload. The caller holds u.mu.
func (u *upload) append(start int64, r io.Reader) (err error) {
	if start >= 0 && start != u.size {
		return fmt.Errorf("%w: chunk starts at %d, upload holds %d bytes", ErrRangeInvalid, start, u.size)
	}
	state, err := u.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return fmt.Errorf("save hash state: %w", err)
	}
	f, err := os.OpenFile(u.path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open upload: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write upload chunk: %w", cerr)
		}
	}()
	if _, err := f.Seek(u.size, io.SeekStart); err != nil {
		return fmt.Errorf("seek upload: %w", err)
	}
	n, err := io.Copy(io.MultiWriter(f, u.h), r)
	if err == nil {
		u.size += n
		return nil
	}
	// Roll back: the file to its old length, the hash to its old state.
	if terr := f.Truncate(u.size); terr != nil {
		return errors.Join(err, fmt.Errorf("roll back upload: %w", terr))
	}
	if uerr := u.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); uerr != nil {
		return errors.Join(err, fmt.Errorf("roll back hash: %w", uerr))
	}
	return fmt.Errorf("write upload chunk: %w", err)
}

// CommitUpload appends r (the final chunk, or nil), checks that the whole upload hashes to dgst
// and, if it does, stores it as a blob linked to repo. A final chunk that fails to arrive leaves
// the session as it was, so the client may retry it; otherwise the session ends, whether the
// digest matched or not.
func (s *Store) CommitUpload(ctx context.Context, repo, id string, dgst digest.Digest, start int64, r io.Reader) (BlobInfo, error) {
	if err := supported(dgst); err != nil {
		return BlobInfo{}, err
	}
	u, err := s.session(repo, id)
	if err != nil {
		return BlobInfo{}, err
	}
	defer u.mu.Unlock()
	if r != nil {
		if r, err = s.guardSpace(ctx, r, -1); err != nil {
			return BlobInfo{}, err
		}
		if err := u.append(start, r); err != nil {
			return BlobInfo{}, err
		}
	}
	defer s.end(u)
	got, err := u.digest(dgst.Algorithm())
	if err != nil {
		return BlobInfo{}, err
	}
	if got != dgst {
		return BlobInfo{}, fmt.Errorf("%w: upload hashes to %s, not %s", ErrDigestMismatch, got, dgst)
	}
	f, err := os.Open(u.path)
	if err != nil {
		return BlobInfo{}, fmt.Errorf("open upload: %w", err)
	}
	defer f.Close()
	return s.commitFile(ctx, f, repo, dgst, u.size)
}

// digest returns the upload's digest under alg: the running sha256, or for another algorithm a
// fresh pass over the file.
func (u *upload) digest(alg digest.Algorithm) (digest.Digest, error) {
	if alg == digest.SHA256 {
		return digest.NewDigestFromBytes(alg, u.h.Sum(nil)), nil
	}
	f, err := os.Open(u.path)
	if err != nil {
		return "", fmt.Errorf("open upload: %w", err)
	}
	defer f.Close()
	h := alg.Hash()
	if _, err := io.Copy(h, io.LimitReader(f, u.size)); err != nil {
		return "", fmt.Errorf("hash upload: %w", err)
	}
	return digest.NewDigestFromEncoded(alg, hex.EncodeToString(h.Sum(nil))), nil
}

// CancelUpload ends the upload id of repo and removes its data.
func (s *Store) CancelUpload(ctx context.Context, repo, id string) error {
	u, err := s.session(repo, id)
	if err != nil {
		return err
	}
	defer u.mu.Unlock()
	s.end(u)
	return nil
}
