package admin

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"cove/auth"
)

// member is a project member in Harbor's JSON shape.
type member struct {
	ID         int64     `json:"id"`
	ProjectID  int64     `json:"project_id"`
	EntityName string    `json:"entity_name"`
	EntityType string    `json:"entity_type"` // u or g
	RoleID     int       `json:"role_id"`
	RoleName   string    `json:"role_name"`
	Created    time.Time `json:"creation_time"`
}

func toMember(p auth.Project, m auth.Member) member {
	return member{ID: m.ID, ProjectID: p.ID, EntityName: m.Name, EntityType: m.Kind, RoleID: int(m.Role), RoleName: m.Role.Name(), Created: m.Created}
}

// memberProject finds the project of a members request that who may see, and checks that who may
// do action there (read-members or read-logs to read, manage-members to change them).
func (s *Server) memberProject(r *http.Request, who auth.Principal, action auth.Action) (auth.Project, error) {
	if err := requireUser(who); err != nil {
		return auth.Project{}, err
	}
	p, err := s.visible(r.Context(), who, r.PathValue("name"), r.Header.Get("X-Is-Resource-Name") == "true")
	if err != nil {
		return auth.Project{}, err
	}
	if err := s.auth.Policy.AuthorizeProject(r.Context(), who, p.Name, action); err != nil {
		return auth.Project{}, err
	}
	return p, nil
}

// memberOf is the project and member id a /members/{id} request names, once who may act on it.
func (s *Server) memberOf(r *http.Request, who auth.Principal, action auth.Action) (auth.Project, int64, error) {
	p, err := s.memberProject(r, who, action)
	if err != nil {
		return p, 0, err
	}
	id, err := pathID(r, "id")
	return p, id, err
}

func (s *Server) handleListMembers(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, err := s.memberProject(r, who, auth.ActionReadMembers)
	if err != nil {
		return err
	}
	ms, err := s.auth.Policy.Members(r.Context(), p.Name)
	if err != nil {
		return err
	}
	out := []member{}
	q := r.URL.Query().Get("entityname")
	for _, m := range ms {
		if q == "" || m.Name == q {
			out = append(out, toMember(p, m))
		}
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(len(out)))
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleAddMember(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, err := s.memberProject(r, who, auth.ActionManageMembers)
	if err != nil {
		return err
	}
	var req memberReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	var kind, name string
	switch {
	case req.MemberUser != nil:
		kind, name = auth.MemberUser, req.MemberUser.Username
	case req.MemberGroup != nil:
		kind, name = auth.MemberGroup, req.MemberGroup.GroupName
		if req.MemberGroup.LdapDN != "" {
			name = req.MemberGroup.LdapDN
		}
	default:
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "member_user or member_group is required"}
	}
	m, err := s.auth.Policy.AddMember(r.Context(), p.Name, kind, name, auth.Role(req.RoleID))
	if err != nil {
		return err
	}
	s.record(r, who, "create", "member", p.Name+"/"+name, "role="+m.Role.Name())
	w.Header().Set("Location", fmt.Sprintf("/api/v2.0/projects/%s/members/%d", p.Name, m.ID))
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (s *Server) handleGetMember(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, id, err := s.memberOf(r, who, auth.ActionReadMembers)
	if err != nil {
		return err
	}
	m, err := s.auth.Policy.MemberByID(r.Context(), p.Name, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toMember(p, m))
}

func (s *Server) handleUpdateMember(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, id, err := s.memberOf(r, who, auth.ActionManageMembers)
	if err != nil {
		return err
	}
	var req roleReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	m, err := s.auth.Policy.SetMemberRole(r.Context(), p.Name, id, auth.Role(req.RoleID))
	if err != nil {
		return err
	}
	s.record(r, who, "update", "member", p.Name+"/"+m.Name, "role="+m.Role.Name())
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) handleRemoveMember(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, id, err := s.memberOf(r, who, auth.ActionManageMembers)
	if err != nil {
		return err
	}
	m, err := s.auth.Policy.RemoveMember(r.Context(), p.Name, id)
	if err != nil {
		return err
	}
	s.record(r, who, "delete", "member", p.Name+"/"+m.Name, "")
	w.WriteHeader(http.StatusOK)
	return nil
}

type memberReq struct {
	RoleID     int `json:"role_id"`
	MemberUser *struct {
		Username string `json:"username"`
	} `json:"member_user"`
	MemberGroup *struct {
		GroupName string `json:"group_name"`
		LdapDN    string `json:"ldap_group_dn"`
	} `json:"member_group"`
}

type roleReq struct {
	RoleID int `json:"role_id"`
}
