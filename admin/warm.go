package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"cove/auth"
	"cove/cache"
)

// Pre-warm jobs (issue #14), for system admins: start one with a list of images, follow its
// progress per image. Harbor has no such endpoint; the shapes are cove's own, in Harbor's
// manner (snake_case, 201 with a Location, paged lists).

// Warmer runs pre-warm jobs; mirror.Warmer implements it (passed in by cmd).
type Warmer interface {
	Start(ctx context.Context, req cache.WarmRequest) (cache.WarmJob, error)
	Jobs(ctx context.Context) ([]cache.WarmJob, error)
	Job(ctx context.Context, id int64) (cache.WarmJob, error)
}

// warmReq is the body of POST /api/v2.0/mirror/warm.
type warmReq struct {
	Images    []string `json:"images"`
	Platforms []string `json:"platforms"`
}

func warmError(err error) error {
	switch {
	case errors.Is(err, cache.ErrWarmInvalid):
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: strings.TrimPrefix(err.Error(), cache.ErrWarmInvalid.Error()+": ")}
	case errors.Is(err, cache.ErrWarmBusy):
		return &apiError{Status: http.StatusConflict, Code: "CONFLICT", Message: err.Error()}
	case errors.Is(err, cache.ErrWarmUnknown):
		return notFound("no warm job with that id")
	}
	return err
}

func (s *Server) warmJobs(who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	if s.warm == nil {
		return &apiError{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "pre-warm is not available: cove runs read-only"}
	}
	return nil
}

// handleStartWarm starts a job: 201 with its Location; the job goes on in the background.
func (s *Server) handleStartWarm(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := s.warmJobs(who); err != nil {
		return err
	}
	var req warmReq
	if err := decodeJSONStrict(r, &req); err != nil {
		return err
	}
	job, err := s.warm.Start(r.Context(), cache.WarmRequest{Kind: cache.WarmManual, Operator: who.Name, Images: req.Images, Platforms: req.Platforms})
	if err != nil {
		return warmError(err)
	}
	detail := fmt.Sprintf("images=%s platforms=%s", strings.Join(req.Images, ","), strings.Join(req.Platforms, ","))
	if len(detail) > maxWarmDetail {
		detail = detail[:maxWarmDetail] + "…"
	}
	s.record(r, who, "create", "warm", strconv.FormatInt(job.ID, 10), detail)
	w.Header().Set("Location", fmt.Sprintf("/api/v2.0/mirror/warm/%d", job.ID))
	w.WriteHeader(http.StatusCreated)
	return nil
}

// maxWarmDetail bounds the audit record of a job's start: a hundred long names would be too many.
const maxWarmDetail = 1024

func (s *Server) handleListWarm(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := s.warmJobs(who); err != nil {
		return err
	}
	jobs, err := s.warm.Jobs(r.Context())
	if err != nil {
		return err
	}
	return writePage(w, r, jobs)
}

func (s *Server) handleGetWarm(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := s.warmJobs(who); err != nil {
		return err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	job, err := s.warm.Job(r.Context(), id)
	if err != nil {
		return warmError(err)
	}
	return writeJSON(w, http.StatusOK, job)
}
