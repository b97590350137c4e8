package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"cove/auth"
	"cove/cache"
)

// Tag retention in Harbor's shapes (HARBOR-API §4): one policy per project; project admins and
// maintainers change it and run it, members read it.

// Retentions runs the projects' retention policies; cache.Retention implements it.
type Retentions interface {
	Policy(ctx context.Context, id int64) (cache.RetentionPolicy, error)
	PolicyOf(ctx context.Context, project string) (int64, error)
	Create(ctx context.Context, p cache.RetentionPolicy) (int64, error)
	Update(ctx context.Context, p cache.RetentionPolicy) error
	Delete(ctx context.Context, id int64) error
	Start(ctx context.Context, id int64, trigger string, dryRun bool) (cache.RetentionRun, error)
	Runs(ctx context.Context, id int64) ([]cache.RetentionRun, error)
	Run(ctx context.Context, id, eid int64) (cache.RetentionRun, error)
	Stop(ctx context.Context, id, eid int64) error
}

type retentionRule struct {
	ID             int                   `json:"id"`
	Priority       int                   `json:"priority"`
	Disabled       bool                  `json:"disabled"`
	Action         string                `json:"action"`
	Template       string                `json:"template"`
	Params         map[string]any        `json:"params"`
	TagSelectors   []selector            `json:"tag_selectors"`
	ScopeSelectors map[string][]selector `json:"scope_selectors"`
}

type retentionPolicy struct {
	ID        int64           `json:"id"`
	Algorithm string          `json:"algorithm"`
	Rules     []retentionRule `json:"rules"`
	Trigger   struct {
		Kind       string         `json:"kind"`
		Settings   map[string]any `json:"settings"`
		References map[string]any `json:"references"`
	} `json:"trigger"`
	Scope struct {
		Level string `json:"level"`
		Ref   int64  `json:"ref"`
	} `json:"scope"`
}

func toRetentionPolicy(p cache.RetentionPolicy, projectID int64) retentionPolicy {
	out := retentionPolicy{ID: p.ID, Algorithm: "or", Rules: []retentionRule{}}
	out.Trigger.Kind, out.Trigger.Settings, out.Trigger.References = "Schedule", map[string]any{"cron": p.Cron}, map[string]any{}
	out.Scope.Level, out.Scope.Ref = "project", projectID
	for _, r := range p.Rules {
		tag, repo := "matches", "repoMatches"
		if r.TagExcludes {
			tag = "excludes"
		}
		if r.RepoExcludes {
			repo = "repoExcludes"
		}
		params := map[string]any{}
		if r.Template != cache.RetainAlways {
			params[r.Template] = r.N
		}
		out.Rules = append(out.Rules, retentionRule{ID: r.ID, Priority: r.Priority, Disabled: r.Disabled, Action: "retain", Template: r.Template,
			Params:         params,
			TagSelectors:   []selector{{Kind: "doublestar", Decoration: tag, Pattern: r.TagPattern, Extras: fmt.Sprintf(`{"untagged":%t}`, r.Untagged)}},
			ScopeSelectors: map[string][]selector{"repository": {{Kind: "doublestar", Decoration: repo, Pattern: r.RepoPattern}}}})
	}
	return out
}

// fromRetentionPolicy reads a policy: each rule with one tag selector and one repository one.
func fromRetentionPolicy(in retentionPolicy) (cache.RetentionPolicy, error) {
	bad := func(format string, a ...any) (cache.RetentionPolicy, error) {
		return cache.RetentionPolicy{}, &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: fmt.Sprintf(format, a...)}
	}
	if in.Algorithm != "" && in.Algorithm != "or" {
		return bad("the algorithm is or")
	}
	if in.Scope.Level != "" && in.Scope.Level != "project" {
		return bad("the scope's level is project")
	}
	p := cache.RetentionPolicy{ID: in.ID}
	if c, ok := in.Trigger.Settings["cron"].(string); ok {
		p.Cron = c
	}
	for i, r := range in.Rules {
		repos := r.ScopeSelectors["repository"]
		if len(r.TagSelectors) != 1 || len(repos) != 1 {
			return bad("rule %d: one tag selector and one repository scope selector", i+1)
		}
		t, rs := r.TagSelectors[0], repos[0]
		if t.Decoration != "matches" && t.Decoration != "excludes" {
			return bad("rule %d: a tag selector's decoration is matches or excludes", i+1)
		}
		if rs.Decoration != "repoMatches" && rs.Decoration != "repoExcludes" {
			return bad("rule %d: a repository selector's decoration is repoMatches or repoExcludes", i+1)
		}
		if r.Action != "" && r.Action != "retain" {
			return bad("rule %d: the action is retain", i+1)
		}
		var extras struct {
			Untagged bool `json:"untagged"`
		}
		if t.Extras != "" {
			if err := json.Unmarshal([]byte(t.Extras), &extras); err != nil {
				return bad("rule %d: extras is a JSON string such as {\"untagged\":true}", i+1)
			}
		}
		n := 0
		if v, ok := r.Params[r.Template]; ok {
			f, ok := v.(float64)
			if !ok || f != float64(int(f)) {
				return bad("rule %d: params.%s is a whole number", i+1, r.Template)
			}
			n = int(f)
		} else if r.Template != cache.RetainAlways {
			return bad("rule %d: params.%s is required", i+1, r.Template)
		}
		p.Rules = append(p.Rules, cache.RetentionRule{Priority: r.Priority, Disabled: r.Disabled, Template: r.Template, N: n,
			TagPattern: t.Pattern, TagExcludes: t.Decoration == "excludes", Untagged: extras.Untagged,
			RepoPattern: rs.Pattern, RepoExcludes: rs.Decoration == "repoExcludes"})
	}
	return p, nil
}

