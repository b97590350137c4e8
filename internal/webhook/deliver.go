package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"cove/internal/kv"
)

// Delivery: the loop that takes due entries off the queue, policies in turn, and the attempts.

// deliverLoop delivers what is due, once a second or when woken, until the dispatcher closes.
func (d *Dispatcher) deliverLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for tick := 1; ; tick++ {
		d.deliverDue()
		if tick%30 == 0 {
			d.reload() // another node of a fleet may have changed them
		}
		select {
		case <-d.ctx.Done():
			return
		case <-d.wake:
		case <-t.C:
		}
	}
}

// deliverDue claims the queue entries that are due and not leased, as many as there are free
// slots, and delivers each in its own goroutine. The policies take turns, and each has at most
// perPolicy deliveries in flight: one tenant's hanging receivers never hold the others'.
func (d *Dispatcher) deliverDue() {
	now := d.cfg.Now()
	all := d.snapshot.Load()
	if all == nil {
		return
	}
	var lists [][]queued // due entries, per policy, oldest first
	d.mu.Lock()
	queuedBefore := maps.Clone(d.queued) // before the snapshot below is taken
	d.mu.Unlock()
	err := d.cfg.DB.View(d.ctx, func(txn kv.Txn) error {
		for _, p := range *all {
			d.mu.Lock()
			room := perPolicy - d.busy[p.ID]
			until, idle := d.idleUntil[p.ID]
			d.mu.Unlock()
			if idle && (until.IsZero() || now.Before(until)) {
				continue // nothing of its queue is due yet: no need to read it
			}
			var due []queued
			seen, whole := 0, true
			var first time.Time // when the first entry not due falls due
			err := txn.Scan([]byte(queuePrefix(p.ID)), kv.ScanOptions{}, func(_, v []byte) (bool, error) {
				seen++
				var q queued
				if err := jsonUnmarshal(v, &q); err != nil {
					whole = false // unreadable: never taken for a quiet queue
				} else if !q.Next.After(now) && !q.Lease.After(now) {
					d.mu.Lock()
					busy := d.inFlight[q.TaskID]
					d.mu.Unlock()
					if !busy {
						due = append(due, q)
					} else {
						whole = false
					}
				} else if at := later(q.Next, q.Lease); first.IsZero() || at.Before(first) {
					first = at
				}
				more := len(due) < room && seen < 200
				whole = whole && more
				return more, nil
			})
			if err != nil {
				return err
			}
			if len(due) > 0 {
				lists = append(lists, due)
			} else if whole {
				d.mu.Lock()
				if d.queued[p.ID] == queuedBefore[p.ID] { // else the snapshot may miss what was queued
					d.idleUntil[p.ID] = first
				}
				d.mu.Unlock()
			}
		}
		return nil
	})
	if err != nil {
		if d.ctx.Err() == nil {
			d.log.Warn("reading the webhook queue", "err", err)
		}
		return
	}
	var due []queued // one of each policy's in turn
	for i := 0; ; i++ {
		n := 0
		for _, l := range lists {
			if i < len(l) {
				due = append(due, l[i])
				n++
			}
		}
		if n == 0 {
			break
		}
	}
	for _, q := range due {
		select {
		case d.sem <- struct{}{}:
		default:
			return // every slot is taken: the rest at the next round
		}
		claimed, err := d.claim(q.PolicyID, q.TaskID, now)
		if err != nil || !claimed {
			<-d.sem
			continue
		}
		d.mu.Lock()
		d.inFlight[q.TaskID] = true
		d.busy[q.PolicyID]++
		d.mu.Unlock()
		d.wg.Go(func() {
			defer func() {
				d.mu.Lock()
				delete(d.inFlight, q.TaskID)
				delete(d.idleUntil, q.PolicyID) // a retry may be due before what was read
				if d.busy[q.PolicyID]--; d.busy[q.PolicyID] <= 0 {
					delete(d.busy, q.PolicyID)
				}
				d.mu.Unlock()
				<-d.sem
				select { // a slot is free: the next due delivery need not wait for the tick
				case d.wake <- struct{}{}:
				default:
				}
			}()
			d.deliver(q)
		})
	}
}

