package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"cove/auth"
	"cove/cache"
)

// Pre-warm (issue #14): a job pulls images into the cache before any client asks for them, so
// that the clients' pulls ask the upstream nothing. It pulls through the very handlers that serve
// clients (handleMirrorManifest, handleMirrorBlob), so it joins a fill a client started, and a
// client that asks meanwhile joins the job's fill: one upstream download per digest still. It
// answers to nobody: what the handlers write goes to a writer that counts and discards.
// Who may start a job is the admin API's decision (system admins); the handlers record each
// manifest pulled in the audit log under the job's operator.

// Limits of a warm job.
const (
	MaxWarmImages    = 100 // images in one job
	maxWarmPlatforms = 16
	maxWarmWaiting   = 10 // jobs waiting for the one running on this node
	warmBlobWorkers  = 3  // blobs of one image fetched at a time
	warmMaxDepth     = 2  // an index of indexes, at most
	// warmSaveEvery bounds the progress writes of a job to the metadata store.
	warmSaveEvery = 500 * time.Millisecond
)

// ImageRef is an image of a warm job, resolved: the upstream it is pulled from, its repository
// there, and its tag or digest.
type ImageRef struct {
	Upstream, Repo, Ref string
}

// ResolveImage reads an image reference as clients write it, by the rules the /v2 routing
// applies to names: a first element that names a configured upstream selects it
// ("ghcr.io/owner/image:tag"), any other name is the default upstream's ("alpine:3.20" is
// docker.io's library/alpine). A first element that looks like a registry host (a dot, a port,
// or localhost) but names no upstream is an error that names the key to configure. Without a tag
// or digest the tag is latest; with both, the digest is what is pulled. upstreams are the
// configured upstreams' names; def is the default one's. Errors wrap cache.ErrWarmInvalid.
func ResolveImage(image string, upstreams []string, def string) (ImageRef, error) {
	bad := func(format string, a ...any) (ImageRef, error) {
		return ImageRef{}, fmt.Errorf("%w: image %q: %s", cache.ErrWarmInvalid, image, fmt.Sprintf(format, a...))
	}
	name, dgst, _ := strings.Cut(image, "@")
	tag, hasTag := "", false
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name, tag, hasTag = name[:i], name[i+1:], true // a colon before the last slash is a registry's port
	}
	if name == "" || strings.ContainsAny(image, " \t\n") {
		return bad("want a reference such as alpine:3.20 or ghcr.io/owner/image:tag")
	}
	ref := tag
	switch {
	case dgst != "":
		d, err := digest.Parse(dgst)
		if err != nil {
			return bad("invalid digest %q", dgst)
		}
		ref = d.String()
	case tag == "":
		ref = "latest"
	}
	if hasTag && !validTag(tag) {
		return bad("invalid tag %q", tag)
	}
	first, rest, nested := strings.Cut(name, "/")
	var upName, repo string
	switch {
	case nested && slices.Contains(upstreams, first):
		upName, repo = first, rest
	case nested && (strings.ContainsAny(first, ".:") || first == "localhost"):
		return bad("no upstream named %q is configured (mirror.upstreams.%q.url)", first, first)
	case def == "":
		return bad("names no upstream, and there is no default (mirror.default)")
	default:
		upName, repo = def, name
	}
	if upName == "docker.io" && !strings.Contains(repo, "/") {
		repo = "library/" + repo // Docker Hub's official images, as (*upstream).repoName does
	}
	if !validName(repo) || len(upName)+1+len(repo) > maxNameLength {
		return bad("invalid repository name %q: lower-case letters and digits, separated by '.', '_', '-' or '/'", repo)
	}
	return ImageRef{Upstream: upName, Repo: repo, Ref: ref}, nil
}

// Platform is a platform filter of a warm job: os/architecture, and optionally a variant.
type Platform struct{ OS, Arch, Variant string }

var platformPartRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// ParsePlatform reads "os/architecture[/variant]", as docker's --platform takes it
// (linux/amd64, linux/arm64/v8). Errors wrap cache.ErrWarmInvalid.
func ParsePlatform(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return Platform{}, fmt.Errorf("%w: platform %q: want os/architecture[/variant], such as linux/amd64", cache.ErrWarmInvalid, s)
	}
	for _, p := range parts {
		if !platformPartRE.MatchString(p) {
			return Platform{}, fmt.Errorf("%w: platform %q: want os/architecture[/variant] in lower case, such as linux/arm64/v8", cache.ErrWarmInvalid, s)
		}
	}
	p := Platform{OS: parts[0], Arch: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// matches says whether an index's entry is for p: the same os and architecture, and the same
// variant when p names one.
func (p Platform) matches(d *ocispec.Platform) bool {
	return d != nil && d.OS == p.OS && d.Architecture == p.Arch && (p.Variant == "" || d.Variant == p.Variant)
}

func platformString(d *ocispec.Platform) string {
	if d == nil {
		return ""
	}
	s := d.OS + "/" + d.Architecture
	if d.Variant != "" {
		s += "/" + d.Variant
	}
	return s
}

// Warmer runs warm jobs through a Server, one at a time on this node, and keeps them in a
// cache.WarmJobs. Create it with NewWarmer and Close it before the store. It is safe for
// concurrent use.
type Warmer struct {
	s    *Server
	jobs *cache.WarmJobs
	node string
	log  *slog.Logger

	// ctx bounds the jobs; Close cancels it and waits for them with wg.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	slot   chan struct{} // held by the job that runs

	mu sync.Mutex
	// waiting counts the jobs started and not yet running; scheduled says whether a scheduled
	// job is waiting or running. Both guarded by mu.
	waiting   int
	scheduled bool
}

// NewWarmer returns the warm jobs' runner over s, keeping them in jobs. node names this node in
// the jobs it runs (empty on a single node). Jobs this node left unfinished when it last stopped
// are marked Error.
func NewWarmer(ctx context.Context, s *Server, jobs *cache.WarmJobs, node string) (*Warmer, error) {
	w := &Warmer{s: s, jobs: jobs, node: node, log: s.log.With("job", "warm"), slot: make(chan struct{}, 1)}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	n, err := jobs.Interrupted(ctx, node)
	if err != nil {
		return nil, fmt.Errorf("warm jobs left by the last run: %w", err)
	}
	if n > 0 {
		w.log.Warn("warm jobs cut by the last stop are marked Error", "jobs", n)
	}
	return w, nil
}

// Close stops the jobs (their unfinished images are marked so) and waits for them.
func (w *Warmer) Close() {
	w.cancel()
	w.wg.Wait()
}

// Jobs lists the jobs, newest first.
func (w *Warmer) Jobs(ctx context.Context) ([]cache.WarmJob, error) { return w.jobs.Jobs(ctx) }

// Job returns the job id, or cache.ErrWarmUnknown.
func (w *Warmer) Job(ctx context.Context, id int64) (cache.WarmJob, error) {
	return w.jobs.Job(ctx, id)
}

// Start checks req, records the job and starts it in the background; it returns the job,
// Pending. Errors: cache.ErrWarmInvalid for a bad request (its message says what), and
// cache.ErrWarmBusy when too many jobs wait on this node.
func (w *Warmer) Start(ctx context.Context, req cache.WarmRequest) (cache.WarmJob, error) {
	refs, images, plats, err := w.check(ctx, req)
	if err != nil {
		return cache.WarmJob{}, err
	}
	w.mu.Lock()
	if w.waiting >= maxWarmWaiting {
		w.mu.Unlock()
		return cache.WarmJob{}, fmt.Errorf("%w: %d on this node; wait for them (GET /api/v2.0/mirror/warm)", cache.ErrWarmBusy, w.waiting)
	}
	if req.Kind == cache.WarmSchedule {
		if w.scheduled {
			w.mu.Unlock()
			return cache.WarmJob{}, fmt.Errorf("%w: the last scheduled warm has not ended", cache.ErrWarmBusy)
		}
		w.scheduled = true
	}
	w.waiting++
	w.mu.Unlock()
	platforms := make([]string, len(plats))
	for i, p := range plats {
		platforms[i] = platformString(&ocispec.Platform{OS: p.OS, Architecture: p.Arch, Variant: p.Variant})
	}
	job, err := w.jobs.Create(ctx, req.Kind, req.Operator, w.node, images, platforms)
	if err != nil {
		w.mu.Lock()
		w.waiting--
		w.scheduled = w.scheduled && req.Kind != cache.WarmSchedule
		w.mu.Unlock()
		return cache.WarmJob{}, err
	}
	who := auth.Principal{Name: req.Operator}
	w.wg.Go(func() {
		defer func() {
			if req.Kind == cache.WarmSchedule {
				w.mu.Lock()
				w.scheduled = false
				w.mu.Unlock()
			}
		}()
		select {
		case w.slot <- struct{}{}:
		case <-w.ctx.Done():
		}
		w.mu.Lock()
		w.waiting--
		w.mu.Unlock()
		if w.ctx.Err() != nil {
			w.finish(&warmProgress{w: w, job: job}, "cove stopped before this image was warm")
			return
		}
		defer func() { <-w.slot }()
		w.run(job, refs, plats, who)
	})
	return job, nil
}

// check resolves the request's images and platforms, and refuses what cannot be warmed.
func (w *Warmer) check(ctx context.Context, req cache.WarmRequest) ([]ImageRef, []string, []Platform, error) {
	var images []string
	for _, im := range req.Images {
		if im = strings.TrimSpace(im); im != "" && !slices.Contains(images, im) {
			images = append(images, im)
		}
	}
	switch {
	case len(images) == 0:
		return nil, nil, nil, fmt.Errorf("%w: name at least one image, such as alpine:3.20", cache.ErrWarmInvalid)
	case len(images) > MaxWarmImages:
		return nil, nil, nil, fmt.Errorf("%w: %d images; a job takes at most %d", cache.ErrWarmInvalid, len(images), MaxWarmImages)
	case len(req.Platforms) > maxWarmPlatforms:
		return nil, nil, nil, fmt.Errorf("%w: %d platforms; a job takes at most %d", cache.ErrWarmInvalid, len(req.Platforms), maxWarmPlatforms)
	}
	def := ""
	if w.s.def != nil {
		def = w.s.def.Name
	}
	refs := make([]ImageRef, len(images))
	for i, im := range images {
		ref, err := ResolveImage(im, w.s.UpstreamNames(), def)
		if err != nil {
			return nil, nil, nil, err
		}
		// A name of a local project is never the upstream's (the /v2 routing's rule): there is
		// nothing to warm.
		if first, _, nested := strings.Cut(im, "/"); nested && ref.Upstream == def && !strings.HasPrefix(im, def+"/") {
			exists, err := w.s.policy.ProjectExists(ctx, first)
			if err != nil {
				return nil, nil, nil, err
			}
			if exists {
				return nil, nil, nil, fmt.Errorf("%w: image %q is in the local project %s: only mirrored images are warmed", cache.ErrWarmInvalid, im, first)
			}
		}
		refs[i] = ref
	}
	var plats []Platform
	for _, s := range req.Platforms {
		p, err := ParsePlatform(strings.TrimSpace(s))
		if err != nil {
			return nil, nil, nil, err
		}
		if !slices.Contains(plats, p) {
			plats = append(plats, p)
		}
	}
	return refs, images, plats, nil
}

// warmProgress is a running job as it stands, written to the store at most every
// warmSaveEvery (and at each image's end).
type warmProgress struct {
	w    *Warmer
	mu   sync.Mutex
	job  cache.WarmJob // guarded by mu
	last time.Time     // the last write, guarded by mu
}

// update changes image i under the lock, and writes the job when the last write is old enough
// or force is set.
func (p *warmProgress) update(i int, force bool, fn func(im *cache.WarmImage)) {
	p.mu.Lock()
	if i >= 0 {
		fn(&p.job.Images[i])
	}
	if !force && time.Since(p.last) < warmSaveEvery {
		p.mu.Unlock()
		return
	}
	p.last = time.Now()
	job := p.job
	job.Images = slices.Clone(p.job.Images)
	for k := range job.Images {
		job.Images[k].Platforms = slices.Clone(job.Images[k].Platforms)
	}
	p.mu.Unlock()
	// Written outside the lock: the fetches go on meanwhile. A write that fails is logged; the
	// next one carries the same progress.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.w.jobs.Save(ctx, job); err != nil {
		p.w.log.Error("recording a warm job's progress", "id", job.ID, "err", err)
	}
}

