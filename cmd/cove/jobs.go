package main

// The background jobs of a running cove that are not the cache's own (garbage collection and
// retention have their loops in cache): keep_days, mirror.warm's schedule, and in a fleet the
// jobs that run once per fleet.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"cove/cache"
	"cove/internal/kv"
	"cove/mirror"
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

// warmSchedule starts mirror.warm's job every cfg.Every, on one node of a fleet: at start when
// the last scheduled warm (its time kept in the metadata store, fleet-wide) is older than Every,
// so that a restart does not warm again early, then each Every. A scheduled warm that has not
// ended when the next is due is not doubled: the next is skipped.
func warmSchedule(ctx context.Context, w *mirror.Warmer, meta kv.DB, cfg WarmConfig, log *slog.Logger) {
	interval := time.Duration(cfg.Every)
	start := func() {
		_, err := kv.RunOnceEvery(ctx, meta, "warm", interval, func() error {
			job, err := w.Start(ctx, cache.WarmRequest{Kind: cache.WarmSchedule, Operator: "system", Images: cfg.Images, Platforms: cfg.Platforms})
			if err != nil {
				return err
			}
			log.Info("scheduled warm started", "id", job.ID, "images", len(cfg.Images), "every", interval.String())
			return nil
		})
		switch {
		case errors.Is(err, cache.ErrWarmBusy):
			log.Warn("a scheduled warm (mirror.warm) was skipped", "err", err)
		case err != nil && ctx.Err() == nil:
			log.Error("the scheduled warm (mirror.warm) did not start", "err", err)
		}
	}
	start()
	every(ctx, min(interval, time.Minute), start)
}
