package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"cove/auth"
	"cove/internal/mail"
)

// E-mail: the settings (Harbor's email_* keys of /configurations over cove's email: keys), a
// test mail (POST /api/v2.0/email/ping), and password reset by mail for local accounts.

// Outbox runs mail jobs in the background (mail.Outbox).
type Outbox interface {
	Submit(job func(ctx context.Context)) bool
}

// harborEmailKeys names cove's email: keys as Harbor's configurations API does; starttls is
// cove's own (Harbor's email_ssl false means "STARTTLS when offered").
var harborEmailKeys = map[string]string{
	"server": "email_host", "port": "email_port", "username": "email_username", "password": "email_password",
	"from": "email_from", "ssl": "email_ssl", "starttls": "email_starttls", "insecure_skip_verify": "email_insecure",
}

// emailGiven says whether the request sets an e-mail key.
func (e settingsReq) emailGiven() bool {
	return e.EmailHost != nil || e.EmailPort != nil || e.EmailUsername != nil || e.EmailPassword != nil || e.EmailFrom != nil ||
		e.EmailSSL != nil || e.EmailStartTLS != nil || e.EmailInsecure != nil || e.EmailIdentity != nil
}

func (e settingsReq) emailChange() auth.EmailChange {
	return auth.EmailChange{Server: e.EmailHost, Port: e.EmailPort, Username: e.EmailUsername, Password: e.EmailPassword, From: e.EmailFrom,
		SSL: e.EmailSSL, StartTLS: e.EmailStartTLS, InsecureSkipVerify: e.EmailInsecure}
}

// check refuses what would be wrong against cur, the settings in effect, before anything is
// stored. A new server (or port, or user) needs its password in the same request: the stored
// one is never sent to another server than the one it was given for.
func (e settingsReq) checkEmail(cur mail.Config) error {
	if e.EmailIdentity != nil && *e.EmailIdentity != "" {
		return badRequest("email_identity: cove authenticates as email_username; leave email_identity empty")
	}
	next := e.emailChange().Over(cur)
	moved := next.Server != cur.Server || next.Addr() != cur.Addr() || next.Username != cur.Username
	if moved && e.EmailPassword == nil && cur.Password != "" {
		return badRequest("email_password: give the password for the new email_host, email_port or email_username in the same request (the stored one is not sent to another server)")
	}
	if p := next.Validate(); len(p) > 0 {
		return emailProblems(p)
	}
	return nil
}

func badRequest(msg string) error {
	return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: msg}
}

// emailProblems says what is wrong with e-mail settings in the API's key names.
func emailProblems(p []mail.Problem) error {
	var s []string
	for _, pr := range p {
		s = append(s, harborEmailKeys[pr.Key]+": "+pr.Msg)
	}
	return badRequest(strings.Join(s, "; "))
}

// emailSettings are the email_* items of GET /configurations: never the password.
func emailSettings(cfg mail.Config) map[string]setting {
	return map[string]setting{
		"email_host": {Value: cfg.Server, Editable: true}, "email_port": {Value: portOf(cfg), Editable: true},
		"email_username": {Value: cfg.Username, Editable: true}, "email_from": {Value: cfg.From, Editable: true},
		"email_ssl": {Value: cfg.SSL, Editable: true}, "email_starttls": {Value: cfg.StartTLS, Editable: true},
		"email_insecure": {Value: cfg.InsecureSkipVerify, Editable: true},
	}
}

// portOf is the port in effect (the default when none is set).
func portOf(cfg mail.Config) int {
	if cfg.Port != 0 {
		return cfg.Port
	}
	if cfg.SSL {
		return 465
	}
	return 25
}

// emailAudit describes a change of the e-mail settings for the audit log: the password only as
// changed.
func emailAudit(e settingsReq, next mail.Config) string {
	var d []string
	if e.EmailHost != nil {
		d = append(d, "email_host="+next.Server)
	}
	if e.EmailPort != nil {
		d = append(d, fmt.Sprintf("email_port=%d", portOf(next)))
	}
	if e.EmailUsername != nil {
		d = append(d, "email_username="+next.Username)
	}
	if e.EmailPassword != nil {
		d = append(d, "email_password=(changed)")
	}
	if e.EmailFrom != nil {
		d = append(d, "email_from="+next.From)
	}
	if e.EmailSSL != nil || e.EmailStartTLS != nil || e.EmailInsecure != nil {
		d = append(d, fmt.Sprintf("email_ssl=%t email_starttls=%t email_insecure=%t", next.SSL, next.StartTLS, next.InsecureSkipVerify))
	}
	return strings.Join(d, " ")
}

// emailPingReq is the body of POST /api/v2.0/email/ping.
type emailPingReq struct {
	To string `json:"to"` // default: the caller's own address
}

// resetReq is the body of POST /api/v2.0/users/password-reset.
type resetReq struct {
	Email string `json:"email"`
}

// resetConfirmReq is the body of POST /api/v2.0/users/password-reset/confirm.
type resetConfirmReq struct {
	Token       string `json:"token"`
	NewPassword string `json:"new_password"`
}

