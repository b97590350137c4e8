// Package admin serves cove's REST API under /api/v2.0, in the shapes of Harbor's v2.0 API so that
// the tools and habits people have keep working: projects, members, users, robot accounts and the
// audit log. Every change is audited; every id in a path is checked against what the caller may
// act on (docs/SECURITY.md 10).
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"cove/auth"
	"cove/cache"
	"cove/internal/telemetry"
)

// The API uses auth.Service as a whole: users and robots (its Identity), projects, members and
// settings (its Policy), the token keys (its Tokens) are all its own, and a one-method interface
// per use would only restate it.

// Repositories counts repositories with content; cache.Manifests implements it.
type Repositories interface {
	CountRepositories(ctx context.Context, prefix string) (int, error)
}

// Config configures a Server.
// Renewer forces a renewal of the TLS certificates; tls.Setup implements it.
type Renewer interface {
	Renew(ctx context.Context) error
}

type Config struct {
	// Certificates, when set, can be renewed through the API.
	Certificates Renewer
	Auth         *auth.Service
	// Browse reads repositories (cache.Manifests); Evict empties the mirror's cache and counts it
	// (cache.Evictor); Mirror reports the mirror's counters (from mirror.Server, through cmd);
	// Upstreams names the mirrored registries; MaxMirrored is mirror.max_size.
	Browse Browser
	Evict  Evictor
	// Content changes repositories, artifacts and tags (cache.Manifests); Blobs reads image
	// configs (cache.Store).
	Content Content
	Blobs   BlobReader
	// GC is garbage collection's job (cache.GC); nil on a read-only start.
	GC GCJobs
	// Warm runs the mirror's pre-warm jobs (mirror.Warmer); nil on a read-only start.
	Warm Warmer
	// Scrubs reads the last scrub's result (cache.Store); nil: none is shown.
	Scrubs Scrubs
	// Quotas keeps the projects' storage quotas (cache.Store).
	Quotas Quotas
	// Retention runs the projects' tag retention policies (cache.Retention).
	Retention Retentions
	// Webhooks keeps webhook policies and their history; nil when cove runs read-only.
	Webhooks Webhooks
	// Events takes the deletes done through the API, for webhooks; nil sends none.
	Events Notifier
	// System is what the system endpoints report; Stored, the blobs stored and their bytes.
	System SystemInfo
	Stored func() (blobs, bytes int64)
	Mirror func() MirrorStatus
	// Nodes lists the fleet's nodes (GET /api/v2.0/cluster/nodes); nil on a single node, whose
	// list is empty.
	Nodes       func(ctx context.Context) ([]Node, error)
	Upstreams   []string
	MaxMirrored int64
	// Outbox sends mail in the background (mail.Outbox); nil: no password reset by mail.
	Outbox Outbox
	// PublicURL is how users reach cove (public_url): the base of mailed links, which reset by
	// mail needs.
	PublicURL string
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Audit  *auth.Audit
	Repos  Repositories
	Logger *slog.Logger
}

// Server is the REST API handler. It is safe for concurrent use.
type Server struct {
	certs       Renewer
	browse      Browser
	evict       Evictor
	content     Content
	blobs       BlobReader
	gc          GCJobs
	scrubs      Scrubs
	warm        Warmer
	system      SystemInfo
	quotas      Quotas
	retention   Retentions
	hooks       Webhooks
	events      Notifier
	stored      func() (blobs, bytes int64)
	mirror      func() MirrorStatus
	nodes       func(ctx context.Context) ([]Node, error)
	upstreams   []string
	maxMirrored int64
	history     *history
	auth        *auth.Service
	audit       *auth.Audit
	repos       Repositories
	outbox      Outbox
	publicURL   string
	log         *slog.Logger
	mux         *http.ServeMux
	// web serves the admin page on webMux; csrf refuses cross-origin changes to both.
	web    *webPages
	webMux *http.ServeMux
	csrf   *http.CrossOriginProtection
}

// maxBody caps every JSON request body.
const maxBody = 64 << 10