// run warms the job's images one after the other, and records how each went.
func (w *Warmer) run(job cache.WarmJob, refs []ImageRef, plats []Platform, who auth.Principal) {
	p := &warmProgress{w: w, job: job}
	p.job.Status = cache.WarmRunning
	p.update(-1, true, nil)
	w.log.Info("warm job started", "id", job.ID, "kind", job.Kind, "operator", job.Operator, "images", len(refs))
	for i, ref := range refs {
		if w.ctx.Err() != nil {
			break
		}
		err := w.warmImage(w.ctx, p, i, ref, plats, who)
		p.update(i, true, func(im *cache.WarmImage) {
			im.Done = true
			if err != nil {
				im.Error = err.Error()
			}
		})
		if err != nil {
			w.log.Warn("an image of a warm job failed", "id", job.ID, "image", job.Images[i].Image, "err", err)
		}
	}
	w.finish(p, "cove stopped before this image was warm")
}

// finish records the job's end: Success when every image is warm, else Error; images not done
// get why.
func (w *Warmer) finish(p *warmProgress, why string) {
	p.mu.Lock()
	p.job.Status = cache.WarmSuccess
	for i := range p.job.Images {
		im := &p.job.Images[i]
		if !im.Done {
			im.Done, im.Error = true, why
		}
		if im.Error != "" {
			p.job.Status = cache.WarmError
		}
	}
	p.mu.Unlock()
	p.update(-1, true, nil)
	w.log.Info("warm job ended", "id", p.job.ID, "status", p.job.Status)
}

