package mirror

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"cove/cache"
)

// Upstream is a registry cove mirrors.
type Upstream struct {
	// Name selects the upstream: as the first element of a repository path
	// (/v2/ghcr.io/owner/img/…) or as containerd's ?ns= parameter. It is a lookup key, never an
	// address to dial.
	Name string
	// URL is where the upstream's /v2 API is, e.g. https://registry-1.docker.io.
	URL string
	// Username and Password, when set, are the account cove uses upstream.
	Username, Password string
	// TokenRealms are hosts besides URL's own that may receive the credentials (the token service of
	// a registry that uses one on another host). A realm anywhere else gets none (docs/SECURITY.md 11).
	TokenRealms []string
	// Timeout is the upstream's time budget: connecting, the token exchange and the first byte
	// of an answer must come within it, and a blob fill that gets no bytes for this long is cut
	// (its clients get an error; the next request starts a new fill). Zero: 10s.
	Timeout time.Duration
	// RateLimitReserve is how many of Docker Hub's pulls cove keeps for cold pulls: a count
	// ("20") or a share of the limit ("10%", the default). Under it, cached tags are served
	// without asking the upstream.
	RateLimitReserve string
}

// manifestAccept lists the manifest types cove asks upstreams for.
var manifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest, mediaTypeDockerList, mediaTypeDockerManifest,
}, ", ")

// upstream is a configured Upstream with its HTTP machinery.
type upstream struct {
	Upstream
	base    string // URL without a trailing slash
	reg     name.Registry
	auth    authn.Authenticator
	inner   http.RoundTripper // the guard, over the shared transport
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time

	circuit breaker
	pulls   pullLimit
	scheme  string // the configured one: requests to the upstream's host in the other are refused
	// lastOK and lastErr are when the upstream last answered (any status below 500) and last
	// failed (no answer, or 5xx, or 429), in Unix nanoseconds.
	lastOK, lastErr atomic.Int64

	group singleflight.Group // transport set-up per repository
	mu    sync.Mutex
	// transports holds an authenticated transport per repository, guarded by mu.
	transports map[string]http.RoundTripper
}

// maxTransports bounds the per-repository transports kept; past it the map starts over.
const maxTransports = 4096

// maxManifestBytes is the largest manifest cove reads from an upstream.
const maxManifestBytes = cache.MaxManifestSize

func newUpstream(u Upstream, shared http.RoundTripper, log *slog.Logger, m *Metrics, now func() time.Time) (*upstream, error) {
	pu, err := url.Parse(u.URL)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return nil, fmt.Errorf("upstream %s: want an absolute http(s) URL", u.Name)
	}
	var opts []name.Option
	if pu.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(pu.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", u.Name, err)
	}
	up := &upstream{
		Upstream:   u,
		base:       strings.TrimSuffix(pu.Scheme+"://"+pu.Host+pu.Path, "/"),
		reg:        reg,
		auth:       authn.Anonymous,
		log:        log.With("upstream", u.Name),
		metrics:    m,
		now:        now,
		transports: map[string]http.RoundTripper{},
	}
	if up.Timeout <= 0 {
		up.Timeout = 10 * time.Second
	}
	reserve, err := ParseReserve(u.RateLimitReserve)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: ratelimit_reserve: %w", u.Name, err)
	}
	up.pulls.reserve = reserve
	up.pulls.pl = PullLimit{Limit: -1, Remaining: -1, Credential: u.Username}
	up.scheme = pu.Scheme
	if u.Username != "" || u.Password != "" {
		up.auth = &authn.Basic{Username: u.Username, Password: u.Password}
	}
	up.inner = &guard{inner: shared, up: up, host: canonicalHost(pu.Host, pu.Scheme), realms: u.TokenRealms}
	return up, nil
}

// canonicalHost writes host with its port, the scheme's default when it has none.
func canonicalHost(host, scheme string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	if scheme == "http" {
		return host + ":80"
	}
	return host + ":443"
}

