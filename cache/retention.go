package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

// Tag retention (HARBOR-API §4): one policy per project, whose rules say which artifacts of its
// repositories to keep; a run deletes the others (never one with an immutable tag), or in a dry
// run only says which. Policies, runs and their per-repository tasks are kept in the index.

// Retention rule templates, as Harbor names them.
const (
	RetainLatestPushed = "latestPushedK"      // the K most recently pushed
	RetainLatestPulled = "latestPulledN"      // the N most recently pulled
	RetainPushedDays   = "nDaysSinceLastPush" // pushed within N days
	RetainPulledDays   = "nDaysSinceLastPull" // pulled within N days
	RetainAlways       = "always"
)

// RetentionRule keeps, in the repositories its scope covers, the artifacts its tag selector
// names that its template picks. Patterns are doublestar globs; a repository's is matched
// against its name without the project.
type RetentionRule struct {
	ID           int    `json:"id"`
	Priority     int    `json:"priority"`
	Disabled     bool   `json:"disabled"`
	Template     string `json:"template"`
	N            int    `json:"n"` // the template's count or days
	TagPattern   string `json:"tag_pattern"`
	TagExcludes  bool   `json:"tag_excludes"`
	Untagged     bool   `json:"untagged"` // untagged artifacts are candidates too
	RepoPattern  string `json:"repo_pattern"`
	RepoExcludes bool   `json:"repo_excludes"`
}

// RetentionPolicy is a project's policy.
type RetentionPolicy struct {
	ID      int64           `json:"id"`
	Project string          `json:"project"`
	Rules   []RetentionRule `json:"rules"`
	Cron    string          `json:"cron"` // six fields; empty: runs only when asked
	Last    time.Time       `json:"last"` // the last scheduled run (or when the schedule was set)
}

