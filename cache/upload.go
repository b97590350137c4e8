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

// Uploads holds the open upload sessions of pushes. Sessions live in this process's memory (in a
// fleet, a session's id starts with its node's prefix, so that another node sends its requests
// here). It is safe for concurrent use.
type Uploads struct {
	st         *Store
	disk       *Disk
	prefix     string        // starts every session id (Config.UploadPrefix)
	ttl        time.Duration // idle time after which a session ends
	max        int           // sessions of the whole registry
	maxPerAcct int
	maxPerProj int

	mu sync.Mutex
	// sessions are the open upload sessions by id, guarded by mu.
	sessions map[string]*upload
}

// close ends every session and removes its file: at the store's Close, after the last request.
func (up *Uploads) close() {
	up.mu.Lock()
	sessions := up.sessions
	up.sessions = map[string]*upload{}
	up.mu.Unlock()
	for _, u := range sessions {
		if u.mu.TryLock() { // a session still in use is removed with tmp/ at the next start
			u.discard()
			u.mu.Unlock()
		}
	}
}

// New opens an upload session for repo on behalf of owner (the account pushing) and returns
// its id, which is random and unguessable. When owner, repo's project or the whole store already
// holds its maximum of sessions it returns an *UploadLimitError (errors.Is ErrTooManyUploads).
func (up *Uploads) New(ctx context.Context, repo, owner string) (string, error) {
	if up.disk.readOnly {
		return "", ErrReadOnly
	}
	up.expire()
	project, _, _ := strings.Cut(repo, "/")
	up.mu.Lock()
	total, mine, theirs := len(up.sessions), 0, 0
	for _, u := range up.sessions {
		if u.owner == owner {
			mine++
		}
		if p, _, _ := strings.Cut(u.repo, "/"); p == project {
			theirs++
		}
	}
	up.mu.Unlock()
	switch {
	case mine >= up.maxPerAcct:
		return "", &UploadLimitError{Scope: "account " + owner, Limit: up.maxPerAcct}
	case theirs >= up.maxPerProj:
		return "", &UploadLimitError{Scope: "project " + project, Limit: up.maxPerProj}
	case total >= up.max:
		return "", &UploadLimitError{Scope: "registry", Limit: up.max}
	}
	f, err := os.CreateTemp(up.st.tmpDir(), "upload-*")
	if err != nil {
		return "", fmt.Errorf("create upload file: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("create upload file: %w", err)
	}
	id := up.prefix + rand.Text()
	u := &upload{id: id, repo: repo, owner: owner, path: f.Name(), h: sha256.New(), touched: up.st.now()}
	up.mu.Lock()
	up.sessions[id] = u
	up.mu.Unlock()
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

// expire ends the sessions that have been idle longer than the upload TTL.
func (up *Uploads) expire() {
	cutoff := up.st.now().Add(-up.ttl)
	var old []*upload
	up.mu.Lock()
	for id, u := range up.sessions {
		if u.mu.TryLock() { // a session in use is not idle
			if u.touched.Before(cutoff) {
				old = append(old, u)
				delete(up.sessions, id)
			}
			u.mu.Unlock()
		}
	}
	up.mu.Unlock()
	for _, u := range old {
		u.mu.Lock()
		u.discard()
		u.mu.Unlock()
	}
}

// session finds the upload id of repo, locked; the caller unlocks it.
func (up *Uploads) session(repo, id string) (*upload, error) {
	up.mu.Lock()
	u, ok := up.sessions[id]
	up.mu.Unlock()
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
func (up *Uploads) end(u *upload) {
	up.mu.Lock()
	delete(up.sessions, u.id)
	up.mu.Unlock()
	u.discard()
}

// Size returns how many bytes the upload id of repo holds.
func (up *Uploads) Size(ctx context.Context, repo, id string) (int64, error) {
	u, err := up.session(repo, id)
	if err != nil {
		return 0, err
	}
	defer u.mu.Unlock()
	return u.size, nil
}

// Append adds the content of r to the upload id of repo and returns the new size. start is
// the offset the chunk claims to begin at, or -1 when the client gave none; a chunk that does not
// begin where the upload ends is refused with ErrRangeInvalid and changes nothing. When r fails
// part way the upload is rolled back to where it was, so a retried chunk starts clean.
func (up *Uploads) Append(ctx context.Context, repo, id string, start int64, r io.Reader) (int64, error) {
	u, err := up.session(repo, id)
	if err != nil {
		return 0, err
	}
	defer u.mu.Unlock()
	if r, err = up.disk.guardSpace(ctx, r, -1); err != nil {
		return u.size, err
	}
	if r, err = up.st.guardQuota(ctx, repo, u.size, r); err != nil {
		return u.size, err
	}
	if err := u.append(start, r); err != nil {
		return u.size, err
	}
	u.touched = up.st.now()
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

// Commit appends r (the final chunk, or nil), checks that the whole upload hashes to dgst
// and, if it does, stores it as a blob linked to repo. A final chunk that fails to arrive leaves
// the session as it was, so the client may retry it; otherwise the session ends, whether the
// digest matched or not.
func (up *Uploads) Commit(ctx context.Context, repo, id string, dgst digest.Digest, start int64, r io.Reader) (BlobInfo, error) {
	if err := supported(dgst); err != nil {
		return BlobInfo{}, err
	}
	u, err := up.session(repo, id)
	if err != nil {
		return BlobInfo{}, err
	}
	defer u.mu.Unlock()
	if r != nil {
		if r, err = up.disk.guardSpace(ctx, r, -1); err != nil {
			return BlobInfo{}, err
		}
		if r, err = up.st.guardQuota(ctx, repo, u.size, r); err != nil {
			return BlobInfo{}, err
		}
		if err := u.append(start, r); err != nil {
			return BlobInfo{}, err
		}
	}
	defer up.end(u)
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
	return up.st.commitFile(ctx, f, repo, dgst, u.size)
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

// Cancel ends the upload id of repo and removes its data.
func (up *Uploads) Cancel(ctx context.Context, repo, id string) error {
	u, err := up.session(repo, id)
	if err != nil {
		return err
	}
	defer u.mu.Unlock()
	up.end(u)
	return nil
}
