package mirror

import (
	"sort"
	"time"
)

// Status is what the mirror has done since start, for the admin page's dashboard.
type Status struct {
	Hits, Misses                  int64
	BytesFromCache, BytesUpstream int64
	Upstreams                     []UpstreamStatus
}

// UpstreamStatus is one upstream's health as last seen (by this node).
type UpstreamStatus struct {
	Name, URL string
	// Healthy is false when the last request failed (no answer, 5xx or 429) after the last success.
	Healthy bool
	// RateLimitRemaining is Docker Hub's ratelimit-remaining as last seen, -1 when never seen.
	RateLimitRemaining int64
	LastOK, LastError  time.Time
	// Down is true while the circuit is open: requests fail at once until DownUntil. DownReason
	// says why (upstream-timeout, upstream-unreachable, pull-limit, throttled); DownSince is when
	// it opened.
	Down                 bool
	DownReason           string
	DownUntil, DownSince time.Time
	PullLimit            PullLimit
	// Saving is true while the remaining pulls are under the reserve: cached tags are served
	// without asking the upstream.
	Saving bool
}

// Status reports the mirror's counters and its upstreams' health.
func (s *Server) Status() Status {
	st := Status{
		Hits: s.metrics.nHits.Load(), Misses: s.metrics.nMisses.Load(),
		BytesFromCache: s.metrics.nBytesCache.Load(), BytesUpstream: s.metrics.nBytesUpstream.Load(),
	}
	now := s.now()
	for _, u := range s.upstreams {
		pl := u.pulls.get()
		us := UpstreamStatus{Name: u.Name, URL: u.URL, RateLimitRemaining: pl.Remaining, PullLimit: pl, Saving: u.pulls.low(now)}
		us.Down, us.DownReason, us.DownUntil, us.DownSince = u.circuit.state(now)
		if !us.Down {
			us.DownReason, us.DownUntil, us.DownSince = "", time.Time{}, time.Time{}
		}
		if t := u.lastOK.Load(); t > 0 {
			us.LastOK = time.Unix(0, t)
		}
		if t := u.lastErr.Load(); t > 0 {
			us.LastError = time.Unix(0, t)
		}
		us.Healthy = !us.LastError.After(us.LastOK)
		st.Upstreams = append(st.Upstreams, us)
	}
	sort.Slice(st.Upstreams, func(i, j int) bool { return st.Upstreams[i].Name < st.Upstreams[j].Name })
	return st
}

// UpstreamNames lists the configured upstreams.
func (s *Server) UpstreamNames() []string {
	var names []string
	for n := range s.upstreams {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