// guard is the last RoundTripper before the network for everything sent to an upstream, token
// requests and redirects included. It strips credentials from any request to a host that is
// neither the upstream's own nor one of its token realms, whatever the layers above did; it
// keeps the upstream's scheme as configured (go-containerregistry would try https first on an
// http:// upstream); it holds requests back while the upstream's circuit is open, and opens or
// closes it from what each request meets; and it reads Docker Hub's pull limit from every answer.
type guard struct {
	inner  http.RoundTripper
	up     *upstream
	host   string   // the upstream's host:port
	realms []string // hosts (with or without port) allowed to receive credentials
}

func (g *guard) allowed(u *url.URL) bool {
	if canonicalHost(u.Host, u.Scheme) == g.host {
		return true
	}
	for _, r := range g.realms {
		if strings.EqualFold(r, u.Host) || strings.EqualFold(r, u.Hostname()) {
			return true
		}
	}
	return false
}

// errSchemeRefused refuses a request to the upstream's host in a scheme other than its own.
var errSchemeRefused = errors.New("not tried: the upstream's URL names the other scheme, which alone cove uses")

func (g *guard) RoundTrip(req *http.Request) (*http.Response, error) {
	up := g.up
	if req.URL.Scheme != up.scheme && strings.EqualFold(req.URL.Host, up.reg.RegistryStr()) {
		return nil, errSchemeRefused
	}
	if req.Header.Get("Authorization") != "" && !g.allowed(req.URL) {
		req = req.Clone(req.Context())
		req.Header.Del("Authorization")
		up.log.Warn("credentials withheld from a host that is not the upstream's or one of its token realms", "host", req.URL.Host)
	}
	if err := up.circuit.admit(up.now(), up.Timeout); err != nil {
		return nil, err
	}
	up.metrics.upstreamRequests.WithLabelValues(up.Name, req.Method).Inc()
	resp, err := g.inner.RoundTrip(req)
	now := up.now()
	if err != nil || resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
		up.lastErr.Store(now.UnixNano())
	} else {
		up.lastOK.Store(now.UnixNano())
	}
	switch {
	case err != nil:
		if reason := downReason(err); reason != "" && (!errors.Is(err, context.DeadlineExceeded) || isBudgeted(req.Context())) {
			if opened, until := up.circuit.fail(now, reason); opened {
				up.log.Warn("upstream marked down: requests to it fail at once until it answers again; cached tags are served",
					"reason", reason, "retry_at", until.UTC(), "err", err)
			}
		}
		return nil, err
	case resp.StatusCode == http.StatusTooManyRequests && !g.allowed(req.URL):
		// A blob CDN's 429 is the CDN's: the registry still answers.
		up.log.Warn("a host the upstream redirected to limits requests (429)", "host", req.URL.Host)
	case resp.StatusCode == http.StatusTooManyRequests:
		up.observeLimit(resp.Header, now)
		up.limited(resp, now)
	default:
		up.observeLimit(resp.Header, now)
		if up.circuit.succeed(now) {
			up.log.Info("upstream answers again: marked up")
		}
	}
	return resp, nil
}

// observeLimit keeps Docker Hub's pull limit from an answer's headers.
func (u *upstream) observeLimit(h http.Header, now time.Time) {
	if u.pulls.observe(h, now) {
		pl := u.pulls.get()
		if pl.Remaining >= 0 {
			u.metrics.rateRemaining.WithLabelValues(u.Name).Set(float64(pl.Remaining))
		}
		if pl.Limit >= 0 {
			u.metrics.rateLimit.WithLabelValues(u.Name).Set(float64(pl.Limit))
		}
	}
}

// limited opens the circuit for a 429 until its Retry-After, and logs whether it is Docker Hub's
// pull limit or a plain throttle (once per opening).
func (u *upstream) limited(resp *http.Response, now time.Time) {
	after, ok := retryAfter(resp.Header.Get("Retry-After"), now)
	if !ok {
		after = defaultRetryAfter
	}
	reason := downThrottled
	if pullLimitHit(resp) {
		reason = downPullLimit
	} else {
		after = min(after, maxThrottle) // only the pull limit's window is worth hours
	}
	opened, until := u.circuit.limit(now, reason, after)
	if !opened {
		return
	}
	if reason == downPullLimit {
		pl := u.pulls.get()
		u.log.Warn("upstream's pull limit is used up (429): cached tags are served, cold pulls get 429 until it resets",
			"retry_at", until.UTC(), "limit", pl.Limit, "source", pl.Source, "credential", cmp.Or(pl.Credential, "anonymous"))
		return
	}
	u.log.Warn("upstream throttles requests (429, not the pull limit): requests wait until its Retry-After",
		"retry_at", until.UTC())
}

