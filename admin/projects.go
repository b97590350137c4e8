package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"cove/auth"
)

// Projects in Harbor's shapes: create, list, get, change, delete, and how a request finds the
// project it names.

type project struct {
	ProjectID    int64             `json:"project_id"`
	Name         string            `json:"name"`
	OwnerName    string            `json:"owner_name"`
	CreationTime time.Time         `json:"creation_time"`
	UpdateTime   time.Time         `json:"update_time"`
	RepoCount    int               `json:"repo_count"`
	Metadata     map[string]string `json:"metadata"`
	// As Harbor has them: the caller's role, and the fields of features cove has not (charts,
	// proxy-cache projects, soft deletes).
	CurrentUserRoleID  int   `json:"current_user_role_id"`
	CurrentUserRoleIDs []int `json:"current_user_role_ids"`
	ChartCount         int   `json:"chart_count"`
	RegistryID         int64 `json:"registry_id"`
	Deleted            bool  `json:"deleted"`
	Togglable          bool  `json:"togglable"`
}

// projectMetadata is a project's metadata as Harbor has it: public, and retention_id when the
// project has a retention policy.
func (s *Server) projectMetadata(ctx context.Context, p auth.Project) map[string]string {
	md := map[string]string{"public": strconv.FormatBool(p.Public)}
	if s.retention != nil {
		if id, err := s.retention.PolicyOf(ctx, p.Name); err == nil && id > 0 {
			md["retention_id"] = strconv.FormatInt(id, 10)
		}
	}
	return md
}

// toProject is p in Harbor's shape, as who sees it (current_user_role_id is who's role in it, 0
// for none).
func (s *Server) toProject(ctx context.Context, who auth.Principal, p auth.Project) (project, error) {
	n, err := s.repos.CountRepositories(ctx, p.Name+"/")
	if err != nil {
		return project{}, err
	}
	role := int(s.auth.Policy.RoleOf(ctx, who, p.Name))
	roles := []int{}
	if role != 0 {
		roles = append(roles, role)
	}
	return project{
		ProjectID: p.ID, Name: p.Name, OwnerName: p.Owner,
		CreationTime: p.Created, UpdateTime: p.Updated, RepoCount: n,
		Metadata:          s.projectMetadata(ctx, p),
		CurrentUserRoleID: role, CurrentUserRoleIDs: roles, Togglable: true,
	}, nil
}

// flexBool accepts Harbor's "true"/"false" strings as well as JSON booleans.
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	v, err := strconv.ParseBool(strings.Trim(string(data), `"`))
	if err != nil {
		return fmt.Errorf("want true or false, got %s", data)
	}
	*b = flexBool(v)
	return nil
}

func (s *Server) handleCreateProject(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireUser(who); err != nil {
		return err
	}
	if !who.Admin && s.auth.Policy.Settings(r.Context()).ProjectCreation != "everyone" {
		return &apiError{Status: http.StatusForbidden, Code: "FORBIDDEN", Message: "only system admins create projects (project_creation_restriction: adminonly)"}
	}
	var req projectReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	limit := int64(-1) // the default: none; only system admins set another (as Harbor)
	if req.StorageLimit != nil && *req.StorageLimit != 0 && who.Admin {
		if err := storageLimit(*req.StorageLimit); err != nil {
			return err
		}
		limit = *req.StorageLimit
	}
	public := false
	switch {
	case req.Metadata.Public != nil:
		public = bool(*req.Metadata.Public)
	case req.Public != nil:
		public = bool(*req.Public)
	}
	// Content left by a project deleted while a push was landing must not reappear in a new
	// project of the same name, which could be public. (An upstream's name is refused by
	// CreateProject, for what it is, not for the mirror's repositories under it.)
	if exists, _ := s.auth.Policy.ProjectExists(r.Context(), req.ProjectName); auth.ValidProjectName(req.ProjectName) && !exists && !slices.Contains(s.upstreams, req.ProjectName) {
		if n, err := s.repos.CountRepositories(r.Context(), req.ProjectName+"/"); err != nil {
			return err
		} else if n > 0 {
			return &apiError{Status: http.StatusConflict, Code: "CONFLICT", Message: fmt.Sprintf("repositories of a former project %s remain; they must be removed first", req.ProjectName)}
		}
	}
	p, err := s.auth.Policy.CreateProject(r.Context(), req.ProjectName, public, who.Name)
	if err != nil {
		return err
	}
	// The creator manages the project (Harbor does the same).
	if !who.Admin {
		if _, err := s.auth.Policy.AddMember(r.Context(), p.Name, auth.MemberUser, who.Name, auth.RoleProjectAdmin); err != nil {
			return err
		}
		s.record(r, who, "create", "member", p.Name+"/"+who.Name, "role=projectAdmin (creator)")
	}
	if s.quotas != nil {
		if _, err := s.quotas.SetQuota(r.Context(), p.Name, limit); err != nil {
			return err
		}
	}
	s.record(r, who, "create", "project", p.Name, fmt.Sprintf("public=%t storage_limit=%d", p.Public, limit))
	s.log.InfoContext(r.Context(), "project created", "project", p.Name, "public", p.Public, "by", who.Name)
	w.Header().Set("Location", fmt.Sprintf("/api/v2.0/projects/%d", p.ID))
	w.WriteHeader(http.StatusCreated)
	return nil
}

