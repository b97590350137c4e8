// Package mirror serves the OCI distribution API under /v2/: it routes a repository name to a
// local project, authorizes the request, and answers from the blob store, with the OCI error
// envelope on every failure.
//
// Local projects follow the OCI distribution spec v1.1 to the letter: pull, push (monolithic,
// POST+PUT, chunked), cross-repository mount, content discovery (tags, referrers, catalog) and
// content management (delete). A blob is readable in a repository only when linked to it.
package mirror

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"cove/auth"
	"cove/cache"
	"cove/internal/cluster"
	"cove/internal/telemetry"
	"cove/internal/webhook"
)

// Authenticator says who a request comes from, and how to ask it for credentials; auth.Tokens
// implements it.
type Authenticator interface {
	// Authenticate returns the request's principal; the zero Principal when it carries no
	// credentials, auth.ErrBadCredentials when they are wrong.
	Authenticate(ctx context.Context, r *http.Request) (auth.Principal, error)
	// Challenge is the WWW-Authenticate value that asks for credentials for repo and actions.
	Challenge(r *http.Request, scopes ...string) string
}

// Authorizer says what a principal may do; auth.Policy implements it.
type Authorizer interface {
	// Authorize returns nil when p may do action on repo, else auth.ErrUnauthenticated,
	// auth.ErrDenied or auth.ErrProjectUnknown.
	Authorize(ctx context.Context, p auth.Principal, repo string, action auth.Action) error
	// AuthorizeMirror returns nil when p may do action on name, a mirrored repository.
	AuthorizeMirror(ctx context.Context, p auth.Principal, name string, action auth.Action) error
	// ProjectExists reports whether a local project of that name exists.
	ProjectExists(ctx context.Context, name string) (bool, error)
}

// Notifier takes events for webhook policies, without blocking; webhook.Dispatcher implements it.
type Notifier interface {
	Notify(e webhook.Event)
}

// Auditor records push, pull and delete events; auth.Audit implements it.
type Auditor interface {
	Record(ctx context.Context, e auth.Event) error
}

// refusalRecorder records refusals at a bounded rate per caller; auth.Audit implements it.
type refusalRecorder interface {
	RecordRefusal(ctx context.Context, e auth.Event) error
}

// limitedRecorder records events anyone can cause by the thousand at a bounded rate per caller
// and overall; auth.Audit implements it.
type limitedRecorder interface {
	RecordLimited(ctx context.Context, e auth.Event) error
}

// Config configures a Server.
type Config struct {
	// Audit receives push, pull and delete events; nil records nothing.
	Audit Auditor
	// Notifier takes the same events for webhooks; nil sends none.
	Notifier Notifier
	Store    *cache.Store
	// Auth authenticates requests (auth.Tokens); Policy authorizes them (auth.Policy).
	Auth   Authenticator
	Policy Authorizer
	Logger *slog.Logger
	// IdleTimeout cuts a blob transfer that makes no progress for this long; zero means one minute.
	IdleTimeout time.Duration

	// Upstreams are the registries mirrored; Default names the one for names that select none.
	Upstreams []Upstream
	Default   string
	// TagTTL is how long a mirrored tag is trusted before it is confirmed with the upstream.
	TagTTL time.Duration
	// NegativeTTL is how long an upstream's "manifest unknown" is remembered; zero: not at all.
	NegativeTTL time.Duration
	// RevalidateTimeout bounds that confirmation; past it the cached tag is served. Zero: 3s.
	RevalidateTimeout time.Duration
	// FetchTimeout bounds fetching a manifest that is not cached, and upstream checks; zero: 30s.
	FetchTimeout time.Duration
	// Transport carries requests to upstreams; nil means a shared pool with sane timeouts.
	Transport http.RoundTripper
	// Metrics receives the mirror's counters; nil means unregistered ones.
	Metrics *Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Cluster is this node's membership in a fleet; nil on a single node. With it, a cold
	// mirrored blob is filled by its owner only (fleet.go).
	Cluster *cluster.Member
	// BlobRedirect answers blob GETs with a 307 to a presigned URL of the shared blob store
	// (storage.blobs.s3.redirect), valid for RedirectTTL (zero: 20 minutes).
	BlobRedirect bool
	RedirectTTL  time.Duration
}

