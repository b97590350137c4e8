package main

// The background jobs of a running cove that are not the cache's own (garbage collection and
// retention have their loops in cache): keep_days, and in a fleet the jobs that run once per
// fleet.

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"cove/cache"
	"cove/internal/kv"
)

// fleetJobInterval is how often a node on PostgreSQL offers to run the jobs that run once per
// fleet: eviction of the shared tier past mirror.max_size, and the sweep of expired records
// (audit retention, sessions), each under its fleet-wide lock.
const fleetJobInterval = time.Minute

func fleetJobs(ctx context.Context, ev *cache.Evictor, pg *kv.Postgres, log *slog.Logger) {
	every(ctx, fleetJobInterval, func() {
		if _, err := ev.EvictFleet(ctx); err != nil && ctx.Err() == nil {
			log.Error("eviction of the shared tier failed", "err", err)
		}
		_, err := kv.RunOnceEvery(ctx, pg, "sweep", fleetJobInterval, func() error {
			n, err := pg.Sweep(ctx)
			if n > 0 {
				log.Debug("expired records swept", "count", n)
			}
			return err
		})
		if err != nil && ctx.Err() == nil {
			log.Error("sweeping expired records failed", "err", err)
		}
	})
}

// every runs fn each d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// keepDaysInterval is how often the cached images past their upstream's keep_days are forgotten,
// once per fleet.
const keepDaysInterval = time.Hour

// expireMirrored forgets, every keepDaysInterval, the cached images of each upstream with a
// keep_days that were neither cached nor pulled for that many days; their blobs go at the next
// garbage collection.
func expireMirrored(ctx context.Context, ms *cache.Manifests, meta kv.DB, upstreams map[string]UpstreamConfig, log *slog.Logger) {
	every(ctx, keepDaysInterval, func() {
		_, err := kv.RunOnceEvery(ctx, meta, "keep-days", keepDaysInterval, func() error {
			for name, u := range upstreams {
				if u.KeepDays <= 0 {
					continue
				}
				n, err := ms.ExpireMirrored(ctx, name, time.Duration(u.KeepDays)*24*time.Hour)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				if n > 0 {
					log.Info("cached images past keep_days forgotten", "upstream", name, "manifests", n, "keep_days", u.KeepDays)
				}
			}
			return nil
		})
		if err != nil && ctx.Err() == nil {
			log.Error("forgetting cached images past keep_days failed", "err", err)
		}
	})
}
