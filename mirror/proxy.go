package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"cove/auth"
	"cove/cache"
	"cove/internal/webhook"
)

// The pull-through side of the registry (docs/DESIGN.md, "How a pull flows"): a repository name that
// selects an upstream is served from the cache when it can be, and from the upstream once when it
// cannot. Mirrored repositories are read-only.

// route decides where a repository name lives: an upstream (with the repository path there), or
// the local store (up == nil). ?ns= and a first path element that names a configured upstream
// select it; a local project's name is local and never falls through to an upstream; every other
// name goes to the default upstream.
//
// implicit is true when the name fell through to the default upstream: it names neither an
// upstream (by ?ns= or its first element) nor a local project.
func (s *Server) route(ctx context.Context, r *http.Request, repo string) (up *upstream, upRepo string, implicit bool, err error) {
	if ns := r.URL.Query().Get("ns"); ns != "" {
		up := s.upstreams[ns]
		if up == nil {
			return nil, "", false, newError(http.StatusNotFound, CodeNameUnknown, "no upstream named %q is configured", ns)
		}
		if first, _, nested := strings.Cut(repo, "/"); ns == "docker.io" && nested && strings.ContainsAny(first, ".:") {
			return nil, "", false, newError(http.StatusNotFound, CodeNameUnknown,
				"%s looks like a registry host, and Docker Hub's namespaces have no dot: a name for another registry (mirror.upstreams.%q.url)", first, first)
		}
		return up, up.repoName(repo), false, nil
	}
	first, rest, nested := strings.Cut(repo, "/")
	if up := s.upstreams[first]; up != nil && nested {
		return up, up.repoName(rest), false, nil
	}
	if nested {
		// A project name that cannot be looked up is an error, never a name for the upstream:
		// a private name must not go to Docker Hub because the database is down.
		exists, err := s.policy.ProjectExists(ctx, first)
		if err != nil {
			return nil, "", false, err
		}
		if exists {
			return nil, "", false, nil
		}
		if strings.ContainsAny(first, ".:") {
			// A registry's host (Docker Hub's namespaces have neither a dot nor a colon): never
			// a name to send to the default upstream.
			return nil, "", false, newError(http.StatusNotFound, CodeNameUnknown,
				"%s looks like a registry host, and no upstream of that name is configured: add mirror.upstreams.%q.url to cove's configuration to mirror it (or create a project of that name to push there)", first, first)
		}
	}
	if s.def == nil {
		return nil, "", false, nil
	}
	return s.def, s.def.repoName(repo), true, nil
}

// repoName applies Docker Hub's rule: a one-element name is an official image under library/.
func (u *upstream) repoName(repo string) string {
	if u.Name == "docker.io" && !strings.Contains(repo, "/") {
		return "library/" + repo
	}
	return repo
}