// Server is the /v2 HTTP handler. It is safe for concurrent use.
type Server struct {
	store  *cache.Store
	auth   Authenticator
	policy Authorizer
	audit  Auditor
	notify Notifier
	log    *slog.Logger
	idle   time.Duration

	upstreams       map[string]*upstream
	def             *upstream
	tagTTL          time.Duration
	revalidate      time.Duration
	fetchTimeout    time.Duration
	metrics         *Metrics
	now             func() time.Time
	manifests       singleflight.Group // manifest fetches, by repository and reference
	negative        negativeCache      // manifests the upstreams said they do not have
	referrers       referrersCache     // upstreams' referrers answers (referrers.go)
	referrerFetches chan struct{}      // a slot per referrers list read from an upstream now
	redirect        time.Duration      // > 0: blob GETs are redirected to presigned URLs this long valid
	cluster         *cluster.Member
	peers           *http.Client // requests to other nodes
	peerMu          sync.Mutex
	peerFailed      map[string]time.Time // nodes that failed lately, until when: guarded by peerMu
}

// New returns a Server over cfg.Store, authenticating with cfg.Auth and authorizing with
// cfg.Policy.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Auth == nil || cfg.Policy == nil {
		return nil, errors.New("mirror: a store and an authorizer are required")
	}
	s := &Server{
		store: cfg.Store, auth: cfg.Auth, policy: cfg.Policy, audit: cfg.Audit, notify: cfg.Notifier, log: cfg.Logger, idle: cfg.IdleTimeout,
		upstreams: map[string]*upstream{}, tagTTL: cfg.TagTTL, revalidate: cfg.RevalidateTimeout,
		fetchTimeout: cfg.FetchTimeout, metrics: cfg.Metrics, now: cfg.Now, cluster: cfg.Cluster,
		negative:        negativeCache{ttl: cfg.NegativeTTL},
		referrerFetches: make(chan struct{}, maxReferrerFetches),
	}
	if cfg.BlobRedirect {
		s.redirect = cfg.RedirectTTL
		if s.redirect <= 0 {
			s.redirect = 20 * time.Minute
		}
	}
	if s.idle <= 0 {
		s.idle = time.Minute
	}
	if s.revalidate <= 0 {
		s.revalidate = 3 * time.Second
	}
	if s.fetchTimeout <= 0 {
		s.fetchTimeout = 30 * time.Second
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "mirror")
	shared := cfg.Transport
	if shared == nil {
		shared = newSharedTransport()
	}
	if s.cluster != nil {
		// Straight to the other nodes: no proxy from the environment, no redirects followed.
		s.peers = &http.Client{
			Transport: &http.Transport{
				DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				MaxIdleConnsPerHost:   64,
				IdleConnTimeout:       90 * time.Second,
				TLSHandshakeTimeout:   10 * time.Second,
				ResponseHeaderTimeout: 30 * time.Second, // after the request is sent; askPeer's timer is shorter
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	for _, u := range cfg.Upstreams {
		up, err := newUpstream(u, shared, s.log, s.metrics, s.now)
		if err != nil {
			return nil, err
		}
		s.upstreams[u.Name] = up
	}
	if cfg.Default != "" {
		if s.def = s.upstreams[cfg.Default]; s.def == nil {
			return nil, fmt.Errorf("mirror: default upstream %q is not configured", cfg.Default)
		}
	}
	return s, nil
}

// request is one parsed, authenticated request.
type request struct {
	route
	who auth.Principal
	// For a mirrored repository: its upstream and its name there; route.repo is then the name it
	// is cached under, "<upstream>/<name there>", and name the one the client used.
	up     *upstream
	upRepo string
	name   string
	// implicit: the name reached the default upstream by naming nothing else (see route).
	implicit bool
	// peer: another node of the fleet asks, for a client it has authorized (fleet.go).
	peer bool
	// outcome receives how a manifest or blob request was answered (setOutcome).
	outcome *outcome
}

// ServeHTTP answers every /v2 request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w = newIdleWriter(w, s.idle)
	idleBody(w, r, s.idle)
	// Registry clients never use the admin page's session: a browser's cookie must not authorize
	// a registry request (cross-site or not).
	r.Header.Del("Cookie")
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	var oc outcome
	err := s.serve(w, r, &oc)
	kind := RouteKind(r.URL.Path)
	if err != nil && (kind == KindManifest || kind == KindBlob) && oc != csBypass && oc != csNegative && oc.name != "error" {
		s.setOutcome(w, request{outcome: &oc}, csFailed(err))
	}
	s.countOutcome(kind, oc)
	if err != nil {
		e := toError(err)
		if e.Status >= 500 {
			// The access-log line of the request carries it, at ERROR (log once, at the boundary).
			telemetry.SetCause(r.Context(), err)
		} else if e.Err != nil {
			s.log.DebugContext(r.Context(), "request refused", "method", r.Method, "path", r.URL.Path, "err", e.Err)
		}
		writeError(w, r, e)
	}
}

// handler serves one endpoint; what it returns is written by ServeHTTP.
type handler func(w http.ResponseWriter, r *http.Request, req request) error

func (s *Server) serve(w http.ResponseWriter, r *http.Request, oc *outcome) (err error) {
	rt := parse(r.URL.Path)
	telemetry.SetRoute(r.Context(), rt.kind.Metric())
	if rt.kind == KindUnknown {
		return newError(http.StatusNotFound, CodeUnsupported, "unknown endpoint %s", r.URL.Path)
	}
	if rt.repo != "" || (rt.kind != KindBase && rt.kind != KindCatalog) {
		if !validName(rt.repo) {
			return newError(http.StatusBadRequest, CodeNameInvalid, "invalid repository name %q", rt.repo)
		}
	}
	peer, err := s.fromPeer(r, rt)
	if err != nil {
		return err
	}
	var who auth.Principal
	if !peer {
		if who, err = s.auth.Authenticate(r.Context(), r); err != nil {
			e := toError(err)
			e.challenge = s.auth.Challenge(r)
			return e
		}
	}
	defer func() {
		if err != nil {
			s.recordRefused(r, who, rt.repo, err)
		}
	}()
	req := request{route: rt, who: who, name: rt.repo, peer: peer, outcome: oc}
	if rt.repo != "" {
		up, upRepo, implicit, err := s.route(r.Context(), r, rt.repo)
		if err != nil {
			return err
		}
		if up != nil {
			req.up, req.upRepo, req.repo, req.implicit = up, upRepo, up.Name+"/"+upRepo, implicit
			return s.serveMirrored(w, r, req)
		}
		if rt.kind == KindManifest || rt.kind == KindBlob {
			s.setOutcome(w, req, csBypass)
		}
	}
	if peer && rt.kind != KindUpload {
		return newError(http.StatusForbidden, CodeDenied, "a node of the fleet may ask another only for mirrored blobs and its uploads")
	}

	h, action := s.endpoint(rt.kind, r.Method)
	if h == nil {
		return newError(http.StatusMethodNotAllowed, CodeUnsupported, "%s is not supported on this endpoint", r.Method)
	}
	switch rt.kind {
	case KindBase:
		// The version check answers 401 to callers who can do nothing without logging in. When
		// anonymous pulls of mirrored content are allowed it answers 200: dockerd gives up on a
		// mirror whose /v2/ asks for Basic credentials it does not have.
		if who.Anonymous() && !who.Token {
			return &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: "authentication required", challenge: s.auth.Challenge(r)}
		}
	case KindCatalog:
		// Filtered per repository by the handler.
	default:
		if peer {
			break // the asking node authorized its client's push
		}
		if err := s.authorize(r, who, rt.repo, action); err != nil {
			return err
		}
		if rt.kind == KindUpload {
			if done, err := s.toUploadNode(w, r, rt); done {
				return err
			}
		}
	}
	return h(w, r, req)
}

