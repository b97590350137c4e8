package admin

import (
	"context"
	"net/http"
	"time"

	"cove/auth"
)

// Node is one node of the fleet, as GET /api/v2.0/cluster/nodes lists it (cove's own endpoint:
// Harbor has none).
type Node struct {
	Name          string    `json:"name"`
	AdvertiseURL  string    `json:"advertise_url"`
	Version       string    `json:"version"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	Live          bool      `json:"live"`
}

// handleNodes lists the fleet's nodes, for system admins.
func (s *Server) handleNodes(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	if s.nodes == nil {
		return writeJSON(w, http.StatusOK, []Node{})
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	nodes, err := s.nodes(ctx)
	if err != nil {
		return err
	}
	if nodes == nil {
		nodes = []Node{}
	}
	return writeJSON(w, http.StatusOK, nodes)
}
