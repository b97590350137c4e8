package admin

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"cove/auth"
)

// user is a user in Harbor's JSON shape. It never carries a password or a hash.
type user struct {
	UserID       int64     `json:"user_id"`
	Username     string    `json:"username"`
	Email        string    `json:"email"`
	Realname     string    `json:"realname"`
	SysadminFlag bool      `json:"sysadmin_flag"`
	LDAP         bool      `json:"ldap,omitempty"`
	CreationTime time.Time `json:"creation_time"`
	UpdateTime   time.Time `json:"update_time"`
}

func toUser(u auth.User) user {
	return user{UserID: u.ID, Username: u.Name, Email: u.Email, Realname: u.Realname, SysadminFlag: u.Admin, LDAP: u.LDAP, CreationTime: u.Created, UpdateTime: u.Updated}
}

// handleCreateUser creates a local user: a system admin may; anyone may when self-registration
// is on. Nobody becomes an admin this way (docs/SECURITY.md 10).
func (s *Server) handleCreateUser(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if !who.Admin && !s.auth.Policy.Settings(r.Context()).SelfRegistration {
		if who.Anonymous() {
			return auth.ErrUnauthenticated
		}
		return auth.ErrDenied
	}
	var req userReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	u, err := s.auth.Identity.CreateUser(r.Context(), auth.User{Name: req.Username, Email: req.Email, Realname: req.Realname}, req.Password)
	if err != nil {
		return err
	}
	actor := who
	if actor.Anonymous() {
		actor.Name = u.Name // self-registration
	}
	s.record(r, actor, "create", "user", u.Name, "")
	w.Header().Set("Location", fmt.Sprintf("/api/v2.0/users/%d", u.ID))
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (s *Server) handleListUsers(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	q := r.URL.Query()
	page, size, err := pageParams(q)
	if err != nil {
		return err
	}
	users, err := s.auth.Identity.Users(r.Context())
	if err != nil {
		return err
	}
	name := q.Get("username")
	var matched []user
	for _, u := range users {
		if name == "" || strings.Contains(u.Name, name) {
			matched = append(matched, toUser(u))
		}
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(len(matched)))
	from := min((page-1)*size, len(matched))
	to := min(from+size, len(matched))
	out := append([]user{}, matched[from:to]...)
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleCurrentUser(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireUser(who); err != nil {
		return err
	}
	u, err := s.auth.Identity.User(r.Context(), who.Name)
	if err != nil {
		return err
	}
	out := toUser(u)
	out.SysadminFlag = who.Admin // an LDAP admin group counts
	return writeJSON(w, http.StatusOK, out)
}

// targetUser finds the user of the path; a non-admin may address only itself, and learns nothing
// about other ids.
func (s *Server) targetUser(r *http.Request, who auth.Principal) (auth.User, error) {
	if err := requireUser(who); err != nil {
		return auth.User{}, err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return auth.User{}, err
	}
	u, err := s.auth.Identity.UserByID(r.Context(), id)
	if err != nil || (!who.Admin && u.Name != who.Name) {
		if err != nil && !errors.Is(err, auth.ErrNotFound) {
			return auth.User{}, err
		}
		if !who.Admin {
			return auth.User{}, auth.ErrDenied
		}
		return auth.User{}, err
	}
	return u, nil
}

func (s *Server) handleGetUser(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	u, err := s.targetUser(r, who)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toUser(u))
}

// handleSetPassword changes a password: one's own with the old password, anyone's as an admin.
func (s *Server) handleSetPassword(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	u, err := s.targetUser(r, who)
	if err != nil {
		return err
	}
	var req passwordReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if u.Name == who.Name {
		if _, err := s.auth.Identity.Login(r.Context(), u.Name, req.OldPassword, auth.RemoteHost(r)); err != nil {
			return &apiError{Status: http.StatusForbidden, Code: "FORBIDDEN", Message: "the old password is wrong"}
		}
	}
	if err := s.auth.Identity.SetPassword(r.Context(), u.Name, req.NewPassword); err != nil {
		return err
	}
	s.record(r, who, "update", "user", u.Name, "password changed")
	// The change ends every session and token of the account (docs/SECURITY.md 16). A user who
	// changed their own password on the admin page stays signed in there, with a new session.
	if _, err := r.Cookie(auth.SessionCookie); err == nil && u.Name == who.Name && r.Header.Get("Authorization") == "" {
		if p, err := s.auth.Identity.CheckPassword(r.Context(), u.Name, req.NewPassword); err == nil {
			if err := s.auth.Identity.NewSession(r.Context(), w, r, p); err != nil {
				s.log.WarnContext(r.Context(), "renewing the session after a password change", "err", err)
			}
		}
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) handleSetSysadmin(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	u, err := s.targetUser(r, who)
	if err != nil {
		return err
	}
	var req sysadminReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if u.Name == auth.AdminName && !req.SysadminFlag {
		return &apiError{Status: http.StatusForbidden, Code: "FORBIDDEN", Message: "the built-in admin stays an admin"}
	}
	if err := s.auth.Identity.SetAdmin(r.Context(), u.Name, req.SysadminFlag); err != nil {
		return err
	}
	s.record(r, who, "update", "user", u.Name, fmt.Sprintf("sysadmin=%t", req.SysadminFlag))
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) handleDeleteUser(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	u, err := s.targetUser(r, who)
	if err != nil {
		return err
	}
	if u.Name == who.Name || u.Name == auth.AdminName {
		return &apiError{Status: http.StatusForbidden, Code: "FORBIDDEN", Message: "this user cannot be deleted"}
	}
	if err := s.auth.DeleteUser(r.Context(), u.Name); err != nil {
		return err
	}
	s.record(r, who, "delete", "user", u.Name, "")
	w.WriteHeader(http.StatusOK)
	return nil
}

type userReq struct {
	Username string `json:"username"`
	Email    string `json:"email"`
	Realname string `json:"realname"`
	Password string `json:"password"`
}

type passwordReq struct {
	OldPassword string `json:"old_password"`
	NewPassword string `json:"new_password"`
}

type sysadminReq struct {
	SysadminFlag bool `json:"sysadmin_flag"`
}
