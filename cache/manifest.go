package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"cove/internal/kv"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MaxManifestSize is the largest manifest the store keeps (and the registry accepts).
const MaxManifestSize = 4 << 20

// Manifest describes a manifest as the index keeps it. The bytes themselves are a blob file,
// kept byte-exact.
type Manifest struct {
	Digest       digest.Digest     `json:"-"`
	MediaType    string            `json:"mediaType"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Subject      digest.Digest     `json:"subject,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Created      time.Time         `json:"created"`
	// ContentSize is the manifest's size plus the sizes of the blobs (or child manifests) it
	// names, as its descriptors give them: what the artifact weighs.
	ContentSize int64 `json:"contentSize,omitempty"`

	// Blobs and Children are what the manifest names: its config and layers, an index's
	// manifests. Put requires the repository to hold them (PutMirrored does not: they are fetched
	// when asked for); garbage collection keeps what a manifest names. Records written before
	// cove kept them have neither: their bodies say.
	Blobs    []digest.Digest `json:"blobs,omitempty"`
	Children []digest.Digest `json:"children,omitempty"`
}

// Descriptor returns the OCI descriptor of m, as the referrers API lists it.
func (m Manifest) Descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType:    m.MediaType,
		Digest:       m.Digest,
		Size:         m.Size,
		ArtifactType: m.ArtifactType,
		Annotations:  m.Annotations,
	}
}

// Manifests is the store's metadata: manifests, tags, repositories and referrers. A manifest's
// bytes are a blob of the Store; its records say which repositories hold it, under which tags.
// It is safe for concurrent use.
type Manifests struct {
	st *Store
	ev *Evictor // records pulls, for the last pull time and eviction's order
	db kv.DB
	// memo answers Read and MirroredTag from memory while the index is unchanged; nil in a
	// fleet, whose index other nodes write too.
	memo *manifestMemo
}

// Put stores body as the manifest m.Digest of repo and points each of tags at it. Every blob
// in m.Blobs must be linked to repo and every manifest in m.Children must be in repo, or a
// *MissingError names the first one that is not. A manifest with a subject is recorded as a
// referrer of that subject, whether or not the subject exists.
func (ms *Manifests) Put(ctx context.Context, repo string, m Manifest, body []byte, tags []string) error {
	return ms.put(ctx, repo, m, body, tags, originLocal, time.Time{})
}

// PutMirrored stores body, fetched from an upstream, as the manifest m.Digest of repo, a
// mirrored repository, and points tag at it (when not empty), recording that the upstream
// confirmed the tag at checked. The blobs it references need not be stored: they are fetched when
// asked for.
func (ms *Manifests) PutMirrored(ctx context.Context, repo string, m Manifest, body []byte, tag string, checked time.Time) error {
	var tags []string
	if tag != "" {
		tags = []string{tag}
	}
	return ms.put(ctx, repo, m, body, tags, originMirrored, checked)
}

