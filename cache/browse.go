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
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"cove/internal/kv"
)

// What the admin page shows: repositories, their artifacts and tags, with sizes and times.

// RepoSummary describes a repository.
type RepoSummary struct {
	Name string
	RepoInfo
	Artifacts int
	Updated   time.Time // the newest manifest's push time
	Pulled    time.Time // the last pull of any of its manifests
	Size      int64     // the artifacts' content sizes, added up
}

// Artifact is a manifest of a repository with its tags.
type Artifact struct {
	Manifest
	Tags     []string
	Pulled   time.Time       // last pull, zero when never pulled
	Children []digest.Digest // an index's manifests
	parents  int             // the manifests of the repository that name it as a child
}

// Artifacts lists repo's artifacts, newest push first, each with its tags: its manifests but the
// untagged children of an index, which are that index's references (as Harbor lists them).
func (ms *Manifests) Artifacts(ctx context.Context, repo string) ([]Artifact, error) {
	all, err := ms.artifacts(ctx, repo)
	if err != nil {
		return nil, err
	}
	out := []Artifact{}
	for _, a := range all {
		if a.parents == 0 || len(a.Tags) > 0 {
			out = append(out, *a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// artifacts is every manifest of repo by digest, with its tags, children and parents.
func (ms *Manifests) artifacts(ctx context.Context, repo string) (map[digest.Digest]*Artifact, error) {
	if err := ms.ev.flushAccess(); err != nil {
		return nil, err
	}
	out := map[digest.Digest]*Artifact{}
	err := ms.db.View(ms.st.ctx, func(txn kv.Txn) error {
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
			a := &Artifact{Manifest: *m, Tags: tags[m.Digest]}
			if a.Tags == nil {
				a.Tags = []string{}
			}
			at, recorded, err := getPulled(txn, repo, m.Digest)
			if err != nil {
				return err
			}
			a.Pulled = at
			var rec blobRecord
			if !recorded && kv.Get(txn, blobKey(m.Digest), &rec) == nil {
				// Stored before cove kept pulls per repository: the blob's last read, which
				// every repository holding the digest shares, until its first pull here.
				a.Pulled = rec.Accessed
			}
			out[m.Digest] = a
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	for _, a := range out {
		if !isIndex(a.MediaType) {
			continue
		}
		if len(a.Blobs) == 0 && len(a.Children) == 0 { // a record from before cove kept them
			_, body, err := ms.Read(ctx, repo, a.Digest.String())
			if err != nil {
				return nil, err
			}
			if _, a.Children, err = refs(body); err != nil {
				return nil, err
			}
		}
		for _, c := range a.Children {
			if child, ok := out[c]; ok {
				child.parents++
			}
		}
	}
	return out, nil
}

func isIndex(mediaType string) bool {
	return mediaType == ocispec.MediaTypeImageIndex || mediaType == "application/vnd.docker.distribution.manifest.list.v2+json"
}

// RepositorySummaries describes the repositories whose names start with prefix.
func (ms *Manifests) RepositorySummaries(ctx context.Context, prefix string) ([]RepoSummary, error) {
	var names []string
	err := ms.db.View(ms.st.ctx, func(txn kv.Txn) error {
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
		arts, err := ms.Artifacts(ctx, n)
		if err != nil {
			return nil, err
		}
		sum := RepoSummary{Name: n, Artifacts: len(arts)}
		if err := ms.db.View(ms.st.ctx, func(txn kv.Txn) error {
			sum.RepoInfo, err = getRepoInfo(txn, n)
			return err
		}); err != nil {
			return nil, err
		}
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

// getPulled returns repo's last pull of its manifest dgst, the zero time when it was never pulled
// there. recorded is false for a manifest stored before cove kept pulls per repository.
func getPulled(txn kv.Txn, repo string, dgst digest.Digest) (at time.Time, recorded bool, err error) {
	v, err := txn.Get(pulledKey(repo, dgst))
	switch {
	case errors.Is(err, kv.ErrNotFound):
		return time.Time{}, false, nil
	case err != nil:
		return time.Time{}, false, err
	case len(v) == 0:
		return time.Time{}, true, nil
	}
	if err := at.UnmarshalText(v); err != nil {
		return time.Time{}, false, fmt.Errorf("pull time of %s@%s: %w", repo, dgst, err)
	}
	return at, true, nil
}

// setPulled records at as repo's last pull of its manifest dgst, unless a later one is recorded,
// or the manifest left the repository since the pull (its pull time went with it).
func setPulled(txn kv.Txn, repo string, dgst digest.Digest, at time.Time) error {
	if _, err := txn.Get(manifestKey(repo, dgst)); errors.Is(err, kv.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	prev, _, err := getPulled(txn, repo, dgst)
	if err != nil {
		return err
	}
	if !at.After(prev) {
		return nil
	}
	b, err := at.UTC().MarshalText()
	if err != nil {
		return err
	}
	return txn.Set(pulledKey(repo, dgst), b)
}
