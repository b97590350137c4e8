package admin

import (
	"fmt"
	"net/http"

	"cove/auth"
)

// setting is one configuration item in Harbor's shape.
type setting struct {
	Value    any  `json:"value"`
	Editable bool `json:"editable"`
}

func (s *Server) handleGetSettings(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	cur := s.auth.Policy.Settings(r.Context())
	return writeJSON(w, http.StatusOK, map[string]setting{
		"self_registration":            {Value: cur.SelfRegistration, Editable: true},
		"anonymous_pull":               {Value: cur.AnonymousPull, Editable: true},
		"project_creation_restriction": {Value: cur.ProjectCreation, Editable: true},
	})
}

// handlePutSettings changes the settings given, leaving the others; unknown keys are refused.
func (s *Server) handlePutSettings(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	var req settingsReq
	if err := decodeJSONStrict(r, &req); err != nil {
		return err
	}
	next, err := s.auth.Policy.UpdateSettings(r.Context(), func(st *auth.Settings) {
		if req.SelfRegistration != nil {
			st.SelfRegistration = *req.SelfRegistration
		}
		if req.AnonymousPull != nil {
			st.AnonymousPull = *req.AnonymousPull
		}
		if req.ProjectCreation != nil {
			st.ProjectCreation = *req.ProjectCreation
		}
	})
	if err != nil {
		return err
	}
	s.record(r, who, "update", "settings", "configurations", fmt.Sprintf("self_registration=%t anonymous_pull=%s project_creation_restriction=%s",
		next.SelfRegistration, next.AnonymousPull, next.ProjectCreation))
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleRotateKey starts signing registry tokens with a new key (cove's own endpoint; Harbor has
// none). Tokens signed with the old key keep working until they expire.
func (s *Server) handleRotateKey(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	kid, err := s.auth.Tokens.RotateTokenKey(r.Context())
	if err != nil {
		return err
	}
	s.record(r, who, "update", "settings", "token-key", "new key "+kid)
	return writeJSON(w, http.StatusOK, map[string]string{"kid": kid})
}

// handleRenewTLS forces a renewal of the ACME certificates now (cove's own endpoint).
func (s *Server) handleRenewTLS(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	if s.certs == nil {
		return &apiError{Status: http.StatusConflict, Code: "CONFLICT", Message: "TLS is off"}
	}
	if err := s.certs.Renew(r.Context()); err != nil {
		s.log.ErrorContext(r.Context(), "certificate renewal failed", "err", err)
		return &apiError{Status: http.StatusBadGateway, Code: "RENEWAL_FAILED", Message: "the certificate could not be renewed; see cove's log"}
	}
	s.record(r, who, "update", "settings", "tls-certificate", "renewed")
	w.WriteHeader(http.StatusOK)
	return nil
}

type settingsReq struct {
	SelfRegistration *bool   `json:"self_registration"`
	AnonymousPull    *string `json:"anonymous_pull"`
	ProjectCreation  *string `json:"project_creation_restriction"`
}
