package webhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cove/internal/kv"
)

// Config configures a Dispatcher.
type Config struct {
	DB     kv.DB
	Logger *slog.Logger
	Now    func() time.Time // nil: time.Now
	// AllowPrivate lets targets be on loopback and private addresses
	// (webhooks.allow_private_targets); link-local ones are refused whatever it says.
	AllowPrivate bool
	// Host is how clients reach cove ("registry.example.com"), for resource_url.
	Host string
	// Project looks up a local project by name: its id and whether it is public.
	Project func(ctx context.Context, name string) (id int64, public bool, err error)
	// RepoCreated is when a repository got its first manifest; nil or zero: not said.
	RepoCreated func(ctx context.Context, repo string) time.Time
	// FirstTag is a tag of the manifest dgst of repo, "" when it has none: the tag of an event
	// by digest (clients pull a tag's digest).
	FirstTag func(ctx context.Context, repo, dgst string) string
	// Timeout bounds each attempt (zero: 10s); MaxAttempts bounds the attempts of a delivery
	// (zero: 8); Backoff is the wait after the first failed attempt, doubled after each other,
	// up to MaxBackoff (zero: 2s and 10 minutes).
	Timeout     time.Duration
	MaxAttempts int
	Backoff     time.Duration
	MaxBackoff  time.Duration
	// Workers is how many deliveries run at once on this node (zero: 8).
	Workers int
}

// Dispatcher takes events and delivers them to the policies that want them. It is safe for
// concurrent use.
type Dispatcher struct {
	cfg      Config
	log      *slog.Logger
	policies *Policies
	clients  [2]*http.Client // [0] verifies certificates, [1] does not (skip_cert_verify)

	snapshot atomic.Pointer[[]stored] // the policies, reloaded on a change and each minute
	events   chan Event               // taken, not yet written
	wake     chan struct{}            // the queue has new entries
	sem      chan struct{}            // a slot per delivery in flight
	dropped  atomic.Int64
	// delivered and failed count the deliveries that ended: answered 2xx, or failed for good.
	delivered, failed atomic.Int64

	mu       sync.Mutex
	inFlight map[int64]bool // queue entries this node delivers now, guarded by mu
	busy     map[int64]int  // deliveries in flight per policy, guarded by mu
	// idleUntil is, per policy whose whole queue the last round read with nothing due, when
	// its first entry falls due (the zero time: none queued); the rounds before then skip it.
	// Guarded by mu; forgotten when this node queues for the policy, a delivery of it ends, or
	// the policies reload (another node of a fleet may have queued).
	idleUntil map[int64]time.Time
	// queued counts, per policy, the times this node queued for it (guarded by mu): a round
	// marks a policy idle only if nothing was queued since it began to read that policy's queue,
	// which its snapshot may not show.
	queued map[int64]uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// perPolicy bounds the deliveries of one policy in flight on a node.
const perPolicy = 2

// queueCap bounds the events taken and not yet written: a store that stops taking them drops
// the next ones (logged and counted), it never holds a push.
const queueCap = 10_000

// New starts a dispatcher: a writer that stores events in batches, and the delivery loop.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.DB == nil {
		return nil, errors.New("webhook: a metadata store is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 2 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Minute
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	d := &Dispatcher{
		cfg: cfg, log: cfg.Logger.With("component", "webhook"),
		clients:  [2]*http.Client{newClient(cfg.AllowPrivate, false, cfg.Timeout), newClient(cfg.AllowPrivate, true, cfg.Timeout)},
		events:   make(chan Event, queueCap),
		wake:     make(chan struct{}, 1),
		sem:      make(chan struct{}, cfg.Workers),
		inFlight: map[int64]bool{},
		busy:     map[int64]int{},

		idleUntil: map[int64]time.Time{},
		queued:    map[int64]uint64{},
	}
	d.policies = &Policies{db: cfg.DB, now: cfg.Now, allowPrivate: cfg.AllowPrivate, changed: d.reload}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.reload()
	d.wg.Go(d.writeLoop)
	d.wg.Go(d.deliverLoop)
	return d, nil
}

// Policies is the store of policies, for the API.
func (d *Dispatcher) Policies() *Policies { return d.policies }

// Close stops taking events, writes those taken, and stops the deliveries in flight (they are
// tried again at the next start).
func (d *Dispatcher) Close() {
	close(d.events)
	d.wg.Wait()
}

// Dropped counts the events dropped: the store did not take them, or their policy's receivers
// were maxPending deliveries behind.
func (d *Dispatcher) Dropped() int64 { return d.dropped.Load() }

// Delivered and Failed count the deliveries that ended: answered 2xx, or failed for good.
func (d *Dispatcher) Delivered() int64 { return d.delivered.Load() }
func (d *Dispatcher) Failed() int64    { return d.failed.Load() }

// reload reads the policies again.
func (d *Dispatcher) reload() {
	all, err := d.policies.all(context.Background())
	if err != nil {
		d.log.Error("reading webhook policies", "err", err)
		return
	}
	d.snapshot.Store(&all)
	d.mu.Lock()
	clear(d.idleUntil)
	d.mu.Unlock()
}

// wanted reports whether any enabled policy might want e: the cheap test of Notify.
func (d *Dispatcher) wanted(e Event) bool {
	all := d.snapshot.Load()
	if all == nil {
		return false
	}
	for _, p := range *all {
		if p.Enabled && slices.Contains(p.EventTypes, e.Type) && (p.ProjectID == 0) == e.Mirrored {
			if p.ProjectID == 0 || p.ProjectName == e.project() {
				return true
			}
		}
	}
	return false
}

// project is the project of e's repository (or e.Project).
func (e Event) project() string {
	if e.Project != "" {
		return e.Project
	}
	p, _, _ := strings.Cut(e.Repo, "/")
	return p
}

// Notify takes e for the policies that want it. It never blocks: when the store has fallen
// behind by queueCap events, e is dropped, logged and counted.
func (d *Dispatcher) Notify(e Event) {
	if e.Time.IsZero() {
		e.Time = d.cfg.Now()
	}
	if !d.wanted(e) {
		return
	}
	defer func() {
		if recover() != nil { // closed: cove is stopping
			d.dropped.Add(1)
		}
	}()
	select {
	case d.events <- e:
	default:
		if n := d.dropped.Add(1); n == 1 || n%1000 == 0 {
			d.log.Error("webhook events dropped: the metadata store takes them slower than they come", "dropped", n)
		}
	}
}

// writeLoop stores the events taken, in batches of up to 100 (or what came in 50 ms).
func (d *Dispatcher) writeLoop() {
	defer d.cancel() // the delivery loop ends once every event taken is written
	var batch []Event
	flush := func() {
		if len(batch) > 0 {
			d.write(batch)
			batch = batch[:0]
		}
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case e, ok := <-d.events:
			if !ok {
				flush()
				return
			}
			batch = append(batch, e)
			if len(batch) >= 100 {
				flush()
			}
		case <-t.C:
			flush()
		}
	}
}