// New returns the API server with every route registered.
func New(cfg Config) (*Server, error) {
	if cfg.Auth == nil || cfg.Repos == nil || cfg.Audit == nil || cfg.Browse == nil {
		return nil, errors.New("admin: auth, audit, repositories and a browser are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{browse: cfg.Browse, evict: cfg.Evict, content: cfg.Content, blobs: cfg.Blobs, gc: cfg.GC, scrubs: cfg.Scrubs, warm: cfg.Warm, system: cfg.System, quotas: cfg.Quotas, retention: cfg.Retention, hooks: cfg.Webhooks, events: cfg.Events, stored: cfg.Stored, mirror: cfg.Mirror, nodes: cfg.Nodes, upstreams: cfg.Upstreams, maxMirrored: cfg.MaxMirrored,
		history: &history{now: cfg.Now}, certs: cfg.Certificates, auth: cfg.Auth, audit: cfg.Audit, repos: cfg.Repos, outbox: cfg.Outbox, publicURL: cfg.PublicURL, log: cfg.Logger, mux: http.NewServeMux()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "admin")
	for _, rt := range s.routes() {
		s.mux.Handle(rt.pattern, s.adapt(rt.h))
	}
	if err := s.initWeb(); err != nil {
		return nil, err
	}
	s.mux.Handle("/api/", s.adapt(func(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
		return &apiError{Status: http.StatusNotFound, Code: "NOT_FOUND", Message: "no such API endpoint: " + r.Method + " " + r.URL.Path}
	}))
	return s, nil
}

// apiRoute is one endpoint of the API; the OpenAPI document is made from the same table.
type apiRoute struct {
	pattern string // "METHOD /path"
	h       handler
	summary string
}

// routes is the whole API, in one visible table.
func (s *Server) routes() []apiRoute {
	return []apiRoute{
		{"POST /api/v2.0/projects", s.handleCreateProject, "Create a project"},
		{"GET /api/v2.0/projects", s.handleListProjects, "List the projects the caller may see (page, page_size, name, public)"},
		{"HEAD /api/v2.0/projects", s.handleHeadProject, "Check that a project exists (project_name)"},
		{"GET /api/v2.0/projects/{name}", s.handleGetProject, "Get a project by name or id"},
		{"PUT /api/v2.0/projects/{name}", s.handleUpdateProject, "Make a project public or private (metadata.public)"},
		{"DELETE /api/v2.0/projects/{name}", s.handleDeleteProject, "Delete a project that holds no repositories"},
		{"GET /api/v2.0/projects/{name}/repositories", s.handleListRepositories, "List a project's repositories"},
		{"GET /api/v2.0/repositories", s.handleListAllRepositories, "List the repositories of every project the caller may see (q, sort, page, page_size)"},
		{"GET /api/v2.0/projects/{name}/repositories/{repo}", s.handleGetRepository, "Get a repository (repo URL-encoded twice: a%252Fb)"},
		{"PUT /api/v2.0/projects/{name}/repositories/{repo}", s.handleUpdateRepository, "Set a repository's description (developers and up)"},
		{"DELETE /api/v2.0/projects/{name}/repositories/{repo}", s.handleDeleteRepository, "Delete a repository with its artifacts and tags (maintainers and up)"},
		{"GET /api/v2.0/projects/{name}/repositories/{repo}/artifacts", s.handleListArtifacts, "List a repository's artifacts (with_tag, q, sort, page, page_size)"},
		{"POST /api/v2.0/projects/{name}/repositories/{repo}/artifacts", s.handleCopyArtifact, "Copy an artifact here with its tags (from=project/repository:tag or @digest; developers and up)"},
		{"GET /api/v2.0/projects/{name}/repositories/{repo}/artifacts/{reference}", s.handleGetArtifact, "Get an artifact by digest or tag, with references and extra_attrs"},
		{"DELETE /api/v2.0/projects/{name}/repositories/{repo}/artifacts/{reference}", s.handleDeleteArtifact, "Delete an artifact and its tags (maintainers and up)"},
		{"GET /api/v2.0/projects/{name}/repositories/{repo}/artifacts/{reference}/tags", s.handleListTags, "List an artifact's tags"},
		{"POST /api/v2.0/projects/{name}/repositories/{repo}/artifacts/{reference}/tags", s.handleAddTag, "Add a tag to an artifact (developers and up)"},
		{"DELETE /api/v2.0/projects/{name}/repositories/{repo}/artifacts/{reference}/tags/{tag}", s.handleDeleteTag, "Delete a tag (maintainers and up)"},
		{"GET /api/v2.0/projects/{name}/webhook/policies", s.handleListWebhooks, "List a project's webhook policies (maintainers and up)"},
		{"POST /api/v2.0/projects/{name}/webhook/policies", s.handleCreateWebhook, "Create a webhook policy (project admins)"},
		{"GET /api/v2.0/projects/{name}/webhook/policies/{id}", s.handleGetWebhook, "Get a webhook policy"},
		{"PUT /api/v2.0/projects/{name}/webhook/policies/{id}", s.handleUpdateWebhook, "Change a webhook policy (project admins)"},
		{"DELETE /api/v2.0/projects/{name}/webhook/policies/{id}", s.handleDeleteWebhook, "Delete a webhook policy and its history (project admins)"},
		{"GET /api/v2.0/projects/{name}/webhook/policies/{id}/executions", s.handleWebhookExecutions, "A policy's deliveries, an execution per event, newest first"},
		{"GET /api/v2.0/projects/{name}/webhook/policies/{id}/executions/{eid}/tasks", s.handleWebhookTasks, "An execution's tasks: one per target, with status, attempts (run_count) and last error"},
		{"GET /api/v2.0/projects/{name}/webhook/policies/{id}/executions/{eid}/tasks/{tid}/log", s.handleWebhookTaskLog, "A task's attempts, a line each"},
		{"GET /api/v2.0/projects/{name}/webhook/events", s.handleWebhookEvents, "The event types cove fires, and how it notifies"},
		{"GET /api/v2.0/system/webhook/policies", s.handleListWebhooks, "List the system's webhook policies: events of mirrored repositories (system admins)"},
		{"POST /api/v2.0/system/webhook/policies", s.handleCreateWebhook, "Create a system webhook policy (system admins)"},
		{"GET /api/v2.0/system/webhook/policies/{id}", s.handleGetWebhook, "Get a system webhook policy"},
		{"PUT /api/v2.0/system/webhook/policies/{id}", s.handleUpdateWebhook, "Change a system webhook policy"},
		{"DELETE /api/v2.0/system/webhook/policies/{id}", s.handleDeleteWebhook, "Delete a system webhook policy and its history"},
		{"GET /api/v2.0/system/webhook/policies/{id}/executions", s.handleWebhookExecutions, "A system policy's deliveries"},
		{"GET /api/v2.0/system/webhook/policies/{id}/executions/{eid}/tasks", s.handleWebhookTasks, "An execution's tasks"},
		{"GET /api/v2.0/system/webhook/policies/{id}/executions/{eid}/tasks/{tid}/log", s.handleWebhookTaskLog, "A task's attempts"},
		{"GET /api/v2.0/projects/{name}/immutabletagrules", s.handleListImmutableRules, "List a project's tag immutability rules"},
		{"POST /api/v2.0/projects/{name}/immutabletagrules", s.handleAddImmutableRule, "Add a tag immutability rule (project admins, maintainers)"},
		{"PUT /api/v2.0/projects/{name}/immutabletagrules/{id}", s.handleUpdateImmutableRule, "Change a tag immutability rule (project admins, maintainers)"},
		{"DELETE /api/v2.0/projects/{name}/immutabletagrules/{id}", s.handleDeleteImmutableRule, "Delete a tag immutability rule (project admins, maintainers)"},
		{"GET /api/v2.0/projects/{name}/members", s.handleListMembers, "List a project's members"},
		{"POST /api/v2.0/projects/{name}/members", s.handleAddMember, "Add a user or group as a member"},
		{"GET /api/v2.0/projects/{name}/members/{id}", s.handleGetMember, "Get a member"},
		{"PUT /api/v2.0/projects/{name}/members/{id}", s.handleUpdateMember, "Change a member's role"},
		{"DELETE /api/v2.0/projects/{name}/members/{id}", s.handleRemoveMember, "Remove a member"},
		{"GET /api/v2.0/projects/{name}/logs", s.handleProjectLogs, "The audit log of a project's repositories"},
		{"POST /api/v2.0/users", s.handleCreateUser, "Create a user (admins, or anyone with self-registration)"},
		{"GET /api/v2.0/users", s.handleListUsers, "List users"},
		{"GET /api/v2.0/users/current", s.handleCurrentUser, "The caller"},
		{"GET /api/v2.0/users/{id}", s.handleGetUser, "Get a user"},
		{"PUT /api/v2.0/users/{id}/password", s.handleSetPassword, "Change a password"},
		{"POST /api/v2.0/users/password-reset", s.handleRequestReset, "Mail a password reset link to the local accounts of an address ({\"email\"}); always 202"},
		{"POST /api/v2.0/users/password-reset/confirm", s.handleConfirmReset, "Set a new password with a mailed link's token ({\"token\", \"new_password\"}), once"},
		{"PUT /api/v2.0/users/{id}/sysadmin", s.handleSetSysadmin, "Grant or revoke system admin"},
		{"DELETE /api/v2.0/users/{id}", s.handleDeleteUser, "Delete a user"},
		{"POST /api/v2.0/robots", s.handleCreateRobot, "Create a project robot account; the secret is shown once"},
		{"GET /api/v2.0/robots", s.handleListRobots, "List the robot accounts the caller manages"},
		{"GET /api/v2.0/robots/{id}", s.handleGetRobot, "Get a robot account"},
		{"DELETE /api/v2.0/robots/{id}", s.handleDeleteRobot, "Delete a robot account"},
		{"GET /api/v2.0/audit-logs", s.handleAuditLogs, "Query the audit log (q, page, page_size)"},
		{"GET /api/v2.0/configurations", s.handleGetSettings, "The settings"},
		{"PUT /api/v2.0/configurations", s.handlePutSettings, "Change the settings"},
		{"GET /api/v2.0/mirror/status", s.handleMirrorStatus, "The mirror's counters, cache size and upstreams' health"},
		{"GET /api/v2.0/mirror/repositories", s.handleMirrorRepositories, "List cached upstream repositories"},
		{"DELETE /api/v2.0/mirror/repositories", s.handleEvictRepository, "Evict one cached upstream repository (name)"},
		{"POST /api/v2.0/mirror/warm", s.handleStartWarm, "Pre-warm the cache: pull images (and of an index, the platforms asked) from their upstreams now"},
		{"GET /api/v2.0/mirror/warm", s.handleListWarm, "The pre-warm jobs, newest first (page, page_size; the last 50 are kept)"},
		{"GET /api/v2.0/mirror/warm/{id}", s.handleGetWarm, "A pre-warm job's progress, per image: manifests, blobs, bytes, done, error"},
		{"GET /api/v2.0/cluster/nodes", s.handleNodes, "List the fleet's nodes: name, advertise URL, version, last heartbeat, live"},
		{"GET /api/v2.0/system/scrub", s.handleGetScrub, "The last scrub's result (cove scrub, scrub.interval): blobs checked, problems by kind and the first of them; last is null before the first"},
		{"GET /api/v2.0/system/gc", s.handleListGC, "Garbage collection's runs, newest first (page, page_size)"},
		{"GET /api/v2.0/system/gc/{id}", s.handleGetGC, "One garbage collection run"},
		{"GET /api/v2.0/system/gc/{id}/log", s.handleGCLog, "A run's log: what it freed, or would free in a dry run"},
		{"GET /api/v2.0/system/gc/schedule", s.handleGetGCSchedule, "Garbage collection's schedule"},
		{"POST /api/v2.0/system/gc/schedule", s.handleCreateGCSchedule, "Run garbage collection now (type Manual) or set a schedule where there is none"},
		{"PUT /api/v2.0/system/gc/schedule", s.handleUpdateGCSchedule, "Change the schedule: Hourly, Daily, Weekly, Custom (6-field cron), None"},
		{"POST /api/v2.0/system/token-key/rotate", s.handleRotateKey, "Start signing registry tokens with a new key"},
		{"POST /api/v2.0/system/tls/renew", s.handleRenewTLS, "Renew the ACME certificates now"},
		{"GET /api/v2.0/systeminfo", s.handleSystemInfo, "What this registry is (more for those signed in)"},
		{"GET /api/v2.0/systeminfo/volumes", s.handleVolumes, "Free and total bytes of the data directory's disk"},
		{"GET /api/v2.0/health", s.handleHealth, "Health of each component"},
		{"GET /api/v2.0/statistics", s.handleStatistics, "Counts of the projects and repositories the caller may see"},
		{"GET /api/v2.0/search", s.handleSearch, "Projects and repositories whose names contain q"},
		{"GET /api/v2.0/users/current/permissions", s.handleCurrentPermissions, "What the caller may do in a scope (/system, /project/{id})"},
		{"GET /api/v2.0/retentions/metadatas", s.handleRetentionMetadatas, "The retention templates and selectors cove takes"},
		{"POST /api/v2.0/retentions", s.handleCreateRetention, "Create a project's retention policy (scope.ref = project id; project admins, maintainers)"},
		{"GET /api/v2.0/retentions/{id}", s.handleGetRetention, "A retention policy"},
		{"PUT /api/v2.0/retentions/{id}", s.handleUpdateRetention, "Change a retention policy"},
		{"DELETE /api/v2.0/retentions/{id}", s.handleDeleteRetention, "Delete a retention policy"},
		{"POST /api/v2.0/retentions/{id}/executions", s.handleStartRetention, "Run a retention policy now ({\"dry_run\": true} deletes nothing)"},
		{"GET /api/v2.0/retentions/{id}/executions", s.handleListRetentionRuns, "A policy's runs, newest first"},
		{"PATCH /api/v2.0/retentions/{id}/executions/{eid}", s.handleStopRetentionRun, "Stop a run: {\"action\":\"stop\"}"},
		{"GET /api/v2.0/retentions/{id}/executions/{eid}/tasks", s.handleRetentionTasks, "A run's tasks, one per repository, with total and retained"},
		{"GET /api/v2.0/retentions/{id}/executions/{eid}/tasks/{tid}", s.handleRetentionTaskLog, "A task's log: what it kept and deleted"},
		{"GET /api/v2.0/quotas", s.handleListQuotas, "The projects' storage quotas (reference, reference_id, sort=used.storage)"},
		{"GET /api/v2.0/quotas/{id}", s.handleGetQuota, "A project's storage quota (its id is the project's)"},
		{"PUT /api/v2.0/quotas/{id}", s.handleUpdateQuota, "Set a project's storage limit: {\"hard\": {\"storage\": bytes or -1}}"},
		{"GET /api/v2.0/projects/{name}/summary", s.handleProjectSummary, "A project's repositories, members per role and quota"},
		{"GET /api/v2.0/projects/{name}/_deletable", s.handleProjectDeletable, "Whether the project can be deleted now, and why not"},
		{"POST /api/v2.0/ldap/ping", s.handleLDAPPing, "Connect to the configured LDAP directory and bind"},
		{"POST /api/v2.0/email/ping", s.handleEmailPing, "Send a test mail with the saved e-mail settings ({\"to\"}, default the caller's address)"},
		{"GET /api/v2.0/openapi.json", s.handleOpenAPI, "This document"},
	}
}

// ServeHTTP serves the API. Changes from a browser must come from cove's own origin
// (http.CrossOriginProtection): the admin page's session cannot be used by another site.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.csrf.Handler(s.mux).ServeHTTP(w, r)
}

