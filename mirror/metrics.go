package mirror

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the mirror's counters, registered on a registry of the caller's.
type Metrics struct {
	// The same counts, kept for the admin page's dashboard.
	nHits, nMisses, nBytesCache, nBytesUpstream atomic.Int64

	hits             *prometheus.CounterVec
	misses           *prometheus.CounterVec
	bytes            *prometheus.CounterVec
	upstreamRequests *prometheus.CounterVec
	coalesced        prometheus.Counter
	stale            *prometheus.CounterVec
	rateRemaining    *prometheus.GaugeVec
	rateLimit        *prometheus.GaugeVec
	reserveServes    *prometheus.CounterVec
	outcomes         *prometheus.CounterVec
}

// NewMetrics creates the mirror metrics and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cove_mirror_hits_total", Help: "Mirrored manifests and blobs served from the cache, by kind.",
		}, []string{"kind"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cove_mirror_misses_total", Help: "Mirrored manifests and blobs that had to come from upstream, by kind.",
		}, []string{"kind"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cove_mirror_bytes_total", Help: "Bytes of mirrored blobs, by source: served from cache, or downloaded from upstream.",
		}, []string{"source"}),
		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cove_mirror_upstream_requests_total", Help: "HTTP requests sent to upstreams (tokens and redirects included).",
		}, []string{"upstream", "method"}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cove_mirror_coalesced_total", Help: "Blob requests that joined a download already in progress.",
		}),
		stale: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cove_mirror_stale_serves_total", Help: "Cached tags served after a failed revalidation with their upstream.",
		}, []string{"upstream"}),
		rateRemaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cove_mirror_upstream_ratelimit_remaining", Help: "The upstream's ratelimit-remaining header as last seen (Docker Hub's pull limit).",
		}, []string{"upstream"}),
		rateLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cove_mirror_upstream_ratelimit_limit", Help: "The upstream's ratelimit-limit header as last seen (Docker Hub's pull limit per window).",
		}, []string{"upstream"}),
		reserveServes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cove_mirror_reserve_serves_total", Help: "Cached tags served without revalidation because the upstream's remaining pulls were under ratelimit_reserve.",
		}, []string{"upstream"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cove_mirror_cache_status_total", Help: "Manifest and blob answers by their Cache-Status outcome (hit, miss, collapsed, revalidated, updated, stale, reserve, negative, bypass, error).",
		}, []string{"kind", "outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.hits, m.misses, m.bytes, m.upstreamRequests, m.coalesced, m.stale, m.rateRemaining, m.rateLimit, m.reserveServes, m.outcomes)
	}
	return m
}

func (m *Metrics) hit(kind string)  { m.hits.WithLabelValues(kind).Inc(); m.nHits.Add(1) }
func (m *Metrics) miss(kind string) { m.misses.WithLabelValues(kind).Inc(); m.nMisses.Add(1) }

func (m *Metrics) servedFromCache(n int64) {
	m.bytes.WithLabelValues("cache").Add(float64(n))
	m.nBytesCache.Add(n)
}

func (m *Metrics) downloaded(n int64) {
	m.bytes.WithLabelValues("upstream").Add(float64(n))
	m.nBytesUpstream.Add(n)
}
