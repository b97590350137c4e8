package admin

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"cove/auth"
	"cove/cache"
)

// Browser is what the API reads of the store to show repositories; cache.Manifests implements it.
type Browser interface {
	RepositorySummaries(ctx context.Context, prefix string) ([]cache.RepoSummary, error)
	Artifacts(ctx context.Context, repo string) ([]cache.Artifact, error)
}

// Evictor empties the mirror's cache and counts it; cache.Evictor implements it.
type Evictor interface {
	EvictRepository(ctx context.Context, repo string) (int, error)
	Stats() (bytes, evicted int64)
}

// MirrorStatus is the mirror's state for the dashboard; cmd fills it from the mirror.
type MirrorStatus struct {
	Hits          int64            `json:"hits"`
	Misses        int64            `json:"misses"`
	BytesCache    int64            `json:"bytes_from_cache"`
	BytesUpstream int64            `json:"bytes_from_upstream"`
	Upstreams     []UpstreamStatus `json:"upstreams"`
}

// UpstreamStatus is one upstream's health, as the node that answers sees it.
type UpstreamStatus struct {
	Name               string    `json:"name"`
	URL                string    `json:"url"`
	Healthy            bool      `json:"healthy"`
	RateLimitRemaining int64     `json:"ratelimit_remaining"`
	LastOK             time.Time `json:"last_ok,omitzero"`
	LastError          time.Time `json:"last_error,omitzero"`
	// Down: the circuit is open, requests fail at once until DownUntil; DownReason is
	// upstream-timeout, upstream-unreachable, pull-limit or throttled.
	Down       bool      `json:"down"`
	DownReason string    `json:"down_reason,omitempty"`
	DownSince  time.Time `json:"down_since,omitzero"`
	DownUntil  time.Time `json:"down_until,omitzero"`
	// RateLimit is Docker Hub's pull limit as last seen; nil when the upstream never sent one.
	RateLimit *RateLimit `json:"ratelimit,omitempty"`
}

// RateLimit is an upstream's pull limit: ratelimit-limit and ratelimit-remaining, the window,
// docker-ratelimit-source, the account cove pulls with, and when the window is full again at the
// latest. Saving is true while the remaining pulls are under ratelimit_reserve: cached tags are
// then served without revalidation.
type RateLimit struct {
	Limit         int64     `json:"limit"`
	Remaining     int64     `json:"remaining"`
	WindowSeconds int64     `json:"window_seconds"`
	Source        string    `json:"source,omitempty"`
	Credential    string    `json:"credential"`
	Seen          time.Time `json:"seen"`
	Reset         time.Time `json:"reset,omitzero"`
	Saving        bool      `json:"saving"`
}

// mirrorStatus is the dashboard's data: the mirror's counters and the cache's size.
type mirrorStatus struct {
	MirrorStatus
	CacheBytes int64          `json:"cache_bytes"`
	MaxBytes   int64          `json:"max_bytes"`
	Evictions  int64          `json:"evictions"`
	HitRatio   float64        `json:"hit_ratio"`
	History    []historyPoint `json:"history"`
}

func (s *Server) status() mirrorStatus {
	st := mirrorStatus{MaxBytes: s.maxMirrored}
	if s.mirror != nil {
		st.MirrorStatus = s.mirror()
	}
	st.CacheBytes, st.Evictions = s.evict.Stats()
	if total := st.Hits + st.Misses; total > 0 {
		st.HitRatio = float64(st.Hits) / float64(total)
	}
	st.History = s.history.points(st.Hits, st.Misses)
	return st
}

func (s *Server) handleMirrorStatus(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.status())
}

// mirrorRepository is a cached upstream repository.
type mirrorRepository struct {
	repository
	Upstream string   `json:"upstream"`
	Tags     []string `json:"tags"`
}

func (s *Server) mirrorRepositories(ctx context.Context) ([]mirrorRepository, error) {
	out := []mirrorRepository{}
	for _, up := range s.upstreams {
		sums, err := s.browse.RepositorySummaries(ctx, up+"/")
		if err != nil {
			return nil, err
		}
		for _, sum := range sums {
			mr := mirrorRepository{repository: toRepository(0, sum), Upstream: up, Tags: []string{}}
			arts, err := s.browse.Artifacts(ctx, sum.Name)
			if err != nil {
				return nil, err
			}
			for _, a := range arts {
				mr.Tags = append(mr.Tags, a.Tags...)
			}
			out = append(out, mr)
		}
	}
	return out, nil
}

func (s *Server) handleMirrorRepositories(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	out, err := s.mirrorRepositories(r.Context())
	if err != nil {
		return err
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(len(out)))
	return writeJSON(w, http.StatusOK, out)
}

// handleEvictRepository evicts one cached upstream repository: DELETE …?name=docker.io/library/alpine.
func (s *Server) handleEvictRepository(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	name := r.URL.Query().Get("name")
	if !cache.IsMirrored(name, s.upstreams) {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "name must be a cached upstream repository such as docker.io/library/alpine"}
	}
	n, err := s.evict.EvictRepository(r.Context(), name)
	if err != nil {
		if errors.Is(err, cache.ErrNameUnknown) {
			return &apiError{Status: http.StatusNotFound, Code: "NOT_FOUND", Message: "no such cached repository"}
		}
		return err
	}
	s.record(r, who, "delete", "repository", name, "evicted, "+strconv.Itoa(n)+" blobs freed")
	w.WriteHeader(http.StatusOK)
	return nil
}
