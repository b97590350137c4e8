package admin

import (
	"context"
	"net/http"

	"cove/auth"
	"cove/cache"
)

// Scrubs reads the last scrub's result (cove scrub, or the server's scrub.interval);
// cache.Store implements it.
type Scrubs interface {
	LastScrub(ctx context.Context) (cache.ScrubResult, bool, error)
}

// dashboardProblems is how many of the last scrub's problems the dashboard lists.
const dashboardProblems = 10

// scrubStatus is GET /api/v2.0/system/scrub's answer: the last run, null before the first.
type scrubStatus struct {
	Last *cache.ScrubResult `json:"last"`
}

func (s *Server) handleGetScrub(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	var out scrubStatus
	if s.scrubs != nil {
		res, ok, err := s.scrubs.LastScrub(r.Context())
		if err != nil {
			return err
		}
		if ok {
			out.Last = &res
		}
	}
	return writeJSON(w, http.StatusOK, out)
}
