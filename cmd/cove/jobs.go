package main

// The background jobs of a running cove: garbage collection, and in a fleet the jobs that run
// once per fleet.

import (
	"context"
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