func retentionError(err error) error {
	switch {
	case errors.Is(err, cache.ErrRetentionInvalid):
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: err.Error()}
	case errors.Is(err, cache.ErrRetentionExists):
		return &apiError{Status: http.StatusConflict, Code: "CONFLICT", Message: err.Error()}
	case errors.Is(err, cache.ErrRetentionUnknown):
		return notFound("no such retention policy or execution")
	}
	return err
}

// retentionPolicyOf is the policy of the path's id and its project, once who may do action.
func (s *Server) retentionPolicyOf(r *http.Request, who auth.Principal, action auth.Action) (cache.RetentionPolicy, auth.Project, error) {
	if s.retention == nil {
		return cache.RetentionPolicy{}, auth.Project{}, &apiError{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "retention is not available on this server"}
	}
	id, err := pathID(r, "id")
	if err != nil {
		return cache.RetentionPolicy{}, auth.Project{}, err
	}
	p, err := s.retention.Policy(r.Context(), id)
	if err != nil {
		return p, auth.Project{}, retentionError(err)
	}
	proj, err := s.visible(r.Context(), who, p.Project, true)
	if err != nil {
		return p, proj, notFound("no such retention policy")
	}
	if action != auth.ActionPull {
		err = s.auth.Policy.AuthorizeProject(r.Context(), who, proj.Name, action)
	}
	return p, proj, err
}

func (s *Server) handleCreateRetention(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if s.retention == nil {
		return &apiError{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "retention is not available on this server"}
	}
	var in retentionPolicy
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	proj, err := s.auth.Policy.ProjectByID(r.Context(), in.Scope.Ref)
	if err != nil {
		return notFound("scope.ref: no project with id %d", in.Scope.Ref)
	}
	if _, err := s.visible(r.Context(), who, proj.Name, true); err != nil {
		return err
	}
	if err := s.auth.Policy.AuthorizeProject(r.Context(), who, proj.Name, auth.ActionUpdateProject); err != nil {
		return err
	}
	p, err := fromRetentionPolicy(in)
	if err != nil {
		return err
	}
	p.Project = proj.Name
	id, err := s.retention.Create(r.Context(), p)
	if err != nil {
		return retentionError(err)
	}
	s.record(r, who, "create", "retention", fmt.Sprintf("%s/%d", proj.Name, id), "")
	w.Header().Set("Location", fmt.Sprintf("/api/v2.0/retentions/%d", id))
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (s *Server) handleGetRetention(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, proj, err := s.retentionPolicyOf(r, who, auth.ActionPull)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toRetentionPolicy(p, proj.ID))
}

func (s *Server) handleUpdateRetention(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	old, proj, err := s.retentionPolicyOf(r, who, auth.ActionUpdateProject)
	if err != nil {
		return err
	}
	var in retentionPolicy
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	p, err := fromRetentionPolicy(in)
	if err != nil {
		return err
	}
	p.ID = old.ID
	if err := s.retention.Update(r.Context(), p); err != nil {
		return retentionError(err)
	}
	s.record(r, who, "update", "retention", fmt.Sprintf("%s/%d", proj.Name, p.ID), "")
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) handleDeleteRetention(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, proj, err := s.retentionPolicyOf(r, who, auth.ActionUpdateProject)
	if err != nil {
		return err
	}
	if err := s.retention.Delete(r.Context(), p.ID); err != nil {
		return retentionError(err)
	}
	s.record(r, who, "delete", "retention", fmt.Sprintf("%s/%d", proj.Name, p.ID), "")
	w.WriteHeader(http.StatusOK)
	return nil
}

type retentionExecution struct {
	ID        int64     `json:"id"`
	PolicyID  int64     `json:"policy_id"`
	StartTime time.Time `json:"start_time"`
	EndTime   time.Time `json:"end_time,omitzero"`
	Status    string    `json:"status"`
	Trigger   string    `json:"trigger"`
	DryRun    bool      `json:"dry_run"`
}

func toExecution(e cache.RetentionRun) retentionExecution {
	return retentionExecution{ID: e.ID, PolicyID: e.PolicyID, StartTime: e.Start, EndTime: e.End, Status: e.Status, Trigger: e.Trigger, DryRun: e.DryRun}
}

