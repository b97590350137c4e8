package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/robfig/cron/v3"

	"cove/internal/kv"
)

// Garbage collection as Harbor's job (HARBOR-API §2): a schedule, runs with their parameters,
// status and a log each, kept in the metadata store so that every node of a fleet shows the
// same history. One run at a time across the fleet.

// GC run statuses, as Harbor names them.
const (
	GCPending = "Pending"
	GCRunning = "Running"
	GCSuccess = "Success"
	GCError   = "Error"
	GCStopped = "Stopped"
)

// GC schedule types, as Harbor names them. Manual runs now and is never stored; None removes
// the schedule.
const (
	GCHourly = "Hourly"
	GCDaily  = "Daily"
	GCWeekly = "Weekly"
	GCCustom = "Custom"
	GCManual = "Manual"
	GCNone   = "None"
)

// GCParams are a run's parameters (Harbor's job_parameters).
type GCParams struct {
	DeleteUntagged bool `json:"delete_untagged"`
	DryRun         bool `json:"dry_run"`
	// TimeWindow is how many hours a blob must have been unreferenced; nil means
	// DefaultTimeWindow, 0 frees at once.
	TimeWindow *int `json:"time_window,omitempty"`
	Workers    int  `json:"workers,omitempty"` // 1 to 10; 0 means 1
}

// DefaultTimeWindow is Harbor's default time window, in hours.
const DefaultTimeWindow = 2

// Window is the time window as a duration.
func (p GCParams) Window() time.Duration {
	if p.TimeWindow == nil {
		return DefaultTimeWindow * time.Hour
	}
	return time.Duration(*p.TimeWindow) * time.Hour
}

// Validate checks the parameters' ranges.
func (p GCParams) Validate() error {
	if p.TimeWindow != nil && (*p.TimeWindow < 0 || *p.TimeWindow > 24*365) {
		return fmt.Errorf("%w: time_window is hours from 0 to %d", ErrGCInvalid, 24*365)
	}
	if p.Workers < 0 || p.Workers > 10 {
		return fmt.Errorf("%w: workers is from 1 to 10", ErrGCInvalid)
	}
	return nil
}

// GCSchedule is when garbage collection runs by itself, and with which parameters.
type GCSchedule struct {
	Type    string    `json:"type"`
	Cron    string    `json:"cron"`
	Params  GCParams  `json:"parameters"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Last is when the schedule last started a run (or was set): the next run is the cron's
	// first time after it.
	Last time.Time `json:"last"`
}

// GCRun is one run of garbage collection.
type GCRun struct {
	ID       int64    `json:"id"`
	Kind     string   `json:"kind"` // MANUAL or SCHEDULE
	Params   GCParams `json:"parameters"`
	Schedule struct {
		Type string `json:"type"`
		Cron string `json:"cron"`
	} `json:"schedule"`
	Status   string    `json:"status"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Blobs    int       `json:"blobs"`    // freed (or, in a dry run, that would be)
	Freed    int64     `json:"freed"`    // bytes
	Untagged int       `json:"untagged"` // untagged artifacts deleted (or that would be)
	Node     string    `json:"node,omitempty"`
}

var (
	// ErrGCInvalid is a bad schedule or bad parameters.
	ErrGCInvalid = errors.New("invalid garbage collection schedule")
	// ErrGCRunning means a run is pending or running already.
	ErrGCRunning = errors.New("a garbage collection is running already")
	// ErrGCUnknown means no run has that id.
	ErrGCUnknown = errors.New("no such garbage collection")
)

const (
	keyGCSchedule = "gc/schedule"
	keyGCSeq      = "gc/seq"
	prefixGCRun   = "gc/run/"
	prefixGCLog   = "gc/log/"
	// gcKeep is how many runs the history keeps.
	gcKeep = 200
	// gcLogMax bounds a run's log.
	gcLogMax = 1 << 20
	// gcTick is how often the scheduler looks at the schedule.
	gcTick = 30 * time.Second
)

func gcRunKey(id int64) []byte { return fmt.Appendf(nil, "%s%020d", prefixGCRun, id) }
func gcLogKey(id int64) []byte { return fmt.Appendf(nil, "%s%020d", prefixGCLog, id) }

// cronParser reads Harbor's six-field cron: seconds first.
var cronParser = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// presets are the crons of the named schedule types.
var presets = map[string]string{GCHourly: "0 0 * * * *", GCDaily: "0 0 0 * * *", GCWeekly: "0 0 0 * * 0"}

