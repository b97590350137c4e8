// Command cove is a container registry: a pull-through caching mirror of Docker Hub and other
// registries, and a private registry for a company's own images, in one binary.
//
// Usage:
//
//	cove serve [--config FILE] [--listen ADDR] [--data DIR]
//	cove admin reset-password|create-user NAME
//	cove bench
//	cove version
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"cove/admin"
	"cove/auth"
	"cove/cache"
	"cove/internal/kv"
	"cove/internal/mail"
	"cove/internal/telemetry"
	"cove/internal/webhook"
	"cove/mirror"
	covetls "cove/tls"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr))
}

const usage = `usage: cove <command> [flags]

commands:
  serve        run the registry (cove serve --help for its flags)
  admin        offline account changes: reset-password, create-user (cove admin --help)
  bench        measure cove against an upstream, a peer mirror and the machine's limit (cove bench --help)
  migrate      move a stopped single node's data into a fleet (cove migrate --help)
  backup       back up the index, keys and blobs, while cove runs or not (cove backup --help)
  restore      restore a backup into a new data directory (cove restore --help)
  scrub        check every stored blob, manifest and tag; --repair acts on what it finds (cove scrub --help)
  healthcheck  exit 0 if this node's /healthz answers 200, 1 if not (a container healthcheck)
  version      print the version, commit and Go version
`

const serveUsage = `usage: cove serve [flags]

Runs the registry: a pull-through mirror of Docker Hub (and the other configured upstreams) and a
private registry, with its admin page on the same address. Every flag and key of the
configuration file can also be set as a COVE_* environment variable (see the README).

flags:
`

// version and commit are set at build time (make build: -ldflags -X); a plain go build leaves
// the version "dev" and takes the commit from the module's build information, if any.
var (
	version = "dev"
	commit  = ""
)

// versionInfo is the version, commit and Go version of this binary.
func versionInfo() (ver, rev, goVersion string) {
	rev = commit
	if rev == "" {
		rev = "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, st := range bi.Settings {
				if st.Key == "vcs.revision" {
					rev = st.Value
				}
			}
		}
	}
	return version, rev, runtime.Version()
}

// run is main without the process: it returns the exit status (2 for usage and configuration errors).
func run(ctx context.Context, args, environ []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], environ, stdout, stderr)
	case "admin":
		return adminCmd(ctx, args[1:], environ, stdin, stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "migrate":
		return migrateCmd(ctx, args[1:], environ, stdout, stderr)
	case "backup":
		return backupCmd(ctx, args[1:], environ, stdout, stderr)
	case "restore":
		return restoreCmd(ctx, args[1:], environ, stdout, stderr)
	case "healthcheck":
		return healthcheckCmd(ctx, args[1:], environ, stdout, stderr)
	case "scrub":
		return scrubCmd(ctx, args[1:], environ, stdout, stderr)
	case "bench-populate": // not in the usage: cove bench --scale runs it (bench.go)
		return benchPopulateCmd(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		v, c, g := versionInfo()
		fmt.Fprintf(stdout, "cove %s (commit %s, %s)\n", v, c, g)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "cove: unknown command %q\n%s", args[0], usage)
	return 2
}

func serve(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	configPath := fs.String("config", envValue(environ, "COVE_CONFIG"), "YAML configuration file (env COVE_CONFIG)")
	fs.String("listen", "", "address to listen on (default :5000; env COVE_LISTEN)")
	fs.String("data", "", "data directory (default ./data; env COVE_DATA)")
	if code := parseFlags(fs, "serve", serveUsage, args, stdout, stderr); code >= 0 {
		return code
	}
	set := map[string]string{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = f.Value.String() })
	cfg, err := loadConfig(*configPath, environ, set)
	if err != nil {
		fmt.Fprintf(stderr, "cove: %v\n", err)
		return 2
	}
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(stderr, nil)))
	// The access log's lines are written in batches: a line waits at most a millisecond, and under
	// load one write carries the lines of many requests (one write a request cost 6 % of the CPU of
	// cached manifest GETs); a 5xx line and the stop write at once.
	access := telemetry.NewLineBuffer(stderr, time.Millisecond)
	defer access.Flush()
	accessLog := slog.New(telemetry.LogHandler(slog.NewJSONHandler(access, nil)))
	if err := serveConfig(ctx, cfg, log, accessLog, access.Flush, stdout); err != nil {
		log.Error("cove stopped", "err", err)
		return 1
	}
	return 0
}