// serveMirrored answers a request for a mirrored repository.
func (s *Server) serveMirrored(w http.ResponseWriter, r *http.Request, req request) error {
	pull := r.Method == http.MethodGet || r.Method == http.MethodHead
	// A push to a project that does not exist checks its blobs with HEADs first: with a token that
	// was asked to push there, those are part of the push, and never go to the upstream (they
	// would tell Docker Hub a private image's name and digests).
	pushing := req.implicit && req.who.Token && req.who.AskedFor("repository", req.name, string(auth.ActionPush))
	var h handler
	switch {
	case pushing || (req.implicit && !pull):
		// The name selected no upstream and no project, and fell through to the default upstream
		// for pulls: for a push, the likely story is a project that does not exist (yet).
		first, _, nested := strings.Cut(req.name, "/")
		switch {
		case !nested:
			return newError(http.StatusNotFound, CodeNameUnknown,
				"%s names no project: repositories of local projects are named <project>/<repository>", req.name)
		case req.up.Name == "docker.io" && first == "library":
			return newError(http.StatusForbidden, CodeDenied,
				"library/ is Docker Hub's official images, mirrored read-only: push to a project of your own (<project>/<repository>)")
		}
		return newError(http.StatusNotFound, CodeNameUnknown,
			"project %s does not exist: create it on the admin page (Projects, New project) or with POST /api/v2.0/projects, then push to %s", first, req.name)
	case req.kind == KindManifest && pull:
		h = s.handleMirrorManifest
	case req.kind == KindBlob && pull:
		h = s.handleMirrorBlob
	case req.kind == KindTags && r.Method == http.MethodGet:
		h = s.handleMirrorTags
	case req.kind == KindReferrers && r.Method == http.MethodGet:
		h = s.handleMirrorReferrers
	case pull:
		return newError(http.StatusMethodNotAllowed, CodeUnsupported, "%s is not supported on this endpoint", r.Method)
	default:
		return newError(http.StatusForbidden, CodeDenied,
			"%s is a read-only mirror of %s: push to a local project (<project>/<repository>) instead", req.repo, req.up.Name)
	}
	if req.peer && !(req.kind == KindBlob && r.Method == http.MethodGet) && !(req.kind == KindManifest && r.Method == http.MethodHead) {
		return newError(http.StatusForbidden, CodeDenied, "a node of the fleet may ask another only for mirrored blobs, tags and its uploads")
	}
	if req.peer {
		// The asking node authorized its client.
	} else if err := s.policy.AuthorizeMirror(r.Context(), req.who, req.name, auth.ActionPull); err != nil {
		e := toError(err)
		if e.Status == http.StatusUnauthorized {
			e.challenge = s.auth.Challenge(r, auth.RepositoryScope(req.name, auth.ActionPull))
		}
		return e
	}
	err := h(w, r, req)
	if isNotFound(err) {
		s.setOutcome(w, req, csFailed(err)) // the upstream's 404, before it becomes the spec's error
		switch req.kind {
		case KindManifest:
			return newError(http.StatusNotFound, CodeManifestUnknown, "manifest unknown to %s", req.up.Name)
		case KindBlob:
			return newError(http.StatusNotFound, CodeBlobUnknown, "blob unknown to %s", req.up.Name)
		}
	}
	return err
}

// writeMirrored answers a mirrored manifest and records the pull.
func (s *Server) writeMirrored(w http.ResponseWriter, r *http.Request, req request, mediaType string, dgst digest.Digest, body []byte) {
	writeManifest(w, r, mediaType, dgst, body)
	if r.Method != http.MethodHead {
		s.record(r, req, "pull", req.repo+"@"+dgst.String())
		if !warming(r) {
			s.event(r, req, webhook.PullArtifact, dgst, refTag(req.ref))
		}
	}
}