// claim leases the entry for one attempt, in a transaction: another node that read it too finds
// it leased.
func (d *Dispatcher) claim(policyID, taskID int64, now time.Time) (bool, error) {
	claimed := false
	err := kv.Retry(d.ctx, d.cfg.DB, func(txn kv.Txn) error {
		claimed = false
		var q queued
		if err := kv.Get(txn, queueKey(policyID, taskID), &q); errors.Is(err, kv.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		if q.Next.After(now) || q.Lease.After(now) {
			return nil
		}
		q.Lease = now.Add(2*d.cfg.Timeout + 5*time.Second)
		claimed = true
		return kv.Put(txn, queueKey(policyID, taskID), q)
	})
	return claimed, err
}

// deliver makes one attempt of q and records how it went.
func (d *Dispatcher) deliver(q queued) {
	var pol stored
	err := d.cfg.DB.View(d.ctx, func(txn kv.Txn) error { return kv.Get(txn, policyKey(q.PolicyID), &pol) })
	if errors.Is(err, kv.ErrNotFound) {
		d.finish(q, statusStopped, "the policy was deleted", "")
		return
	}
	if err != nil {
		d.release(q)
		return
	}
	// The policy as it is now: a disabled one sends nothing more, and a target changed or gone
	// since the event gets nothing with its old settings (an auth header revoked, say).
	if !pol.Enabled {
		d.finish(q, statusStopped, "the policy was disabled", "")
		return
	}
	i := slices.IndexFunc(pol.Targets, func(t Target) bool { return t.Address == q.Target.Address })
	if i < 0 {
		d.finish(q, statusStopped, "the target was removed from the policy", "")
		return
	}
	q.Target = pol.Targets[i]
	d.setTask(q, statusRunning, "", "")
	start := d.cfg.Now()
	status, msg := d.attempt(q, pol.Key)
	q.Attempts++
	line := fmt.Sprintf("%s attempt %d: %s (%s)", start.UTC().Format(time.RFC3339), q.Attempts, msg, d.cfg.Now().Sub(start).Round(time.Millisecond))
	switch {
	case status >= 200 && status < 300:
		d.delivered.Add(1)
		d.finish(q, statusSuccess, "", line)
	case q.Attempts >= d.cfg.MaxAttempts:
		d.failed.Add(1)
		d.log.Warn("webhook delivery failed for good", "policy", q.PolicyID, "address", redact(q.Target.Address), "attempts", q.Attempts, "err", msg)
		d.finish(q, statusError, msg, line)
	case d.ctx.Err() != nil:
		d.release(q) // cove stops: the next start tries again
	default:
		wait := min(d.cfg.Backoff<<min(q.Attempts-1, 20), d.cfg.MaxBackoff)
		q.Next, q.Lease = d.cfg.Now().Add(wait), time.Time{}
		err := kv.Retry(context.Background(), d.cfg.DB, func(txn kv.Txn) error {
			if _, err := txn.Get(queueKey(q.PolicyID, q.TaskID)); err != nil {
				return err
			}
			return kv.Put(txn, queueKey(q.PolicyID, q.TaskID), q)
		})
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			d.log.Warn("requeueing a webhook delivery", "err", err)
		}
		d.setTask(q, statusPending, msg, line)
	}
}