// Web is the admin page's handler, for / on the registry's host and port.
func (s *Server) Web() http.Handler { return s.csrf.Handler(s.web) }

func (s *Server) initWeb() error {
	web, err := newWebPages(s)
	if err != nil {
		return err
	}
	s.web, s.webMux, s.csrf = web, http.NewServeMux(), http.NewCrossOriginProtection()
	page := web.page
	for pattern, h := range map[string]http.Handler{
		"GET /{$}":             page(web.handleDashboard),
		"GET /":                http.HandlerFunc(web.handleNotFound),
		"GET /login":           http.HandlerFunc(web.handleLogin),
		"POST /login":          http.HandlerFunc(web.handleLogin),
		"POST /logout":         http.HandlerFunc(web.handleLogout),
		"GET /forgot-password": http.HandlerFunc(web.handleForgot),
		"GET /reset-password":  http.HandlerFunc(web.handleResetPassword),
		"GET /lang":            http.HandlerFunc(web.handleLang),
		"GET /projects":        page(web.handleProjects),
		"GET /projects/{name}": page(web.handleProject),
		"GET /projects/{name}/repositories/{repo}": page(web.handleRepository),
		"GET /mirror":   page(web.handleMirror),
		"GET /users":    page(web.handleUsers),
		"GET /audit":    page(web.handleAudit),
		"GET /settings": page(web.handleSettings),
		"GET /gc":       page(web.handleGC),
		"GET /connect":  page(web.handleConnect),
		"GET /account":  page(web.handleAccount),
		// No icon: an empty answer, so browsers stop asking and nothing logs a 404 per page.
		"GET /favicon.ico": http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("Cache-Control", "max-age=86400")
			rw.WriteHeader(http.StatusNoContent)
		}),
		"POST /message": http.HandlerFunc(web.handleMessage),
	} {
		s.webMux.Handle(pattern, withDeadlineWeb(h))
	}
	return nil
}