// GC runs garbage collection as a job. Create it with NewGC; run Loop for the schedule. It is
// safe for concurrent use.
type GC struct {
	st    *Store
	db    kv.DB
	log   *slog.Logger
	node  string
	sweep func(repo string) bool // the repositories delete_untagged sweeps: local ones

	mu     sync.Mutex
	cancel context.CancelCauseFunc // of the run in progress on this node, nil when none
	done   chan struct{}           // closed when that run has ended
	ended  func(GCRun)             // tests: called, under mu, once a run's end is recorded
}

// NewGC returns the job of st. node names this node in the runs it makes; sweep says which
// repositories delete_untagged may sweep (local projects', never mirrored ones). When no
// schedule is stored, it stores the default: hourly, with Harbor's time window.
func NewGC(ctx context.Context, st *Store, node string, sweep func(repo string) bool) (*GC, error) {
	g := &GC{st: st, db: st.db, log: st.log.With("job", "gc"), node: node, sweep: sweep}
	if st.Disk.readOnly {
		return g, nil
	}
	err := kv.Retry(ctx, g.db, func(txn kv.Txn) error {
		if _, err := txn.Get([]byte(keyGCSchedule)); !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		now := st.now().UTC()
		return kv.Put(txn, []byte(keyGCSchedule), GCSchedule{Type: GCHourly, Cron: presets[GCHourly], Created: now, Updated: now, Last: now})
	})
	return g, err
}

// Schedule returns the schedule; Type None when there is none.
func (g *GC) Schedule(ctx context.Context) (GCSchedule, error) {
	var sc GCSchedule
	err := g.db.View(ctx, func(txn kv.Txn) error { return kv.Get(txn, []byte(keyGCSchedule), &sc) })
	if errors.Is(err, kv.ErrNotFound) {
		return GCSchedule{Type: GCNone}, nil
	}
	return sc, err
}

// SetSchedule replaces the schedule: Hourly, Daily, Weekly, Custom (with a six-field cron) or
// None. Manual is a run, not a schedule (Start).
func (g *GC) SetSchedule(ctx context.Context, typ, cronSpec string, p GCParams) (GCSchedule, error) {
	if err := p.Validate(); err != nil {
		return GCSchedule{}, err
	}
	switch typ {
	case GCHourly, GCDaily, GCWeekly:
		cronSpec = presets[typ]
	case GCCustom:
		if _, err := cronParser.Parse(cronSpec); err != nil {
			return GCSchedule{}, fmt.Errorf("%w: cron %q: %v (six fields, seconds first: \"0 0 3 * * *\" is 03:00 every day)", ErrGCInvalid, cronSpec, err)
		}
	case GCNone:
		cronSpec = ""
	default:
		return GCSchedule{}, fmt.Errorf("%w: type %q is none of Hourly, Daily, Weekly, Custom, Manual, None", ErrGCInvalid, typ)
	}
	var sc GCSchedule
	err := g.st.update(func(ct *commitTxn) error {
		now := g.st.now().UTC()
		var old GCSchedule
		if err := kv.Get(ct.Txn, []byte(keyGCSchedule), &old); err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		sc = GCSchedule{Type: typ, Cron: cronSpec, Params: p, Created: old.Created, Updated: now, Last: now}
		if sc.Created.IsZero() {
			sc.Created = now
		}
		return kv.Put(ct.Txn, []byte(keyGCSchedule), sc)
	})
	return sc, err
}

// Next is when the schedule runs next; zero for None.
func (sc GCSchedule) Next() time.Time {
	if sc.Type == GCNone || sc.Cron == "" {
		return time.Time{}
	}
	s, err := cronParser.Parse(sc.Cron)
	if err != nil {
		return time.Time{}
	}
	return s.Next(sc.Last)
}