// attempt sends q once; it returns the receiver's status (0 when none) and what happened.
func (d *Dispatcher) attempt(q queued, secret string) (int, string) {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, q.Target.Address, bytes.NewReader(q.Body))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", q.ContentType)
	req.Header.Set("User-Agent", "cove-webhook")
	req.Header.Set(HeaderDelivery, q.DeliveryID)
	req.Header.Set(HeaderEvent, q.EventType)
	if q.Target.AuthHeader != "" {
		req.Header.Set("Authorization", q.Target.AuthHeader)
	}
	if secret != "" {
		req.Header.Set(HeaderSignature, Sign(secret, q.Body))
	}
	client := d.clients[0]
	if q.Target.SkipCertVerify {
		client = d.clients[1]
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL: a receiver's URL may hold its secret
		}
		return 0, err.Error()
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	msg := "HTTP " + strconv.Itoa(resp.StatusCode)
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		msg += " (redirects are not followed: give the policy the final address)"
	case resp.StatusCode >= 400:
		if text := strings.Join(strings.Fields(strings.ToValidUTF8(string(head), "")), " "); text != "" {
			msg += ": " + text // what the receiver said, its first 200 bytes
		}
	}
	return resp.StatusCode, msg
}

// The headers of a delivery besides Content-Type and Authorization.
const (
	// HeaderDelivery is the delivery's id, the same on each attempt: receivers drop duplicates
	// by it.
	HeaderDelivery = "X-Cove-Delivery"
	// HeaderEvent is the event type.
	HeaderEvent = "X-Cove-Event"
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256 of the body under the policy's secret.
	HeaderSignature = "X-Cove-Signature-256"
)

// Sign is the signature header's value for body under secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// release gives the entry back, unleased, for the next round.
func (d *Dispatcher) release(q queued) {
	_ = kv.Retry(context.Background(), d.cfg.DB, func(txn kv.Txn) error {
		var cur queued
		if err := kv.Get(txn, queueKey(q.PolicyID, q.TaskID), &cur); err != nil {
			return err
		}
		cur.Lease = time.Time{}
		return kv.Put(txn, queueKey(q.PolicyID, q.TaskID), cur)
	})
}

// finish ends a delivery: its queue entry goes, its task records the end.
func (d *Dispatcher) finish(q queued, status, msg, line string) {
	err := kv.Retry(context.Background(), d.cfg.DB, func(txn kv.Txn) error {
		if err := txn.Delete(queueKey(q.PolicyID, q.TaskID)); err != nil {
			return err
		}
		return d.updateTask(txn, q, status, msg, line)
	})
	if err != nil {
		d.log.Warn("recording a webhook delivery", "err", err)
	}
}

func (d *Dispatcher) setTask(q queued, status, msg, line string) {
	err := kv.Retry(context.Background(), d.cfg.DB, func(txn kv.Txn) error { return d.updateTask(txn, q, status, msg, line) })
	if err != nil {
		d.log.Warn("recording a webhook delivery", "err", err)
	}
}

// updateTask records a task's state in its execution, whose status follows its tasks'.
func (d *Dispatcher) updateTask(txn kv.Txn, q queued, status, msg, line string) error {
	var ex execRecord
	if err := kv.Get(txn, execKey(q.PolicyID, q.ExecID), &ex); errors.Is(err, kv.ErrNotFound) {
		return nil // pruned, or its policy deleted
	} else if err != nil {
		return err
	}
	now := d.cfg.Now().UTC()
	for i := range ex.Tasks {
		t := &ex.Tasks[i]
		if t.ID != q.TaskID {
			continue
		}
		t.Status, t.RunCount, t.Updated = status, q.Attempts, now
		if msg != "" || status == statusSuccess {
			t.Message = msg
		}
		if status == statusRunning && t.Started.IsZero() {
			t.Started = now
		}
		if status == statusSuccess || status == statusError || status == statusStopped {
			t.Ended = now
		}
		if line != "" && len(t.Log) < 16<<10 {
			t.Log += line + "\n"
		}
	}
	ex.settle(now)
	return kv.Put(txn, execKey(q.PolicyID, q.ExecID), ex)
}

// redact is a target's address without its query (receivers keep secrets there).
func redact(address string) string {
	u, err := url.Parse(address)
	if err != nil {
		return "(an address that does not parse)"
	}
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return u.String()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
