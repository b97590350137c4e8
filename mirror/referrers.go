package mirror

import (
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	pathpkg "path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"cove/cache"
)

// The referrers of mirrored content (OCI distribution spec v1.1, "Listing Referrers"): the
// signatures, attestations and SBOMs that name an image as their subject. cove asks the
// upstream's referrers API; an upstream without one (CNCF distribution before 3.0 answers 404)
// is asked for the tag schema instead ("Referrers Tag Schema": the tag <alg>-<hex> of the subject
// holds an index of its referrers, which clients without the API push and read). The upstream's
// whole list is kept for tag_ttl, and served stale when the upstream cannot be asked; cove applies
// the artifactType filter itself (OCI-Filters-Applied), so that one upstream request per subject
// and tag_ttl serves every filter.
//
// Where the answers are kept: in memory, per node, bounded (referrersCacheBytes). A fleet's nodes
// each ask the upstream once per tag_ttl and subject; the answers are small and cheap to ask for
// again, and a shared copy would need expiry and clean-up in the metadata store for little gain.
// The tag-schema index itself is a mirrored manifest under its tag, in the store like any other
// (shared by a fleet, revalidated with HEAD after tag_ttl): after a restart, or on a node that
// never asked, it is the stale answer when the upstream is down.

// referrersCacheBytes bounds the referrers answers one node keeps; past it the least recently
// used go first.
const referrersCacheBytes = 32 << 20

// maxReferrerFetches bounds the referrers lists one node reads from upstreams at once.
const maxReferrerFetches = 4

// maxReferrerPages bounds the pages of one upstream referrers answer that cove follows.
const maxReferrerPages = 16

// referrersAnswer is an upstream's list of the referrers of a subject, unfiltered.
type referrersAnswer struct {
	descs   []referrer
	size    int       // the descriptors' bytes, added up: what the cache counts
	fetched time.Time // when the upstream (or the tag schema) gave it
}

// referrer is one descriptor of a referrers list: kept as the upstream's bytes (never decoded
// whole: a descriptor's annotations decoded into maps take many times their size), with what
// the filter and the checks read.
type referrer struct {
	raw          json.RawMessage
	digest       digest.Digest
	artifactType string
}

// referrerOverhead is what the cache counts for a descriptor besides its bytes.
const referrerOverhead = 128

func newReferrersAnswer(descs []referrer, fetched time.Time) referrersAnswer {
	size := 0
	for _, d := range descs {
		size += len(d.raw) + referrerOverhead
	}
	return referrersAnswer{descs: descs, size: size, fetched: fetched}
}

// referrersCache holds referrers answers by upstream, repository there and subject. Its zero
// value is ready; it is safe for concurrent use.
type referrersCache struct {
	mu sync.Mutex
	// entries and lru (most recent at the front, values *referrersEntry) and bytes (the answers'
	// sizes added up) are guarded by mu.
	entries map[string]*list.Element
	lru     list.List
	bytes   int
}

type referrersEntry struct {
	key    string
	answer referrersAnswer
}

func (c *referrersCache) get(key string) (referrersAnswer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return referrersAnswer{}, false
	}
	c.lru.MoveToFront(e)
	return e.Value.(*referrersEntry).answer, true
}

func (c *referrersCache) put(key string, a referrersAnswer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]*list.Element{}
	}
	if e, ok := c.entries[key]; ok {
		c.bytes -= e.Value.(*referrersEntry).answer.size
		c.lru.Remove(e)
		delete(c.entries, key)
	}
	c.entries[key] = c.lru.PushFront(&referrersEntry{key: key, answer: a})
	c.bytes += a.size
	for c.bytes > referrersCacheBytes && c.lru.Len() > 1 {
		old := c.lru.Back()
		oe := old.Value.(*referrersEntry)
		c.bytes -= oe.answer.size
		c.lru.Remove(old)
		delete(c.entries, oe.key)
	}
}