// client returns an HTTP client authenticated for pulls of repo: the upstream's token flow (or
// Basic) is go-containerregistry's, set up once per repository and reused.
func (u *upstream) client(ctx context.Context, repo string) (*http.Client, error) {
	u.mu.Lock()
	t := u.transports[repo]
	u.mu.Unlock()
	if t == nil {
		// One set-up (ping, token) per repository however many requests wait for it; it runs on
		// its own time, so one caller giving up does not fail the others.
		ch := u.group.DoChan(repo, func() (any, error) {
			sctx, cancel := budgeted(context.WithTimeout(context.WithoutCancel(ctx), u.Timeout))
			defer cancel()
			scope := u.reg.Repo(repo).Scope(transport.PullScope)
			t, err := transport.NewWithContext(sctx, u.reg, u.auth, u.inner, []string{scope})
			if err != nil {
				return nil, err
			}
			u.mu.Lock()
			if len(u.transports) >= maxTransports {
				u.transports = map[string]http.RoundTripper{}
			}
			u.transports[repo] = t
			u.mu.Unlock()
			return t, nil
		})
		select {
		case res := <-ch:
			if res.Err != nil {
				return nil, u.classify(res.Err)
			}
			t = res.Val.(http.RoundTripper)
		case <-ctx.Done():
			return nil, u.classify(ctx.Err())
		}
	}
	return &http.Client{Transport: t}, nil
}

// do sends one request for repo to the upstream, path being what follows /v2/<repo>/.
func (u *upstream) do(ctx context.Context, method, repo, path string, hdr http.Header) (*http.Response, error) {
	if err := u.circuit.refuse(u.now()); err != nil {
		return nil, u.classify(err) // at once: neither the set-up nor the request goes out
	}
	c, err := u.client(ctx, repo)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u.base+"/v2/"+repo+"/"+path, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, u.classify(err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, u.statusError(resp)
	}
	return resp, nil
}

// UpstreamError is a failure of an upstream, as cove answers it: the HTTP status to send and
// whether it may be retried later. Cause is logged, never shown.
type UpstreamError struct {
	Upstream   string
	Status     int    // the upstream's own status, 0 when it did not answer
	RetryAfter string // from a 429
	NotFound   bool
	Timeout    bool
	// Down is why the upstream's circuit is open when the request was not sent at all (down*).
	Down string
	// Limit is, for a 429 answer, which it was: downPullLimit or downThrottled.
	Limit string
	Cause error
}

func (e *UpstreamError) Error() string {
	switch {
	case e.NotFound:
		return fmt.Sprintf("upstream %s: not found", e.Upstream)
	case e.Status != 0:
		return fmt.Sprintf("upstream %s answered %d: %v", e.Upstream, e.Status, e.Cause)
	}
	return fmt.Sprintf("upstream %s unreachable: %v", e.Upstream, e.Cause)
}

func (e *UpstreamError) Unwrap() error { return e.Cause }

// classify turns a transport failure into an UpstreamError.
func (u *upstream) classify(err error) error {
	var ue *UpstreamError
	if errors.As(err, &ue) {
		return err
	}
	var ce *circuitError
	if errors.As(err, &ce) {
		ue := &UpstreamError{Upstream: u.Name, Down: ce.reason, Cause: ce}
		if ce.reason == downPullLimit || ce.reason == downThrottled {
			ue.Status = http.StatusTooManyRequests
		}
		ue.RetryAfter = u.retryAfterLeft()
		return ue
	}
	var te *transport.Error
	if errors.As(err, &te) {
		ue := &UpstreamError{Upstream: u.Name, Status: te.StatusCode, NotFound: te.StatusCode == http.StatusNotFound, Cause: err}
		if te.StatusCode == http.StatusTooManyRequests {
			ue.RetryAfter = u.retryAfterLeft()
		}
		return ue
	}
	var ne net.Error
	timeout := errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
	return &UpstreamError{Upstream: u.Name, Timeout: timeout, Cause: err}
}

