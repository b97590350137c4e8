package admin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"cove/auth"
	"cove/cache"
)

// Storage quotas of projects (HARBOR-API §3): system admins read and change them; a project's
// summary shows its quota to its members. A quota's id is its project's.

// Quotas keeps the projects' storage quotas; cache.Store implements it.
type Quotas interface {
	SetQuota(ctx context.Context, project string, hard int64) (cache.Quota, error)
	DeleteQuota(ctx context.Context, project string) error
	Quota(ctx context.Context, project string) (cache.Quota, error)
}

type quotaRef struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	OwnerName string `json:"owner_name"`
}

type quota struct {
	ID           int64            `json:"id"`
	Ref          quotaRef         `json:"ref"`
	Hard         map[string]int64 `json:"hard"`
	Used         map[string]int64 `json:"used"`
	CreationTime time.Time        `json:"creation_time"`
	UpdateTime   time.Time        `json:"update_time"`
}

// quotaOf is project p's quota, made (without a limit, its usage counted) when it has none: a
// project from before quotas.
func (s *Server) quotaOf(ctx context.Context, p auth.Project) (quota, error) {
	if s.quotas == nil {
		return quota{}, &apiError{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "quotas are not available on this server"}
	}
	q, err := s.quotas.Quota(ctx, p.Name)
	if errors.Is(err, cache.ErrQuotaUnknown) {
		q, err = s.quotas.SetQuota(ctx, p.Name, -1)
	}
	if err != nil {
		return quota{}, err
	}
	return quota{ID: p.ID, Ref: quotaRef{ID: p.ID, Name: p.Name, OwnerName: p.Owner}, Hard: map[string]int64{"storage": q.Hard},
		Used: map[string]int64{"storage": q.Used}, CreationTime: q.Created, UpdateTime: q.Updated}, nil
}

// storageLimit reads a storage_limit or hard.storage: bytes, or -1 for none.
func storageLimit(n int64) error {
	if n < -1 || n == 0 {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: fmt.Sprintf("a storage limit is a number of bytes, or -1 for none; not %d", n)}
	}
	return nil
}

// handleListQuotas lists the projects' quotas: reference=project and reference_id=<project id>
// filter, sort=used.storage, -used.storage, hard.storage or -hard.storage orders.
func (s *Server) handleListQuotas(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	q := r.URL.Query()
	if ref := q.Get("reference"); ref != "" && ref != "project" {
		return writePage(w, r, []quota{})
	}
	projects, err := s.auth.Policy.Projects(r.Context(), who, func(auth.Project) bool { return true })
	if err != nil {
		return err
	}
	out := []quota{}
	for _, p := range projects {
		if id := q.Get("reference_id"); id != "" && id != strconv.FormatInt(p.ID, 10) {
			continue
		}
		hq, err := s.quotaOf(r.Context(), p)
		if err != nil {
			return err
		}
		out = append(out, hq)
	}
	by := map[string]func(a, b quota) int{
		"used.storage": func(a, b quota) int { return cmp.Compare(a.Used["storage"], b.Used["storage"]) },
		"hard.storage": func(a, b quota) int { return cmp.Compare(a.Hard["storage"], b.Hard["storage"]) },
	}
	if err := sortBy(out, q.Get("sort"), by); err != nil {
		return err
	}
	return writePage(w, r, out)
}

// quotaProject is the project whose quota the path's id names.
func (s *Server) quotaProject(r *http.Request) (auth.Project, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return auth.Project{}, err
	}
	p, err := s.auth.Policy.ProjectByID(r.Context(), id)
	if errors.Is(err, auth.ErrProjectUnknown) {
		return p, notFound("no quota with id %d", id)
	}
	return p, err
}

func (s *Server) handleGetQuota(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	p, err := s.quotaProject(r)
	if err != nil {
		return err
	}
	q, err := s.quotaOf(r.Context(), p)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, q)
}

// handleUpdateQuota sets a project's limit: {"hard": {"storage": bytes or -1}}.
func (s *Server) handleUpdateQuota(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	p, err := s.quotaProject(r)
	if err != nil {
		return err
	}
	var req quotaReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	hard, ok := req.Hard["storage"]
	if !ok || len(req.Hard) != 1 {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: `the body is {"hard": {"storage": bytes or -1}}`}
	}
	if err := storageLimit(hard); err != nil {
		return err
	}
	if _, err := s.quotaOf(r.Context(), p); err != nil { // made if missing
		return err
	}
	if _, err := s.quotas.SetQuota(r.Context(), p.Name, hard); err != nil {
		return err
	}
	s.record(r, who, "update", "quota", p.Name, fmt.Sprintf("storage=%d", hard))
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleProjectSummary is a project's numbers for its members: repositories, members per role,
// and the quota.
func (s *Server) handleProjectSummary(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, err := s.visible(r.Context(), who, r.PathValue("name"), r.Header.Get("X-Is-Resource-Name") == "true")
	if err != nil {
		return err
	}
	n, err := s.repos.CountRepositories(r.Context(), p.Name+"/")
	if err != nil {
		return err
	}
	out := map[string]any{"repo_count": n, "chart_count": 0}
	if s.auth.Policy.AuthorizeProject(r.Context(), who, p.Name, auth.ActionReadMembers) == nil {
		members, err := s.auth.Policy.Members(r.Context(), p.Name)
		if err != nil {
			return err
		}
		counts := map[auth.Role]int{}
		for _, m := range members {
			counts[m.Role]++
		}
		out["project_admin_count"] = counts[auth.RoleProjectAdmin]
		out["maintainer_count"] = counts[auth.RoleMaintainer]
		out["developer_count"] = counts[auth.RoleDeveloper]
		out["guest_count"] = counts[auth.RoleGuest]
		out["limited_guest_count"] = counts[auth.RoleLimitedGuest]
		q, err := s.quotaOf(r.Context(), p)
		if err != nil {
			return err
		}
		out["quota"] = map[string]any{"hard": q.Hard, "used": q.Used}
	}
	return writeJSON(w, http.StatusOK, out)
}

type quotaReq struct {
	Hard map[string]int64 `json:"hard"`
}