// handleMirrorReferrers lists the referrers of a mirrored manifest: the upstream's answer, kept
// for tag_ttl and served stale when the upstream fails.
func (s *Server) handleMirrorReferrers(w http.ResponseWriter, r *http.Request, req request) error {
	subject, err := parseDigest(req.ref)
	if err != nil {
		return err
	}
	artifactType := r.URL.Query().Get("artifactType")
	key := strings.Join([]string{req.up.Name, req.upRepo, subject.String()}, "\x00")
	cached, ok := s.referrers.get(key)
	if ok && s.now().Sub(cached.fetched) < s.tagTTL {
		return writeReferrers(w, cached, artifactType)
	}
	// One upstream question per list at a time, whoever asks; on the mirror's time, so that one
	// client hanging up does not fail the others.
	ch := s.manifests.DoChan("referrers\x00"+key, func() (any, error) {
		ctx, cancel := s.withBudget(context.WithoutCancel(r.Context()), req.up, 0)
		defer cancel()
		select { // a few lists at a time: each may hold maxReferrersBytes while it is read
		case s.referrerFetches <- struct{}{}:
			defer func() { <-s.referrerFetches }()
		case <-ctx.Done():
			return nil, &UpstreamError{Upstream: req.up.Name, Timeout: true, Cause: errors.New("waited for other referrers lists")}
		}
		a, err := s.fetchReferrers(ctx, req, subject)
		if err != nil {
			return nil, err
		}
		s.referrers.put(key, a)
		return a, nil
	})
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-r.Context().Done():
		return r.Context().Err()
	}
	if res.Err == nil {
		return writeReferrers(w, res.Val.(referrersAnswer), artifactType)
	}
	if _, upstreamFailed := errors.AsType[*UpstreamError](res.Err); !upstreamFailed {
		return res.Err
	}
	// The upstream cannot be asked: the answer it gave last, however old (stale-if-error, as
	// for tags), or else the tag-schema index the store holds.
	if !ok {
		cached, ok = s.storedReferrers(r.Context(), req, subject)
	}
	if !ok {
		return res.Err
	}
	s.metrics.stale.WithLabelValues(req.up.Name).Inc()
	s.log.WarnContext(r.Context(), "serving cached referrers that the upstream could not confirm", "repo", req.repo, "digest", subject, "err", res.Err)
	return writeReferrers(w, cached, artifactType)
}