// warmImage pulls one image: its manifest (an index, then the images of it that plats choose),
// and every config and layer.
func (w *Warmer) warmImage(ctx context.Context, p *warmProgress, i int, ref ImageRef, plats []Platform, who auth.Principal) error {
	up := w.s.upstreams[ref.Upstream]
	if up == nil {
		return fmt.Errorf("no upstream named %q is configured (mirror.upstreams.%q.url)", ref.Upstream, ref.Upstream)
	}
	repo := up.Name + "/" + ref.Repo
	req := request{who: who, up: up, upRepo: ref.Repo, name: repo, route: route{repo: repo}}
	return w.warmManifest(ctx, p, i, req, ref.Ref, plats, 0)
}

func (w *Warmer) warmManifest(ctx context.Context, p *warmProgress, i int, req request, ref string, plats []Platform, depth int) error {
	body, mediaType, dgst, err := w.getManifest(ctx, req, ref)
	if err != nil {
		return err
	}
	p.update(i, false, func(im *cache.WarmImage) {
		if depth == 0 {
			im.Digest = dgst.String()
		}
		im.Manifests++
		im.Bytes += int64(len(body))
	})
	var doc manifestDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("manifest %s: %w", dgst, err)
	}
	switch mediaType {
	case ocispec.MediaTypeImageIndex, mediaTypeDockerList:
		if depth >= warmMaxDepth {
			return fmt.Errorf("manifest %s: indexes nested deeper than %d are not warmed", dgst, warmMaxDepth)
		}
		var chosen []ocispec.Descriptor
		var offered []string
		for _, d := range doc.Manifests {
			if s := platformString(d.Platform); s != "" && !slices.Contains(offered, s) {
				offered = append(offered, s)
			}
			if len(plats) == 0 || slices.ContainsFunc(plats, func(pl Platform) bool { return pl.matches(d.Platform) }) {
				chosen = append(chosen, d)
			}
		}
		if len(chosen) == 0 {
			return fmt.Errorf("the index has no image for the platforms asked (it has %s)", strings.Join(offered, ", "))
		}
		for _, d := range chosen {
			if s := platformString(d.Platform); s != "" {
				p.update(i, false, func(im *cache.WarmImage) {
					if !slices.Contains(im.Platforms, s) {
						im.Platforms = append(im.Platforms, s)
					}
				})
			}
			if err := w.warmManifest(ctx, p, i, req, d.Digest.String(), plats, depth+1); err != nil {
				return fmt.Errorf("the image for %s: %w", orDigest(platformString(d.Platform), d.Digest), err)
			}
		}
		return nil
	case ocispec.MediaTypeImageManifest, mediaTypeDockerManifest:
		if doc.Config == nil {
			return fmt.Errorf("manifest %s has no config", dgst)
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(warmBlobWorkers)
		for _, d := range append([]ocispec.Descriptor{*doc.Config}, doc.Layers...) {
			if nondistributable(d) {
				continue // clients fetch it from elsewhere; so would the upstream's clients
			}
			g.Go(func() error {
				cached, n, err := w.getBlob(gctx, req, d)
				if err != nil {
					return err
				}
				p.update(i, false, func(im *cache.WarmImage) {
					im.Blobs++
					im.Bytes += n
					if cached {
						im.CachedBlobs++
					}
				})
				return nil
			})
		}
		return g.Wait()
	}
	return fmt.Errorf("manifest %s: media type %q is neither an image nor an index", dgst, mediaType)
}

func orDigest(s string, d digest.Digest) string {
	if s != "" {
		return s
	}
	return d.String()
}