func writeManifest(w http.ResponseWriter, r *http.Request, mediaType string, dgst digest.Digest, body []byte) {
	h := w.Header()
	h.Set("Content-Type", mediaType)
	h.Set("Docker-Content-Digest", dgst.String())
	h.Set("Etag", `"`+dgst.String()+`"`)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func (s *Server) handleMirrorManifest(w http.ResponseWriter, r *http.Request, req request) error {
	if err := checkRef(req.ref); err != nil {
		return err
	}
	ctx := r.Context()
	now := s.now() // read once: at tens of thousands of requests a second the clock shows in profiles
	if _, err := digest.Parse(req.ref); err == nil {
		// By digest: immutable, so a cached copy is always right.
		m, body, err := s.readManifest(r, req.repo, req.ref)
		if err == nil {
			s.metrics.hit("manifest")
			s.setOutcome(w, req, csHit)
			s.writeMirrored(w, r, req, m.MediaType, m.Digest, body)
			return nil
		}
		if !errors.Is(err, cache.ErrManifestUnknown) {
			return err
		}
		if s.negative.has(req.repo+"@"+req.ref, now) {
			return s.negativeHit(w, req)
		}
		return s.fetchAndServeManifest(w, r, req, "", csMiss)
	}
	// By tag: trusted for tagTTL, then confirmed with a cheap HEAD within a short budget.
	m, checked, err := s.store.Manifests.MirroredTag(ctx, req.repo, req.ref)
	if errors.Is(err, cache.ErrManifestUnknown) && s.negative.has(req.repo+"@"+req.ref, now) {
		return s.negativeHit(w, req)
	}
	if errors.Is(err, cache.ErrManifestUnknown) || (err == nil && now.Sub(checked) >= s.tagTTL) {
		// In a fleet, the tag's owner asks the upstream for the fleet; its answer is in the
		// shared store then.
		switch s.tagFromOwner(r, req) {
		case http.StatusOK:
			m, checked, err = s.store.Manifests.MirroredTag(ctx, req.repo, req.ref)
			if err == nil {
				checked = s.now() // confirmed by the owner just now
			}
		case http.StatusNotFound:
			s.negative.add(req.repo+"@"+req.ref, s.now())
			return newError(http.StatusNotFound, CodeManifestUnknown, "manifest unknown to %s", req.up.Name)
		}
	}
	if errors.Is(err, cache.ErrManifestUnknown) {
		return s.fetchAndServeManifest(w, r, req, req.ref, csMiss)
	}
	if err != nil {
		return err
	}
	serveCached := func(o outcome) error {
		m, body, err := s.readManifest(r, req.repo, m.Digest.String())
		if err != nil {
			return err
		}
		s.metrics.hit("manifest")
		s.setOutcome(w, req, o)
		s.writeMirrored(w, r, req, m.MediaType, m.Digest, body)
		return nil
	}
	if now.Sub(checked) < s.tagTTL {
		return serveCached(csHit)
	}
	if req.up.pulls.low(now) {
		// Under the reserve of Docker Hub's pull limit: what is left is for cold pulls.
		s.metrics.reserveServes.WithLabelValues(req.up.Name).Inc()
		return serveCached(csReserve)
	}
	// One confirmation at a time per tag, whoever asks: the clients of a stale tag wait for the
	// same HEAD (in a fleet, the owner's clients and the other nodes' alike).
	v, err, _ := s.manifests.Do("confirm\x00"+req.repo+"\x00"+req.ref, func() (any, error) {
		rctx, cancel := s.withBudget(context.WithoutCancel(ctx), req.up, s.revalidate)
		defer cancel()
		return req.up.manifest(rctx, http.MethodHead, req.upRepo, req.ref)
	})
	head, _ := v.(upstreamManifest)
	switch {
	case err == nil && head.digest == m.Digest:
		if err := s.store.Manifests.TagChecked(ctx, req.repo, req.ref, s.now()); err != nil {
			s.log.WarnContext(ctx, "recording a tag check", "err", err)
		}
		return serveCached(csRevalidated)
	case err == nil: // moved, or the upstream did not say where: fetch it
		if ferr := s.fetchAndServeManifest(w, r, req, req.ref, csUpdated); ferr != nil {
			if _, ok := errors.AsType[*UpstreamError](ferr); !ok {
				return ferr
			}
			return s.serveStale(ctx, req, ferr, serveCached)
		}
		return nil
	case isNotFound(err):
		// The upstream says the tag is gone: so is the cached one.
		if derr := s.store.Manifests.DeleteTag(ctx, req.repo, req.ref); derr != nil && !errors.Is(derr, cache.ErrManifestUnknown) {
			return derr
		}
		s.negative.add(req.repo+"@"+req.ref, s.now())
		return newError(http.StatusNotFound, CodeManifestUnknown, "manifest unknown to %s", req.up.Name)
	}
	return s.serveStale(ctx, req, err, serveCached)
}

// serveStale answers with the cached copy of a tag that could not be revalidated: upstream slow,
// down or limiting (stale-if-error). It is logged and counted.
func (s *Server) serveStale(ctx context.Context, req request, cause error, serveCached func(outcome) error) error {
	s.metrics.stale.WithLabelValues(req.up.Name).Inc()
	s.log.WarnContext(ctx, "serving a cached tag that its upstream could not confirm", "repo", req.repo, "tag", req.ref, "err", cause)
	return serveCached(csStale(cause))
}

// negativeHit answers a manifest the upstream said it does not have, less than negative_ttl ago.
func (s *Server) negativeHit(w http.ResponseWriter, req request) error {
	s.setOutcome(w, req, csNegative)
	return newError(http.StatusNotFound, CodeManifestUnknown,
		"manifest unknown to %s (its answer, remembered for mirror.negative_ttl)", req.up.Name)
}

func isNotFound(err error) bool {
	ue, ok := errors.AsType[*UpstreamError](err)
	return ok && ue.NotFound
}

// fetchAndServeManifest fetches the manifest req.ref from the upstream — once, however many
// clients ask at the same time — verifies and stores it (with tag, when not empty), and serves it
// as o says (or as collapsed, for the clients that joined). A client's HEAD on a tag not yet cached
// fetches it too: one counted pull upstream, after which the client's GET by digest comes from the
// cache. An upstream's "not found" is remembered for negative_ttl.
func (s *Server) fetchAndServeManifest(w http.ResponseWriter, r *http.Request, req request, tag string, o outcome) error {
	s.metrics.miss("manifest")
	key := req.repo + "@" + req.ref
	led := false // set by this client's function only when it is the one that runs
	ch := s.manifests.DoChan(key, func() (any, error) {
		led = true
		ctx, cancel := s.withBudget(context.WithoutCancel(r.Context()), req.up, 0)
		defer cancel()
		return s.storeUpstreamManifest(ctx, req, req.ref, tag)
	})
	select {
	case res := <-ch:
		if isNotFound(res.Err) {
			s.negative.add(key, s.now())
		}
		if res.Err != nil {
			return res.Err
		}
		um := res.Val.(upstreamManifest)
		mt, _ := parseManifest(knownManifestType(um.mediaType), um.body)
		if !led {
			o = csCollapsed
		}
		s.setOutcome(w, req, o)
		s.writeMirrored(w, r, req, mt.MediaType, um.digest, um.body)
		if r.Method != http.MethodHead && !warming(r) {
			s.store.Manifests.CountPull(req.repo, um.digest) // a pull, by tag or by digest alone
		}
		return nil
	case <-r.Context().Done():
		return r.Context().Err()
	}
}

// storeUpstreamManifest fetches the manifest ref of req's repository from its upstream, checks
// it, and stores it (under tag, when not empty).
func (s *Server) storeUpstreamManifest(ctx context.Context, req request, ref, tag string) (upstreamManifest, error) {
	um, err := req.up.manifest(ctx, http.MethodGet, req.upRepo, ref)
	if err != nil {
		return upstreamManifest{}, err
	}
	m, err := parseManifest(knownManifestType(um.mediaType), um.body)
	if err != nil {
		return upstreamManifest{}, fmt.Errorf("%w: %v", errUpstreamUnusable, err)
	}
	m.Digest = um.digest
	if err := s.store.Manifests.PutMirrored(ctx, req.repo, m, um.body, tag, s.now()); err != nil {
		return upstreamManifest{}, err
	}
	return um, nil
}

// errUpstreamUnusable means an upstream sent a manifest cove does not store (schema 1, say).
var errUpstreamUnusable = errors.New("upstream manifest not usable")

// knownManifestType keeps a Content-Type only when it is a manifest type; otherwise the body's
// own mediaType decides.
func knownManifestType(contentType string) string {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch mt {
	case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, mediaTypeDockerManifest, mediaTypeDockerList:
		return mt
	}
	return ""
}

func (s *Server) handleMirrorBlob(w http.ResponseWriter, r *http.Request, req request) error {
	dgst, err := parseDigest(req.ref)
	if err != nil {
		return err
	}
	ctx := r.Context()
	s.setOutcome(w, req, csHit) // a redirect to the shared store, a hit, unless said otherwise below
	if done, err := s.redirectBlob(w, r, req.repo, dgst); done || err != nil {
		return err
	}
	repaired := false
	for attempt := 0; ; attempt++ {
		f, err := s.store.OpenBlob(ctx, req.repo, dgst)
		if errors.Is(err, cache.ErrNotLocal) {
			s.metrics.hit("blob")
			err := s.serveShared(w, r, req.repo, dgst)
			if errors.Is(err, cache.ErrSharedLost) && !repaired {
				// The bucket lost or damaged it, and its record is gone: fetch it from the
				// upstream as if it had never been stored (once; nothing was sent yet).
				repaired, attempt = true, -1
				continue
			}
			return err
		}
		if err == nil {
			s.metrics.hit("blob")
			if !repaired && attempt == 0 {
				s.setOutcome(w, req, csHit)
			}
			defer f.Close()
			setBlobHeaders(w, dgst)
			cw := &countingWriter{ResponseWriter: w}
			serveFile(cw, r, f.File)
			s.metrics.servedFromCache(cw.n)
			return nil
		}
		if !errors.Is(err, cache.ErrBlobUnknown) {
			return err
		}
		if attempt > 0 {
			return err
		}
		// Stored for another repository: the upstream must confirm that this one has it, since a
		// digest alone is not a capability (docs/SECURITY.md 4). Then link it, and serve the file.
		if s.store.HasBlob(ctx, dgst) {
			hctx, cancel := s.withBudget(ctx, req.up, 0)
			_, herr := req.up.headBlob(hctx, req.upRepo, dgst)
			cancel()
			if herr != nil {
				return herr
			}
			if _, err := s.store.LinkMirroredBlob(ctx, req.repo, dgst); err != nil {
				return err
			}
			s.setOutcome(w, req, csConfirmed)
			continue
		}
		if r.Method == http.MethodHead {
			s.setOutcome(w, req, csMissHead)
			return s.headUpstreamBlob(w, r, req, dgst)
		}
		if done, err := s.fromOwner(w, r, req, dgst); done {
			return err
		}
		err = s.streamFill(w, r, req, dgst)
		if !cache.IsFillEnded(err) {
			return err
		}
		// The fill ended as we joined it: the blob is stored now.
	}
}

func setBlobHeaders(w http.ResponseWriter, dgst digest.Digest) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Docker-Content-Digest", dgst.String())
	h.Set("Etag", `"`+dgst.String()+`"`)
}

