package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"cove/auth"
	"cove/cache"
	"cove/internal/webhook"
	covetls "cove/tls"
)

// registerMetrics registers cove's own gauges and counters on reg, besides those of the packages
// (the mirror's, the HTTP layer's): the Go runtime and the process, the store and its disk, the
// audit log, webhooks, and the served certificates' expiry.
func registerMetrics(reg *prometheus.Registry, cfg Config, store *cache.Store, audit *auth.Audit, dispatcher *webhook.Dispatcher, certs *covetls.Setup, readOnly bool) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cove_blobs_stored", Help: "Blob files in the store."},
			func() float64 { n, _ := store.Stats(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cove_bytes_stored", Help: "Bytes of blob files in the store."},
			func() float64 { _, b := store.Stats(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cove_mirror_bytes_stored", Help: "Bytes of mirrored blobs in the store (evictable)."},
			func() float64 { b, _ := store.Evictor.Stats(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cove_mirror_bytes_max", Help: "The cap on mirrored bytes (mirror.max_size)."},
			func() float64 { return float64(cfg.Mirror.MaxSize) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cove_mirror_evictions_total", Help: "Mirrored blobs evicted to stay under mirror.max_size or above storage.min_free."},
			func() float64 { _, n := store.Evictor.Stats(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cove_webhook_events_dropped_total", Help: "Webhook events dropped: the metadata store did not take them, or their policy's receivers were 1000 deliveries behind."},
			func() float64 { return float64(webhookCount(dispatcher, (*webhook.Dispatcher).Dropped)) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cove_webhook_deliveries_total", Help: "Webhook deliveries answered 2xx."},
			func() float64 { return float64(webhookCount(dispatcher, (*webhook.Dispatcher).Delivered)) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cove_webhook_failures_total", Help: "Webhook deliveries that failed for good (every attempt)."},
			func() float64 { return float64(webhookCount(dispatcher, (*webhook.Dispatcher).Failed)) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cove_storage_refusals_total", Help: "Writes refused to keep the data directory's free-space floor (storage.min_free)."},
			func() float64 { return float64(store.Disk.Refusals()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cove_storage_free_bytes", Help: "Free bytes of the data directory's disk."},
			func() float64 { avail, _, _ := store.Disk.Space(); return float64(avail) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cove_storage_floor_bytes", Help: "The free-space floor of the data directory's disk (storage.min_free)."},
			func() float64 { _, floor, _ := store.Disk.Space(); return float64(floor) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cove_audit_dropped_total", Help: "Audit records not written because the index could not be (a full disk, a read-only start)."},
			func() float64 { return float64(audit.Dropped()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cove_read_only", Help: "1 when cove started read-only on a full disk."},
			func() float64 { return map[bool]float64{true: 1}[readOnly] }),
	)
	registerScrubMetrics(reg, store)
	// One series per certificate served (per domain with ACME); none with TLS off.
	certExpiry := prometheus.NewDesc("cove_tls_certificate_expiry_seconds", "Seconds until the served TLS certificate expires.", []string{"name"}, nil)
	reg.MustRegister(prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		for _, c := range certs.Certificates() {
			ch <- prometheus.MustNewConstMetric(certExpiry, prometheus.GaugeValue, time.Until(c.NotAfter).Seconds(), c.Name)
		}
	}))
}

// registerScrubMetrics exposes the last scrub's result (kept in the index: in a fleet every node
// shows the fleet's last, and an offline cove scrub's shows too); no series before the first.
func registerScrubMetrics(reg *prometheus.Registry, store *cache.Store) {
	var (
		last     = prometheus.NewDesc("cove_scrub_last_run_timestamp_seconds", "When the last scrub started (Unix time).", nil, nil)
		duration = prometheus.NewDesc("cove_scrub_last_duration_seconds", "How long the last scrub took.", nil, nil)
		blobs    = prometheus.NewDesc("cove_scrub_blobs_checked", "Blobs whose bytes the last scrub hashed.", nil, nil)
		bytes    = prometheus.NewDesc("cove_scrub_bytes_checked", "Bytes the last scrub read.", nil, nil)
		problems = prometheus.NewDesc("cove_scrub_problems", "Problems the last scrub found, by kind (corrupt, size, missing, missing_reference, dangling_tag).", []string{"kind"}, nil)
		failed   = prometheus.NewDesc("cove_scrub_last_failed", "1 when the last scrub could not finish (its log says why).", nil, nil)
	)
	reg.MustRegister(prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, ok, err := store.LastScrub(ctx)
		if err != nil || !ok {
			return
		}
		ch <- prometheus.MustNewConstMetric(last, prometheus.GaugeValue, float64(r.Started.UnixNano())/1e9)
		ch <- prometheus.MustNewConstMetric(duration, prometheus.GaugeValue, r.Duration)
		ch <- prometheus.MustNewConstMetric(blobs, prometheus.GaugeValue, float64(r.Blobs))
		ch <- prometheus.MustNewConstMetric(bytes, prometheus.GaugeValue, float64(r.Bytes))
		ch <- prometheus.MustNewConstMetric(failed, prometheus.GaugeValue, map[bool]float64{true: 1}[r.Error != ""])
		for _, k := range cache.ScrubKinds {
			ch <- prometheus.MustNewConstMetric(problems, prometheus.GaugeValue, float64(r.Counts[k]), k)
		}
	}))
}

// webhookCount reads a counter of d, 0 without one (read-only).
func webhookCount(d *webhook.Dispatcher, f func(*webhook.Dispatcher) int64) int64 {
	if d == nil {
		return 0
	}
	return f(d)
}