func (ms *Manifests) put(ctx context.Context, repo string, m Manifest, body []byte, tags []string, from origin, checked time.Time) error {
	if err := supported(m.Digest); err != nil {
		return err
	}
	if got := m.Digest.Algorithm().FromBytes(body); got != m.Digest {
		return fmt.Errorf("%w: manifest hashes to %s, not %s", ErrDigestMismatch, got, m.Digest)
	}
	m.Size = int64(len(body))
	m.Created = ms.st.now().UTC()
	ms.st.gcMu.RLock()
	defer ms.st.gcMu.RUnlock()
	defer ms.st.refs.Add(1) // after the index write, before RUnlock: see Collect
	// Check the references before placing anything, so that a refused manifest leaves no file.
	if err := ms.db.View(ms.st.ctx, func(txn kv.Txn) error { return checkRefs(txn, repo, m, from) }); err != nil {
		return err
	}
	f, err := os.CreateTemp(ms.st.tmpDir(), "manifest-*")
	if err != nil {
		return fmt.Errorf("create temp file: %w", err)
	}
	defer removeTemp(f)
	if _, err := f.Write(body); err != nil {
		return fmt.Errorf("write manifest %s: %w", m.Digest, err)
	}
	placed, err := ms.st.place(f, m.Digest, false)
	if err != nil {
		return err
	}
	now := ms.st.now()
	err = ms.st.update(func(ct *commitTxn) error {
		txn := ct.Txn
		// What the manifest names is referenced first, under each digest's fleet-wide lock (in
		// digest order: two pushes never wait for each other crosswise): garbage collection on
		// another node then either deleted it before (and checkRefs sees it gone) or sees the
		// reference.
		for _, d := range namedDigests(m) {
			if err := referenced(txn, d, now, true); err != nil {
				return err
			}
		}
		if err := checkRefs(txn, repo, m, from); err != nil {
			return err
		}
		if _, err := ms.st.ensureBlobRecord(ct, m.Digest, m.Size, m.MediaType, from); err != nil {
			return err
		}
		if err := referenced(txn, m.Digest, now, true); err != nil {
			return err
		}
		var old Manifest
		switch err := kv.Get(txn, manifestKey(repo, m.Digest), &old); {
		case err == nil && old.MediaType != m.MediaType && from == originLocal:
			// Within a repository a digest names one content and one media type (docs/SECURITY.md 2).
			return fmt.Errorf("%w: this repository holds %s as %s", ErrMediaTypeConflict, m.Digest, old.MediaType)
		case err == nil:
			m.Created = old.Created // a re-push keeps the original time
		case errors.Is(err, kv.ErrNotFound):
			// New in the repository: it counts in the project's quota, and has not been pulled
			// there (an empty pull time, not a missing one: see getPulled).
			if err := ms.st.held(ct, repo, m.Digest, m.Size, 1); err != nil {
				return err
			}
			if err := txn.Set(pulledKey(repo, m.Digest), nil); err != nil {
				return err
			}
		default:
			return err
		}
		if err := kv.Put(txn, manifestKey(repo, m.Digest), m); err != nil {
			return err
		}
		if m.Subject != "" {
			if err := txn.Set(referrerKey(repo, m.Subject, m.Digest), nil); err != nil {
				return err
			}
		}
		for _, t := range tags {
			if from != originMirrored {
				// An immutable tag is never moved (it may be pushed again, unchanged).
				if cur, err := txn.Get(tagKey(repo, t)); err == nil && string(cur) != m.Digest.String() {
					if err := checkMutable(txn, repo, t); err != nil {
						return err
					}
				} else if err != nil && !errors.Is(err, kv.ErrNotFound) {
					return err
				}
			}
			if err := txn.Set(tagKey(repo, t), []byte(m.Digest.String())); err != nil {
				return err
			}
			if from == originMirrored {
				if err := setChecked(txn, repo, t, checked); err != nil {
					return err
				}
			}
		}
		if err := ensureRepoInfo(txn, repo, m.Created); err != nil {
			return err
		}
		return txn.Set(repoKey(repo), nil)
	})
	if err != nil {
		ms.st.unplace(placed, m.Digest)
		return err
	}
	return ms.st.ensureShared(f, m.Digest)
}

// namedDigests is what m names, each once, in digest order.
func namedDigests(m Manifest) []digest.Digest {
	ds := slices.Concat(m.Blobs, m.Children)
	slices.Sort(ds)
	return slices.Compact(ds)
}

// checkRefs returns a *MissingError for the first blob of m not linked to repo, or child
// manifest of m not in repo; a mirrored manifest's are fetched when asked for.
func checkRefs(txn kv.Txn, repo string, m Manifest, from origin) error {
	if from == originMirrored {
		return nil
	}
	for _, d := range m.Blobs {
		if _, err := txn.Get(linkKey(repo, d)); err != nil {
			return notFound(err, &MissingError{Digest: d})
		}
	}
	for _, d := range m.Children {
		if _, err := txn.Get(manifestKey(repo, d)); err != nil {
			return notFound(err, &MissingError{Digest: d, Manifest: true})
		}
	}
	return nil
}

// Resolve returns the manifest record that ref (a tag or a digest) names in repo, or
// ErrManifestUnknown.
func (ms *Manifests) Resolve(ctx context.Context, repo, ref string) (Manifest, error) {
	var m Manifest
	err := ms.db.View(ms.st.ctx, func(txn kv.Txn) error {
		var err error
		m, err = resolve(txn, repo, ref)
		return err
	})
	return m, err
}

