package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

// A repository's lifecycle, as Harbor's API has it: its description and pull count, deleting it,
// tags added to an artifact. Its blobs stay until garbage collection finds nothing using them.

// RepoInfo is what the index keeps about a repository besides its content.
type RepoInfo struct {
	Description string    `json:"description,omitempty"`
	Pulls       int64     `json:"pulls,omitempty"`  // manifest pulls, written in batches
	Created     time.Time `json:"created,omitzero"` // its first manifest's push
}

func getRepoInfo(txn kv.Txn, repo string) (RepoInfo, error) {
	var info RepoInfo
	err := kv.Get(txn, []byte(prefixRepoInfo+repo), &info)
	if errors.Is(err, kv.ErrNotFound) {
		err = nil
	}
	return info, err
}

// ensureRepoInfo notes when a repository got its first manifest.
func ensureRepoInfo(txn kv.Txn, repo string, now time.Time) error {
	if _, err := txn.Get([]byte(prefixRepoInfo + repo)); !errors.Is(err, kv.ErrNotFound) {
		return err
	}
	return kv.Put(txn, []byte(prefixRepoInfo+repo), RepoInfo{Created: now})
}

// addPulls adds n pulls to the count of each repository in pulls.
func addPulls(txn kv.Txn, pulls map[string]int64) error {
	for repo, n := range pulls {
		if _, err := txn.Get(repoKey(repo)); errors.Is(err, kv.ErrNotFound) {
			continue // deleted meanwhile
		} else if err != nil {
			return err
		}
		info, err := getRepoInfo(txn, repo)
		if err != nil {
			return err
		}
		info.Pulls += n
		if err := kv.Put(txn, []byte(prefixRepoInfo+repo), info); err != nil {
			return err
		}
	}
	return nil
}

// SetDescription sets the description of repo, which must have content (else ErrNameUnknown).
func (ms *Manifests) SetDescription(ctx context.Context, repo, description string) error {
	return ms.st.update(func(ct *commitTxn) error {
		if _, err := ct.Get(repoKey(repo)); err != nil {
			return notFound(err, ErrNameUnknown)
		}
		info, err := getRepoInfo(ct.Txn, repo)
		if err != nil {
			return err
		}
		info.Description = description
		return kv.Put(ct.Txn, []byte(prefixRepoInfo+repo), info)
	})
}

// DeleteRepository removes repo: its manifests, tags, referrers and blob links, in one
// transaction, or ErrNameUnknown. The blobs stay until garbage collection finds nothing using
// them. For mirrored repositories, Evictor.EvictRepository frees their blobs at once.
func (ms *Manifests) DeleteRepository(ctx context.Context, repo string) error {
	if err := ms.ev.flushAccess(); err != nil { // pulls counted for a repository gone
		return err
	}
	return ms.st.update(func(ct *commitTxn) error {
		if _, err := ct.Get(repoKey(repo)); err != nil {
			return notFound(err, ErrNameUnknown)
		}
		var keys [][]byte
		for _, kind := range []string{prefixLink, prefixManifest, prefixTag, prefixChecked, prefixReferrer} {
			err := scan(ct.Txn, repoPrefix(kind, repo), "", func(key, _ []byte) bool {
				keys = append(keys, bytes.Clone(key))
				return true
			})
			if err != nil {
				return err
			}
		}
		keys = append(keys, repoKey(repo), []byte(prefixRepoInfo+repo))
		for _, k := range keys {
			if err := ct.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// AddTag points the new tag at the manifest ref (a tag or digest) of repo. A tag that exists
// already is ErrTagExists: moving a tag is a push.
func (ms *Manifests) AddTag(ctx context.Context, repo, ref, tag string) error {
	return ms.st.update(func(ct *commitTxn) error {
		m, err := resolve(ct.Txn, repo, ref)
		if err != nil {
			return err
		}
		if _, err := ct.Get(tagKey(repo, tag)); err == nil {
			return fmt.Errorf("%w: %s:%s", ErrTagExists, repo, tag)
		} else if !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		return ct.Set(tagKey(repo, tag), []byte(m.Digest.String()))
	})
}

// Artifact returns the manifest ref (a tag or digest) of repo with its tags and last pull.
func (ms *Manifests) Artifact(ctx context.Context, repo, ref string) (Artifact, error) {
	m, err := ms.Resolve(ctx, repo, ref)
	if err != nil {
		return Artifact{}, err
	}
	arts, err := ms.Artifacts(ctx, repo)
	if err != nil {
		return Artifact{}, err
	}
	for _, a := range arts {
		if a.Digest == m.Digest {
			return a, nil
		}
	}
	return Artifact{}, ErrManifestUnknown
}

// ReadBlob returns the content of the blob dgst of repo when it is at most max bytes: an image's
// config, for what the API shows of it. ErrBlobUnknown when repo may not read it or it is not
// stored (mirrored content fetched only when pulled).
func (s *Store) ReadBlob(ctx context.Context, repo string, dgst digest.Digest, max int64) ([]byte, error) {
	info, err := s.StatBlob(ctx, repo, dgst)
	if err != nil {
		return nil, err
	}
	if info.Size > max {
		return nil, fmt.Errorf("blob %s is %d bytes, more than %d", dgst, info.Size, max)
	}
	f, err := s.openLocal(ctx, dgst, false)
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", dgst, err)
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, max))
}
