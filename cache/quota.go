package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

// Storage quotas of projects (HARBOR-API §3). A project with a quota record has its usage kept
// in that record, in the same transaction as every link and manifest that changes it: the bytes
// of the distinct blobs and manifests its repositories hold, each counted once however many of
// its repositories hold it. A write that would take the usage past the hard limit is refused
// before the blob or manifest is stored. Mirrored repositories have no quota: the cache is
// bounded by mirror.max_size. Recount fixes any drift from a scan of the project's content.

// Quota is a project's storage quota.
type Quota struct {
	Project string    `json:"project"`
	Hard    int64     `json:"hard"` // bytes; -1: no limit
	Used    int64     `json:"used"` // bytes
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Warned is set when the usage passed QuotaWarning of the limit, and cleared under it, so
	// that the warning fires once per crossing.
	Warned bool `json:"warned,omitempty"`
}

// QuotaWarning is the share of the limit whose crossing is reported (Harbor's 85 %).
const QuotaWarning = 0.85

var (
	// ErrQuotaExceeded means a write would take a project past its storage quota.
	ErrQuotaExceeded = errors.New("quota exceeded")
	// ErrQuotaUnknown means the project has no quota record.
	ErrQuotaUnknown = errors.New("no quota for that project")
)

// QuotaError is a write refused for its project's quota, in Harbor's words.
type QuotaError struct {
	Project            string
	Adding, Used, Hard int64
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("Quota exceeded when processing the request of adding %s of storage resource, which when updated to current usage of %s will exceed the configured upper limit of %s (project %s; delete some artifacts, or ask an administrator to raise the quota).",
		byteSize(e.Adding), byteSize(e.Used+e.Adding), byteSize(e.Hard), e.Project)
}

func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }

const (
	prefixQuota = "quota/" // quota/<project> → Quota
	prefixPLink = "plink/" // plink/<project>\x00<digest> → how many keys of the project hold it
)

func quotaKey(project string) []byte { return []byte(prefixQuota + project) }
func plinkKey(project string, d digest.Digest) []byte {
	return []byte(prefixPLink + project + sep + d.String())
}

// QuotaEvent is told of a project's usage crossing QuotaWarning upwards ("warning") and of a
// write refused for the quota ("exceeded"); the notifications hang on it.
type QuotaEvent func(project, kind string, used, hard int64)

// project is the project of repo: its first path element.
func project(repo string) string {
	p, _, _ := strings.Cut(repo, "/")
	return p
}

