package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"cove/auth"
)

// System endpoints in Harbor's shapes (HARBOR-API §7): systeminfo, volumes, health, statistics,
// search, the caller's permissions, whether a project can be deleted, and the LDAP ping.

// SystemInfo is what cmd tells the API about the process.
type SystemInfo struct {
	Version         string
	PublicURL       string
	StorageProvider string // filesystem or s3
	ReadOnly        bool
	// Health checks each component (nil: the API's own only).
	Health func(ctx context.Context) []HealthComponent
	// Volume reports the data directory's disk.
	Volume func() (free, total int64, err error)
}

// HealthComponent is one component's health, as Harbor's /health lists it.
type HealthComponent struct {
	Name   string `json:"name"`
	Status string `json:"status"` // healthy or unhealthy
	Error  string `json:"error,omitempty"`
}

func (s *Server) handleSystemInfo(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	mode := "db_auth"
	if s.auth.Identity.LDAPMode() {
		mode = "ldap_auth"
	}
	st := s.auth.Policy.Settings(r.Context())
	out := map[string]any{"auth_mode": mode, "self_registration": st.SelfRegistration, "harbor_version": s.system.Version,
		"with_notary": false, "with_chartmuseum": false}
	if !who.Anonymous() { // the rest for those signed in, as Harbor
		registry := s.system.PublicURL
		if registry == "" {
			registry = r.Host
		}
		out["registry_url"] = strings.TrimPrefix(strings.TrimPrefix(registry, "https://"), "http://")
		out["external_url"] = s.system.PublicURL
		out["project_creation_restriction"] = st.ProjectCreation
		out["has_ca_root"] = false
		out["registry_storage_provider_name"] = s.system.StorageProvider
		out["read_only"] = s.system.ReadOnly
		out["notification_enable"] = false
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleVolumes(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	if s.system.Volume == nil {
		return notFound("no volume to report")
	}
	free, total, err := s.system.Volume()
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"storage": []map[string]int64{{"total": total, "free": free}}})
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	comps := []HealthComponent{{Name: "core", Status: "healthy"}}
	if s.system.Health != nil {
		comps = append(comps, s.system.Health(r.Context())...)
	}
	status := "healthy"
	for _, c := range comps {
		if c.Status != "healthy" {
			status = "unhealthy"
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"status": status, "components": comps})
}

// handleStatistics counts the projects and repositories the caller may see; the storage used
// only for system admins.
func (s *Server) handleStatistics(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireUser(who); err != nil {
		return err
	}
	projects, err := s.auth.Policy.Projects(r.Context(), who, func(auth.Project) bool { return true })
	if err != nil {
		return err
	}
	var out struct {
		PrivateProjects int   `json:"private_project_count"`
		PrivateRepos    int   `json:"private_repo_count"`
		PublicProjects  int   `json:"public_project_count"`
		PublicRepos     int   `json:"public_repo_count"`
		TotalProjects   int   `json:"total_project_count"`
		TotalRepos      int   `json:"total_repo_count"`
		Storage         int64 `json:"total_storage_consumption,omitempty"`
	}
	for _, p := range projects {
		n, err := s.repos.CountRepositories(r.Context(), p.Name+"/")
		if err != nil {
			return err
		}
		if p.Public {
			out.PublicProjects++
			out.PublicRepos += n
		} else {
			out.PrivateProjects++
			out.PrivateRepos += n
		}
	}
	out.TotalProjects, out.TotalRepos = out.PublicProjects+out.PrivateProjects, out.PublicRepos+out.PrivateRepos
	if who.Admin && s.stored != nil {
		_, out.Storage = s.stored()
	}
	return writeJSON(w, http.StatusOK, out)
}