// lookup finds a project by name, or by id when the path holds a number that names none.
func (s *Server) lookup(ctx context.Context, nameOrID string, isName bool) (auth.Project, error) {
	p, err := s.auth.Policy.Project(ctx, nameOrID)
	if errors.Is(err, auth.ErrProjectUnknown) && !isName {
		if id, perr := strconv.ParseInt(nameOrID, 10, 64); perr == nil {
			return s.auth.Policy.ProjectByID(ctx, id)
		}
	}
	return p, err
}

// visible finds a project that who may see; others look missing or ask for a login.
func (s *Server) visible(ctx context.Context, who auth.Principal, nameOrID string, isName bool) (auth.Project, error) {
	p, err := s.lookup(ctx, nameOrID, isName)
	if err != nil {
		if errors.Is(err, auth.ErrProjectUnknown) && who.Anonymous() {
			return auth.Project{}, auth.ErrUnauthenticated
		}
		return auth.Project{}, err
	}
	if err := s.auth.Policy.AuthorizeProject(ctx, who, p.Name, auth.ActionPull); err != nil {
		if who.Anonymous() {
			return auth.Project{}, auth.ErrUnauthenticated
		}
		return auth.Project{}, auth.ErrProjectUnknown
	}
	return p, nil
}

func (s *Server) handleGetProject(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, err := s.visible(r.Context(), who, r.PathValue("name"), r.Header.Get("X-Is-Resource-Name") == "true")
	if err != nil {
		return err
	}
	out, err := s.toProject(r.Context(), who, p)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// handleHeadProject answers Harbor's existence check, HEAD /projects?project_name=…
func (s *Server) handleHeadProject(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	name := r.URL.Query().Get("project_name")
	if name == "" {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "project_name is required"}
	}
	if _, err := s.visible(r.Context(), who, name, true); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) handleListProjects(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	q := r.URL.Query()
	name := q.Get("name")
	publicFilter := q.Get("public")
	all, err := s.auth.Policy.Projects(r.Context(), who, func(p auth.Project) bool {
		if name != "" && !strings.Contains(p.Name, name) {
			return false
		}
		if publicFilter != "" && strconv.FormatBool(p.Public) != publicFilter {
			return false
		}
		return true
	})
	if err != nil {
		return err
	}
	from, to, err := pageOf(w, r, len(all)) // only the page's projects are counted
	if err != nil {
		return err
	}
	out := []project{}
	for _, p := range all[from:to] {
		hp, err := s.toProject(r.Context(), who, p)
		if err != nil {
			return err
		}
		out = append(out, hp)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleUpdateProject(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, err := s.visible(r.Context(), who, r.PathValue("name"), r.Header.Get("X-Is-Resource-Name") == "true")
	if err != nil {
		return err
	}
	if err := s.auth.Policy.AuthorizeProject(r.Context(), who, p.Name, auth.ActionUpdateProject); err != nil {
		return err
	}
	var req projectUpdateReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Metadata.Public == nil {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "metadata.public is required"}
	}
	p, err = s.auth.Policy.SetProjectPublic(r.Context(), p.Name, bool(*req.Metadata.Public))
	if err != nil {
		return err
	}
	s.record(r, who, "update", "project", p.Name, fmt.Sprintf("public=%t", p.Public))
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) handleDeleteProject(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, err := s.visible(r.Context(), who, r.PathValue("name"), r.Header.Get("X-Is-Resource-Name") == "true")
	if err != nil {
		return err
	}
	if err := s.auth.Policy.AuthorizeProject(r.Context(), who, p.Name, auth.ActionDeleteProject); err != nil {
		return err
	}
	n, err := s.repos.CountRepositories(r.Context(), p.Name+"/")
	if err != nil {
		return err
	}
	if n > 0 {
		return &apiError{Status: http.StatusPreconditionFailed, Code: "PRECONDITION", Message: fmt.Sprintf("project %s still has %d repositories; delete them first", p.Name, n)}
	}
	if err := s.auth.Policy.DeleteProject(r.Context(), p.Name); err != nil {
		return err
	}
	if s.retention != nil {
		if id, err := s.retention.PolicyOf(r.Context(), p.Name); err == nil && id > 0 {
			if err := s.retention.Delete(r.Context(), id); err != nil {
				s.log.ErrorContext(r.Context(), "removing a deleted project's retention policy", "project", p.Name, "err", err)
			}
		}
	}
	if s.hooks != nil {
		if err := s.hooks.DeleteProject(r.Context(), p.ID); err != nil {
			s.log.ErrorContext(r.Context(), "removing a deleted project's webhook policies", "project", p.Name, "err", err)
		}
	}
	if s.quotas != nil {
		if err := s.quotas.DeleteQuota(r.Context(), p.Name); err != nil {
			s.log.ErrorContext(r.Context(), "removing a deleted project's quota", "project", p.Name, "err", err)
		}
	}
	s.record(r, who, "delete", "project", p.Name, "")
	s.log.InfoContext(r.Context(), "project deleted", "project", p.Name, "by", who.Name)
	w.WriteHeader(http.StatusOK)
	return nil
}

type projectReq struct {
	ProjectName string `json:"project_name"`
	Public      *flexBool
	Metadata    struct {
		Public *flexBool `json:"public"`
	} `json:"metadata"`
	StorageLimit *int64 `json:"storage_limit"`
}

type projectUpdateReq struct {
	Metadata struct {
		Public *flexBool `json:"public"`
	} `json:"metadata"`
}
