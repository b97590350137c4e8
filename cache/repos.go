package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
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

// RepoCreated is when repo got its first manifest; zero when it has none, or is not known.
func (ms *Manifests) RepoCreated(ctx context.Context, repo string) time.Time {
	var info RepoInfo
	_ = ms.db.View(ctx, func(txn kv.Txn) error {
		var err error
		info, err = getRepoInfo(txn, repo)
		return err
	})
	return info.Created
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
		for _, kind := range []string{prefixLink, prefixManifest, prefixTag, prefixChecked, prefixReferrer, prefixPulled} {
			err := scan(ct.Txn, repoPrefix(kind, repo), "", func(key, _ []byte) bool {
				keys = append(keys, bytes.Clone(key))
				return true
			})
			if err != nil {
				return err
			}
		}
		tags := len(repoPrefix(prefixTag, repo))
		for _, k := range keys {
			if bytes.HasPrefix(k, repoPrefix(prefixTag, repo)) {
				if err := checkDeletable(ct.Txn, repo, string(k[tags:])); err != nil {
					return err
				}
			}
		}
		for _, k := range keys {
			if !bytes.HasPrefix(k, repoPrefix(prefixLink, repo)) && !bytes.HasPrefix(k, repoPrefix(prefixManifest, repo)) {
				continue
			}
			d := digest.Digest(lastPart(k))
			rec, err := getBlobRecord(ct.Txn, d)
			if err != nil && !errors.Is(err, ErrBlobUnknown) {
				return err
			}
			if err := ms.st.held(ct, repo, d, rec.Size, -1); err != nil {
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
	all, err := ms.artifacts(ctx, repo)
	if err != nil {
		return Artifact{}, err
	}
	if a, ok := all[m.Digest]; ok {
		return *a, nil
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

// refs are the blobs (config and layers, not the non-distributable ones) and the child manifests
// that a stored manifest's body names; the body was checked when it was pushed.
func refs(body []byte) (blobs, children []digest.Digest, err error) {
	var doc struct {
		Config *struct {
			Digest digest.Digest `json:"digest"`
		} `json:"config"`
		Layers []struct {
			MediaType string        `json:"mediaType"`
			Digest    digest.Digest `json:"digest"`
			URLs      []string      `json:"urls"`
		} `json:"layers"`
		Manifests []struct {
			Digest digest.Digest `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, fmt.Errorf("read a stored manifest: %w", err)
	}
	if doc.Config != nil {
		blobs = append(blobs, doc.Config.Digest)
	}
	for _, l := range doc.Layers {
		if len(l.URLs) == 0 { // a foreign layer lives elsewhere
			blobs = append(blobs, l.Digest)
		}
	}
	for _, m := range doc.Manifests {
		children = append(children, m.Digest)
	}
	return blobs, children, nil
}

// Copy puts the manifest ref of repo from, with its children and blobs, into the local
// repository to, and points tags at it (Harbor's artifact copy). The blobs must be stored: a
// mirrored artifact is copied once it has been pulled whole.
func (ms *Manifests) Copy(ctx context.Context, from, ref, to string, tags []string) (digest.Digest, error) {
	m, body, err := ms.Read(ctx, from, ref)
	if err != nil {
		return "", err
	}
	blobs, children, err := refs(body)
	if err != nil {
		return "", err
	}
	for _, c := range children {
		if _, err := ms.Copy(ctx, from, c.String(), to, nil); err != nil {
			return "", fmt.Errorf("copy child manifest %s: %w", c, err)
		}
	}
	for _, b := range blobs {
		if _, err := ms.st.LinkBlob(ctx, to, b); err != nil {
			if errors.Is(err, ErrBlobUnknown) {
				return "", &MissingError{Digest: b}
			}
			return "", fmt.Errorf("copy blob %s: %w", b, err)
		}
	}
	m.Blobs, m.Children = blobs, children
	return m.Digest, ms.Put(ctx, to, m, body, tags)
}

// DeleteArtifact deletes the manifest dgst of repo (Delete) and then each of its children that
// no tag and no other manifest of repo names any more, as Harbor deletes an index with its
// images.
func (ms *Manifests) DeleteArtifact(ctx context.Context, repo string, dgst digest.Digest) error {
	return ms.deleteArtifact(ctx, repo, dgst, nil)
}

// deleteArtifact is DeleteArtifact while the artifact's tags are want (nil: whatever they are;
// see deleteIf).
func (ms *Manifests) deleteArtifact(ctx context.Context, repo string, dgst digest.Digest, want []string) error {
	children, err := ms.children(ctx, repo, dgst)
	if err != nil {
		return err
	}
	if len(want) > 0 {
		want = slices.Sorted(slices.Values(want)) // nil stays nil (any tags), empty stays empty (none)
	}
	if err := ms.deleteIf(ctx, repo, dgst, want); err != nil {
		return err
	}
	for _, c := range children {
		// Untagged and named by no other manifest (both checked in its transaction): it goes.
		err := ms.deleteArtifact(ctx, repo, c, []string{})
		if err != nil && !errors.Is(err, ErrManifestUnknown) && !errors.Is(err, ErrChanged) && !errors.Is(err, ErrInUse) {
			return err
		}
	}
	return nil
}

// DeleteUntagged deletes the untagged artifacts of the repositories that keep says are to be
// swept (local ones): manifests that no tag and no index names, but not an artifact that refers
// to another one still there (a signature or an SBOM of an image). Each is reported; with dryRun
// nothing is deleted.
func (ms *Manifests) DeleteUntagged(ctx context.Context, sweep func(repo string) bool, dryRun bool, report func(repo string, dgst digest.Digest)) (int, error) {
	var repos []string
	err := ms.db.View(ms.st.ctx, func(txn kv.Txn) error {
		return scan(txn, []byte(prefixRepo), "", func(key, _ []byte) bool {
			if r := string(key[len(prefixRepo):]); sweep(r) {
				repos = append(repos, r)
			}
			return true
		})
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, repo := range repos {
		all, err := ms.artifacts(ctx, repo)
		if err != nil {
			return n, err
		}
		for d, a := range all {
			if err := ctx.Err(); err != nil {
				return n, err
			}
			if len(a.Tags) > 0 || a.parents > 0 {
				continue
			}
			if _, ok := all[a.Subject]; ok && a.Subject != "" {
				continue // an accessory of an artifact that stays
			}
			if dryRun {
				report(repo, d)
				n++
				continue
			}
			// Still untagged and named by no index, in the delete's transaction: a push that
			// tagged it since keeps it.
			err := ms.deleteArtifact(ctx, repo, d, []string{})
			if errors.Is(err, ErrManifestUnknown) || errors.Is(err, ErrChanged) || errors.Is(err, ErrInUse) {
				continue
			}
			if err != nil {
				return n, err
			}
			report(repo, d)
			n++
		}
	}
	return n, nil
}

// ExpireMirrored forgets the cached manifests of the repositories under upstream (a mirrored
// name, such as docker.io) that were neither cached nor pulled within keep: with their tags,
// they go from the cache, and their blobs at the next garbage collection
// (mirror.upstreams.<name>.keep_days). It returns how many it forgot.
func (ms *Manifests) ExpireMirrored(ctx context.Context, upstream string, keep time.Duration) (int, error) {
	var repos []string
	err := ms.db.View(ms.st.ctx, func(txn kv.Txn) error {
		return scan(txn, []byte(prefixRepo+upstream+"/"), "", func(key, _ []byte) bool {
			repos = append(repos, string(key[len(prefixRepo):]))
			return true
		})
	})
	if err != nil {
		return 0, err
	}
	cutoff := ms.st.now().Add(-keep)
	n := 0
	for _, repo := range repos {
		all, err := ms.artifacts(ctx, repo)
		if err != nil {
			return n, err
		}
		for d, a := range all {
			if a.Created.After(cutoff) || a.Pulled.After(cutoff) {
				continue
			}
			if err := ms.Delete(ctx, repo, d); err != nil && !errors.Is(err, ErrManifestUnknown) {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// children are the manifests that the manifest dgst of repo names (an index's images): from its
// record, or from its body for a record written before cove kept them.
func (ms *Manifests) children(ctx context.Context, repo string, dgst digest.Digest) ([]digest.Digest, error) {
	m, err := ms.Resolve(ctx, repo, dgst.String())
	if err != nil {
		return nil, err
	}
	if len(m.Blobs) > 0 || len(m.Children) > 0 {
		return m.Children, nil
	}
	_, body, err := ms.Read(ctx, repo, dgst.String())
	if err != nil {
		return nil, err
	}
	_, children, err := refs(body)
	return children, err
}
