package main

// Opening where cove keeps things: the metadata store, the shared blob store of a fleet, and the
// node's membership in its fleet.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"cove/admin"
	"cove/cache"
	"cove/internal/blobstore"
	"cove/internal/cluster"
	"cove/internal/kv"
)

// openMetadata opens the metadata store of storage.metadata: the badger index under data/index
// (read-only on a full disk), or PostgreSQL. ping tells readiness whether it answers; closeMeta
// closes what was opened.
func openMetadata(ctx context.Context, cfg Config, minFree int64, minFreePct float64, log *slog.Logger) (
	meta kv.DB, ping func(context.Context) error, readOnly bool, space func(string) (int64, int64, error), closeMeta func(), err error) {
	if cfg.Storage.Metadata.Kind == "postgres" {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		pg, err := kv.OpenPostgres(pctx, cfg.Storage.Metadata.Postgres.DSN)
		if err != nil {
			return nil, nil, false, nil, nil, err // the error names storage.metadata.postgres.dsn
		}
		log.Info("metadata in PostgreSQL", "schema_version", kv.SchemaVersion())
		return pg, func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			return pg.Ping(ctx)
		}, false, nil, func() { pg.Close() }, nil
	}
	ix, err := cache.OpenIndex(cfg.Data, minFree, minFreePct, log)
	if err != nil {
		return nil, nil, false, nil, nil, err
	}
	b := kv.NewBadger(ix.DB) // the metadata seam: badger on one node
	return b, func(context.Context) error { return nil }, ix.ReadOnly, ix.DiskSpace, func() {
		if ix.Room() && !ix.ReadOnly {
			b.Close() // gives back the sequences' unused numbers: a write
		}
		if err := ix.Close(); err != nil {
			log.Error("close the index", "err", err)
		}
	}, nil
}

// joinFleet makes this node a member of its fleet (nil on a single node).
func joinFleet(ctx context.Context, cfg Config, meta kv.DB, log *slog.Logger) (*cluster.Member, error) {
	if !cfg.fleet() {
		return nil, nil
	}
	name := cfg.Cluster.NodeName
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("cluster.node_name: not set, and the host name is unknown: %w", err)
		}
		name = h
	}
	ver, _, _ := versionInfo()
	m, err := cluster.Join(ctx, meta, cluster.Node{Name: name, Advertise: cfg.Cluster.Advertise, Version: ver}, cfg.Cluster.Secret, log)
	if err != nil {
		return nil, err
	}
	log.Info("joined the fleet", "node", name, "advertise", cfg.Cluster.Advertise)
	return m, nil
}

// fleetNodes lists the fleet's nodes for the admin API (nil on a single node).
func fleetNodes(m *cluster.Member) func(context.Context) ([]admin.Node, error) {
	if m == nil {
		return nil
	}
	return func(ctx context.Context) ([]admin.Node, error) {
		nodes, err := m.Nodes(ctx)
		out := make([]admin.Node, 0, len(nodes))
		for _, n := range nodes {
			out = append(out, admin.Node{Name: n.Name, AdvertiseURL: n.Advertise, Version: n.Version, LastHeartbeat: n.Seen, Live: n.Live})
		}
		return out, err
	}
}

// openBlobStore connects to the shared blob store of storage.blobs.kind s3 and checks its bucket
// (nil for filesystem): a bucket that is missing or refuses the credentials fails the start
// naming the key.
func openBlobStore(ctx context.Context, cfg Config, log *slog.Logger) (blobstore.Store, error) {
	if cfg.Storage.Blobs.Kind != "s3" {
		return nil, nil
	}
	s3, err := blobstore.NewS3(cfg.Storage.Blobs.S3.blobstore())
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s3.Check(cctx); err != nil {
		return nil, err
	}
	log.Info("blobs in S3", "endpoint", redact(cfg.Storage.Blobs.S3.Endpoint), "bucket", cfg.Storage.Blobs.S3.Bucket,
		"prefix", cfg.Storage.Blobs.S3.Prefix, "hot_tier_max_size", int64(cfg.Storage.HotTierMaxSize))
	return s3, nil
}