// Start starts a run now with p: kind is MANUAL or SCHEDULE. It returns the run, Pending; the
// run goes on in the background, under the store's lifetime. ErrGCRunning when a run is pending
// or running already (on any node).
func (g *GC) Start(ctx context.Context, kind string, p GCParams, sc GCSchedule) (GCRun, error) {
	if err := p.Validate(); err != nil {
		return GCRun{}, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cancel != nil {
		return GCRun{}, ErrGCRunning
	}
	var run GCRun
	err := g.st.update(func(ct *commitTxn) error {
		busy := false
		err := eachJSON(ct.Txn, prefixGCRun, func(_ []byte, r *GCRun) error {
			busy = busy || r.Status == GCPending || r.Status == GCRunning
			return nil
		})
		if err != nil {
			return err
		}
		if busy {
			return ErrGCRunning
		}
		var seq int64
		if err := kv.Get(ct.Txn, []byte(keyGCSeq), &seq); err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		seq++
		now := g.st.now().UTC()
		run = GCRun{ID: seq, Kind: kind, Params: p, Status: GCPending, Created: now, Updated: now, Node: g.node}
		run.Schedule.Type, run.Schedule.Cron = sc.Type, sc.Cron
		if err := kv.Put(ct.Txn, []byte(keyGCSeq), seq); err != nil {
			return err
		}
		return kv.Put(ct.Txn, gcRunKey(seq), run)
	})
	if err != nil {
		return GCRun{}, err
	}
	runCtx, cancel := context.WithCancelCause(g.st.ctx)
	g.cancel, g.done = cancel, make(chan struct{})
	done := g.done
	g.st.wg.Go(func() {
		defer close(done)
		run, log := g.run(runCtx, run)
		// The end is recorded and this node's run forgotten at once, under g.mu: whoever sees
		// the run ended can start the next one.
		g.mu.Lock()
		g.cancel = nil
		g.finish(run, log)
		g.mu.Unlock()
		cancel(nil)
	})
	return run, nil
}

// run does the run and returns it ended, with its log; it holds the fleet-wide "gc" lock
// meanwhile.
func (g *GC) run(ctx context.Context, run GCRun) (GCRun, string) {
	var log strings.Builder
	logf := func(format string, a ...any) {
		if log.Len() < gcLogMax {
			fmt.Fprintf(&log, "%s ", g.st.now().UTC().Format(time.RFC3339))
			fmt.Fprintf(&log, format, a...)
			log.WriteByte('\n')
		}
	}
	ran, err := kv.RunOnce(ctx, g.db, "gc", func() error {
		g.setStatus(run.ID, GCRunning)
		return g.collect(ctx, &run, logf)
	})
	status := GCSuccess
	switch {
	case err == nil && !ran:
		status, err = GCError, errors.New("another node holds the garbage collection lock")
	case ctx.Err() != nil:
		status, err = GCStopped, context.Cause(ctx)
	case err != nil:
		status = GCError
	}
	if err != nil {
		logf("%s: %v", strings.ToLower(status), err)
		if status == GCError {
			g.log.Error("garbage collection failed", "id", run.ID, "err", err)
		}
	}
	logf("%s", status)
	run.Status = status
	return run, log.String()
}

// collect is the work of one run: untagged artifacts first, then the blobs.
func (g *GC) collect(ctx context.Context, run *GCRun, logf func(string, ...any)) error {
	p := run.Params
	verb := "deleted"
	if p.DryRun {
		verb = "would delete"
		logf("dry run: nothing is deleted")
	}
	logf("parameters: delete_untagged=%v time_window=%s workers=%d", p.DeleteUntagged, p.Window(), max(p.Workers, 1))
	if p.DeleteUntagged {
		n, err := g.st.Manifests.DeleteUntagged(ctx, g.sweep, p.DryRun, func(repo string, d digest.Digest) {
			logf("%s untagged artifact %s@%s", verb, repo, d)
		})
		run.Untagged = n
		if err != nil {
			return err
		}
	}
	verb = "freed"
	if p.DryRun {
		verb = "would free"
	}
	n, freed, err := g.st.Evictor.CollectWith(ctx, CollectOptions{Grace: p.Window(), DryRun: p.DryRun, Workers: p.Workers,
		Freed: func(d digest.Digest, size int64) { logf("%s blob %s (%d bytes)", verb, d, size) }})
	run.Blobs, run.Freed = n, freed
	logf("%s %d blobs, %d bytes; %d untagged artifacts", verb, n, freed, run.Untagged)
	if err != nil || p.DryRun {
		return err
	}
	// The quotas' usage, counted afresh now that the links of what went are gone.
	quotas, err := g.st.Quotas(ctx)
	if err != nil {
		return err
	}
	for _, q := range quotas {
		after, err := g.st.Recount(ctx, q.Project)
		if err != nil {
			return fmt.Errorf("recount the quota of %s: %w", q.Project, err)
		}
		if after.Used != q.Used {
			logf("quota of project %s: %d bytes used (was %d)", q.Project, after.Used, q.Used)
		}
	}
	return nil
}

func (g *GC) setStatus(id int64, status string) {
	err := kv.Retry(g.st.ctx, g.db, func(txn kv.Txn) error {
		var r GCRun
		if err := kv.Get(txn, gcRunKey(id), &r); err != nil {
			return err
		}
		r.Status, r.Updated = status, g.st.now().UTC()
		return kv.Put(txn, gcRunKey(id), r)
	})
	if err != nil {
		g.log.Error("recording a garbage collection's status", "id", id, "err", err)
	}
}

// finish records the run's end and its log, and drops the runs past gcKeep. (Not under the
// free-space floor's check: a run that freed space must be able to say so.)
func (g *GC) finish(run GCRun, log string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	run.Updated = g.st.now().UTC()
	err := kv.Retry(ctx, g.db, func(txn kv.Txn) error {
		if err := kv.Put(txn, gcRunKey(run.ID), run); err != nil {
			return err
		}
		if err := txn.Set(gcLogKey(run.ID), []byte(log)); err != nil {
			return err
		}
		if old := run.ID - gcKeep; old > 0 {
			for _, k := range [][]byte{gcRunKey(old), gcLogKey(old)} {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		g.log.Error("recording a garbage collection's end", "id", run.ID, "err", err)
	}
	if g.ended != nil {
		g.ended(run)
	}
}

// Runs lists the runs, newest first.
func (g *GC) Runs(ctx context.Context) ([]GCRun, error) {
	var out []GCRun
	err := g.db.View(ctx, func(txn kv.Txn) error {
		return eachJSON(txn, prefixGCRun, func(_ []byte, r *GCRun) error {
			out = append(out, *r)
			return nil
		})
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}

// Run returns the run id, or ErrGCUnknown.
func (g *GC) Run(ctx context.Context, id int64) (GCRun, error) {
	var r GCRun
	err := g.db.View(ctx, func(txn kv.Txn) error { return kv.Get(txn, gcRunKey(id), &r) })
	if errors.Is(err, kv.ErrNotFound) {
		err = ErrGCUnknown
	}
	return r, err
}

// Log returns the log of the run id: empty while it runs, ErrGCUnknown when there is no such run.
func (g *GC) Log(ctx context.Context, id int64) (string, error) {
	if _, err := g.Run(ctx, id); err != nil {
		return "", err
	}
	var log []byte
	err := g.db.View(ctx, func(txn kv.Txn) error {
		var err error
		log, err = txn.Get(gcLogKey(id))
		return err
	})
	if errors.Is(err, kv.ErrNotFound) {
		return "", nil
	}
	return string(log), err
}

// Wait waits for the run in progress on this node, if any, to end: for tests and shutdown.
func (g *GC) Wait() {
	g.mu.Lock()
	done := g.done
	g.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Loop starts the scheduled runs until ctx ends. Runs that were pending or running when their
// node stopped are marked Stopped (once no node holds the "gc" lock).
func (g *GC) Loop(ctx context.Context) {
	t := time.NewTicker(gcTick)
	defer t.Stop()
	for {
		if err := g.tick(ctx); err != nil && ctx.Err() == nil {
			g.log.Error("garbage collection's schedule", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// tick marks stale runs Stopped and starts the scheduled run when its time has come; one node
// of a fleet at a time.
func (g *GC) tick(ctx context.Context) error {
	if g.st.Disk.readOnly {
		return nil
	}
	g.mu.Lock()
	busy := g.cancel != nil
	g.mu.Unlock()
	if busy {
		return nil
	}
	_, err := kv.RunOnce(ctx, g.db, "gc-schedule", func() error {
		if err := g.stopStale(ctx); err != nil {
			return err
		}
		sc, err := g.Schedule(ctx)
		if err != nil {
			return err
		}
		next := sc.Next()
		if next.IsZero() || g.st.now().Before(next) {
			return nil
		}
		err = g.st.update(func(ct *commitTxn) error {
			sc.Last = g.st.now().UTC()
			return kv.Put(ct.Txn, []byte(keyGCSchedule), sc)
		})
		if err != nil {
			return err
		}
		_, err = g.Start(ctx, "SCHEDULE", sc.Params, sc)
		if errors.Is(err, ErrGCRunning) {
			g.log.Warn("a scheduled garbage collection was skipped: one is running already")
			return nil
		}
		return err
	})
	return err
}

// stopStale marks Stopped the runs left pending or running by a node that stopped: only when no
// node holds the "gc" lock (a run holds it while it works).
func (g *GC) stopStale(ctx context.Context) error {
	var stale []int64
	err := g.db.View(ctx, func(txn kv.Txn) error {
		return eachJSON(txn, prefixGCRun, func(_ []byte, r *GCRun) error {
			if r.Status == GCPending || r.Status == GCRunning {
				stale = append(stale, r.ID)
			}
			return nil
		})
	})
	if err != nil || len(stale) == 0 {
		return err
	}
	_, err = kv.RunOnce(ctx, g.db, "gc", func() error {
		g.mu.Lock()
		busy := g.cancel != nil
		g.mu.Unlock()
		if busy {
			return nil
		}
		for _, id := range stale {
			g.setStatus(id, GCStopped)
		}
		return nil
	})
	return err
}

// String is the parameters as JSON, as Harbor's job_parameters carries them.
func (p GCParams) String() string {
	b, _ := json.Marshal(p)
	return string(b)
}