// authorize checks that who may do action on repo; refusals carry a challenge for the anonymous.
func (s *Server) authorize(r *http.Request, who auth.Principal, repo string, action auth.Action) error {
	err := s.policy.Authorize(r.Context(), who, repo, action)
	if err == nil {
		return nil
	}
	e := toError(err)
	if e.Status == http.StatusUnauthorized {
		e.challenge = s.auth.Challenge(r, auth.RepositoryScope(repo, challengeActions(action)...))
	}
	return e
}

// challengeActions is what a challenge asks for: a push needs pull as well (clients check what
// exists before they upload).
func challengeActions(a auth.Action) []auth.Action {
	if a == auth.ActionPush {
		return []auth.Action{auth.ActionPull, auth.ActionPush}
	}
	return []auth.Action{a}
}

// endpoint returns the handler of a method on an endpoint kind, and the action it needs.
// Upload sessions belong to a push from start to end, whatever the method.
func (s *Server) endpoint(kind Kind, method string) (handler, auth.Action) {
	pull := method == http.MethodGet || method == http.MethodHead
	switch {
	case kind == KindBase && pull:
		return s.handleBase, auth.ActionPull
	case kind == KindCatalog && method == http.MethodGet:
		return s.handleCatalog, auth.ActionPull
	case kind == KindManifest && pull:
		return s.handleGetManifest, auth.ActionPull
	case kind == KindManifest && method == http.MethodPut:
		return s.handlePutManifest, auth.ActionPush
	case kind == KindManifest && method == http.MethodDelete:
		return s.handleDeleteManifest, auth.ActionDelete
	case kind == KindBlob && pull:
		return s.handleGetBlob, auth.ActionPull
	case kind == KindBlob && method == http.MethodDelete:
		return s.handleDeleteBlob, auth.ActionDelete
	case kind == KindUploadStart && method == http.MethodPost:
		return s.handleStartUpload, auth.ActionPush
	case kind == KindUpload && method == http.MethodGet:
		return s.handleGetUpload, auth.ActionPush
	case kind == KindUpload && method == http.MethodPatch:
		return s.handlePatchUpload, auth.ActionPush
	case kind == KindUpload && method == http.MethodPut:
		return s.handlePutUpload, auth.ActionPush
	case kind == KindUpload && method == http.MethodDelete:
		return s.handleDeleteUpload, auth.ActionPush
	case kind == KindTags && method == http.MethodGet:
		return s.handleListTags, auth.ActionPull
	case kind == KindReferrers && method == http.MethodGet:
		return s.handleListReferrers, auth.ActionPull
	}
	return nil, ""
}