func (s *Server) handleStartRetention(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, proj, err := s.retentionPolicyOf(r, who, auth.ActionUpdateProject)
	if err != nil {
		return err
	}
	var in struct {
		DryRun bool `json:"dry_run"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	run, err := s.retention.Start(r.Context(), p.ID, "MANUAL", in.DryRun)
	if err != nil {
		return retentionError(err)
	}
	s.record(r, who, "create", "retention-execution", fmt.Sprintf("%s/%d/%d", proj.Name, p.ID, run.ID), fmt.Sprintf("dry_run=%t", in.DryRun))
	w.Header().Set("Location", fmt.Sprintf("/api/v2.0/retentions/%d/executions/%d", p.ID, run.ID))
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (s *Server) handleListRetentionRuns(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, _, err := s.retentionPolicyOf(r, who, auth.ActionPull)
	if err != nil {
		return err
	}
	runs, err := s.retention.Runs(r.Context(), p.ID)
	if err != nil {
		return retentionError(err)
	}
	out := make([]retentionExecution, 0, len(runs))
	for _, e := range runs {
		out = append(out, toExecution(e))
	}
	return writePage(w, r, out)
}

func (s *Server) retentionRun(r *http.Request, who auth.Principal, action auth.Action) (cache.RetentionRun, error) {
	p, _, err := s.retentionPolicyOf(r, who, action)
	if err != nil {
		return cache.RetentionRun{}, err
	}
	eid, err := pathID(r, "eid")
	if err != nil {
		return cache.RetentionRun{}, err
	}
	run, err := s.retention.Run(r.Context(), p.ID, eid)
	return run, retentionError(err)
}

// handleStopRetentionRun stops a run in progress: {"action":"stop"}.
func (s *Server) handleStopRetentionRun(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	run, err := s.retentionRun(r, who, auth.ActionUpdateProject)
	if err != nil {
		return err
	}
	var in struct {
		Action string `json:"action"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	if in.Action != "stop" {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: `the body is {"action":"stop"}`}
	}
	if err := s.retention.Stop(r.Context(), run.PolicyID, run.ID); err != nil {
		return retentionError(err)
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) handleRetentionTasks(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	run, err := s.retentionRun(r, who, auth.ActionPull)
	if err != nil {
		return err
	}
	out := []retentionTask{}
	for _, t := range run.Tasks {
		out = append(out, retentionTask{ID: t.ID, ExecutionID: run.ID, Repository: t.Repository, JobID: fmt.Sprintf("%d-%d", run.ID, t.ID),
			Status: t.Status, StartTime: t.Start, EndTime: t.End, Total: t.Total, Retained: t.Retained})
	}
	return writePage(w, r, out)
}

func (s *Server) handleRetentionTaskLog(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	run, err := s.retentionRun(r, who, auth.ActionPull)
	if err != nil {
		return err
	}
	tid, err := pathID(r, "tid")
	if err != nil {
		return err
	}
	for _, t := range run.Tasks {
		if t.ID == tid {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write([]byte(t.Log))
			return nil
		}
	}
	return notFound("no task %d in execution %d", tid, run.ID)
}

// handleRetentionMetadatas describes the templates and selectors cove takes.
func (s *Server) handleRetentionMetadatas(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	count := []map[string]any{{"type": "int", "unit": "COUNT", "required": true}}
	days := []map[string]any{{"type": "int", "unit": "DAYS", "required": true}}
	return writeJSON(w, http.StatusOK, map[string]any{
		"templates": []map[string]any{
			{"rule_template": cache.RetainLatestPushed, "display_text": "the most recently pushed # artifacts", "action": "retain", "params": count},
			{"rule_template": cache.RetainLatestPulled, "display_text": "the most recently pulled # artifacts", "action": "retain", "params": count},
			{"rule_template": cache.RetainPushedDays, "display_text": "pushed within the last # days", "action": "retain", "params": days},
			{"rule_template": cache.RetainPulledDays, "display_text": "pulled within the last # days", "action": "retain", "params": days},
			{"rule_template": cache.RetainAlways, "display_text": "always", "action": "retain", "params": []map[string]any{}},
		},
		"scope_selectors": []map[string]any{{"display_text": "Repositories", "kind": "doublestar", "decorations": []string{"repoMatches", "repoExcludes"}}},
		"tag_selectors":   []map[string]any{{"display_text": "Tags", "kind": "doublestar", "decorations": []string{"matches", "excludes"}}},
	})
}

// retentionTask is Harbor's RetentionExecutionTask.
type retentionTask struct {
	ID             int64     `json:"id"`
	ExecutionID    int64     `json:"execution_id"`
	Repository     string    `json:"repository"`
	JobID          string    `json:"job_id"`
	Status         string    `json:"status"`
	StatusCode     int       `json:"status_code"`
	StatusRevision int64     `json:"status_revision"`
	StartTime      time.Time `json:"start_time"`
	EndTime        time.Time `json:"end_time,omitzero"`
	Total          int       `json:"total"`
	Retained       int       `json:"retained"`
}
