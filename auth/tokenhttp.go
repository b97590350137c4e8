package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"cove/internal/kv"
	"cove/internal/telemetry"
)

// ServeToken is the token endpoint (/service/token). GET takes Basic credentials or none, with
// service and scope parameters, as Docker sends them; POST takes the OAuth2 form (grant_type
// password or refresh_token), as containerd and docker login send it. The answer carries token and
// access_token (the same JWT), expires_in, issued_at, and a refresh_token when asked for one.
func (ts *Tokens) ServeToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	// Only Basic credentials, a refresh token or nothing: never the admin page's session cookie,
	// which a browser sends along by itself (the same rule as /v2).
	r.Header.Del("Cookie")
	var (
		who     Principal
		scopes  []string
		service string
		offline bool
	)
	// The scopes are read first: a request asking for too many, or for malformed ones, is
	// refused before any password is checked.
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		scopes, service = q["scope"], q.Get("service")
		offline = q.Get("offline_token") == "true"
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			tokenError(w, http.StatusBadRequest, "invalid_request", "the form could not be read")
			return
		}
		scopes, service = r.PostForm["scope"], r.PostForm.Get("service")
		offline = r.PostForm.Get("access_type") == "offline"
	default:
		w.Header().Set("Allow", "GET, POST")
		tokenError(w, http.StatusMethodNotAllowed, "invalid_request", "use GET or POST")
		return
	}
	parsed, err := ParseScopes(scopes)
	if err != nil {
		tokenError(w, http.StatusBadRequest, "invalid_scope", err.Error())
		return
	}
	switch r.Method {
	case http.MethodGet:
		who, err = ts.Authenticate(r.Context(), r)
		if err == nil && who.Token {
			err = errors.New("a bearer token cannot be traded for another")
		}
	case http.MethodPost:
		switch r.PostForm.Get("grant_type") {
		case "password":
			who, err = ts.identity.Login(r.Context(), r.PostForm.Get("username"), r.PostForm.Get("password"), RemoteHost(r))
		case "refresh_token":
			who, err = ts.PrincipalFromRefreshToken(r.Context(), r.PostForm.Get("refresh_token"))
			offline = false // a refresh token never begets another: it lives no longer than it was given
		default:
			tokenError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be password or refresh_token")
			return
		}
	}
	if te := (*TooManyAttemptsError)(nil); errors.As(err, &te) {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(time.Second, te.RetryAfter+time.Second-1)/time.Second)))
		tokenError(w, http.StatusTooManyRequests, "too_many_attempts", err.Error())
		return
	}
	if errors.Is(err, ErrTooManyAttempts) {
		w.Header().Set("Retry-After", RetryAfter(err))
		tokenError(w, http.StatusTooManyRequests, "too_many_attempts", err.Error())
		return
	}
	if errors.Is(err, ErrDirectoryUnavailable) {
		telemetry.SetCause(r.Context(), err)
		tokenError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the user directory cannot be reached")
		return
	}
	if errors.Is(err, kv.ErrUnavailable) {
		// Not a wrong password: said as what it is, so that docker login does not say so.
		telemetry.SetCause(r.Context(), err)
		tokenError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the metadata database (storage.metadata) cannot be reached; retry later")
		return
	}
	if err != nil {
		ts.log.InfoContext(r.Context(), "token refused", "remote", r.RemoteAddr, "err", err)
		tokenError(w, http.StatusUnauthorized, "invalid_grant", "invalid credentials")
		return
	}
	if service == "" {
		service = ts.service
	}
	token, issued, access, err := ts.IssueToken(r.Context(), who, service, parsed)
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			tokenError(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		telemetry.SetCause(r.Context(), fmt.Errorf("issue a token: %w", err))
		if errors.Is(err, kv.ErrUnavailable) {
			tokenError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the metadata database (storage.metadata) cannot be reached; retry later")
			return
		}
		tokenError(w, http.StatusInternalServerError, "server_error", "internal server error")
		return
	}
	resp := map[string]any{
		"token":        token,
		"access_token": token,
		"expires_in":   int(ts.tokenTTL / time.Second),
		"issued_at":    issued.Format(time.RFC3339),
	}
	// A refresh token is issued to users only: a robot logs in with its secret every time (its
	// secret is what expires or is deleted), so for a robot the refresh token is simply left out,
	// as the token spec allows; docker login then keeps the robot's secret itself.
	if offline && !who.Anonymous() && !who.Robot {
		refresh, err := ts.IssueRefreshToken(r.Context(), who)
		if err != nil {
			telemetry.SetCause(r.Context(), fmt.Errorf("issue a refresh token for %s: %w", who.Name, err))
			tokenError(w, http.StatusInternalServerError, "server_error", "internal server error: the refresh token could not be issued; try again, and report it if it persists")
			return
		}
		resp["refresh_token"] = refresh
	}
	// The record, written once the answer is sure to be a success, says what the token grants
	// and what of the asked it refuses.
	granted, refused := grantSummary(access)
	if refused != "" {
		refused = "refused: " + refused
	}
	e := Event{Username: who.Name, Address: RemoteHost(r), Operation: "token", ResourceType: "token", Resource: granted, Detail: refused}
	// Anyone can ask for tokens by the thousand, each for other scopes, and a signed-in client
	// asks for one per pull: at most refusalBurst records a minute per caller and address, the
	// rest summed up with their count.
	ts.events.recordLimited(r.Context(), e)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func tokenError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"error": code, "error_description": message,
		"errors": []map[string]string{{"code": strings.ToUpper(code), "message": message}},
	})
}