func (s *Server) headUpstreamBlob(w http.ResponseWriter, r *http.Request, req request, dgst digest.Digest) error {
	ctx, cancel := s.withBudget(r.Context(), req.up, 0)
	defer cancel()
	size, err := req.up.headBlob(ctx, req.upRepo, dgst)
	if err != nil {
		return err
	}
	setBlobHeaders(w, dgst)
	if size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// streamFill joins or starts the one download of dgst and streams it to this client as it arrives.
func (s *Server) streamFill(w http.ResponseWriter, r *http.Request, req request, dgst digest.Digest) error {
	s.metrics.miss("blob")
	up, upRepo := req.up, req.upRepo
	fill, joined, err := s.store.Fills.FromUpstream(dgst, req.repo, func(ctx context.Context) (io.ReadCloser, int64, error) {
		// The upstream's time budget holds from the request to the last byte: no answer, or no
		// bytes, for that long cuts the fill (its clients get an error, the next request starts
		// a new fill) instead of holding every client of the digest for the fill's hour.
		ctx, watch, cancel := watchStall(ctx, up.Timeout, s.log, dgst)
		body, size, err := up.blob(ctx, upRepo, dgst)
		if err != nil {
			watch.stop(cancel)
			if watch.stalled.Load() {
				up.circuit.fail(s.now(), downTimeout)
				return nil, 0, &UpstreamError{Upstream: up.Name, Timeout: true, Cause: errUpstreamStalled}
			}
			return nil, 0, err
		}
		return &countingReader{ReadCloser: watch.body(body, cancel), add: s.metrics.downloaded}, size, nil
	})
	if err != nil {
		return err
	}
	if joined {
		s.metrics.coalesced.Inc()
		s.setOutcome(w, req, csCollapsed)
	} else {
		s.setOutcome(w, req, csMiss)
	}
	if joined && fill.Repo() != req.repo {
		// Filling for another repository: the same confirmation as for a stored blob of another
		// repository (handleMirrorBlob), before any byte of it reaches this client.
		hctx, cancel := s.withBudget(r.Context(), req.up, 0)
		_, herr := up.headBlob(hctx, upRepo, dgst)
		cancel()
		if herr != nil {
			return herr
		}
	}
	return s.serveFill(w, r, req.repo, dgst, fill)
}

// serveFill streams a fill to the client as its bytes arrive.
func (s *Server) serveFill(w http.ResponseWriter, r *http.Request, repo string, dgst digest.Digest, fill *cache.Fill) error {
	rd, err := fill.Reader(r.Context())
	if err != nil {
		return err
	}
	defer rd.Close()
	size := rd.Size()
	if size < 0 && !r.ProtoAtLeast(1, 1) {
		// Without a length or chunks, an HTTP/1.0 client takes the connection's close for the
		// end of the body: a cut answer would look whole. It waits for the checked blob.
		if size, err = rd.Whole(r.Context()); err != nil {
			return err
		}
	}
	setBlobHeaders(w, dgst)
	if size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}
	w.WriteHeader(http.StatusOK)
	buf := make([]byte, 32<<10)
	if _, err := io.CopyBuffer(writerOnly{w}, rd, buf); err != nil {
		// The status is sent: all that is left is to cut the connection, so the client cannot
		// take what it got for the whole blob.
		s.log.WarnContext(r.Context(), "blob download failed while streaming", "repo", repo, "digest", dgst, "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

// serveShared streams a blob that is in the fleet's shared store but not in this node's hot
// tier, while it fills the hot tier (one copy per digest, whoever asks).
func (s *Server) serveShared(w http.ResponseWriter, r *http.Request, repo string, dgst digest.Digest) error {
	if r.Method == http.MethodHead {
		// A HEAD needs no bytes.
		info, err := s.store.StatBlob(r.Context(), repo, dgst)
		if err != nil {
			return err
		}
		setBlobHeaders(w, dgst)
		w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
		w.WriteHeader(http.StatusOK)
		return nil
	}
	fill, _, err := s.store.Fills.FromShared(dgst, repo)
	if err != nil {
		return err
	}
	return s.serveFill(w, r, repo, dgst, fill)
}

// writerOnly hides ReadFrom, so that io.CopyBuffer copies through the buffer as bytes arrive.
type writerOnly struct{ io.Writer }

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	var err error
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(writerOnly{c.ResponseWriter}, r)
	}
	c.n += n
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

type countingReader struct {
	io.ReadCloser
	add func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.add(int64(n))
	return n, err
}

// handleMirrorTags lists the upstream's tags, under the name the client used. When the upstream
// cannot answer, the tags cove has cached are listed instead.
func (s *Server) handleMirrorTags(w http.ResponseWriter, r *http.Request, req request) error {
	n, last, err := pageParams(r)
	if err != nil {
		return err
	}
	q := url.Values{"n": {strconv.Itoa(n)}}
	if last != "" {
		q.Set("last", last)
	}
	ctx, cancel := s.withBudget(r.Context(), req.up, 0)
	defer cancel()
	name := strings.TrimPrefix(r.URL.Path, "/v2/")
	name = strings.TrimSuffix(name, "/tags/list")
	resp, err := req.up.do(ctx, http.MethodGet, req.upRepo, "tags/list?"+q.Encode(), nil)
	if err != nil {
		if isNotFound(err) {
			return newError(http.StatusNotFound, CodeNameUnknown, "repository name not known to %s", req.up.Name)
		}
		tags, more, lerr := s.store.Manifests.Tags(r.Context(), req.repo, last, n)
		if lerr != nil {
			return err
		}
		if more && len(tags) > 0 {
			nextLink(w, "/v2/"+name+"/tags/list", n, tags[len(tags)-1])
		}
		return writeJSON(w, "application/json", map[string]any{"name": name, "tags": tags})
	}
	defer resp.Body.Close()
	var list struct {
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxManifestBytes)).Decode(&list); err != nil {
		return &UpstreamError{Upstream: req.up.Name, Status: resp.StatusCode, Cause: fmt.Errorf("tags list: %w", err)}
	}
	if list.Tags == nil {
		list.Tags = []string{}
	}
	if resp.Header.Get("Link") != "" && len(list.Tags) > 0 {
		nextLink(w, "/v2/"+name+"/tags/list", n, list.Tags[len(list.Tags)-1])
	}
	return writeJSON(w, "application/json", map[string]any{"name": name, "tags": list.Tags})
}