func envValue(environ []string, key string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// serveConfig builds every part from cfg, serves until ctx ends, then shuts down gracefully:
// the listener closes at once, requests in flight finish (up to shutdownGrace), the index closes last.
func serveConfig(ctx context.Context, cfg Config, log, accessLog *slog.Logger, flushAccess func() error, stdout io.Writer) error {
	ver, rev, goVersion := versionInfo()
	log.Info("cove starting", "version", ver, "commit", rev, "go", goVersion, "data", cfg.Data, "listen", cfg.Listen)
	for _, name := range slices.Sorted(maps.Keys(cfg.Mirror.Upstreams)) {
		u := cfg.Mirror.Upstreams[name]
		timeout := time.Duration(u.Timeout)
		if timeout == 0 {
			timeout = time.Duration(cfg.Mirror.Timeout)
		}
		log.Info("upstream", "name", name, "url", redact(u.URL), "default", name == cfg.Mirror.Default, "timeout", timeout.String())
	}
	if err := os.MkdirAll(cfg.Data, 0o750); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	minFree, minFreePct, err := cfg.Storage.minFree()
	if err != nil {
		return err
	}
	meta, ping, readOnly, space, closeMeta, err := openMetadata(ctx, cfg, minFree, minFreePct, log)
	if err != nil {
		return err
	}
	defer closeMeta()
	// An index a newer cove wrote is refused before this node touches it (its fleet's heartbeats).
	if err := cache.CheckSchema(ctx, meta); err != nil {
		return err
	}
	remote, err := openBlobStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	member, err := joinFleet(ctx, cfg, meta, log)
	if err != nil {
		return err
	}
	if member != nil {
		defer func() {
			lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := member.Leave(lctx); err != nil {
				log.Warn("leave the fleet", "err", err)
			}
		}()
	}
	uploadPrefix := ""
	if member != nil {
		uploadPrefix = mirror.UploadPrefix(member.Self().Name)
	}
	// Quota warnings and refusals go to the log, the audit log and the webhooks (both set below:
	// the store needs the callback first).
	quota := &quotaEvents{log: log}
	store, err := cache.Open(ctx, cache.Config{
		OnQuota: quota.event,
		Remote:  remote, UploadPrefix: uploadPrefix, HotTierMaxSize: int64(cfg.Storage.HotTierMaxSize),
		Dir: cfg.Data, DB: meta, Logger: log, MaxMirrored: int64(cfg.Mirror.MaxSize),
		MinFree: minFree, MinFreePercent: minFreePct, MaxBlobSize: int64(cfg.Mirror.MaxBlobSize), ReadOnly: readOnly,
		SharedMetadata: cfg.Storage.Metadata.Kind == "postgres", DiskSpace: space,
		Version: ver, BeforeMigrate: backupBeforeMigrate(ctx, cfg, meta, log),
	})
	if err != nil {
		return err
	}
	defer store.Close()
	if cfg.Storage.Metadata.Kind != "postgres" { // a fleet's database is backed up from anywhere
		defer serveControl(ctx, cfg.Data, meta, log)()
	}
	var upstreams []string
	for name := range cfg.Mirror.Upstreams {
		upstreams = append(upstreams, name)
	}
	audit := auth.NewAudit(meta, time.Duration(cfg.Auth.AuditRetention), nil)
	quota.audit.Store(audit)
	audit.SetLogger(log)
	audit.SetWritable(store.Disk.WriteCheck) // a full disk drops records instead of crashing in badger
	defer audit.Close()                      // before the index closes: the queued reads are written
	var ldapCfg *auth.LDAPConfig
	if cfg.Auth.Mode == "ldap" {
		l := cfg.Auth.LDAP
		ldapCfg = &auth.LDAPConfig{
			URL: l.URL, BaseDN: l.BaseDN, UserFilter: l.UserFilter, BindDN: l.BindDN, BindPassword: l.BindPassword,
			GroupBaseDN: l.GroupBaseDN, GroupFilter: l.GroupFilter, AdminGroup: l.AdminGroup, CAFile: l.CAFile,
			StartTLS: l.StartTLS, Timeout: time.Duration(l.Timeout),
		}
	}
	authSvc, err := auth.New(ctx, meta, auth.Config{
		Audit:               audit,
		LDAP:                ldapCfg,
		SelfRegistration:    cfg.Auth.SelfRegistration,
		ProjectCreation:     cfg.Auth.ProjectCreation,
		AdminPassword:       cfg.Auth.AdminPassword,
		PublicURL:           cfg.PublicURL,
		TokenTTL:            time.Duration(cfg.Auth.TokenTTL),
		KeyDir:              filepath.Join(cfg.Data, "keys"),
		SharedKeys:          cfg.Storage.Metadata.Kind == "postgres",
		ReservedNames:       upstreams,
		AnonymousMirrorPull: cfg.Auth.AnonymousPull == "mirror",
		Logger:              log,
		Writable:            store.Disk.WriteCheck,
		Email:               cfg.Email.mail(),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	var metricsLn net.Listener
	if cfg.MetricsListen != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return fmt.Errorf("listen for metrics (metrics_listen): %w", err)
		}
		defer metricsLn.Close()
	}
	var httpLn net.Listener
	if cfg.TLS.Mode != "off" {
		if httpLn, err = net.Listen("tcp", cfg.TLS.HTTPListen); err != nil {
			return fmt.Errorf("listen for plain HTTP (tls.http_listen): %w", err)
		}
		defer httpLn.Close()
	}
	certs, err := covetls.New(ctx, covetls.Config{
		Mode: covetls.Mode(cfg.TLS.Mode), Dir: filepath.Join(cfg.Data, "tls"),
		CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile, Domains: cfg.TLS.Domains, Email: cfg.TLS.Email,
		ACMECA: cfg.TLS.ACMECA, ACMECARoot: cfg.TLS.ACMECARoot,
		HTTPSPort: port(ln), HTTPPort: port(httpLn), Logger: log,
	})
	if err != nil {
		return err
	}
	defer certs.Stop()
	if certs.CAFile != "" {
		fmt.Fprintf(stdout, selfSignedHint, certs.CAFile, ln.Addr().String())
	}

	// Webhooks: events go to a queue in the metadata store, delivered in the background (after
	// the store: closed before it, once the server takes no more requests).
	var dispatcher *webhook.Dispatcher
	if !readOnly {
		if dispatcher, err = newWebhooks(cfg, meta, log, ln, authSvc, store); err != nil {
			return err
		}
		defer dispatcher.Close()
		quota.hooks.Store(dispatcher)
	}

	var ups []mirror.Upstream
	for name, u := range cfg.Mirror.Upstreams {
		timeout := time.Duration(u.Timeout)
		if timeout == 0 {
			timeout = time.Duration(cfg.Mirror.Timeout)
		}
		ups = append(ups, mirror.Upstream{Name: name, URL: u.URL, Username: u.Username, Password: u.Password, TokenRealms: u.TokenRealms,
			Timeout: timeout, RateLimitReserve: u.RateLimitReserve})
	}
	reg := prometheus.NewRegistry()
	var notifier mirror.Notifier // a nil *Dispatcher must not make a non-nil interface
	var adminHooks admin.Webhooks
	var adminEvents admin.Notifier
	if dispatcher != nil {
		notifier, adminHooks, adminEvents = dispatcher, dispatcher.Policies(), dispatcher
	}
	registry, err := mirror.New(mirror.Config{
		Notifier: notifier,
		Store:    store, Auth: authSvc.Tokens, Policy: authSvc.Policy, Audit: audit, Logger: log,
		Upstreams: ups, Default: cfg.Mirror.Default, TagTTL: time.Duration(cfg.Mirror.TagTTL), NegativeTTL: time.Duration(cfg.Mirror.NegativeTTL),
		Metrics:      mirror.NewMetrics(reg),
		BlobRedirect: remote != nil && cfg.Storage.Blobs.S3.Redirect,
		Cluster:      member,
	})
	if err != nil {
		return err
	}
	// Garbage collection's job: delete_untagged sweeps local projects, never mirrored content.
	node := ""
	if member != nil {
		node = member.Self().Name
	}
	gc, err := cache.NewGC(ctx, store, node, func(repo string) bool { return !cache.IsMirrored(repo, registry.UpstreamNames()) })
	if err != nil {
		return fmt.Errorf("garbage collection's schedule: %w", err)
	}
	retention := cache.NewRetention(store)
	if dispatcher != nil {
		retention.OnDone(retentionEvents(dispatcher))
	}
	var gcJobs admin.GCJobs
	if !readOnly {
		gcJobs = gc
	}
	// Pre-warm: jobs pull images through the mirror (after the store: closed before it).
	var warmer *mirror.Warmer
	var warmJobs admin.Warmer
	if !readOnly {
		if warmer, err = mirror.NewWarmer(ctx, registry, cache.NewWarmJobs(store), node); err != nil {
			return err
		}
		defer warmer.Close()
		warmJobs = warmer
	}
	// Mail (password reset links) goes out in the background; closed before the index.
	outbox := mail.NewOutbox(log)
	defer outbox.Close()
	if cfg.Email.Server != "" && cfg.PublicURL == "" {
		log.Warn("email.server is set but public_url is not: password reset by mail is off (its links need public_url)")
	}
	provider := "filesystem"
	if remote != nil {
		provider = "s3"
	}
	system := admin.SystemInfo{Version: ver, PublicURL: cfg.PublicURL, StorageProvider: provider, ReadOnly: readOnly,
		Health: func(ctx context.Context) []admin.HealthComponent {
			check := func(name string, err error) admin.HealthComponent {
				if err != nil {
					return admin.HealthComponent{Name: name, Status: "unhealthy", Error: err.Error()}
				}
				return admin.HealthComponent{Name: name, Status: "healthy"}
			}
			avail, floor, err := store.Disk.Space()
			if err == nil && avail < floor {
				err = fmt.Errorf("the data directory's disk is under its free-space floor (storage.min_free): %d bytes free", avail)
			}
			return []admin.HealthComponent{check("database", ping(ctx)), check("registry", store.PingRemote(ctx)), check("storage", err)}
		},
		Volume: store.Disk.Usage,
	}
	api, err := admin.New(admin.Config{
		System: system, Stored: store.Stats, Quotas: store, Retention: retention,
		Auth: authSvc, Audit: audit, Repos: store.Manifests, Browse: store.Manifests, Evict: store.Evictor, Content: store.Manifests, Blobs: store, GC: gcJobs, Scrubs: store, Warm: warmJobs, Logger: log, Certificates: certs,
		Outbox: outbox, PublicURL: cfg.PublicURL,
		Upstreams: registry.UpstreamNames(), MaxMirrored: int64(cfg.Mirror.MaxSize), Webhooks: adminHooks, Events: adminEvents,
		Mirror: func() admin.MirrorStatus { return adminStatus(registry.Status()) },
		Nodes:  fleetNodes(member),
	})
	if err != nil {
		return err
	}

	registerMetrics(reg, cfg, store, audit, dispatcher, certs, readOnly)
	metrics := telemetry.NewMetrics(reg)

	gcCtx, stopGC := context.WithCancel(context.Background())
	var background sync.WaitGroup
	background.Go(func() { gc.Loop(gcCtx) })
	background.Go(func() { retention.Loop(gcCtx) })
	background.Go(func() { expireMirrored(gcCtx, store.Manifests, meta, cfg.Mirror.Upstreams, log) })
	if warmer != nil && cfg.Mirror.Warm.Every > 0 {
		background.Go(func() { warmSchedule(gcCtx, warmer, meta, cfg.Mirror.Warm, log) })
	}
	if pg, ok := meta.(*kv.Postgres); ok {
		background.Go(func() { fleetJobs(gcCtx, store.Evictor, pg, log) })
	}
	if !readOnly && cfg.Scrub.Interval > 0 {
		background.Go(func() { scrubSchedule(gcCtx, store, meta, cfg, log) })
	}
	background.Go(func() { api.Sample(gcCtx) })
	defer func() { stopGC(); background.Wait() }()

	var ready atomic.Bool
	mux := http.NewServeMux()
	mux.Handle("/v2/", registry)
	mux.Handle("/v2", registry)
	mux.Handle("/api/", withDeadline(api, smallRequestTimeout))
	mux.Handle("/", api.Web())
	mux.Handle(auth.TokenPath, withDeadline(http.HandlerFunc(authSvc.Tokens.ServeToken), smallRequestTimeout))
	metricsHandler := withDeadline(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), smallRequestTimeout)
	if metricsLn == nil {
		mux.Handle("GET /metrics", metricsHandler)
	} else {
		// On its own listener (metrics_listen), and not on the registry's port.
		mm := http.NewServeMux()
		mm.Handle("GET /metrics", metricsHandler)
		msrv := &http.Server{Handler: mm, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
		background.Go(func() { _ = msrv.Serve(metricsLn) })
		defer msrv.Close()
	}
	registerProbes(mux, &ready, ping, store.PingRemote)
	proxies, _ := telemetry.ParseProxies(cfg.TrustedProxies) // checked by Validate
	var dls downloads
	srv := &http.Server{
		Handler: dls.track(telemetry.ForwardedFor(proxies, telemetry.Middleware(mux, accessLog.With("component", "http"), metrics, routeName,
			telemetry.AccessLog{Mode: cfg.AccessLog, Sample: cfg.AccessLogSample, Flush: flushAccess}))),
		ConnContext:       withConn,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// No WriteTimeout: large blobs take as long as they take; idle connections are closed.
	}
	// Shutdown waits for connections that were opened but never sent a request for up to five
	// seconds (net/http's rule); cove closes those itself, since they hold nothing in flight.
	var fresh sync.Map // net.Conn → struct{}: connections in StateNew
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			fresh.Store(c, struct{}{})
		} else {
			fresh.Delete(c)
		}
	}
	errc := make(chan error, 2)
	var httpSrv *http.Server
	if certs.Enabled() {
		// TLS 1.2+, HTTP/2; the plain listener answers ACME HTTP-01 and redirects the rest.
		srv.TLSConfig = certs.TLSConfig
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
		httpSrv = &http.Server{
			Handler:           withDeadline(certs.HTTPHandler(port(ln), cfg.PublicURL), smallRequestTimeout),
			ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
		go func() { errc <- httpSrv.Serve(httpLn) }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	if err := certs.Start(ctx); err != nil {
		_ = srv.Close()
		if httpSrv != nil {
			_ = httpSrv.Close()
		}
		return err
	}
	// The admin is created (and a generated password printed) only now that cove is up: a start
	// that fails before this point leaves no admin, and the next start generates the password again.
	_, err = authSvc.Identity.EnsureAdmin(ctx, func(password string) error {
		return showAdminPassword(stdout, cfg.Data, password, adminURL(cfg, ln, certs.Enabled()), os.Getenv("JOURNAL_STREAM") != "")
	})
	if err != nil {
		_ = srv.Close()
		return err
	}
	attrs := []any{"addr", ln.Addr().String(), "data", cfg.Data, "tls", cfg.TLS.Mode, "admin_page", adminURL(cfg, ln, certs.Enabled())}
	if avail, floor, err := store.Disk.Space(); err == nil {
		attrs = append(attrs, "disk_free_mib", avail>>20, "min_free_mib", floor>>20)
	}
	if metricsLn != nil {
		attrs = append(attrs, "metrics", metricsLn.Addr().String())
	}
	if httpLn != nil {
		attrs = append(attrs, "http_addr", httpLn.Addr().String())
	}
	log.Info("listening", attrs...)
	ready.Store(true)

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	ready.Store(false)
	log.Info("shutting down: finishing requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(sctx) }()
	fresh.Range(func(c, _ any) bool {
		c.(net.Conn).Close()
		return true
	})
	// Fills from upstreams get fillShutdownGrace to finish: one stalled upstream must not hold a
	// SIGTERM for the whole grace (uploads and other requests still get all of it).
	cutFills := time.AfterFunc(fillShutdownGrace, func() {
		store.Fills.Cut(errors.New("cove is shutting down"))
	})
	defer cutFills.Stop()
	// Downloads get downloadShutdownGrace: a client reading a blob at a kilobyte a second must
	// not hold a SIGTERM for the whole grace; clients resume a cut blob with a Range request.
	cutDownloads := time.AfterFunc(downloadShutdownGrace, func() {
		if n := dls.cut(); n > 0 {
			log.Warn("shutting down: downloads still in flight were cut", "connections", n, "grace", downloadShutdownGrace)
		}
	})
	defer cutDownloads.Stop()
	err = <-shut
	if errors.Is(err, context.DeadlineExceeded) {
		// The grace is over: what is still in flight (a slow upload, a client that sends its
		// request a byte at a time) is cut, and the stop is still a clean one.
		log.Warn("shutting down: requests still in flight after the grace were cut", "grace", shutdownGrace)
		_ = srv.Close()
		err = nil
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if httpSrv != nil {
		err = errors.Join(err, httpSrv.Shutdown(sctx))
		if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
	}
	_ = flushAccess() // the last requests' lines before the last line
	log.Info("stopped")
	return err
}

// adminStatus hands the mirror's status to the admin page (the two packages do not import each
// other).
func adminStatus(st mirror.Status) admin.MirrorStatus {
	out := admin.MirrorStatus{Hits: st.Hits, Misses: st.Misses, BytesCache: st.BytesFromCache, BytesUpstream: st.BytesUpstream}
	for _, u := range st.Upstreams {
		us := admin.UpstreamStatus{
			Name: u.Name, URL: redact(u.URL), Healthy: u.Healthy, RateLimitRemaining: u.RateLimitRemaining, LastOK: u.LastOK, LastError: u.LastError,
			Down: u.Down, DownReason: u.DownReason, DownSince: u.DownSince, DownUntil: u.DownUntil,
		}
		if pl := u.PullLimit; !pl.Seen.IsZero() {
			us.RateLimit = &admin.RateLimit{Limit: pl.Limit, Remaining: pl.Remaining, WindowSeconds: int64(pl.Window / time.Second),
				Source: pl.Source, Credential: cmp.Or(pl.Credential, "anonymous"), Seen: pl.Seen, Reset: pl.Reset, Saving: u.Saving}
		}
		out.Upstreams = append(out.Upstreams, us)
	}
	return out
}