// withDeadlineWeb bounds a page request: pages and forms are small.
func withDeadlineWeb(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(time.Minute))
		_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
		h.ServeHTTP(w, r)
	})
}

type handler func(w http.ResponseWriter, r *http.Request, who auth.Principal) error

// apiError is an API failure in Harbor's shape: {"errors":[{"code","message"}]}.
type apiError struct {
	Status  int
	Code    string
	Message string
	Err     error // logged, never shown
}

func (e *apiError) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// toAPIError maps domain errors to Harbor's codes in one place.
func toAPIError(err error) *apiError {
	var e *apiError
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, auth.ErrBadCredentials), errors.Is(err, auth.ErrUnauthenticated):
		return &apiError{Status: http.StatusUnauthorized, Code: "UNAUTHORIZED", Message: "unauthorized"}
	case errors.Is(err, auth.ErrDenied):
		return &apiError{Status: http.StatusForbidden, Code: "FORBIDDEN", Message: "forbidden"}
	case errors.Is(err, auth.ErrProjectUnknown):
		return &apiError{Status: http.StatusNotFound, Code: "NOT_FOUND", Message: "project not found"}
	case errors.Is(err, auth.ErrProjectExists):
		return &apiError{Status: http.StatusConflict, Code: "CONFLICT", Message: "a project with that name exists already"}
	case errors.Is(err, auth.ErrInvalid):
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: err.Error()}
	case errors.Is(err, auth.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Code: "NOT_FOUND", Message: err.Error()}
	case errors.Is(err, auth.ErrConflict):
		return &apiError{Status: http.StatusConflict, Code: "CONFLICT", Message: err.Error()}
	case errors.Is(err, auth.ErrDirectoryUnavailable):
		return &apiError{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "the user directory cannot be reached"}
	case errors.Is(err, auth.ErrTooManyAttempts):
		return &apiError{Status: http.StatusTooManyRequests, Code: "TOO_MANY_REQUESTS", Message: err.Error()}
	case errors.Is(err, cache.ErrTagImmutable):
		return &apiError{Status: http.StatusPreconditionFailed, Code: "PRECONDITION", Message: err.Error()}
	case errors.Is(err, cache.ErrQuotaExceeded):
		return &apiError{Status: http.StatusForbidden, Code: "DENIED", Message: err.Error()}
	case errors.Is(err, cache.ErrInUse):
		return &apiError{Status: http.StatusPreconditionFailed, Code: "PRECONDITION", Message: err.Error()}
	case errors.Is(err, cache.ErrStorageFull), errors.Is(err, cache.ErrReadOnly):
		return &apiError{Status: http.StatusInsufficientStorage, Code: "INSUFFICIENT_STORAGE", Message: err.Error(), Err: err}
	case errors.Is(err, cache.ErrMetadataUnavailable):
		return &apiError{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "the metadata database (storage.metadata) cannot be reached now; retry later", Err: err}
	}
	return &apiError{Status: http.StatusInternalServerError, Code: "INTERNAL_SERVER_ERROR", Message: "internal server error", Err: err}
}