// getManifest pulls the manifest ref through handleMirrorManifest, as a client's GET would: from
// the cache when it is there (a tag trusted for tag_ttl, then confirmed), else from the upstream,
// joining a fetch in progress.
func (w *Warmer) getManifest(ctx context.Context, req request, ref string) ([]byte, string, digest.Digest, error) {
	req.kind, req.ref = KindManifest, ref
	rw := &warmWriter{keep: cache.MaxManifestSize}
	if err := w.serve(ctx, rw, req, w.s.handleMirrorManifest); err != nil {
		return nil, "", "", err
	}
	dgst, err := digest.Parse(rw.Header().Get("Docker-Content-Digest"))
	if err != nil {
		return nil, "", "", fmt.Errorf("manifest %s: no digest in the answer", ref)
	}
	if want, err := digest.Parse(ref); err == nil && want != dgst {
		return nil, "", "", fmt.Errorf("manifest %s: got %s", ref, dgst)
	}
	mediaType, _, _ := strings.Cut(rw.Header().Get("Content-Type"), ";")
	return rw.buf.Bytes(), mediaType, dgst, nil
}

// getBlob makes sure the blob d is in the cache for req's repository. One that is there is not
// read (its access time is, for eviction); one that is not is pulled through handleMirrorBlob,
// as a client's GET would, and its bytes counted. cached says which.
func (w *Warmer) getBlob(ctx context.Context, req request, d ocispec.Descriptor) (cached bool, n int64, err error) {
	f, err := w.s.store.OpenBlob(ctx, req.repo, d.Digest)
	switch {
	case err == nil:
		size := f.Info.Size
		f.Close()
		return true, size, nil
	case errors.Is(err, cache.ErrNotLocal):
		info, err := w.s.store.StatBlob(ctx, req.repo, d.Digest)
		return err == nil, info.Size, err // in the fleet's shared store
	case !errors.Is(err, cache.ErrBlobUnknown):
		return false, 0, err
	}
	req.kind, req.ref = KindBlob, d.Digest.String()
	rw := &warmWriter{}
	if err := w.serve(ctx, rw, req, w.s.handleMirrorBlob); err != nil {
		return false, rw.n, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if rw.n != d.Size {
		return false, rw.n, fmt.Errorf("blob %s: got %d bytes, the manifest says %d", d.Digest, rw.n, d.Size)
	}
	return false, rw.n, nil
}

// warmKey marks the requests of a warm: they are no client's pulls (no pull count or time).
type warmKey struct{}

func warming(r *http.Request) bool { return r.Context().Value(warmKey{}) != nil }

// serve runs h as for a client's GET of req, writing to rw. A handler that cuts the response
// (http.ErrAbortHandler: a fill that failed while it streamed) is an error, as is an answer
// other than 200. Errors are what an admin may read: a client's message, the cause logged.
func (w *Warmer) serve(ctx context.Context, rw *warmWriter, req request, h handler) (err error) {
	path := "/v2/" + req.repo + "/manifests/" + req.ref
	if req.kind == KindBlob {
		path = "/v2/" + req.repo + "/blobs/" + req.ref
	}
	r, err := http.NewRequestWithContext(context.WithValue(ctx, warmKey{}, true), http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			err = errors.New("the download was cut before its end (cove's log says why)")
			if ctx.Err() != nil {
				err = errors.New("cove stopped before this image was warm")
			}
		}
	}()
	if err := h(rw, r, req); err != nil {
		if ctx.Err() != nil {
			return errors.New("cove stopped before this image was warm")
		}
		e := toError(err)
		if isNotFound(err) {
			e = newError(http.StatusNotFound, CodeManifestUnknown, "not found at upstream %s", req.up.Name)
		}
		if e.Status >= 500 {
			w.log.Warn("warming an image", "repo", req.repo, "ref", req.ref, "err", err)
		}
		if e.Status == http.StatusInternalServerError && e.Code == CodeUnknown {
			return errors.New("internal error (cove's log has the cause)")
		}
		return errors.New(e.Message)
	}
	if rw.status != http.StatusOK {
		return fmt.Errorf("answered %d", rw.status)
	}
	return nil
}

// warmWriter is the response writer of a warm job's requests: it keeps the status and the
// headers, counts the body, and keeps up to keep bytes of it (a manifest); the rest is dropped.
type warmWriter struct {
	header http.Header
	status int
	n      int64
	keep   int64
	buf    bytes.Buffer
}

func (rw *warmWriter) Header() http.Header {
	if rw.header == nil {
		rw.header = http.Header{}
	}
	return rw.header
}

func (rw *warmWriter) WriteHeader(code int) {
	if rw.status == 0 {
		rw.status = code
	}
}

func (rw *warmWriter) Write(p []byte) (int, error) {
	rw.WriteHeader(http.StatusOK)
	rw.n += int64(len(p))
	if int64(rw.buf.Len()+len(p)) <= rw.keep {
		rw.buf.Write(p)
	}
	return len(p), nil
}