func resolve(txn kv.Txn, repo, ref string) (Manifest, error) {
	dgst, err := digest.Parse(ref)
	if err != nil { // a tag
		v, err := txn.Get(tagKey(repo, ref))
		if err != nil {
			return Manifest{}, notFound(err, ErrManifestUnknown)
		}
		dgst = digest.Digest(v)
	}
	var m Manifest
	if err := kv.Get(txn, manifestKey(repo, dgst), &m); err != nil {
		return Manifest{}, notFound(err, ErrManifestUnknown)
	}
	m.Digest = dgst
	return m, nil
}

// Get returns the record and the exact bytes of the manifest that ref names in repo: a pull,
// which counts for the last pull time and the repository's pulls.
func (ms *Manifests) Get(ctx context.Context, repo, ref string) (Manifest, []byte, error) {
	m, body, err := ms.Read(ctx, repo, ref)
	if err == nil {
		ms.ev.pulled(repo, m.Digest) // the last pull time, written in batches
	}
	return m, body, err
}

// CountPull records a pull of the manifest dgst of repo that was served without Get: a mirrored
// manifest fetched from its upstream for a client. It counts like a Get.
func (ms *Manifests) CountPull(repo string, dgst digest.Digest) {
	ms.ev.pulled(repo, dgst)
}

// Read is Get without counting a pull: for the registry's own reads and the API.
func (ms *Manifests) Read(ctx context.Context, repo, ref string) (Manifest, []byte, error) {
	if ms.memo == nil {
		return ms.read(ctx, repo, ref)
	}
	if m, body, ok := ms.memo.read(repo, ref); ok {
		return m, body, nil
	}
	gen := ms.memo.generation()
	m, body, err := ms.read(ctx, repo, ref)
	if err == nil {
		ms.memo.remember(gen, repo, ref, m, body, nil)
	}
	return m, body, err
}

