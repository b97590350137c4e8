package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

// What the admin page shows: repositories, their artifacts and tags, with sizes and times.

// RepoSummary describes a repository.
type RepoSummary struct {
	Name      string
	Artifacts int
	Updated   time.Time // the newest manifest's push time
	Pulled    time.Time // the last pull of any of its manifests
	Size      int64     // the artifacts' content sizes, added up
}

// Artifact is a manifest of a repository with its tags.
type Artifact struct {
	Manifest
	Tags   []string
	Pulled time.Time // last pull, zero when never pulled
}

// Artifacts lists repo's manifests, newest push first, each with its tags.
func (s *Store) Artifacts(ctx context.Context, repo string) ([]Artifact, error) {
	if err := s.flushAccess(); err != nil {
		return nil, err
	}
	var out []Artifact
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
		tags := map[digest.Digest][]string{}
		prefix := repoPrefix(prefixTag, repo)
		if err := scan(txn, prefix, "", func(key, val []byte) bool {
			d := digest.Digest(val)
			tags[d] = append(tags[d], string(key[len(prefix):]))
			return true
		}); err != nil {
			return err
		}
		return eachJSON(txn, string(repoPrefix(prefixManifest, repo)), func(key []byte, m *Manifest) error {
			m.Digest = digest.Digest(lastPart(key))
			a := Artifact{Manifest: *m, Tags: tags[m.Digest]}
			if a.Tags == nil {
				a.Tags = []string{}
			}
			var rec blobRecord
			if kv.Get(txn, blobKey(m.Digest), &rec) == nil {
				a.Pulled = rec.Accessed
			}
			out = append(out, a)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, err
}

// RepositorySummaries describes the repositories whose names start with prefix.
func (s *Store) RepositorySummaries(ctx context.Context, prefix string) ([]RepoSummary, error) {
	var names []string
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
		return scan(txn, []byte(prefixRepo+prefix), "", func(key, _ []byte) bool {
			names = append(names, string(key[len(prefixRepo):]))
			return true
		})
	})
	if err != nil {
		return nil, err
	}
	out := []RepoSummary{}
	for _, n := range names {
		arts, err := s.Artifacts(ctx, n)
		if err != nil {
			return nil, err
		}
		sum := RepoSummary{Name: n, Artifacts: len(arts)}
		for _, a := range arts {
			sum.Size += a.ContentSize
			if a.Created.After(sum.Updated) {
				sum.Updated = a.Created
			}
			if a.Pulled.After(sum.Pulled) {
				sum.Pulled = a.Pulled
			}
		}
		out = append(out, sum)
	}
	return out, nil
}

// EvictRepository forgets a mirrored repository: its manifests, tags and links go, and its blobs
// that nothing else uses leave the disk now. It refuses a repository that holds local content.
func (s *Store) EvictRepository(ctx context.Context, repo string) (int, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	var keys [][]byte
	candidates := map[digest.Digest]bool{}
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
		if _, err := txn.Get(repoKey(repo)); err != nil {
			return notFound(err, ErrNameUnknown)
		}
		for _, kind := range []string{prefixLink, prefixManifest, prefixTag, prefixChecked, prefixReferrer} {
			err := scan(txn, repoPrefix(kind, repo), "", func(key, _ []byte) bool {
				keys = append(keys, append([]byte{}, key...))
				if kind == prefixLink || kind == prefixManifest {
					candidates[digest.Digest(lastPart(key))] = true
				}
				return true
			})
			if err != nil {
				return err
			}
		}
		for d := range candidates {
			var rec blobRecord
			if kv.Get(txn, blobKey(d), &rec) == nil && rec.Local {
				return fmt.Errorf("%w: %s holds local content", ErrNotMirrored, repo)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	keys = append(keys, repoKey(repo))
	if !s.deletable() {
		avail, floor, _ := s.space()
		return 0, &SpaceError{Avail: avail, Floor: floor}
	}
	if err := s.db.Write(ctx, deletes(keys)); err != nil {
		return 0, err
	}
	// Remove the blobs no other repository uses.
	garbage, err := s.mark(ctx, -time.Hour*24*365*100)
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, g := range garbage {
		if !candidates[g.dgst] {
			continue
		}
		s.mu.Lock()
		busy := s.inUse[g.dgst] > 0
		s.mu.Unlock()
		if busy {
			continue
		}
		err := s.update(func(ct *commitTxn) error {
			rec, err := getBlobRecord(ct.Txn, g.dgst)
			if err != nil {
				return err
			}
			if err := ct.Delete(blobKey(g.dgst)); err != nil {
				return err
			}
			ct.onCommit(func() {
				s.blobs.Add(-1)
				s.stored.Add(-rec.Size)
				if rec.evictable() {
					s.mirrored.Add(-rec.Size)
				}
			})
			return nil
		})
		if err != nil && !errors.Is(err, ErrBlobUnknown) {
			return removed, err
		}
		if err := s.removeBlob(g.dgst); err != nil {
			s.log.Warn("remove an evicted repository's blob", "digest", g.dgst, "err", err)
		}
		removed++
	}
	return removed, nil
}

// ErrNotMirrored means an operation for mirrored content met local content.
var ErrNotMirrored = errors.New("not mirrored content")

// IsMirrored reports whether repo's name is under one of the upstream names.
func IsMirrored(repo string, upstreams []string) bool {
	first, _, _ := strings.Cut(repo, "/")
	for _, u := range upstreams {
		if first == u {
			return true
		}
	}
	return false
}

// eachJSON decodes every value under prefix into a fresh T and hands it, with its key, to fn.
func eachJSON[T any](txn kv.Txn, prefix string, fn func(key []byte, v *T) error) error {
	return txn.Scan([]byte(prefix), kv.ScanOptions{}, func(key, val []byte) (bool, error) {
		v := new(T)
		if err := json.Unmarshal(val, v); err != nil {
			return false, err
		}
		return true, fn(key, v)
	})
}