// statusError reads an upstream error answer (bounded) into an UpstreamError.
func (u *upstream) statusError(resp *http.Response) error {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	ue := &UpstreamError{
		Upstream: u.Name,
		Status:   resp.StatusCode,
		NotFound: resp.StatusCode == http.StatusNotFound,
		Cause:    fmt.Errorf("%s %s", resp.Request.Method, resp.Status),
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		ue.RetryAfter = u.retryAfterLeft()
		_, ue.Limit, _, _ = u.circuit.state(u.now())
	}
	return ue
}

// retryAfterLeft is the Retry-After to give clients while the circuit is open (what is left of
// it, in whole seconds rounded up), or "" when it is not: cove's own reading of the upstream's
// Retry-After, never the upstream's words passed on.
func (u *upstream) retryAfterLeft() string {
	open, _, until, _ := u.circuit.state(u.now())
	if !open {
		return ""
	}
	left := max(until.Sub(u.now()), time.Second)
	return strconv.FormatInt(int64((left+time.Second-1)/time.Second), 10)
}

// upstreamManifest is a manifest as an upstream served it.
type upstreamManifest struct {
	mediaType string
	digest    digest.Digest // from Docker-Content-Digest, or computed
	size      int64
	body      []byte // nil for HEAD
}

// manifest fetches (GET) or checks (HEAD) the manifest ref of repo. A GET body is read whole,
// bounded, and its digest computed here: never taken from the upstream's word alone.
func (u *upstream) manifest(ctx context.Context, method, repo, ref string) (upstreamManifest, error) {
	resp, err := u.do(ctx, method, repo, "manifests/"+ref, http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return upstreamManifest{}, err
	}
	defer resp.Body.Close()
	m := upstreamManifest{mediaType: resp.Header.Get("Content-Type"), size: resp.ContentLength}
	claimed, _ := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if method == http.MethodHead {
		m.digest = claimed
		return m, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes+1))
	if err != nil {
		return upstreamManifest{}, u.classify(err)
	}
	if len(body) > maxManifestBytes {
		return upstreamManifest{}, &UpstreamError{Upstream: u.Name, Status: resp.StatusCode, Cause: errors.New("manifest larger than 4 MiB")}
	}
	alg := digest.SHA256
	if d, err := digest.Parse(ref); err == nil {
		alg = d.Algorithm()
		if !alg.Available() {
			return upstreamManifest{}, fmt.Errorf("%w: %s", errUpstreamCorrupt, ref)
		}
	}
	m.body, m.size, m.digest = body, int64(len(body)), alg.FromBytes(body)
	if d, err := digest.Parse(ref); err == nil && d != m.digest {
		return upstreamManifest{}, fmt.Errorf("%w: manifest %s hashes to %s", errUpstreamCorrupt, d, m.digest)
	}
	if claimed != "" && claimed.Algorithm() == m.digest.Algorithm() && claimed != m.digest {
		return upstreamManifest{}, fmt.Errorf("%w: upstream says %s, content hashes to %s", errUpstreamCorrupt, claimed, m.digest)
	}
	return m, nil
}

// errUpstreamCorrupt means an upstream sent content that does not match its digest.
var errUpstreamCorrupt = errors.New("upstream sent content that does not match its digest")

// blob opens the upstream blob dgst of repo. Redirects (to a CDN) are followed; credentials do not
// follow them (the bearer transport adds them only for the upstream's host, and the guard strips
// any that would go elsewhere).
func (u *upstream) blob(ctx context.Context, repo string, dgst digest.Digest) (io.ReadCloser, int64, error) {
	resp, err := u.do(ctx, http.MethodGet, repo, "blobs/"+dgst.String(), nil)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// headBlob asks the upstream whether repo has the blob dgst, and its size.
func (u *upstream) headBlob(ctx context.Context, repo string, dgst digest.Digest) (int64, error) {
	resp, err := u.do(ctx, http.MethodHead, repo, "blobs/"+dgst.String(), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.ContentLength, nil
}

// newSharedTransport is the connection pool every upstream uses.
func newSharedTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		ExpectContinueTimeout: time.Second,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
}