// adapt authenticates the request, runs h, and writes what h returns as Harbor's error envelope.
func (s *Server) adapt(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		who, err := s.auth.Tokens.Authenticate(r.Context(), r)
		if err == nil && who.Token {
			err = auth.ErrBadCredentials // registry tokens are for /v2; the API takes a login
		}
		if err == nil {
			err = h(w, r, who)
		}
		if err == nil {
			return
		}
		e := toAPIError(err)
		if op := mutation(r.Method); op != "" {
			// Refused and failed changes are audited too, with their result.
			s.recordResult(r, who, op, "api", r.URL.Path, fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message), "failure")
		}
		if e.Status >= 500 {
			// The access-log line of the request carries it, at ERROR (log once, at the boundary).
			telemetry.SetCause(r.Context(), err)
		}
		if e.Status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="cove"`)
		}
		body, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": e.Code, "message": e.Message}}})
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(e.Status)
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return nil
}

// decodeJSONStrict is decodeJSON refusing unknown fields: a misspelt setting must not pass.
func decodeJSONStrict(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "invalid JSON body: " + err.Error()}
	}
	return nil
}

func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "invalid JSON body: " + err.Error()}
	}
	return nil
}

// project is a project in Harbor's JSON shape.
func requireAdmin(who auth.Principal) error {
	switch {
	case who.Anonymous():
		return auth.ErrUnauthenticated
	case !who.Admin:
		return auth.ErrDenied
	}
	return nil
}

// requireUser refuses the anonymous and robots: people's actions.
func requireUser(who auth.Principal) error {
	switch {
	case who.Anonymous():
		return auth.ErrUnauthenticated
	case who.Robot:
		return auth.ErrDenied
	}
	return nil
}

// mutation names the audit operation of a changing method, or "" for a reading one.
func mutation(method string) string {
	return map[string]string{http.MethodPost: "create", http.MethodPut: "update", http.MethodDelete: "delete"}[method]
}

// record writes an audit event for a change made through the API; a failure to write is logged.
func (s *Server) record(r *http.Request, who auth.Principal, op, typ, resource, detail string) {
	s.recordResult(r, who, op, typ, resource, detail, "success")
}

func (s *Server) recordResult(r *http.Request, who auth.Principal, op, typ, resource, detail, result string) {
	if s.audit == nil {
		return
	}
	e := auth.Event{
		Username: who.Name, Address: auth.RemoteHost(r), Operation: op, ResourceType: typ, Resource: resource, Detail: detail, Result: result,
	}
	var err error
	if result == "failure" {
		err = s.audit.RecordRefusal(r.Context(), e) // bounded per caller: no flood of the log
	} else {
		err = s.audit.Record(r.Context(), e)
	}
	if err != nil {
		s.log.ErrorContext(r.Context(), "writing an audit record", "err", err)
	}
}
