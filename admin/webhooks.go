package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"cove/auth"
	"cove/internal/webhook"
)

// Webhook policies in Harbor's shape (HARBOR-API §6): a project's, managed by its project admins
// and read by its maintainers; and the system's (/system/webhook/policies, system admins), which
// the pulls of mirrored images — which have no project — go to. The delivery history is Harbor's
// current one: executions of a policy, their tasks, a task's log.

// Webhooks is the dispatcher's store of policies; webhook.Policies implements it.
type Webhooks interface {
	List(ctx context.Context, projectID int64) ([]webhook.Policy, error)
	Get(ctx context.Context, projectID, id int64) (webhook.Policy, error)
	Create(ctx context.Context, projectID int64, projectName string, p webhook.Policy, creator string) (webhook.Policy, error)
	Update(ctx context.Context, projectID, id int64, p webhook.Policy) (webhook.Policy, error)
	Delete(ctx context.Context, projectID, id int64) error
	DeleteProject(ctx context.Context, projectID int64) error
	Executions(ctx context.Context, policyID int64) ([]webhook.Execution, error)
	Tasks(ctx context.Context, policyID, execID int64) ([]webhook.Task, error)
	TaskLog(ctx context.Context, policyID, execID, taskID int64) (string, error)
}

// Notifier takes events for webhooks, without blocking; webhook.Dispatcher implements it.
type Notifier interface {
	Notify(e webhook.Event)
}

// event hands an artifact's delete to the webhooks.
func (s *Server) event(r *http.Request, who auth.Principal, typ, repo, dgst, tag string) {
	if s.events != nil {
		s.events.Notify(webhook.Event{Type: typ, Operator: who.Name, Repo: repo, Digest: dgst, Tag: tag})
	}
}

var errNoWebhooks = &apiError{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "webhooks are not available: cove runs read-only"}

func webhookError(err error) error {
	switch {
	case errors.Is(err, webhook.ErrInvalid):
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: err.Error()}
	case errors.Is(err, webhook.ErrExists):
		return &apiError{Status: http.StatusConflict, Code: "CONFLICT", Message: err.Error()}
	case errors.Is(err, webhook.ErrNotFound), errors.Is(err, webhook.ErrNoExecution):
		return notFound("%s", err.Error())
	}
	return err
}

// hookScope is the project a webhook request is about (id 0: the system), once who may do
// action there: reading needs a maintainer (or more), changing a project admin; the system's
// policies are the system admins'.
func (s *Server) hookScope(r *http.Request, who auth.Principal, manage bool) (int64, string, error) {
	if s.hooks == nil {
		return 0, "", errNoWebhooks
	}
	name := r.PathValue("name")
	if name == "" {
		return 0, "", requireAdmin(who)
	}
	p, err := s.visible(r.Context(), who, name, r.Header.Get("X-Is-Resource-Name") == "true")
	if err != nil {
		return 0, "", err
	}
	action := auth.ActionReadWebhooks
	if manage {
		action = auth.ActionManageWebhooks
	}
	if err := s.auth.Policy.AuthorizeProject(r.Context(), who, p.Name, action); err != nil {
		return 0, "", err
	}
	return p.ID, p.Name, nil
}

// hookPath is hookScope, and the policy id of the request's path.
func (s *Server) hookPath(r *http.Request, who auth.Principal, manage bool) (int64, string, int64, error) {
	pid, project, err := s.hookScope(r, who, manage)
	if err != nil {
		return 0, "", 0, err
	}
	id, err := pathID(r, "id")
	return pid, project, id, err
}

// hookBase is the path of the policies of a request's scope.
func hookBase(project string) string {
	if project == "" {
		return "/api/v2.0/system/webhook/policies"
	}
	return "/api/v2.0/projects/" + project + "/webhook/policies"
}

func (s *Server) handleListWebhooks(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	pid, _, err := s.hookScope(r, who, false)
	if err != nil {
		return err
	}
	list, err := s.hooks.List(r.Context(), pid)
	if err != nil {
		return err
	}
	return writePage(w, r, list)
}

func (s *Server) handleGetWebhook(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	pid, _, id, err := s.hookPath(r, who, false)
	if err != nil {
		return err
	}
	p, err := s.hooks.Get(r.Context(), pid, id)
	if err != nil {
		return webhookError(err)
	}
	return writeJSON(w, http.StatusOK, p)
}

func (s *Server) handleCreateWebhook(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	pid, project, err := s.hookScope(r, who, true)
	if err != nil {
		return err
	}
	var in webhook.Policy
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	p, err := s.hooks.Create(r.Context(), pid, project, in, who.Name)
	if err != nil {
		return webhookError(err)
	}
	s.record(r, who, "create", "webhook", fmt.Sprintf("%s/%d", project, p.ID), p.Name)
	w.Header().Set("Location", hookBase(r.PathValue("name"))+"/"+strconv.FormatInt(p.ID, 10))
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (s *Server) handleUpdateWebhook(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	pid, project, id, err := s.hookPath(r, who, true)
	if err != nil {
		return err
	}
	var in webhook.Policy
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	p, err := s.hooks.Update(r.Context(), pid, id, in)
	if err != nil {
		return webhookError(err)
	}
	s.record(r, who, "update", "webhook", fmt.Sprintf("%s/%d", project, id), p.Name)
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) handleDeleteWebhook(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	pid, project, id, err := s.hookPath(r, who, true)
	if err != nil {
		return err
	}
	if err := s.hooks.Delete(r.Context(), pid, id); err != nil {
		return webhookError(err)
	}
	s.record(r, who, "delete", "webhook", fmt.Sprintf("%s/%d", project, id), "")
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleWebhookEvents lists the event types cove fires and how it notifies (Harbor: notify_type).
func (s *Server) handleWebhookEvents(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if _, _, err := s.hookScope(r, who, false); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"event_type": webhook.EventTypes, "notify_type": []string{"http"}, "payload_formats": []map[string]any{
			{"notify_type": "http", "formats": []string{webhook.FormatDefault, webhook.FormatCloudEvents}}},
	})
}

// hookPolicy is the policy of a history request, once it belongs to the request's scope.
func (s *Server) hookPolicy(r *http.Request, who auth.Principal) (int64, error) {
	pid, _, id, err := s.hookPath(r, who, false)
	if err != nil {
		return 0, err
	}
	if _, err := s.hooks.Get(r.Context(), pid, id); err != nil {
		return 0, webhookError(err)
	}
	return id, nil
}

func (s *Server) handleWebhookExecutions(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	id, err := s.hookPolicy(r, who)
	if err != nil {
		return err
	}
	list, err := s.hooks.Executions(r.Context(), id)
	if err != nil {
		return err
	}
	return writePage(w, r, list)
}

func (s *Server) handleWebhookTasks(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	id, err := s.hookPolicy(r, who)
	if err != nil {
		return err
	}
	eid, err := pathID(r, "eid")
	if err != nil {
		return err
	}
	list, err := s.hooks.Tasks(r.Context(), id, eid)
	if err != nil {
		return webhookError(err)
	}
	return writePage(w, r, list)
}

func (s *Server) handleWebhookTaskLog(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	id, err := s.hookPolicy(r, who)
	if err != nil {
		return err
	}
	eid, err := pathID(r, "eid")
	if err != nil {
		return err
	}
	tid, err := pathID(r, "tid")
	if err != nil {
		return err
	}
	log, err := s.hooks.TaskLog(r.Context(), id, eid, tid)
	if err != nil {
		return webhookError(err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, err = w.Write([]byte(log))
	return err
}
