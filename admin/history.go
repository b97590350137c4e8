package admin

import (
	"context"
	"sync"
	"time"
)

// history keeps the mirror's hits and misses per minute for the dashboard's chart: the last
// historyLen minutes, in memory (a restart starts it over).
const historyLen = 60

type historyPoint struct {
	Time   time.Time `json:"time"`
	Hits   int64     `json:"hits"`
	Misses int64     `json:"misses"`
}

type history struct {
	now func() time.Time

	mu sync.Mutex
	// base is the counters at the start of the current minute; pts the finished minutes. Both
	// guarded by mu.
	minute             time.Time
	baseHits, baseMiss int64
	pts                []historyPoint
}

// points records the counters as of now and returns the per-minute history, the current minute
// last.
func (h *history) points(hits, misses int64) []historyPoint {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.now().Truncate(time.Minute)
	if h.minute.IsZero() {
		h.minute = m
	}
	if m.After(h.minute) {
		h.pts = append(h.pts, historyPoint{Time: h.minute, Hits: hits - h.baseHits, Misses: misses - h.baseMiss})
		if len(h.pts) > historyLen {
			h.pts = h.pts[len(h.pts)-historyLen:]
		}
		h.minute, h.baseHits, h.baseMiss = m, hits, misses
	}
	out := append([]historyPoint{}, h.pts...)
	return append(out, historyPoint{Time: h.minute, Hits: hits - h.baseHits, Misses: misses - h.baseMiss})
}

// Sample records the dashboard's history once a minute until ctx ends, so that minutes without a
// visitor are kept too.
func (s *Server) Sample(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.status()
		}
	}
}