// RetentionTask is one repository's part of a run.
type RetentionTask struct {
	ID         int64     `json:"id"`
	Repository string    `json:"repository"`
	Status     string    `json:"status"`
	Total      int       `json:"total"`
	Retained   int       `json:"retained"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	Log        string    `json:"log"`
}

// RetentionRun is one run of a policy.
type RetentionRun struct {
	ID       int64           `json:"id"`
	PolicyID int64           `json:"policy_id"`
	Trigger  string          `json:"trigger"` // MANUAL or SCHEDULE
	DryRun   bool            `json:"dry_run"`
	Status   string          `json:"status"` // Running, Succeed, Failed, Stopped
	Start    time.Time       `json:"start"`
	End      time.Time       `json:"end"`
	Tasks    []RetentionTask `json:"tasks"`
}

var (
	// ErrRetentionInvalid is a policy with a bad rule, template or cron.
	ErrRetentionInvalid = errors.New("invalid retention policy")
	// ErrRetentionUnknown means no policy or run has that id.
	ErrRetentionUnknown = errors.New("no such retention policy or run")
	// ErrRetentionExists means the project has a policy already.
	ErrRetentionExists = errors.New("the project has a retention policy already")
)

const (
	prefixRetention     = "retention/policy/"  // <%020d id> → RetentionPolicy
	prefixRetentionProj = "retention/project/" // <project> → id
	prefixRetentionRun  = "retention/run/"     // <%020d policy>\x00<%020d run> → RetentionRun
	keyRetentionSeq     = "retention/seq"
	maxRetentionRules   = 15
	// retentionKeep is how many runs each policy keeps.
	retentionKeep = 50
)

func retentionKey(id int64) []byte { return fmt.Appendf(nil, "%s%020d", prefixRetention, id) }
func retentionRunKey(policy, run int64) []byte {
	return fmt.Appendf(nil, "%s%020d%s%020d", prefixRetentionRun, policy, sep, run)
}

// Validate checks the rules and the cron.
func (p RetentionPolicy) Validate() error {
	if len(p.Rules) > maxRetentionRules {
		return fmt.Errorf("%w: at most %d rules", ErrRetentionInvalid, maxRetentionRules)
	}
	for _, r := range p.Rules {
		switch r.Template {
		case RetainLatestPushed, RetainLatestPulled, RetainPushedDays, RetainPulledDays:
			if r.N < 0 {
				return fmt.Errorf("%w: %s takes a count from 0", ErrRetentionInvalid, r.Template)
			}
		case RetainAlways:
		default:
			return fmt.Errorf("%w: template %q is none of latestPushedK, latestPulledN, nDaysSinceLastPush, nDaysSinceLastPull, always", ErrRetentionInvalid, r.Template)
		}
		for _, pat := range []string{r.TagPattern, r.RepoPattern} {
			if pat == "" || !doublestar.ValidatePattern(pat) {
				return fmt.Errorf("%w: %q is not a pattern (doublestar: *, **, ?, [a-z], {a,b})", ErrRetentionInvalid, pat)
			}
		}
	}
	if p.Cron != "" {
		if _, err := cronParser.Parse(p.Cron); err != nil {
			return fmt.Errorf("%w: cron %q: %v (six fields, seconds first)", ErrRetentionInvalid, p.Cron, err)
		}
	}
	return nil
}

// Retention runs the projects' retention policies. Create it with NewRetention; run Loop for
// the schedules. It is safe for concurrent use.
type Retention struct {
	st  *Store
	db  kv.DB
	log *slog.Logger

	mu      sync.Mutex
	running map[int64]context.CancelFunc // runs in progress on this node, by run id
	// onDone, when set, is told of each run that ended (notifications); guarded by mu.
	onDone func(p RetentionPolicy, run RetentionRun)
}

// OnDone sets what is told of each run that ends: its policy and its result.
func (rt *Retention) OnDone(fn func(p RetentionPolicy, run RetentionRun)) {
	rt.mu.Lock()
	rt.onDone = fn
	rt.mu.Unlock()
}

// NewRetention returns the retention runner of st.
func NewRetention(st *Store) *Retention {
	return &Retention{st: st, db: st.db, log: st.log.With("job", "retention"), running: map[int64]context.CancelFunc{}}
}

// Policy returns the policy id.
func (rt *Retention) Policy(ctx context.Context, id int64) (RetentionPolicy, error) {
	var p RetentionPolicy
	err := rt.db.View(ctx, func(txn kv.Txn) error { return kv.Get(txn, retentionKey(id), &p) })
	return p, notFound(err, ErrRetentionUnknown)
}

// PolicyOf returns the id of project's policy, 0 when it has none.
func (rt *Retention) PolicyOf(ctx context.Context, project string) (int64, error) {
	var id int64
	err := rt.db.View(ctx, func(txn kv.Txn) error { return kv.Get(txn, []byte(prefixRetentionProj+project), &id) })
	if errors.Is(err, kv.ErrNotFound) {
		return 0, nil
	}
	return id, err
}

// Create stores p as its project's policy and returns its id.
func (rt *Retention) Create(ctx context.Context, p RetentionPolicy) (int64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	err := rt.st.update(func(ct *commitTxn) error {
		if _, err := ct.Get([]byte(prefixRetentionProj + p.Project)); err == nil {
			return ErrRetentionExists
		} else if !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		var seq int64
		if err := kv.Get(ct.Txn, []byte(keyRetentionSeq), &seq); err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		seq++
		p.ID, p.Last = seq, rt.st.now().UTC()
		for i := range p.Rules {
			p.Rules[i].ID = i + 1
		}
		if err := kv.Put(ct.Txn, []byte(keyRetentionSeq), seq); err != nil {
			return err
		}
		if err := kv.Put(ct.Txn, []byte(prefixRetentionProj+p.Project), seq); err != nil {
			return err
		}
		return kv.Put(ct.Txn, retentionKey(seq), p)
	})
	return p.ID, err
}

// Update replaces the rules and schedule of policy p.ID (its project stays).
func (rt *Retention) Update(ctx context.Context, p RetentionPolicy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	return rt.st.update(func(ct *commitTxn) error {
		var old RetentionPolicy
		if err := kv.Get(ct.Txn, retentionKey(p.ID), &old); err != nil {
			return notFound(err, ErrRetentionUnknown)
		}
		p.Project, p.Last = old.Project, rt.st.now().UTC()
		for i := range p.Rules {
			p.Rules[i].ID = i + 1
		}
		return kv.Put(ct.Txn, retentionKey(p.ID), p)
	})
}

// Delete removes policy id with its runs.
func (rt *Retention) Delete(ctx context.Context, id int64) error {
	return rt.st.update(func(ct *commitTxn) error {
		var p RetentionPolicy
		if err := kv.Get(ct.Txn, retentionKey(id), &p); err != nil {
			return notFound(err, ErrRetentionUnknown)
		}
		var keys [][]byte
		if err := scan(ct.Txn, fmt.Appendf(nil, "%s%020d%s", prefixRetentionRun, id, sep), "", func(k, _ []byte) bool {
			keys = append(keys, append([]byte{}, k...))
			return true
		}); err != nil {
			return err
		}
		for _, k := range append(keys, retentionKey(id), []byte(prefixRetentionProj+p.Project)) {
			if err := ct.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Runs lists policy id's runs, newest first.
func (rt *Retention) Runs(ctx context.Context, id int64) ([]RetentionRun, error) {
	if _, err := rt.Policy(ctx, id); err != nil {
		return nil, err
	}
	var out []RetentionRun
	err := rt.db.View(ctx, func(txn kv.Txn) error {
		return eachJSON(txn, string(fmt.Appendf(nil, "%s%020d%s", prefixRetentionRun, id, sep)), func(_ []byte, r *RetentionRun) error {
			out = append(out, *r)
			return nil
		})
	})
	slices.Reverse(out)
	return out, err
}

// Run returns run eid of policy id.
func (rt *Retention) Run(ctx context.Context, id, eid int64) (RetentionRun, error) {
	var r RetentionRun
	err := rt.db.View(ctx, func(txn kv.Txn) error { return kv.Get(txn, retentionRunKey(id, eid), &r) })
	return r, notFound(err, ErrRetentionUnknown)
}

// Stop ends run eid of policy id if it is in progress on this node; a run already ended stays
// as it ended.
func (rt *Retention) Stop(ctx context.Context, id, eid int64) error {
	if _, err := rt.Run(ctx, id, eid); err != nil {
		return err
	}
	rt.mu.Lock()
	cancel := rt.running[eid]
	rt.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	return nil
}

// Start starts a run of policy id and returns it, Running; it goes on in the background.
func (rt *Retention) Start(ctx context.Context, id int64, trigger string, dryRun bool) (RetentionRun, error) {
	p, err := rt.Policy(ctx, id)
	if err != nil {
		return RetentionRun{}, err
	}
	var run RetentionRun
	err = rt.st.update(func(ct *commitTxn) error {
		var seq int64
		if err := kv.Get(ct.Txn, []byte(keyRetentionSeq), &seq); err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		seq++
		run = RetentionRun{ID: seq, PolicyID: id, Trigger: trigger, DryRun: dryRun, Status: "Running", Start: rt.st.now().UTC(), Tasks: []RetentionTask{}}
		if err := kv.Put(ct.Txn, []byte(keyRetentionSeq), seq); err != nil {
			return err
		}
		return kv.Put(ct.Txn, retentionRunKey(id, seq), run)
	})
	if err != nil {
		return RetentionRun{}, err
	}
	runCtx, cancel := context.WithCancel(rt.st.ctx)
	rt.mu.Lock()
	rt.running[run.ID] = cancel
	rt.mu.Unlock()
	rt.st.wg.Go(func() {
		defer cancel()
		done := rt.execute(runCtx, p, run)
		rt.mu.Lock()
		delete(rt.running, run.ID)
		onDone := rt.onDone
		rt.mu.Unlock()
		rt.save(done)
		if onDone != nil {
			onDone(p, done)
		}
	})
	return run, nil
}

// execute applies p to each repository of its project.
func (rt *Retention) execute(ctx context.Context, p RetentionPolicy, run RetentionRun) RetentionRun {
	ms := rt.st.Manifests
	var repos []string
	err := rt.db.View(ctx, func(txn kv.Txn) error {
		return scan(txn, []byte(prefixRepo+p.Project+"/"), "", func(key, _ []byte) bool {
			repos = append(repos, string(key[len(prefixRepo):]))
			return true
		})
	})
	run.Status = "Succeed"
	if err != nil {
		run.Status = "Failed"
		rt.log.Error("retention run", "policy", p.ID, "err", err)
	}
	for i, repo := range repos {
		if ctx.Err() != nil {
			run.Status = "Stopped"
			break
		}
		task := RetentionTask{ID: int64(i + 1), Repository: repo, Start: rt.st.now().UTC(), Status: "Succeed"}
		var log strings.Builder
		total, retained, err := rt.apply(ctx, ms, p, repo, run.DryRun, &log)
		task.Total, task.Retained, task.End = total, retained, rt.st.now().UTC()
		if err != nil {
			task.Status, run.Status = "Failed", "Failed"
			fmt.Fprintf(&log, "failed: %v\n", err)
			rt.log.Error("retention run", "policy", p.ID, "repository", repo, "err", err)
		}
		task.Log = log.String()
		run.Tasks = append(run.Tasks, task)
	}
	run.End = rt.st.now().UTC()
	return run
}

// apply keeps what the rules of p that cover repo retain and deletes the rest of its artifacts,
// but none with an immutable tag; it reports how many there were and how many stay.
func (rt *Retention) apply(ctx context.Context, ms *Manifests, p RetentionPolicy, repo string, dryRun bool, log *strings.Builder) (total, retained int, err error) {
	rest := strings.TrimPrefix(repo, p.Project+"/")
	var rules []RetentionRule
	for _, r := range p.Rules {
		if m, _ := doublestar.Match(r.RepoPattern, rest); !r.Disabled && m != r.RepoExcludes {
			rules = append(rules, r)
		}
	}
	arts, err := ms.Artifacts(ctx, repo)
	if err != nil || len(rules) == 0 {
		fmt.Fprintf(log, "no rule covers %s: nothing to do\n", repo)
		return len(arts), len(arts), err
	}
	keep := map[digest.Digest]bool{}
	now := rt.st.now()
	for _, r := range rules {
		var cands []Artifact
		for _, a := range arts {
			if r.selects(a.Tags) {
				cands = append(cands, a)
			}
		}
		switch r.Template {
		case RetainLatestPushed:
			sort.SliceStable(cands, func(i, j int) bool { return cands[i].Created.After(cands[j].Created) })
			cands = cands[:min(r.N, len(cands))]
		case RetainLatestPulled:
			sort.SliceStable(cands, func(i, j int) bool { return cands[i].Pulled.After(cands[j].Pulled) })
			cands = cands[:min(r.N, len(cands))]
		case RetainPushedDays, RetainPulledDays:
			cutoff := now.AddDate(0, 0, -r.N)
			cands = slices.DeleteFunc(cands, func(a Artifact) bool {
				if r.Template == RetainPushedDays {
					return a.Created.Before(cutoff)
				}
				return a.Pulled.Before(cutoff)
			})
		}
		for _, a := range cands {
			keep[a.Digest] = true
		}
	}
	verb := "deleted"
	if dryRun {
		verb = "would delete"
	}
	for _, a := range arts {
		if keep[a.Digest] {
			retained++
			fmt.Fprintf(log, "retained %s@%s %v\n", repo, a.Digest, a.Tags)
			continue
		}
		if imm, err := ms.Immutable(ctx, repo, a.Tags); err != nil {
			return len(arts), retained, err
		} else if len(imm) > 0 {
			retained++
			fmt.Fprintf(log, "retained %s@%s %v: an immutable tag\n", repo, a.Digest, a.Tags)
			continue
		}
		if dryRun {
			fmt.Fprintf(log, "%s %s@%s %v\n", verb, repo, a.Digest, a.Tags)
			continue
		}
		// Only while its tags are still the ones the rules judged (a push may have tagged it
		// since), and no index of the repository names it.
		err := ms.deleteArtifact(ctx, repo, a.Digest, a.Tags)
		switch {
		case errors.Is(err, ErrChanged), errors.Is(err, ErrInUse):
			retained++
			fmt.Fprintf(log, "retained %s@%s %v: %v\n", repo, a.Digest, a.Tags, err)
			continue
		case errors.Is(err, ErrManifestUnknown):
			continue
		case err != nil:
			return len(arts), retained, err
		}
		fmt.Fprintf(log, "%s %s@%s %v\n", verb, repo, a.Digest, a.Tags)
	}
	return len(arts), retained, nil
}

// selects reports whether an artifact with tags is a candidate of the rule: a tag matches its
// selector, or it is untagged and the rule takes untagged artifacts.
func (r RetentionRule) selects(tags []string) bool {
	if len(tags) == 0 {
		return r.Untagged
	}
	for _, t := range tags {
		if m, _ := doublestar.Match(r.TagPattern, t); m != r.TagExcludes {
			return true
		}
	}
	return false
}

func (rt *Retention) save(run RetentionRun) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := kv.Retry(ctx, rt.db, func(txn kv.Txn) error {
		if err := kv.Put(txn, retentionRunKey(run.PolicyID, run.ID), run); err != nil {
			return err
		}
		// The policy keeps its last retentionKeep runs.
		var keys [][]byte
		if err := scan(txn, fmt.Appendf(nil, "%s%020d%s", prefixRetentionRun, run.PolicyID, sep), "", func(k, _ []byte) bool {
			keys = append(keys, append([]byte{}, k...))
			return true
		}); err != nil {
			return err
		}
		for _, k := range keys[:max(len(keys)-retentionKeep, 0)] {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		rt.log.Error("recording a retention run", "run", run.ID, "err", err)
	}
}

// Loop starts the scheduled runs until ctx ends.
func (rt *Retention) Loop(ctx context.Context) {
	t := time.NewTicker(gcTick)
	defer t.Stop()
	for {
		if err := rt.tick(ctx); err != nil && ctx.Err() == nil {
			rt.log.Error("retention schedules", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (rt *Retention) tick(ctx context.Context) error {
	if rt.st.Disk.readOnly {
		return nil
	}
	_, err := kv.RunOnce(ctx, rt.db, "retention-schedule", func() error {
		var due []RetentionPolicy
		err := rt.db.View(ctx, func(txn kv.Txn) error {
			return eachJSON(txn, prefixRetention, func(_ []byte, p *RetentionPolicy) error {
				if p.Cron == "" {
					return nil
				}
				if s, err := cronParser.Parse(p.Cron); err == nil && !rt.st.now().Before(s.Next(p.Last)) {
					due = append(due, *p)
				}
				return nil
			})
		})
		if err != nil {
			return err
		}
		for _, p := range due {
			err := rt.st.update(func(ct *commitTxn) error {
				p.Last = rt.st.now().UTC()
				return kv.Put(ct.Txn, retentionKey(p.ID), p)
			})
			if err != nil {
				return err
			}
			if _, err := rt.Start(ctx, p.ID, "SCHEDULE", false); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}
