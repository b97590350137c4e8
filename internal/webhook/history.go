package webhook

import (
	"context"
	"errors"
	"time"

	"cove/internal/kv"
)

// The delivery history, in the shapes of Harbor's current API: an execution per event and
// policy (vendor_type WEBHOOK), a task per target, and each task's log of attempts.

// The statuses of executions and tasks (Harbor's job service names).
const (
	statusPending = "Pending" // waiting for its first attempt, or its next one
	statusRunning = "Running"
	statusSuccess = "Success"
	statusError   = "Error" // failed for good: every attempt failed
	statusStopped = "Stopped"
)

// execRecord is an execution as stored, with its tasks.
type execRecord struct {
	ID        int64        `json:"id"`
	PolicyID  int64        `json:"policy_id"`
	EventType string       `json:"event_type"`
	Status    string       `json:"status"`
	Message   string       `json:"status_message,omitempty"`
	Start     time.Time    `json:"start_time"`
	End       time.Time    `json:"end_time,omitzero"`
	Tasks     []taskRecord `json:"tasks"`
}

type taskRecord struct {
	ID       int64     `json:"id"`
	ExecID   int64     `json:"execution_id"`
	Status   string    `json:"status"`
	Message  string    `json:"status_message,omitempty"`
	RunCount int       `json:"run_count"`
	Address  string    `json:"address"`
	Created  time.Time `json:"creation_time"`
	Updated  time.Time `json:"update_time"`
	Started  time.Time `json:"start_time,omitzero"`
	Ended    time.Time `json:"end_time,omitzero"`
	Log      string    `json:"log,omitempty"`
}

// settle sets the execution's status from its tasks': an end once none is pending or running.
func (ex *execRecord) settle(now time.Time) {
	var pending, running, failed, stopped int
	ex.Message = ""
	for _, t := range ex.Tasks {
		switch t.Status {
		case statusPending:
			pending++
			if t.Message != "" {
				ex.Message = "retrying: " + t.Message // the last error while it is tried again
			}
		case statusRunning:
			running++
		case statusError:
			failed++
			ex.Message = t.Message
		case statusStopped:
			stopped++
		}
	}
	switch {
	case running > 0:
		ex.Status = statusRunning
	case pending > 0:
		ex.Status = statusPending
	case failed > 0:
		ex.Status = statusError
	case stopped > 0:
		ex.Status = statusStopped
	default:
		ex.Status = statusSuccess
	}
	if running+pending == 0 && ex.End.IsZero() {
		ex.End = now
	}
}

// Execution is one event's delivery to a policy, in Harbor's shape.
type Execution struct {
	ID            int64          `json:"id"`
	VendorType    string         `json:"vendor_type"`
	VendorID      int64          `json:"vendor_id"`
	Status        string         `json:"status"`
	StatusMessage string         `json:"status_message"`
	Metrics       Metrics        `json:"metrics"`
	Trigger       string         `json:"trigger"`
	ExtraAttrs    map[string]any `json:"extra_attrs"`
	StartTime     time.Time      `json:"start_time"`
	EndTime       *time.Time     `json:"end_time,omitempty"`
}

// Metrics counts an execution's tasks by status.
type Metrics struct {
	TaskCount        int `json:"task_count"`
	SuccessTaskCount int `json:"success_task_count"`
	ErrorTaskCount   int `json:"error_task_count"`
	PendingTaskCount int `json:"pending_task_count"`
	RunningTaskCount int `json:"running_task_count"`
	StoppedTaskCount int `json:"stopped_task_count"`
}

// Task is one target's delivery, in Harbor's shape.
type Task struct {
	ID            int64          `json:"id"`
	ExecutionID   int64          `json:"execution_id"`
	Status        string         `json:"status"`
	StatusMessage string         `json:"status_message"`
	RunCount      int            `json:"run_count"`
	ExtraAttrs    map[string]any `json:"extra_attrs"`
	CreationTime  time.Time      `json:"creation_time"`
	UpdateTime    time.Time      `json:"update_time"`
	StartTime     *time.Time     `json:"start_time,omitempty"`
	EndTime       *time.Time     `json:"end_time,omitempty"`
}

func (ex execRecord) public() Execution {
	out := Execution{ID: ex.ID, VendorType: "WEBHOOK", VendorID: ex.PolicyID, Status: ex.Status, StatusMessage: ex.Message,
		Trigger: "EVENT", ExtraAttrs: map[string]any{"event_type": ex.EventType}, StartTime: ex.Start}
	if !ex.End.IsZero() {
		end := ex.End
		out.EndTime = &end
	}
	attempts := 0
	for _, t := range ex.Tasks {
		attempts += t.RunCount
		out.Metrics.TaskCount++
		switch t.Status {
		case statusSuccess:
			out.Metrics.SuccessTaskCount++
		case statusError:
			out.Metrics.ErrorTaskCount++
		case statusPending:
			out.Metrics.PendingTaskCount++
		case statusRunning:
			out.Metrics.RunningTaskCount++
		case statusStopped:
			out.Metrics.StoppedTaskCount++
		}
	}
	out.ExtraAttrs["attempts"] = attempts
	return out
}

func (t taskRecord) public() Task {
	out := Task{ID: t.ID, ExecutionID: t.ExecID, Status: t.Status, StatusMessage: t.Message, RunCount: t.RunCount,
		ExtraAttrs: map[string]any{"address": t.Address}, CreationTime: t.Created, UpdateTime: t.Updated}
	if !t.Started.IsZero() {
		s := t.Started
		out.StartTime = &s
	}
	if !t.Ended.IsZero() {
		e := t.Ended
		out.EndTime = &e
	}
	return out
}

// ErrNoExecution means there is no such execution or task of the policy.
var ErrNoExecution = errors.New("no such execution or task of the policy")

// Executions lists a policy's executions, newest first (the newest keepExecutions are kept).
func (ps *Policies) Executions(ctx context.Context, policyID int64) ([]Execution, error) {
	out := []Execution{}
	err := ps.db.View(ctx, func(txn kv.Txn) error {
		return txn.Scan([]byte(execPrefix(policyID)), kv.ScanOptions{Reverse: true}, func(_, v []byte) (bool, error) {
			var ex execRecord
			if err := jsonUnmarshal(v, &ex); err != nil {
				return false, err
			}
			out = append(out, ex.public())
			return true, nil
		})
	})
	return out, err
}

func (ps *Policies) execution(ctx context.Context, policyID, execID int64) (execRecord, error) {
	var ex execRecord
	err := ps.db.View(ctx, func(txn kv.Txn) error { return kv.Get(txn, execKey(policyID, execID), &ex) })
	if errors.Is(err, kv.ErrNotFound) {
		return ex, ErrNoExecution
	}
	return ex, err
}

// Tasks lists an execution's tasks.
func (ps *Policies) Tasks(ctx context.Context, policyID, execID int64) ([]Task, error) {
	ex, err := ps.execution(ctx, policyID, execID)
	if err != nil {
		return nil, err
	}
	out := []Task{}
	for _, t := range ex.Tasks {
		out = append(out, t.public())
	}
	return out, nil
}

// TaskLog is a task's log: a line per attempt.
func (ps *Policies) TaskLog(ctx context.Context, policyID, execID, taskID int64) (string, error) {
	ex, err := ps.execution(ctx, policyID, execID)
	if err != nil {
		return "", err
	}
	for _, t := range ex.Tasks {
		if t.ID == taskID {
			return t.Log, nil
		}
	}
	return "", ErrNoExecution
}
