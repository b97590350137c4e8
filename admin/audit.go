package admin

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"cove/auth"
)

// parseQuery reads Harbor's q parameter: comma-separated key=value pairs, key=~value for a
// substring match, and op_time=[from~to] for a time range ("2006-01-02 15:04:05", UTC).
func parseQuery(q string) (auth.Filter, error) {
	var f auth.Filter
	bad := func(msg string) (auth.Filter, error) {
		return auth.Filter{}, &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "q: " + msg}
	}
	for _, part := range splitQuery(q) {
		key, val, ok := strings.Cut(part, "=")
		if !ok {
			return bad("want key=value, got " + strconv.Quote(part))
		}
		val = strings.TrimPrefix(val, "~")
		switch strings.TrimSpace(key) {
		case "username":
			f.Username = val
		case "operation":
			f.Operation = val
		case "resource_type":
			f.ResourceType = val
		case "resource":
			f.Resource = val
		case "result":
			f.Result = val
		case "op_time":
			from, to, ok := strings.Cut(strings.Trim(val, "[]"), "~")
			if !ok {
				return bad("op_time wants [from~to]")
			}
			var err error
			if f.From, err = parseTime(from); err != nil {
				return bad("op_time: " + err.Error())
			}
			if f.To, err = parseTime(to); err != nil {
				return bad("op_time: " + err.Error())
			}
		default:
			return bad("unknown key " + strconv.Quote(key))
		}
	}
	return f, nil
}

// splitQuery splits on commas outside brackets.
func splitQuery(q string) []string {
	var parts []string
	depth, start := 0, 0
	for i, c := range q {
		switch c {
		case '[':
			depth++
		case ']':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, q[start:i])
				start = i + 1
			}
		}
	}
	if rest := strings.TrimSpace(q[start:]); rest != "" {
		parts = append(parts, rest)
	}
	return parts
}

func parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", time.RFC3339, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "bad time " + strconv.Quote(s)}
}

func (s *Server) queryAudit(w http.ResponseWriter, r *http.Request, f auth.Filter) error {
	q := r.URL.Query()
	page, size, err := pageParams(q)
	if err != nil {
		return err
	}
	events, total, err := s.audit.Query(r.Context(), f, page, size)
	if err != nil {
		return err
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	return writeJSON(w, http.StatusOK, events)
}

// handleAuditLogs is the whole audit log, for system admins.
func (s *Server) handleAuditLogs(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	f, err := parseQuery(r.URL.Query().Get("q"))
	if err != nil {
		return err
	}
	return s.queryAudit(w, r, f)
}

// handleProjectLogs is the audit log of one project's repositories, for its members.
func (s *Server) handleProjectLogs(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, err := s.memberProject(r, who, auth.ActionReadLogs)
	if err != nil {
		return err
	}
	f, err := parseQuery(r.URL.Query().Get("q"))
	if err != nil {
		return err
	}
	f.ResourcePrefix = p.Name + "/"
	return s.queryAudit(w, r, f)
}