// writeReferrers answers the referrers list a, those of artifactType only when it is not empty:
// an image index of the descriptors as the upstream wrote them.
func writeReferrers(w http.ResponseWriter, a referrersAnswer, artifactType string) error {
	var b bytes.Buffer
	b.WriteString(`{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageIndex + `","manifests":[`)
	n := 0
	for _, d := range a.descs {
		if artifactType == "" || d.artifactType == artifactType {
			if n > 0 {
				b.WriteByte(',')
			}
			b.Write(d.raw)
			n++
		}
	}
	b.WriteString("]}")
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	h := w.Header()
	h.Set("Content-Type", ocispec.MediaTypeImageIndex)
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(b.Bytes())
	return err
}

// fetchReferrers asks the upstream for the referrers of subject: its referrers API, or, when it
// has none, the tag schema.
func (s *Server) fetchReferrers(ctx context.Context, req request, subject digest.Digest) (referrersAnswer, error) {
	descs, err := s.upstreamReferrers(ctx, req, subject)
	if noReferrersAPI(err) {
		var body []byte
		body, err = s.referrersTagIndex(ctx, req, subject)
		if err == nil {
			descs, err = indexManifests(body)
			if err != nil {
				err = &UpstreamError{Upstream: req.up.Name, Status: http.StatusOK, Cause: fmt.Errorf("referrers tag of %s: %w", subject, err)}
			}
		}
	}
	if err != nil {
		return referrersAnswer{}, err
	}
	return newReferrersAnswer(descs, s.now()), nil
}

// noReferrersAPI reports whether an upstream's answer to a referrers request says it has no
// referrers API: 404 (CNCF distribution 2.x), 405 or 400 (others that route it elsewhere).
func noReferrersAPI(err error) bool {
	ue, ok := errors.AsType[*UpstreamError](err)
	if !ok {
		return false
	}
	switch ue.Status {
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusBadRequest:
		return true
	}
	return false
}

// upstreamReferrers reads the upstream's referrers API, unfiltered, following its pages (bounded
// in number and bytes, and only to its own referrers path).
func (s *Server) upstreamReferrers(ctx context.Context, req request, subject digest.Digest) ([]referrer, error) {
	path := "referrers/" + subject.String()
	descs := []referrer{}
	seen := map[string]bool{} // pages asked: a Link back to one of them ends the list
	left := int64(maxReferrersBytes)
	for page := 0; path != "" && !seen[path] && page < maxReferrerPages && left > 0; page++ {
		seen[path] = true
		resp, err := req.up.do(ctx, http.MethodGet, req.upRepo, path, http.Header{"Accept": {ocispec.MediaTypeImageIndex}})
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, left+1))
		resp.Body.Close()
		if err != nil {
			return nil, req.up.classify(err)
		}
		if int64(len(b)) > left {
			return nil, &UpstreamError{Upstream: req.up.Name, Status: resp.StatusCode, Cause: fmt.Errorf("referrers of %s: more than %d bytes", subject, maxReferrersBytes)}
		}
		left -= int64(len(b))
		more, err := indexManifests(b)
		if err != nil {
			return nil, &UpstreamError{Upstream: req.up.Name, Status: resp.StatusCode, Cause: fmt.Errorf("referrers of %s: %w", subject, err)}
		}
		descs = append(descs, more...)
		path = nextReferrersPage(req.up, req.upRepo, resp.Header.Get("Link"))
	}
	return uniqueReferrers(descs), nil
}

// uniqueReferrers keeps the first descriptor of each digest.
func uniqueReferrers(descs []referrer) []referrer {
	seen := make(map[digest.Digest]bool, len(descs))
	out := descs[:0]
	for _, d := range descs {
		if !seen[d.digest] {
			seen[d.digest] = true
			out = append(out, d)
		}
	}
	return out
}

// nextReferrersPage returns the path (after /v2/<repo>/) of the page a Link header names, when it
// is the upstream's referrers path of repo on the upstream's own origin; else "".
func nextReferrersPage(up *upstream, repo, link string) string {
	if link == "" {
		return ""
	}
	target, rest, ok := strings.Cut(strings.TrimSpace(link), ">")
	if !ok || !strings.HasPrefix(target, "<") || !strings.Contains(rest, `rel="next"`) {
		return ""
	}
	base, err := url.Parse(up.base)
	if err != nil {
		return ""
	}
	u, err := base.Parse(target[1:])
	if err != nil || u.Scheme != base.Scheme || u.Host != base.Host {
		return ""
	}
	if pathpkg.Clean(u.Path) != u.Path {
		return "" // ".." (perhaps encoded) would lead out of the referrers path
	}
	prefix := base.Path + "/v2/" + repo + "/"
	path, ok := strings.CutPrefix(u.Path, prefix)
	if !ok || !strings.HasPrefix(path, "referrers/") {
		return ""
	}
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	return path
}