const (
	prefixQueue = "webhook/queue/"
	prefixExec  = "webhook/exec/"
	seqExec     = "webhook/seq/exec"
	seqTask     = "webhook/seq/task"
)

func execPrefix(policyID int64) string  { return prefixExec + pad(policyID) + "/" }
func execKey(policyID, id int64) []byte { return []byte(execPrefix(policyID) + pad(id)) }
func queuePrefix(policyID int64) string { return prefixQueue + pad(policyID) + "/" }
func queueKey(policyID, taskID int64) []byte {
	return []byte(queuePrefix(policyID) + pad(taskID))
}

// queued is a delivery waiting in the queue: one target of one execution.
type queued struct {
	TaskID      int64     `json:"task_id"`
	ExecID      int64     `json:"exec_id"`
	PolicyID    int64     `json:"policy_id"`
	Target      Target    `json:"target"`
	EventType   string    `json:"event_type"`
	DeliveryID  string    `json:"delivery_id"`
	ContentType string    `json:"content_type"`
	Body        []byte    `json:"body"`
	Attempts    int       `json:"attempts"`
	Next        time.Time `json:"next"`
	Lease       time.Time `json:"lease,omitzero"` // a node delivers it until then
}

// write turns events into executions, tasks and queue entries.
func (d *Dispatcher) write(batch []Event) {
	ctx := context.Background()
	all := d.snapshot.Load()
	if all == nil {
		return
	}
	type item struct {
		exec  execRecord
		queue []queued
	}
	var items []item
	for _, e := range batch {
		var ri repoInfo
		projectID := int64(0)
		if !e.Mirrored {
			id, public, err := d.cfg.Project(ctx, e.project())
			if err != nil {
				d.log.Warn("webhook event of a project that cannot be looked up", "project", e.project(), "err", err)
				continue
			}
			projectID, ri.public = id, public
		}
		if e.Repo != "" && d.cfg.RepoCreated != nil {
			ri.created = d.cfg.RepoCreated(ctx, e.Repo)
		}
		if e.Tag == "" && e.Digest != "" && e.Repo != "" && d.cfg.FirstTag != nil {
			e.Tag = d.cfg.FirstTag(ctx, e.Repo, e.Digest)
		}
		for _, p := range *all {
			if !p.Enabled || !slices.Contains(p.EventTypes, e.Type) || p.ProjectID != projectID || (projectID == 0) != e.Mirrored {
				continue
			}
			execID, err := d.cfg.DB.NextID(ctx, seqExec)
			if err != nil {
				d.log.Error("webhook event not stored", "type", e.Type, "err", err)
				continue
			}
			it := item{exec: execRecord{ID: execID, PolicyID: p.ID, EventType: e.Type, Status: statusPending, Start: d.cfg.Now().UTC()}}
			source := fmt.Sprintf("/projects/%d/webhook/policies/%d", p.ProjectID, p.ID)
			if p.ProjectID == 0 {
				source = fmt.Sprintf("/system/webhook/policies/%d", p.ID)
			}
			for _, t := range p.Targets {
				taskID, err := d.cfg.DB.NextID(ctx, seqTask)
				if err != nil {
					d.log.Error("webhook event not stored", "type", e.Type, "err", err)
					continue
				}
				deliveryID := newID()
				body, ct, err := e.body(t.PayloadFormat, deliveryID, source, d.cfg.Host, ri)
				if err != nil {
					d.log.Error("webhook payload", "err", err)
					continue
				}
				it.exec.Tasks = append(it.exec.Tasks, taskRecord{ID: taskID, ExecID: execID, Status: statusPending, Address: t.Address,
					Created: it.exec.Start, Updated: it.exec.Start})
				it.queue = append(it.queue, queued{TaskID: taskID, ExecID: execID, PolicyID: p.ID, Target: t, EventType: e.Type,
					DeliveryID: deliveryID, ContentType: ct, Body: body, Next: it.exec.Start})
			}
			if len(it.queue) > 0 {
				items = append(items, it)
			}
		}
	}
	if len(items) == 0 {
		return
	}
	// An execution with its queue entries per transaction: small whatever the batch (a
	// transaction of the whole batch outgrew what badger takes). A policy whose receivers fell
	// maxPending deliveries behind takes no more until they drain.
	pending := map[int64]int{}
	for _, it := range items {
		pid := it.exec.PolicyID
		if _, ok := pending[pid]; !ok {
			pending[pid] = d.pending(ctx, pid)
		}
		if pending[pid]+len(it.queue) > maxPending {
			if n := d.dropped.Add(1); n == 1 || n%1000 == 0 {
				d.log.Error("webhook events dropped: a policy's receivers are too far behind", "policy", pid, "pending", pending[pid], "dropped", n)
			}
			continue
		}
		err := kv.Retry(ctx, d.cfg.DB, func(txn kv.Txn) error {
			if err := kv.Put(txn, execKey(pid, it.exec.ID), it.exec); err != nil {
				return err
			}
			for _, q := range it.queue {
				if err := kv.Put(txn, queueKey(q.PolicyID, q.TaskID), q); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			if n := d.dropped.Add(1); n == 1 || n%100 == 0 {
				d.log.Error("webhook event not stored", "policy", pid, "type", it.exec.EventType, "dropped", n, "err", err)
			}
			continue
		}
		pending[pid] += len(it.queue)
		d.mu.Lock()
		delete(d.idleUntil, pid)
		d.queued[pid]++
		d.mu.Unlock()
	}
	for pid := range pending {
		d.prune(ctx, pid)
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// keepExecutions bounds each policy's history; maxPending the deliveries a policy has waiting.
const (
	keepExecutions = 100
	maxPending     = 1000
)

// pending counts the deliveries of a policy waiting in the queue, up to maxPending.
func (d *Dispatcher) pending(ctx context.Context, policyID int64) int {
	n := 0
	_ = d.cfg.DB.View(ctx, func(txn kv.Txn) error {
		return txn.Scan([]byte(queuePrefix(policyID)), kv.ScanOptions{KeysOnly: true}, func(_, _ []byte) (bool, error) {
			n++
			return n <= maxPending, nil
		})
	})
	return n
}

// prune drops a policy's executions beyond the newest keepExecutions (their queue entries, if
// any are left, end when they find their execution gone).
func (d *Dispatcher) prune(ctx context.Context, policyID int64) {
	var keys [][]byte
	err := d.cfg.DB.View(ctx, func(txn kv.Txn) error {
		n := 0
		return txn.Scan([]byte(execPrefix(policyID)), kv.ScanOptions{Reverse: true, KeysOnly: true}, func(k, _ []byte) (bool, error) {
			if n++; n > keepExecutions {
				keys = append(keys, k)
			}
			return true, nil
		})
	})
	if err != nil || len(keys) == 0 {
		return
	}
	ops := make([]kv.Op, len(keys))
	for i, k := range keys {
		ops[i] = kv.Op{Key: k, Delete: true}
	}
	if err := d.cfg.DB.Write(ctx, ops); err != nil {
		d.log.Warn("pruning webhook history", "err", err)
	}
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // a UUID, version 4
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