// handleEmailPing sends a test mail with the saved settings to the address given ({"to": …}) or
// to the caller's own. Harbor's ping takes settings in the body and only connects; cove tests
// what it will use, so a body naming settings is refused, as for the LDAP ping.
func (s *Server) handleEmailPing(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	var req emailPingReq
	if r.ContentLength != 0 {
		if err := decodeJSONStrict(r, &req); err != nil {
			if strings.Contains(err.Error(), `"email_`) {
				return badRequest(`cove sends the test mail with its saved settings (change them with PUT /api/v2.0/configurations); the body takes only {"to": "address"}`)
			}
			return err
		}
	}
	cfg, err := s.auth.Policy.EmailSettings(r.Context())
	if err != nil {
		return err
	}
	if !cfg.Configured() {
		return badRequest("no SMTP server is set: set email.server in the configuration or email_host through PUT /api/v2.0/configurations")
	}
	to := strings.TrimSpace(req.To)
	if to == "" {
		if u, err := s.auth.Identity.User(r.Context(), who.Name); err == nil {
			to = strings.TrimSpace(u.Email)
		}
	}
	if to == "" {
		return badRequest(`give the address to send to ({"to": "address"}), or set an e-mail on your account`)
	}
	if _, err := mail.ParseBareAddress(to); err != nil {
		return badRequest("to: " + err.Error())
	}
	msg := mail.Message{To: to, Subject: "cove: test mail", Body: fmt.Sprintf(
		"This is a test mail from cove, sent by %s at %s.\nIf you read this, cove can send mail (password reset links) through %s.\n",
		who.Name, time.Now().UTC().Format(time.RFC3339), cfg.Addr())}
	if err := mail.Send(r.Context(), cfg, msg); err != nil {
		return &apiError{Status: http.StatusBadGateway, Code: "EMAIL_FAILED", Message: "the test mail was not sent: " + err.Error()}
	}
	s.record(r, who, "create", "settings", "email-ping", "test mail to "+to)
	return writeJSON(w, http.StatusOK, map[string]any{"success": true, "message": "a test mail went to " + to + " through " + cfg.Addr()})
}

// resetAvailable says whether password reset by mail is set up: a mail server, and public_url
// for the link (the request's Host is never used: anyone can send any Host, and a link to their
// site would hand them the token).
func (s *Server) resetAvailable(ctx context.Context) bool {
	if s.outbox == nil || s.publicURL == "" {
		return false
	}
	cfg, err := s.auth.Policy.EmailSettings(ctx)
	return err == nil && cfg.Configured()
}

var errResetUnavailable = &apiError{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE",
	Message: "password reset by e-mail is not set up on this registry: an administrator must set email.server and public_url"}

// handleRequestReset mails a reset link to each local account with the address given. The
// answer is 202 with no body, at once, whether or not an account has the address, whether or
// not it is over its limit: the lookup and the mail happen in the background, so neither the
// answer nor its timing tells which addresses have accounts.
func (s *Server) handleRequestReset(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	var req resetReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	addr, err := mail.ParseBareAddress(strings.TrimSpace(req.Email))
	if err != nil {
		return badRequest("email: " + err.Error())
	}
	if !s.resetAvailable(r.Context()) {
		return errResetUnavailable
	}
	l := s.web.localeFor(r) // the mail speaks the language of the page that asked
	from := auth.RemoteHost(r)
	if !s.outbox.Submit(func(ctx context.Context) { s.sendResets(ctx, addr, from, l) }) {
		s.log.WarnContext(r.Context(), "password reset: the mail queue is full; no mail")
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// sendResets issues the reset tokens of addr and mails each its link; it runs in the Outbox.
func (s *Server) sendResets(ctx context.Context, addr, from string, l locale) {
	tickets, err := s.auth.Identity.IssuePasswordResets(ctx, addr)
	if errors.Is(err, auth.ErrResetLimited) {
		s.log.WarnContext(ctx, "password reset: no mail", "reason", err.Error())
		return
	}
	if err != nil {
		s.log.ErrorContext(ctx, "password reset: issuing tokens", "err", err)
		return
	}
	if len(tickets) == 0 {
		return
	}
	cfg, err := s.auth.Policy.EmailSettings(ctx)
	if err != nil {
		s.log.ErrorContext(ctx, "password reset: reading the e-mail settings", "err", err)
		return
	}
	base := strings.TrimRight(s.publicURL, "/")
	for _, tk := range tickets {
		// The token goes in the fragment: browsers never send it, so it reaches no access log
		// and no Referer; the page's script reads it.
		link := base + "/reset-password#token=" + tk.Token
		msg := mail.Message{To: strings.TrimSpace(tk.User.Email), Subject: l.T("mail.reset.subject"),
			Body: l.T("mail.reset.body", tk.User.Name, base, link, int(auth.ResetTTL/time.Minute))}
		if err := mail.Send(ctx, cfg, msg); err != nil {
			s.log.ErrorContext(ctx, "password reset: the mail was not sent", "user", tk.User.Name, "err", err)
			continue
		}
		if s.audit != nil {
			e := auth.Event{Username: tk.User.Name, Address: from, Operation: "create", ResourceType: "user", Resource: tk.User.Name,
				Detail: "password reset link mailed", Result: "success"}
			if err := s.audit.Record(ctx, e); err != nil {
				s.log.ErrorContext(ctx, "writing an audit record", "err", err)
			}
		}
	}
}

// handleConfirmReset sets a new password with a mailed token ({"token", "new_password"}): once,
// under the password policy; the account's sessions and tokens end.
func (s *Server) handleConfirmReset(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	var req resetConfirmReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	u, err := s.auth.Identity.ResetPassword(r.Context(), strings.TrimSpace(req.Token), req.NewPassword)
	if err != nil {
		return err
	}
	s.record(r, auth.Principal{Name: u.Name}, "update", "user", u.Name, "password reset through a mailed link")
	w.WriteHeader(http.StatusOK)
	return nil
}