// held adds n (1 or -1) to the count of repo's project's keys that hold dgst, of size bytes,
// and the project's usage when the digest comes in or goes out, in txn. Only for projects with a
// quota record. An increase past the hard limit is a *QuotaError.
func (s *Store) held(ct *commitTxn, repo string, dgst digest.Digest, size int64, n int64) error {
	txn := ct.Txn
	p := project(repo)
	var q Quota
	if err := kv.Get(txn, quotaKey(p), &q); errors.Is(err, kv.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	var count int64
	switch b, err := txn.Get(plinkKey(p, dgst)); {
	case err == nil && len(b) == 8:
		count = int64(binary.BigEndian.Uint64(b))
	case err != nil && !errors.Is(err, kv.ErrNotFound):
		return err
	}
	before := count
	count = max(count+n, 0)
	if count == 0 {
		if err := txn.Delete(plinkKey(p, dgst)); err != nil {
			return err
		}
	} else if err := txn.Set(plinkKey(p, dgst), binary.BigEndian.AppendUint64(nil, uint64(count))); err != nil {
		return err
	}
	switch {
	case before == 0 && count > 0:
		if q.Hard >= 0 && q.Used+size > q.Hard {
			// A race lost to another push: the checks before the write report refusals.
			return &QuotaError{Project: p, Adding: size, Used: q.Used, Hard: q.Hard}
		}
		q.Used += size
	case before > 0 && count == 0:
		q.Used = max(q.Used-size, 0)
	default:
		return nil
	}
	warn := q.Hard > 0 && float64(q.Used) >= QuotaWarning*float64(q.Hard)
	if warn && !q.Warned && s.onQuota != nil {
		used, hard := q.Used, q.Hard
		ct.onCommit(func() { s.onQuota(p, "warning", used, hard) })
	}
	q.Warned = warn
	return kv.Put(txn, quotaKey(p), q)
}

// CheckQuota refuses, before any byte is stored, a write of adding bytes to repo's project that
// could not fit under its quota even if none of it were there already.
func (s *Store) CheckQuota(ctx context.Context, repo string, adding int64) error {
	return s.refuseOver(repo, adding, func(q Quota) int64 { return q.Used + adding })
}

// refuseOver returns a *QuotaError, and reports it, when the bytes after says a write of adding
// bytes leaves repo's project with are past its limit; projects without a quota take anything.
func (s *Store) refuseOver(repo string, adding int64, after func(Quota) int64) error {
	p := project(repo)
	var q Quota
	err := s.db.View(s.ctx, func(txn kv.Txn) error { return kv.Get(txn, quotaKey(p), &q) })
	if errors.Is(err, kv.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if q.Hard >= 0 && after(q) > q.Hard {
		if s.onQuota != nil {
			s.onQuota(p, "exceeded", q.Used, q.Hard)
		}
		return &QuotaError{Project: p, Adding: adding, Used: q.Used, Hard: q.Hard}
	}
	return nil
}

// quotaReader refuses, every spaceCheckEvery bytes, an upload to repo that has grown past its
// project's whole limit: it could never be stored. (Whether a blob fits what the project has left
// is known at its commit, by its digest: a blob the project holds already costs nothing.)
type quotaReader struct {
	io.Reader
	ctx   context.Context
	st    *Store
	repo  string
	base  int64 // bytes the upload held before this chunk
	read  int64
	since int64
}

func (r *quotaReader) Read(p []byte) (int, error) {
	if r.since >= spaceCheckEvery {
		if err := r.st.checkHard(r.ctx, r.repo, r.base+r.read); err != nil {
			return 0, err
		}
		r.since = 0
	}
	n, err := r.Reader.Read(p)
	r.read += int64(n)
	r.since += int64(n)
	return n, err
}

// guardQuota wraps body, the next bytes of an upload to repo that holds base bytes already.
func (s *Store) guardQuota(ctx context.Context, repo string, base int64, body io.Reader) (io.Reader, error) {
	if err := s.checkHard(ctx, repo, base); err != nil {
		return nil, err
	}
	return &quotaReader{Reader: body, ctx: ctx, st: s, repo: repo, base: base}, nil
}

// checkHard refuses an upload of size bytes to repo larger than its project's whole limit.
func (s *Store) checkHard(ctx context.Context, repo string, size int64) error {
	return s.refuseOver(repo, size, func(Quota) int64 { return size })
}

// checkQuotaFor refuses, before the blob dgst of size bytes is placed, a commit into repo that
// its project's quota cannot take: unless the project holds it already, it adds size.
func (s *Store) checkQuotaFor(ctx context.Context, repo string, dgst digest.Digest, size int64) error {
	p := project(repo)
	held := false
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
		_, err := txn.Get(plinkKey(p, dgst))
		held = err == nil
		if errors.Is(err, kv.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil || held {
		return err
	}
	return s.CheckQuota(ctx, repo, size)
}

// SetQuota sets project's hard limit (bytes, -1 for none), creating its quota record with the
// usage counted afresh when it has none.
func (s *Store) SetQuota(ctx context.Context, project string, hard int64) (Quota, error) {
	if hard < -1 {
		return Quota{}, fmt.Errorf("%w: a storage limit is bytes, or -1 for none", ErrQuotaUnknown)
	}
	var q Quota
	err := s.update(func(ct *commitTxn) error {
		now := s.now().UTC()
		err := kv.Get(ct.Txn, quotaKey(project), &q)
		if errors.Is(err, kv.ErrNotFound) {
			q = Quota{Project: project, Created: now}
		} else if err != nil {
			return err
		}
		q.Hard, q.Updated = hard, now
		return kv.Put(ct.Txn, quotaKey(project), q)
	})
	if err != nil {
		return q, err
	}
	if q.Created.Equal(q.Updated) { // new: count what the project holds already
		return s.Recount(ctx, project)
	}
	return q, nil
}

// DeleteQuota removes project's quota record and its counts: the project is gone.
func (s *Store) DeleteQuota(ctx context.Context, project string) error {
	return s.update(func(ct *commitTxn) error {
		var keys [][]byte
		if err := scan(ct.Txn, []byte(prefixPLink+project+sep), "", func(k, _ []byte) bool {
			keys = append(keys, append([]byte{}, k...))
			return true
		}); err != nil {
			return err
		}
		for _, k := range append(keys, quotaKey(project)) {
			if err := ct.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Quotas returns the quota records, by project name.
func (s *Store) Quotas(ctx context.Context) ([]Quota, error) {
	var out []Quota
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
		return eachJSON(txn, prefixQuota, func(_ []byte, q *Quota) error {
			out = append(out, *q)
			return nil
		})
	})
	return out, err
}

// Quota returns project's quota record, or ErrQuotaUnknown.
func (s *Store) Quota(ctx context.Context, project string) (Quota, error) {
	var q Quota
	err := s.db.View(s.ctx, func(txn kv.Txn) error { return kv.Get(txn, quotaKey(project), &q) })
	return q, notFound(err, ErrQuotaUnknown)
}

// Recount counts project's usage afresh from its repositories' links and manifests, in one
// transaction, and fixes the record and the counts: the job that repairs any drift.
func (s *Store) Recount(ctx context.Context, project string) (Quota, error) {
	// The writes that change usage hold gcMu shared: none runs meanwhile on this node, so the
	// one transaction of the count does not conflict with every push of a busy project.
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	var q Quota
	err := s.update(func(ct *commitTxn) error {
		if err := kv.Get(ct.Txn, quotaKey(project), &q); err != nil {
			return notFound(err, ErrQuotaUnknown)
		}
		counts := map[digest.Digest]int64{}
		for _, kind := range []string{prefixLink, prefixManifest} {
			err := scan(ct.Txn, []byte(kind+project+"/"), "", func(key, _ []byte) bool {
				counts[digest.Digest(lastPart(key))]++
				return true
			})
			if err != nil {
				return err
			}
		}
		var stale [][]byte
		if err := scan(ct.Txn, []byte(prefixPLink+project+sep), "", func(k, _ []byte) bool {
			stale = append(stale, append([]byte{}, k...))
			return true
		}); err != nil {
			return err
		}
		for _, k := range stale {
			if err := ct.Delete(k); err != nil {
				return err
			}
		}
		q.Used = 0
		for d, n := range counts {
			rec, err := getBlobRecord(ct.Txn, d)
			if errors.Is(err, ErrBlobUnknown) {
				continue // a link whose blob was evicted or collected: nothing stored
			}
			if err != nil {
				return err
			}
			q.Used += rec.Size
			if err := ct.Set(plinkKey(project, d), binary.BigEndian.AppendUint64(nil, uint64(n))); err != nil {
				return err
			}
		}
		q.Warned = q.Hard > 0 && float64(q.Used) >= QuotaWarning*float64(q.Hard)
		q.Updated = s.now().UTC()
		return kv.Put(ct.Txn, quotaKey(project), q)
	})
	return q, err
}
