package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"cove/auth"
	"cove/cache"
	"cove/internal/kv"
	"cove/internal/webhook"
)

// The events of webhooks that come from outside the /v2 and admin handlers: the store's quota
// warnings and refusals, and the ends of retention runs; and the dispatcher's wiring.

// newWebhooks starts the webhooks' dispatcher: events go to a queue in the metadata store and
// are delivered in the background. resource_url names cove by public_url's host, else ln's.
func newWebhooks(cfg Config, meta kv.DB, log *slog.Logger, ln net.Listener, authSvc *auth.Service, store *cache.Store) (*webhook.Dispatcher, error) {
	host := ln.Addr().String()
	if u, err := url.Parse(cfg.PublicURL); err == nil && u.Host != "" {
		host = u.Host
	}
	return webhook.New(webhook.Config{
		DB: meta, Logger: log, AllowPrivate: cfg.Webhooks.AllowPrivateTargets, Host: host,
		Project: func(ctx context.Context, name string) (int64, bool, error) {
			p, err := authSvc.Policy.Project(ctx, name)
			return p.ID, p.Public, err
		},
		RepoCreated: store.Manifests.RepoCreated,
		FirstTag: func(ctx context.Context, repo, dgst string) string {
			a, err := store.Manifests.Artifact(ctx, repo, dgst)
			if err != nil || len(a.Tags) == 0 {
				return ""
			}
			return slices.Min(a.Tags)
		},
	})
}

// quotaEvents tells of a project's quota warnings and refusals: the log, the audit log, and the
// webhooks at most once a minute per project and kind (a push refused blob by blob is one
// event). The audit log and the dispatcher are set once they exist. Safe for concurrent use.
type quotaEvents struct {
	log   *slog.Logger
	audit atomic.Pointer[auth.Audit]
	hooks atomic.Pointer[webhook.Dispatcher]

	mu   sync.Mutex
	sent map[string]time.Time // project and kind → the last webhook event, guarded by mu
}

// event is the store's cache.QuotaEvent: kind is "warning" or "exceeded".
func (q *quotaEvents) event(project, kind string, used, hard int64) {
	q.log.Warn("project quota "+kind, "project", project, "used_bytes", used, "hard_bytes", hard)
	if d := q.hooks.Load(); d != nil && q.first(project+"\x00"+kind) {
		typ, what := webhook.QuotaWarning, "reached 85 % of"
		if kind == "exceeded" {
			typ, what = webhook.QuotaExceed, "refused a write past"
		}
		d.Notify(webhook.Event{Type: typ, Operator: "system", Project: project,
			Details: fmt.Sprintf("project %s %s its quota: %d of %d bytes used", project, what, used, hard)})
	}
	if a := q.audit.Load(); a != nil {
		result := "success"
		if kind == "exceeded" {
			result = "failure" // a write refused
		}
		_ = a.Record(context.Background(), auth.Event{Username: "system", Operation: "quota_" + kind, ResourceType: "quota", Resource: project,
			Detail: fmt.Sprintf("used=%d hard=%d", used, hard), Result: result})
	}
}

// first reports whether key had no webhook event in the last minute, and notes this one.
func (q *quotaEvents) first(key string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	if now.Sub(q.sent[key]) < time.Minute {
		return false
	}
	if q.sent == nil || len(q.sent) > 10_000 {
		q.sent = map[string]time.Time{}
	}
	q.sent[key] = now
	return true
}

// retentionEvents sends TAG_RETENTION for each retention run that ends, but dry runs.
func retentionEvents(d *webhook.Dispatcher) func(cache.RetentionPolicy, cache.RetentionRun) {
	return func(p cache.RetentionPolicy, run cache.RetentionRun) {
		if run.DryRun {
			return
		}
		rt := &webhook.Retention{ProjectName: p.Project, PolicyID: p.ID, Result: "SUCCESS", DeletedArtifact: []webhook.DeletedArtifact{}}
		if run.Status != "Succeed" {
			rt.Result = "FAILURE"
		}
		for _, t := range run.Tasks {
			rt.Total += t.Total
			rt.Retained += t.Retained
		}
		d.Notify(webhook.Event{Type: webhook.TagRetention, Operator: "system", Project: p.Project, Retention: rt})
	}
}