// read is Read from the index and the manifest's file.
func (ms *Manifests) read(ctx context.Context, repo, ref string) (Manifest, []byte, error) {
	m, err := ms.Resolve(ctx, repo, ref)
	if err != nil {
		return Manifest{}, nil, err
	}
	f, err := ms.st.openLocal(ctx, m.Digest, false)
	if err != nil {
		return Manifest{}, nil, fmt.Errorf("open manifest %s: %w", m.Digest, err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(f, MaxManifestSize+1)); err != nil {
		return Manifest{}, nil, fmt.Errorf("read manifest %s: %w", m.Digest, err)
	}
	if int64(buf.Len()) != m.Size {
		return Manifest{}, nil, ms.st.badSize(ctx, m.Digest, int64(buf.Len()), m.Size)
	}
	// A manifest is small: its digest is checked at each read from the file, and corrupt bytes
	// are never served (scrub.go).
	if got := m.Digest.Algorithm().FromBytes(buf.Bytes()); got != m.Digest {
		return Manifest{}, nil, ms.st.badBytes(ctx, m.Digest, ErrManifestUnknown, "its bytes hash to "+got.String())
	}
	return m, buf.Bytes(), nil
}

// Delete removes the manifest dgst from repo, every tag of repo that points at it, and its
// entry in the referrers of its subject.
func (ms *Manifests) Delete(ctx context.Context, repo string, dgst digest.Digest) error {
	return ms.deleteIf(ctx, repo, dgst, nil)
}

// deleteIf is Delete, but only while the manifest's tags are want (sorted; nil: whatever they
// are), checked in the same transaction: a job that chose it from an earlier look (untagged, or
// not kept by retention) never deletes what a push tagged meanwhile (ErrChanged). A manifest that
// an index of the repository names is refused (*InUseError): the index would break.
func (ms *Manifests) deleteIf(ctx context.Context, repo string, dgst digest.Digest, want []string) error {
	return ms.st.update(func(ct *commitTxn) error {
		txn := ct.Txn
		var m Manifest
		if err := kv.Get(txn, manifestKey(repo, dgst), &m); err != nil {
			return notFound(err, ErrManifestUnknown)
		}
		if by, err := namedBy(txn, repo, dgst, func(o Manifest) []digest.Digest { return o.Children }); err != nil {
			return err
		} else if by != "" {
			return &InUseError{Digest: dgst, By: by}
		}
		if err := txn.Delete(manifestKey(repo, dgst)); err != nil {
			return err
		}
		if err := txn.Delete(pulledKey(repo, dgst)); err != nil {
			return err
		}
		if err := ms.st.held(ct, repo, dgst, m.Size, -1); err != nil {
			return err
		}
		if m.Subject != "" {
			if err := txn.Delete(referrerKey(repo, m.Subject, dgst)); err != nil {
				return err
			}
		}
		var stale [][]byte
		var names []string
		prefix := repoPrefix(prefixTag, repo)
		err := scan(txn, prefix, "", func(key, val []byte) bool {
			if string(val) == dgst.String() {
				// key is badger's for this step of the iteration only: keep a copy.
				stale = append(stale, bytes.Clone(key))
				names = append(names, string(key[len(prefix):]))
			}
			return true
		})
		if err != nil {
			return err
		}
		if want != nil && (len(names) != len(want) || !slices.Equal(names, want)) {
			return fmt.Errorf("%w: %s@%s is tagged %v now", ErrChanged, repo, dgst, names)
		}
		for _, k := range stale {
			if err := checkDeletable(txn, repo, string(k[len(prefix):])); err != nil {
				return err
			}
		}
		for _, k := range stale {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return dropRepoIfEmpty(txn, repo)
	})
}

// namedBy returns the digest of a manifest of repo, other than dgst, whose list picks dgst out,
// or "" when none does.
func namedBy(txn kv.Txn, repo string, dgst digest.Digest, list func(Manifest) []digest.Digest) (digest.Digest, error) {
	var by digest.Digest
	err := eachJSON(txn, string(repoPrefix(prefixManifest, repo)), func(key []byte, m *Manifest) error {
		if d := digest.Digest(lastPart(key)); by == "" && d != dgst && slices.Contains(list(*m), dgst) {
			by = d
		}
		return nil
	})
	return by, err
}

// DeleteTag removes tag from repo, leaving the manifest it pointed at.
func (ms *Manifests) DeleteTag(ctx context.Context, repo, tag string) error {
	return ms.st.update(func(ct *commitTxn) error {
		txn := ct.Txn
		if _, err := txn.Get(tagKey(repo, tag)); err != nil {
			return notFound(err, ErrManifestUnknown)
		}
		if err := checkDeletable(txn, repo, tag); err != nil {
			return err
		}
		return txn.Delete(tagKey(repo, tag))
	})
}

// Tags lists repo's tags in lexical order, at most n of them (n < 0: all), starting after last.
// more reports whether tags follow the ones returned. A repository without content is ErrNameUnknown.
func (ms *Manifests) Tags(ctx context.Context, repo, last string, n int) (tags []string, more bool, err error) {
	tags = []string{}
	err = ms.db.View(ms.st.ctx, func(txn kv.Txn) error {
		if _, err := txn.Get(repoKey(repo)); err != nil {
			return notFound(err, ErrNameUnknown)
		}
		prefix := repoPrefix(prefixTag, repo)
		return scan(txn, prefix, last, func(key, _ []byte) bool {
			if n >= 0 && len(tags) == n {
				more = true
				return false
			}
			tags = append(tags, string(key[len(prefix):]))
			return true
		})
	})
	return tags, more, err
}

// Repositories lists repositories with content in lexical order, at most n of them, starting after
// last, keeping only those for which visible returns true. more reports whether others follow.
func (ms *Manifests) Repositories(ctx context.Context, last string, n int, visible func(repo string) bool) (repos []string, more bool, err error) {
	repos = []string{}
	err = ms.db.View(ms.st.ctx, func(txn kv.Txn) error {
		return scan(txn, []byte(prefixRepo), last, func(key, _ []byte) bool {
			repo := string(key[len(prefixRepo):])
			if !visible(repo) {
				return true
			}
			if len(repos) == n {
				more = true
				return false
			}
			repos = append(repos, repo)
			return true
		})
	})
	return repos, more, err
}

// CountRepositories returns how many repositories with content have names starting with prefix.
func (ms *Manifests) CountRepositories(ctx context.Context, prefix string) (int, error) {
	count := 0
	err := ms.db.View(ms.st.ctx, func(txn kv.Txn) error {
		return scan(txn, []byte(prefixRepo+prefix), "", func(_, _ []byte) bool {
			count++
			return true
		})
	})
	return count, err
}

// Referrers returns the descriptors of the manifests in repo whose subject is subject, in digest
// order after last, those with artifactType only when it is not empty. It stops after n
// descriptors or once their JSON passes about maxBytes (always returning at least one), and
// reports whether more follow.
func (ms *Manifests) Referrers(ctx context.Context, repo string, subject digest.Digest, artifactType, last string, n, maxBytes int) (descs []ocispec.Descriptor, more bool, err error) {
	descs = []ocispec.Descriptor{}
	err = ms.db.View(ms.st.ctx, func(txn kv.Txn) error {
		size := 0
		var ferr error
		err := scan(txn, []byte(prefixReferrer+repo+sep+subject.String()+sep), last, func(key, _ []byte) bool {
			if len(descs) >= n || (len(descs) > 0 && size >= maxBytes) {
				more = true
				return false
			}
			d := digest.Digest(lastPart(key))
			var m Manifest
			if err := kv.Get(txn, manifestKey(repo, d), &m); err != nil {
				if !errors.Is(err, kv.ErrNotFound) {
					ferr = err
					return false
				}
				return true
			}
			m.Digest = d
			if artifactType == "" || m.ArtifactType == artifactType {
				desc := m.Descriptor()
				b, _ := json.Marshal(desc)
				size += len(b)
				descs = append(descs, desc)
			}
			return true
		})
		if ferr != nil {
			return ferr
		}
		return err
	})
	return descs, more, err
}

// scan calls fn for each key under prefix that sorts after prefix+after, in order, until fn
// returns false. The key and value passed to fn are valid only during the call: badger reuses
// them at the next step, so fn copies what it keeps (bytes.Clone, or a string conversion).
func scan(txn kv.Txn, prefix []byte, after string, fn func(key, val []byte) bool) error {
	var from []byte
	if after != "" {
		from = append(append([]byte{}, prefix...), after...)
	}
	return txn.Scan(prefix, kv.ScanOptions{From: from}, func(key, val []byte) (bool, error) {
		if after != "" && strings.TrimPrefix(string(key), string(prefix)) == after {
			return true, nil
		}
		return fn(key, val), nil
	})
}

// MirroredTag returns the manifest that a mirrored tag points at and when the tag was last checked
// with the upstream, or ErrManifestUnknown.
func (ms *Manifests) MirroredTag(ctx context.Context, repo, tag string) (Manifest, time.Time, error) {
	if ms.memo == nil {
		return ms.mirroredTag(ctx, repo, tag)
	}
	if m, checked, ok := ms.memo.tag(repo, tag); ok {
		return m, checked, nil
	}
	gen := ms.memo.generation()
	m, checked, err := ms.mirroredTag(ctx, repo, tag)
	if err == nil {
		ms.memo.remember(gen, repo, tag, m, nil, &checked)
	}
	return m, checked, err
}

func (ms *Manifests) mirroredTag(ctx context.Context, repo, tag string) (Manifest, time.Time, error) {
	var m Manifest
	var checked time.Time
	err := ms.db.View(ms.st.ctx, func(txn kv.Txn) error {
		var err error
		if m, err = resolve(txn, repo, tag); err != nil {
			return err
		}
		b, err := txn.Get(checkedKey(repo, tag))
		if err != nil {
			return notFound(err, nil) // never checked: the zero time
		}
		return checked.UnmarshalText(b)
	})
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return Manifest{}, time.Time{}, err
	}
	return m, checked, nil
}

// TagChecked records that the upstream confirmed a mirrored tag at the time given.
func (ms *Manifests) TagChecked(ctx context.Context, repo, tag string, at time.Time) error {
	return ms.st.update(func(ct *commitTxn) error { return setChecked(ct.Txn, repo, tag, at) })
}

func setChecked(txn kv.Txn, repo, tag string, at time.Time) error {
	b, err := at.UTC().MarshalText()
	if err != nil {
		return err
	}
	return txn.Set(checkedKey(repo, tag), b)
}