// handleSearch finds projects and repositories by name among those the caller may see.
func (s *Server) handleSearch(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	q := r.URL.Query().Get("q")
	if q == "" {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "q is required: the text to look for in names"}
	}
	projects, err := s.auth.Policy.Projects(r.Context(), who, func(auth.Project) bool { return true })
	if err != nil {
		return err
	}
	type repoHit struct {
		ProjectID     int64  `json:"project_id"`
		ProjectName   string `json:"project_name"`
		ProjectPublic bool   `json:"project_public"`
		Name          string `json:"repository_name"`
		PullCount     int64  `json:"pull_count"`
		ArtifactCount int    `json:"artifact_count"`
	}
	out := struct {
		Project    []project `json:"project"`
		Repository []repoHit `json:"repository"`
		Chart      []any     `json:"chart"`
	}{Project: []project{}, Repository: []repoHit{}, Chart: []any{}}
	for _, p := range projects {
		if strings.Contains(p.Name, q) {
			hp, err := s.toProject(r.Context(), who, p)
			if err != nil {
				return err
			}
			out.Project = append(out.Project, hp)
		}
		sums, err := s.browse.RepositorySummaries(r.Context(), p.Name+"/")
		if err != nil {
			return err
		}
		for _, sum := range sums {
			if strings.Contains(sum.Name, q) {
				out.Repository = append(out.Repository, repoHit{ProjectID: p.ID, ProjectName: p.Name, ProjectPublic: p.Public,
					Name: sum.Name, PullCount: sum.Pulls, ArtifactCount: sum.Artifacts})
			}
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// resourceActions maps cove's project actions to Harbor's resource and action names.
var resourceActions = map[auth.Action][][2]string{
	auth.ActionPull:          {{"repository", "pull"}, {"repository", "list"}, {"repository", "read"}, {"artifact", "read"}, {"artifact", "list"}, {"tag", "list"}, {"immutable-tag", "list"}},
	auth.ActionPush:          {{"repository", "push"}, {"repository", "update"}, {"tag", "create"}, {"artifact", "create"}},
	auth.ActionDelete:        {{"repository", "delete"}, {"artifact", "delete"}, {"tag", "delete"}},
	auth.ActionReadMembers:   {{"member", "read"}, {"member", "list"}},
	auth.ActionReadLogs:      {{"log", "list"}},
	auth.ActionReadRobots:    {{"robot", "read"}, {"robot", "list"}},
	auth.ActionManageMembers: {{"member", "create"}, {"member", "update"}, {"member", "delete"}},
	auth.ActionUpdateProject: {{"project", "update"}, {"immutable-tag", "create"}, {"immutable-tag", "update"}, {"immutable-tag", "delete"}},
	auth.ActionDeleteProject: {{"project", "delete"}},
}

// handleCurrentPermissions lists what the caller may do in a scope (?scope=/project/{id}, or
// /system); relative=true drops the scope from the resources.
func (s *Server) handleCurrentPermissions(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireUser(who); err != nil {
		return err
	}
	scope := r.URL.Query().Get("scope")
	relative := r.URL.Query().Get("relative") == "true"
	type perm struct {
		Resource string `json:"resource"`
		Action   string `json:"action"`
	}
	out := []perm{}
	add := func(res, act string) {
		if !relative {
			res = strings.TrimSuffix(scope, "/") + "/" + res
		}
		out = append(out, perm{res, act})
	}
	switch {
	case scope == "/system" || scope == "":
		if who.Admin {
			for _, res := range []string{"project", "user", "audit-log", "configuration", "garbage-collection", "robot"} {
				for _, act := range []string{"create", "read", "update", "delete", "list"} {
					add(res, act)
				}
			}
		}
	case strings.HasPrefix(scope, "/project/"):
		p, err := s.lookup(r.Context(), strings.TrimPrefix(scope, "/project/"), false)
		if err != nil {
			return err
		}
		for _, a := range []auth.Action{auth.ActionPull, auth.ActionPush, auth.ActionDelete, auth.ActionReadMembers, auth.ActionReadLogs,
			auth.ActionReadRobots, auth.ActionManageMembers, auth.ActionUpdateProject, auth.ActionDeleteProject} {
			if s.auth.Policy.AuthorizeProject(r.Context(), who, p.Name, a) == nil {
				for _, ra := range resourceActions[a] {
					add(ra[0], ra[1])
				}
			}
		}
	default:
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: fmt.Sprintf("scope %q: want /system or /project/{id}", scope)}
	}
	return writeJSON(w, http.StatusOK, out)
}

// handleProjectDeletable says whether the project can be deleted now, and why not.
func (s *Server) handleProjectDeletable(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
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
	out := map[string]any{"deletable": n == 0}
	if n > 0 {
		out["message"] = fmt.Sprintf("the project holds repositories (%d): delete them first", n)
	}
	return writeJSON(w, http.StatusOK, out)
}

// handleLDAPPing checks the configured directory: a connection and the service account's bind.
// The directory is set in cove's configuration (auth.ldap), so a body naming another is refused.
func (s *Server) handleLDAPPing(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	var body map[string]any
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &body); err != nil {
			return err
		}
	}
	for k := range body {
		if strings.HasPrefix(k, "ldap_") {
			return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "cove pings the directory of its configuration (auth.ldap); change it there, not in the request"}
		}
	}
	err := s.auth.Identity.PingLDAP(r.Context())
	switch {
	case errors.Is(err, auth.ErrNoDirectory):
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: err.Error()}
	case err != nil:
		return writeJSON(w, http.StatusOK, map[string]any{"success": false, "message": err.Error()})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"success": true, "message": "connected and bound as the service account"})
}
