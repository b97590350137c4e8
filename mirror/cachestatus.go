package mirror

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Every /v2 manifest and blob answer says where it came from in a Cache-Status header (RFC 9211),
// under the cache name "cove"; the access log carries the header's value and
// cove_mirror_cache_status_total counts the outcomes.

// outcome is one way a manifest or blob request was answered: its name in the metric, and its
// Cache-Status value.
type outcome struct{ name, value string }

var (
	// hit: from the cache, the upstream not asked.
	csHit = outcome{"hit", "cove; hit"}
	// miss: fetched from the upstream and stored.
	csMiss = outcome{"miss", "cove; fwd=miss; fwd-status=200; stored"}
	// collapsed: joined a fetch of the same content in progress for another client.
	csCollapsed = outcome{"collapsed", "cove; fwd=miss; fwd-status=200; collapsed"}
	// miss, not stored: a HEAD of a blob that is not cached, answered by the upstream's.
	csMissHead = outcome{"miss", "cove; fwd=miss; fwd-status=200"}
	// confirmed: a blob stored for another repository, served once the upstream said this one
	// has it too.
	csConfirmed = outcome{"hit", "cove; hit; detail=upstream-confirmed"}
	// revalidated: a cached tag past tag_ttl, confirmed by the upstream.
	csRevalidated = outcome{"revalidated", "cove; fwd=stale; fwd-status=200"}
	// updated: a cached tag past tag_ttl that the upstream had moved; the new one stored.
	csUpdated = outcome{"updated", "cove; fwd=stale; fwd-status=200; stored"}
	// reserve: a cached tag past tag_ttl served unasked, the upstream's pulls being under the
	// reserve.
	csReserve = outcome{"reserve", "cove; hit; detail=ratelimit-reserve"}
	// negative: the upstream said "manifest unknown" less than negative_ttl ago.
	csNegative = outcome{"negative", "cove; hit; detail=negative"}
	// bypass: a local project's content, which never goes upstream.
	csBypass = outcome{"bypass", "cove; fwd=bypass"}
)

// csStale: a cached tag past tag_ttl that the upstream could not confirm, served anyway.
func csStale(cause error) outcome {
	return outcome{"stale", "cove; fwd=stale; detail=" + failureDetail(cause)}
}

// csFailed: the answer is an error; from the upstream's, when there was one.
func csFailed(err error) outcome {
	if ue, ok := errors.AsType[*UpstreamError](err); ok {
		if ue.Status != 0 && ue.Down == "" {
			return outcome{"error", "cove; fwd=miss; fwd-status=" + strconv.Itoa(ue.Status)}
		}
		return outcome{"error", "cove; fwd=miss; detail=" + failureDetail(err)}
	}
	code := strings.ReplaceAll(strings.ToLower(string(toError(err).Code)), "_", "-")
	return outcome{"error", "cove; detail=" + code}
}

// failureDetail names why the upstream could not be used, as a Cache-Status detail.
func failureDetail(err error) string {
	ue, ok := errors.AsType[*UpstreamError](err)
	switch {
	case !ok:
		if errors.Is(err, errUpstreamStalled) {
			return downTimeout
		}
		return "upstream-error"
	case ue.Down != "":
		return ue.Down
	case ue.Status == http.StatusTooManyRequests:
		return downThrottled
	case ue.Timeout:
		return downTimeout
	case ue.Status == 0:
		return downUnreachable
	}
	return "upstream-error"
}

// setOutcome says how req was answered: the Cache-Status header (before the status is written)
// and the metric. The last outcome set before the answer is the one that counts.
func (s *Server) setOutcome(w http.ResponseWriter, req request, o outcome) {
	w.Header().Set("Cache-Status", o.value)
	if req.outcome != nil {
		*req.outcome = o
	}
}

// countOutcome counts the outcome of a manifest or blob request once it is answered.
func (s *Server) countOutcome(kind Kind, o outcome) {
	if o.name != "" && (kind == KindManifest || kind == KindBlob) {
		s.metrics.outcomes.WithLabelValues(string(kind), o.name).Inc()
	}
}

// negativeCache remembers, for negative_ttl, the manifests an upstream said it does not have, so
// that a client asking again and again for a missing tag does not spend the pull limit. It is
// this node's memory, bounded.
type negativeCache struct {
	ttl time.Duration // 0: off

	mu      sync.Mutex
	entries map[string]time.Time // key → until when; guarded by mu
}

// maxNegative bounds the negative cache's entries.
const maxNegative = 10000

func (n *negativeCache) add(key string, now time.Time) {
	if n.ttl <= 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.entries == nil {
		n.entries = map[string]time.Time{}
	}
	if len(n.entries) >= maxNegative {
		// The expired go; if that is not enough, a tenth of the others (in the map's random
		// order): a flood of missing names forgets some answers, never all of them at once.
		for k, until := range n.entries {
			if now.After(until) {
				delete(n.entries, k)
			}
		}
		drop := len(n.entries) - maxNegative*9/10
		for k := range n.entries {
			if drop <= 0 {
				break
			}
			delete(n.entries, k)
			drop--
		}
	}
	n.entries[key] = now.Add(n.ttl)
}

func (n *negativeCache) has(key string, now time.Time) bool {
	if n.ttl <= 0 {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	until, ok := n.entries[key]
	if ok && !now.Before(until) {
		delete(n.entries, key)
		return false
	}
	return ok
}
