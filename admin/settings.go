package admin

import (
	"errors"
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
	email, err := s.auth.Policy.EmailSettings(r.Context())
	if err != nil {
		return err
	}
	out := emailSettings(email) // never the password
	out["self_registration"] = setting{Value: cur.SelfRegistration, Editable: true}
	out["anonymous_pull"] = setting{Value: cur.AnonymousPull, Editable: true}
	out["project_creation_restriction"] = setting{Value: cur.ProjectCreation, Editable: true}
	return writeJSON(w, http.StatusOK, out)
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
	if req.emailGiven() {
		// Checked before anything is stored: a wrong e-mail key changes no other setting.
		cur, err := s.auth.Policy.EmailSettings(r.Context())
		if err != nil {
			return err
		}
		if err := req.checkEmail(cur); err != nil {
			return err
		}
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
	detail := fmt.Sprintf("self_registration=%t anonymous_pull=%s project_creation_restriction=%s",
		next.SelfRegistration, next.AnonymousPull, next.ProjectCreation)
	if req.emailGiven() {
		email, err := s.auth.Policy.UpdateEmailSettings(r.Context(), req.emailChange())
		var invalid *auth.EmailSettingsError
		if errors.As(err, &invalid) {
			return emailProblems(invalid.Problems)
		}
		if err != nil {
			return err
		}
		detail += " " + emailAudit(req, email)
	}
	s.record(r, who, "update", "settings", "configurations", detail)
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
	// The e-mail keys, Harbor's names over cove's email: keys (email.go).
	EmailHost     *string `json:"email_host"`
	EmailPort     *int    `json:"email_port"`
	EmailUsername *string `json:"email_username"`
	EmailPassword *string `json:"email_password"` // written, never read back
	EmailFrom     *string `json:"email_from"`
	EmailSSL      *bool   `json:"email_ssl"`
	EmailStartTLS *bool   `json:"email_starttls"` // cove's own: Harbor's email_ssl false means "STARTTLS when offered"
	EmailInsecure *bool   `json:"email_insecure"`
	// EmailIdentity is Harbor's PLAIN identity; cove authenticates as email_username, so only an
	// empty one is taken (tools send it empty).
	EmailIdentity *string `json:"email_identity"`
}
