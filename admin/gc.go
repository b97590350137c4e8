package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"cove/auth"
	"cove/cache"
)

// Garbage collection as Harbor's job (HARBOR-API §2), for system admins.

// GCJobs runs garbage collection and keeps its schedule and history; cache.GC implements it.
type GCJobs interface {
	Schedule(ctx context.Context) (cache.GCSchedule, error)
	SetSchedule(ctx context.Context, typ, cron string, p cache.GCParams) (cache.GCSchedule, error)
	Start(ctx context.Context, kind string, p cache.GCParams, sc cache.GCSchedule) (cache.GCRun, error)
	Runs(ctx context.Context) ([]cache.GCRun, error)
	Run(ctx context.Context, id int64) (cache.GCRun, error)
	Log(ctx context.Context, id int64) (string, error)
}

type gcScheduleObj struct {
	Type              string     `json:"type"`
	Cron              string     `json:"cron"`
	NextScheduledTime *time.Time `json:"next_scheduled_time,omitempty"`
}

// gcHistory is Harbor's GCHistory; freed_blobs, freed_bytes and untagged are cove's own.
type gcHistory struct {
	ID            int64         `json:"id"`
	JobName       string        `json:"job_name"`
	JobKind       string        `json:"job_kind"`
	JobParameters string        `json:"job_parameters"`
	Schedule      gcScheduleObj `json:"schedule"`
	JobStatus     string        `json:"job_status"`
	Deleted       bool          `json:"deleted"`
	CreationTime  time.Time     `json:"creation_time"`
	UpdateTime    time.Time     `json:"update_time"`
	FreedBlobs    int           `json:"freed_blobs"`
	FreedBytes    int64         `json:"freed_bytes"`
	Untagged      int           `json:"untagged"`
	DryRun        bool          `json:"dry_run"`
}

func toGCHistory(r cache.GCRun) gcHistory {
	return gcHistory{ID: r.ID, JobName: "GARBAGE_COLLECTION", JobKind: r.Kind, JobParameters: r.Params.String(),
		Schedule: gcScheduleObj{Type: r.Schedule.Type, Cron: r.Schedule.Cron}, JobStatus: r.Status,
		CreationTime: r.Created, UpdateTime: r.Updated, FreedBlobs: r.Blobs, FreedBytes: r.Freed, Untagged: r.Untagged,
		DryRun: r.Params.DryRun}
}

// gcScheduleReq is Harbor's Schedule: {"schedule": {"type", "cron"}, "parameters": {...}}.
type gcScheduleReq struct {
	Schedule struct {
		Type string `json:"type"`
		Cron string `json:"cron"`
	} `json:"schedule"`
	Parameters cache.GCParams `json:"parameters"`
}

func gcError(err error) error {
	switch {
	case errors.Is(err, cache.ErrGCInvalid):
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: err.Error()}
	case errors.Is(err, cache.ErrGCRunning):
		return &apiError{Status: http.StatusConflict, Code: "CONFLICT", Message: "a garbage collection is pending or running: wait for it (GET /api/v2.0/system/gc)"}
	case errors.Is(err, cache.ErrGCUnknown):
		return notFound("no garbage collection with that id")
	}
	return err
}

func (s *Server) gcJobs(who auth.Principal) error {
	if err := requireAdmin(who); err != nil {
		return err
	}
	if s.gc == nil {
		return &apiError{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "garbage collection is not available: cove runs read-only"}
	}
	return nil
}

func (s *Server) handleGetGCSchedule(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := s.gcJobs(who); err != nil {
		return err
	}
	sc, err := s.gc.Schedule(r.Context())
	if err != nil {
		return err
	}
	if sc.Type == cache.GCNone {
		return writeJSON(w, http.StatusOK, struct{}{}) // Harbor answers an empty object
	}
	out := gcHistory{JobName: "GARBAGE_COLLECTION", JobKind: "SCHEDULE", JobParameters: sc.Params.String(),
		Schedule: gcScheduleObj{Type: sc.Type, Cron: sc.Cron}, JobStatus: "Scheduled", CreationTime: sc.Created, UpdateTime: sc.Updated,
		DryRun: sc.Params.DryRun}
	if next := sc.Next(); !next.IsZero() {
		out.Schedule.NextScheduledTime = &next
	}
	return writeJSON(w, http.StatusOK, out)
}

// handleCreateGCSchedule runs garbage collection now (type Manual: 201 with the run's Location),
// or sets a schedule where there is none (else 409: PUT changes it).
func (s *Server) handleCreateGCSchedule(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := s.gcJobs(who); err != nil {
		return err
	}
	var req gcScheduleReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Schedule.Type == cache.GCManual {
		run, err := s.gc.Start(r.Context(), "MANUAL", req.Parameters, cache.GCSchedule{Type: cache.GCManual})
		if err != nil {
			return gcError(err)
		}
		s.record(r, who, "create", "gc", strconv.FormatInt(run.ID, 10), req.Parameters.String())
		w.Header().Set("Location", fmt.Sprintf("/api/v2.0/system/gc/%d", run.ID))
		w.WriteHeader(http.StatusCreated)
		return nil
	}
	sc, err := s.gc.Schedule(r.Context())
	if err != nil {
		return err
	}
	if sc.Type != cache.GCNone && req.Schedule.Type != cache.GCNone {
		return &apiError{Status: http.StatusConflict, Code: "CONFLICT", Message: "a schedule exists: PUT /api/v2.0/system/gc/schedule changes it"}
	}
	return s.setGCSchedule(w, r, who, req, http.StatusCreated)
}

func (s *Server) handleUpdateGCSchedule(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := s.gcJobs(who); err != nil {
		return err
	}
	var req gcScheduleReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Schedule.Type == cache.GCManual {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "Manual is a run, not a schedule: POST it"}
	}
	return s.setGCSchedule(w, r, who, req, http.StatusOK)
}

func (s *Server) setGCSchedule(w http.ResponseWriter, r *http.Request, who auth.Principal, req gcScheduleReq, status int) error {
	sc, err := s.gc.SetSchedule(r.Context(), req.Schedule.Type, req.Schedule.Cron, req.Parameters)
	if err != nil {
		return gcError(err)
	}
	s.record(r, who, "update", "gc-schedule", sc.Type, sc.Cron+" "+sc.Params.String())
	w.WriteHeader(status)
	return nil
}

func (s *Server) handleListGC(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if err := s.gcJobs(who); err != nil {
		return err
	}
	runs, err := s.gc.Runs(r.Context())
	if err != nil {
		return err
	}
	out := make([]gcHistory, 0, len(runs))
	for _, run := range runs {
		out = append(out, toGCHistory(run))
	}
	return writePage(w, r, out)
}

// gcRunOf is the run the path's id names, for a system admin.
func (s *Server) gcRunOf(r *http.Request, who auth.Principal) (cache.GCRun, error) {
	if err := s.gcJobs(who); err != nil {
		return cache.GCRun{}, err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return cache.GCRun{}, err
	}
	run, err := s.gc.Run(r.Context(), id)
	return run, gcError(err)
}

func (s *Server) handleGetGC(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	run, err := s.gcRunOf(r, who)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toGCHistory(run))
}

// handleGCLog is a run's log as text: what it freed, or would free in a dry run.
func (s *Server) handleGCLog(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	run, err := s.gcRunOf(r, who)
	if err != nil {
		return err
	}
	log, err := s.gc.Log(r.Context(), run.ID)
	if err != nil {
		return gcError(err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(log))
	return nil
}