// indexManifests reads the descriptors of an image index, leaving out any that are not
// well-formed; each is kept as its bytes (compacted), with its digest and artifact type.
func indexManifests(body []byte) ([]referrer, error) {
	var index struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(body, &index); err != nil {
		return nil, err
	}
	if index.MediaType != "" && index.MediaType != ocispec.MediaTypeImageIndex {
		return nil, fmt.Errorf("media type %q, not an image index", index.MediaType)
	}
	descs := make([]referrer, 0, len(index.Manifests))
	for _, raw := range index.Manifests {
		var d struct { // what is checked and filtered on; annotations are not decoded
			MediaType    string        `json:"mediaType"`
			Digest       digest.Digest `json:"digest"`
			Size         int64         `json:"size"`
			ArtifactType string        `json:"artifactType"`
			Data         []byte        `json:"data"`
		}
		if json.Unmarshal(raw, &d) != nil || checkDescriptor(ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, Data: d.Data}) != nil {
			continue
		}
		var compact bytes.Buffer
		if json.Compact(&compact, raw) != nil {
			continue
		}
		descs = append(descs, referrer{raw: compact.Bytes(), digest: d.Digest, artifactType: d.ArtifactType})
	}
	return descs, nil
}

// referrersTag is the tag under which the tag schema keeps the referrers of subject:
// <alg>-<encoded>, the algorithm cut to 32 characters and the encoded digest to 64.
func referrersTag(subject digest.Digest) string {
	alg, enc := subject.Algorithm().String(), subject.Encoded()
	return alg[:min(len(alg), 32)] + "-" + enc[:min(len(enc), 64)]
}

// referrersTagIndex returns the body of the tag-schema index of subject as a mirrored tag: from
// the store while tag_ttl trusts it, then confirmed with a HEAD and fetched again only when it
// moved, as for any mirrored tag (handleMirrorManifest). No such tag upstream is an empty index.
func (s *Server) referrersTagIndex(ctx context.Context, req request, subject digest.Digest) ([]byte, error) {
	tag := referrersTag(subject)
	m, checked, err := s.store.Manifests.MirroredTag(ctx, req.repo, tag)
	switch {
	case errors.Is(err, cache.ErrManifestUnknown):
		// Not stored: fetched below.
	case err != nil:
		return nil, err
	case s.now().Sub(checked) < s.tagTTL:
		_, body, err := s.store.Manifests.Read(ctx, req.repo, m.Digest.String())
		return body, err
	default:
		head, herr := req.up.manifest(ctx, http.MethodHead, req.upRepo, tag)
		switch {
		case herr == nil && head.digest == m.Digest:
			if err := s.store.Manifests.TagChecked(ctx, req.repo, tag, s.now()); err != nil {
				s.log.WarnContext(ctx, "recording a tag check", "err", err)
			}
			_, body, err := s.store.Manifests.Read(ctx, req.repo, m.Digest.String())
			return body, err
		case isNotFound(herr):
			if err := s.store.Manifests.DeleteTag(ctx, req.repo, tag); err != nil && !errors.Is(err, cache.ErrManifestUnknown) {
				return nil, err
			}
			return []byte(emptyIndex), nil
		case herr != nil:
			return nil, herr
		}
	}
	v, err, _ := s.manifests.Do(req.repo+"@"+tag, func() (any, error) {
		return s.storeUpstreamManifest(ctx, req, tag, tag)
	})
	if isNotFound(err) {
		return []byte(emptyIndex), nil
	}
	if err != nil {
		return nil, err
	}
	return v.(upstreamManifest).body, nil
}

// emptyIndex is the tag-schema index of a subject without referrers.
const emptyIndex = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`

// storedReferrers is the referrers answer that the store's copy of the tag-schema index of
// subject gives, whatever its age, when there is one.
func (s *Server) storedReferrers(ctx context.Context, req request, subject digest.Digest) (referrersAnswer, bool) {
	m, checked, err := s.store.Manifests.MirroredTag(ctx, req.repo, referrersTag(subject))
	if err != nil {
		return referrersAnswer{}, false
	}
	_, body, err := s.store.Manifests.Read(ctx, req.repo, m.Digest.String())
	if err != nil {
		return referrersAnswer{}, false
	}
	descs, err := indexManifests(body)
	if err != nil {
		return referrersAnswer{}, false
	}
	return newReferrersAnswer(descs, checked), true
}