// record writes an audit event for what req did to resource; a failure to write is logged.
func (s *Server) record(r *http.Request, req request, op, resource string) {
	if s.audit == nil {
		return
	}
	e := auth.Event{Username: req.who.Name, Address: auth.RemoteHost(r), Operation: op, ResourceType: "artifact", Resource: resource}
	var err error
	if lr, ok := s.audit.(limitedRecorder); ok && req.who.Anonymous() {
		// Anyone can pull public and mirrored content from any number of addresses: 20 records a
		// minute per address, the rest counted (docs/SECURITY.md 18). Signed-in pulls are all
		// recorded.
		err = lr.RecordLimited(r.Context(), e)
	} else {
		err = s.audit.Record(r.Context(), e)
	}
	if err != nil {
		s.log.ErrorContext(r.Context(), "writing an audit record", "err", err)
	}
}

// event hands what req did to the webhooks: typ, the manifest dgst, and its tag when the
// request named one.
func (s *Server) event(r *http.Request, req request, typ string, dgst digest.Digest, tag string) {
	if s.notify == nil {
		return
	}
	e := webhook.Event{Type: typ, Operator: cmp.Or(req.who.Name, "anonymous"), Time: s.now(), Repo: req.repo, Name: req.name,
		Digest: dgst.String(), Tag: tag}
	if req.up != nil {
		// Mirrored: the repository's name at its upstream, whichever name the client used
		// ("busybox" and "library/busybox" are one).
		e.Mirrored, e.Name = true, req.upRepo
	}
	s.notify.Notify(e)
}

// recordRefused leaves a failure record for a push or delete that did not succeed, by someone
// the request names (a user, robot, or a token's subject). The anonymous first request of a
// push, which a 401 sends to the token service, is not a refusal worth a record.
func (s *Server) recordRefused(r *http.Request, who auth.Principal, repo string, err error) {
	var op string
	switch r.Method {
	case http.MethodPut, http.MethodPost, http.MethodPatch:
		op = "push"
	case http.MethodDelete:
		op = "delete"
	}
	if op == "" || who.Name == "" || s.audit == nil {
		return
	}
	e := toError(err)
	ev := auth.Event{
		Username: who.Name, Address: auth.RemoteHost(r), Operation: op, ResourceType: "artifact", Resource: repo,
		Result: "failure", Detail: fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message),
	}
	var rerr error
	if rl, ok := s.audit.(refusalRecorder); ok {
		rerr = rl.RecordRefusal(r.Context(), ev) // bounded per caller: no flood of the log
	} else {
		rerr = s.audit.Record(r.Context(), ev)
	}
	if rerr != nil {
		s.log.ErrorContext(r.Context(), "writing an audit record", "err", rerr)
	}
}

func (s *Server) handleBase(w http.ResponseWriter, r *http.Request, req request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte("{}"))
	}
	return nil
}

// withBudget bounds ctx by up's time budget and marks it so: a request to up that meets that
// deadline marks up down (guard). A shorter bound of the caller's own (limit, when above zero and
// under the budget: the revalidation of a cached tag) is no fault of the upstream's.
func (s *Server) withBudget(ctx context.Context, up *upstream, limit time.Duration) (context.Context, context.CancelFunc) {
	d := s.budget(up)
	if limit > 0 && limit < d {
		return context.WithTimeout(ctx, limit)
	}
	return budgeted(context.WithTimeout(ctx, d))
}

// budget is how long cove waits for up: its own time budget (mirror.upstreams.X.timeout, or
// mirror.timeout), bounded by the server's FetchTimeout.
func (s *Server) budget(up *upstream) time.Duration {
	if up != nil && up.Timeout > 0 && up.Timeout < s.fetchTimeout {
		return up.Timeout
	}
	return s.fetchTimeout
}

var (
	_ Authenticator = (*auth.Tokens)(nil)
	_ Authorizer    = (*auth.Policy)(nil)
)
