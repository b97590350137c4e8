package admin

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"cove/auth"
)

// robot is a robot account in Harbor's JSON shape; the secret appears only in the answer to its
// creation.
type robot struct {
	ID           int64             `json:"id"`
	Name         string            `json:"name"`
	Secret       string            `json:"secret,omitempty"`
	Description  string            `json:"description,omitempty"`
	Level        string            `json:"level"`
	Duration     int64             `json:"duration"`
	ExpiresAt    int64             `json:"expires_at"` // unix seconds, -1 never
	Disable      bool              `json:"disable"`
	CreationTime time.Time         `json:"creation_time"`
	Permissions  []robotPermission `json:"permissions"`
}

type robotPermission struct {
	Kind      string        `json:"kind"`
	Namespace string        `json:"namespace"`
	Access    []robotAccess `json:"access"`
}

type robotAccess struct {
	Resource string `json:"resource"`
	Action   string `json:"action"`
}

func toRobot(r auth.Robot) robot {
	out := robot{ID: r.ID, Name: r.Name, Description: r.Description, Level: "project", ExpiresAt: -1, Duration: -1, Disable: r.Disabled, CreationTime: r.Created}
	if !r.ExpiresAt.IsZero() {
		out.ExpiresAt = r.ExpiresAt.Unix()
		out.Duration = int64(r.ExpiresAt.Sub(r.Created) / (24 * time.Hour))
	}
	perm := robotPermission{Kind: "project", Namespace: r.Project}
	for _, a := range r.Actions {
		perm.Access = append(perm.Access, robotAccess{Resource: "repository", Action: string(a)})
	}
	out.Permissions = []robotPermission{perm}
	return out
}

// handleCreateRobot creates a project robot account: by a system admin or the project's admin.
// Duration is in days; -1 (or 0) means it never expires.
func (s *Server) handleCreateRobot(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireUser(who); err != nil {
		return err
	}
	var req robotReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Level != "" && req.Level != "project" || len(req.Permissions) != 1 || req.Permissions[0].Kind != "project" {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "a robot account has one permission of kind project"}
	}
	perm := req.Permissions[0]
	p, err := s.visible(r.Context(), who, perm.Namespace, true)
	if err != nil {
		return err
	}
	if err := s.auth.Policy.AuthorizeProject(r.Context(), who, p.Name, auth.ActionManageMembers); err != nil {
		return err
	}
	var actions []auth.Action
	for _, a := range perm.Access {
		if a.Resource != "repository" {
			return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: fmt.Sprintf("resource %q: robots act on repositories", a.Resource)}
		}
		actions = append(actions, auth.Action(a.Action))
	}
	var ttl time.Duration
	if req.Duration > 0 {
		ttl = time.Duration(req.Duration) * 24 * time.Hour
	}
	rb, secret, err := s.auth.CreateRobot(r.Context(), p.Name, req.Name, actions, ttl, req.Description)
	if err != nil {
		return err
	}
	s.record(r, who, "create", "robot", rb.Name, "")
	out := toRobot(rb)
	out.Secret = secret
	w.Header().Set("Location", fmt.Sprintf("/api/v2.0/robots/%d", rb.ID))
	return writeJSON(w, http.StatusCreated, out)
}

// handleListRobots lists the robots the caller may see: all for a system admin, else those of
// the projects where its role reads robots (guest and up, as Harbor). ?project=<name> narrows to
// one project.
func (s *Server) handleListRobots(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireUser(who); err != nil {
		return err
	}
	project := r.URL.Query().Get("project")
	robots, err := s.auth.Identity.Robots(r.Context(), project)
	if err != nil {
		return err
	}
	out := []robot{}
	for _, rb := range robots {
		if s.auth.Policy.AuthorizeProject(r.Context(), who, rb.Project, auth.ActionReadRobots) == nil {
			out = append(out, toRobot(rb))
		}
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(len(out)))
	return writeJSON(w, http.StatusOK, out)
}

// targetRobot finds the robot of the path if the caller may do action in its project (read-robots
// to read it, manage-members to change it); otherwise it does not exist for the caller
// (docs/SECURITY.md 10).
func (s *Server) targetRobot(r *http.Request, who auth.Principal, action auth.Action) (auth.Robot, error) {
	if err := requireUser(who); err != nil {
		return auth.Robot{}, err
	}
	id, err := strconv.ParseInt(strings.TrimSpace(r.PathValue("id")), 10, 64)
	if err != nil {
		return auth.Robot{}, &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "the robot id must be a number"}
	}
	rb, err := s.auth.Identity.RobotByID(r.Context(), id)
	if err != nil {
		return auth.Robot{}, err
	}
	if s.auth.Policy.AuthorizeProject(r.Context(), who, rb.Project, auth.ActionReadRobots) != nil {
		return auth.Robot{}, fmt.Errorf("%w: robot %d", auth.ErrNotFound, id)
	}
	if err := s.auth.Policy.AuthorizeProject(r.Context(), who, rb.Project, action); err != nil {
		return auth.Robot{}, err
	}
	return rb, nil
}

func (s *Server) handleGetRobot(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	rb, err := s.targetRobot(r, who, auth.ActionReadRobots)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toRobot(rb))
}

func (s *Server) handleDeleteRobot(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	rb, err := s.targetRobot(r, who, auth.ActionManageMembers)
	if err != nil {
		return err
	}
	if _, err := s.auth.Identity.DeleteRobot(r.Context(), rb.ID); err != nil {
		return err
	}
	s.record(r, who, "delete", "robot", rb.Name, "")
	w.WriteHeader(http.StatusOK)
	return nil
}

type robotReq struct {
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Level       string            `json:"level"`
	Duration    int64             `json:"duration"`
	Permissions []robotPermission `json:"permissions"`
}
