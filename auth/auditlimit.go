package auth

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// What one caller can make the audit log hold is bounded (docs/SECURITY.md 18): its refusals
// and anonymous records are kept at most refusalBurst a minute, the rest summed up, and every
// field of a record is clipped to its bound.

// A caller's refusals are recorded one by one up to refusalBurst in a refusalPeriod; past that
// they are counted, and one record with the count is written when the period has passed (or the
// log closes). One caller cannot flood the log (docs/SECURITY.md 18), and the log still says who
// was refused what, and how often.
//
// Over all callers, at most overallBurst limited records of each kind (operation and result:
// failed logins, anonymous tokens, ...) are written one by one in a minute, and windows are made
// for at most overallBurst callers of a kind: past that, a flood from thousands of addresses is
// counted in one record a minute of its kind. A flood of one kind (anonymous tokens) never takes
// the budget of another (failed logins): those are still recorded one by one.
const (
	refusalBurst   = 20
	refusalPeriod  = time.Minute
	refusalCallers = 10000 // windows kept at most; past that, expired ones are dropped first
	overallBurst   = 1000
)

// overallWindow counts every caller's limited records in a refusalPeriod.
type overallWindow struct {
	start      time.Time
	n          int // recorded one by one
	suppressed int // neither recorded nor counted in a caller's window
	callers    map[string]struct{}
	last       Event
}

// summary is the record of the events counted by the overall window only.
func (o *overallWindow) summary() Event {
	s := o.last
	s.Time, s.Count, s.Username, s.Address, s.Resource = o.start, o.suppressed, "", "", ""
	s.Detail = fmt.Sprintf("%d more events from %d or more callers in the minute from %s, not recorded one by one: "+
		"over %d records a minute come from requests anyone can send (a flood); the last: %s",
		o.suppressed, len(o.callers), o.start.UTC().Format(time.RFC3339), overallBurst, o.last.Detail)
	return s
}

type refusalWindow struct {
	start      time.Time
	n          int
	suppressed int
	last       Event // the last event not recorded, for the summary
}

// summary is the record of the events a window did not record one by one.
func (w *refusalWindow) summary() Event {
	s := w.last
	s.Time, s.Count = w.start, w.suppressed
	what := "more"
	if s.Result == "failure" {
		what = "more refusals"
	}
	s.Detail = fmt.Sprintf("%d %s in the minute from %s, not recorded one by one; the last: %s",
		w.suppressed, what, w.start.UTC().Format(time.RFC3339), w.last.Detail)
	return s
}

// RecordRefusal records a refused request (Result "failure"), at most refusalBurst a minute for
// the same user, address and operation; the rest are summed up in one record.
func (a *Audit) RecordRefusal(ctx context.Context, e Event) error {
	e.Result = "failure"
	return a.RecordLimited(ctx, e)
}

// RecordLimited records e, at most refusalBurst a minute for the same user, address, operation
// and result; the rest are summed up in one record, written once the minute has passed. It is
// for events an anonymous or failing caller can cause by the thousand.
func (a *Audit) RecordLimited(ctx context.Context, e Event) error {
	if e.Result == "" {
		e.Result = "success"
	}
	e = bounded(e)
	key := strings.Join([]string{e.Username, e.Address, e.Operation, e.Result}, "\x00")
	now := a.now()
	var summaries []Event
	a.refusalMu.Lock()
	if a.refusals == nil {
		a.refusals = map[string]*refusalWindow{}
	}
	kind := e.Operation + "\x00" + e.Result
	if a.overall == nil {
		a.overall = map[string]*overallWindow{}
	}
	o := a.overall[kind]
	if o == nil {
		o = &overallWindow{start: now}
		a.overall[kind] = o
	}
	if now.Sub(o.start) >= refusalPeriod {
		if o.suppressed > 0 {
			summaries = append(summaries, o.summary())
		}
		*o = overallWindow{start: now}
	}
	w := a.refusals[key]
	if w == nil || now.Sub(w.start) >= refusalPeriod {
		if w != nil && w.suppressed > 0 {
			summaries = append(summaries, w.summary())
		}
		if w == nil && o.n >= overallBurst {
			// A new caller in a flood: counted in the overall window only.
			o.suppressed++
			o.last = e
			if len(o.callers) < refusalCallers {
				if o.callers == nil {
					o.callers = map[string]struct{}{}
				}
				o.callers[key] = struct{}{}
			}
			a.refusalMu.Unlock()
			a.startWriter()
			return a.recordAll(ctx, summaries)
		}
		if w == nil && len(a.refusals) >= refusalCallers {
			summaries = append(summaries, a.dropExpiredLocked(now, false)...)
		}
		if w == nil && len(a.refusals) >= refusalCallers {
			a.refusalMu.Unlock()
			a.log.WarnContext(ctx, "audit: too many callers refused at once; a refusal was not recorded", "user", e.Username, "address", e.Address)
			return a.recordAll(ctx, summaries)
		}
		w = &refusalWindow{start: now}
		a.refusals[key] = w
	}
	record := w.n < refusalBurst && o.n < overallBurst
	if record {
		w.n++
		o.n++
	} else {
		w.suppressed++
		w.last = e
	}
	a.refusalMu.Unlock()
	if !record {
		a.startWriter() // which writes the summary once the minute has passed
	}
	if err := a.recordAll(ctx, summaries); err != nil {
		return err
	}
	if !record {
		return nil
	}
	return a.Record(ctx, e)
}

// dropExpiredLocked drops the windows whose period has passed (every window, with all), and
// returns the summaries of those that did not record every event.
func (a *Audit) dropExpiredLocked(now time.Time, all bool) []Event {
	var out []Event
	for kind, o := range a.overall {
		if all || now.Sub(o.start) >= refusalPeriod {
			if o.suppressed > 0 {
				out = append(out, o.summary())
			}
			delete(a.overall, kind)
		}
	}
	for k, w := range a.refusals {
		if !all && now.Sub(w.start) < refusalPeriod {
			continue
		}
		if w.suppressed > 0 {
			out = append(out, w.summary())
		}
		delete(a.refusals, k)
	}
	return out
}

// writeSummaries writes the summaries of the windows that have passed (of every window, with
// all), at most once a second unless all.
func (a *Audit) writeSummaries(ctx context.Context, all bool) error {
	a.refusalMu.Lock()
	now := a.now()
	if !all && now.Sub(a.swept) < time.Second && !a.swept.After(now) {
		a.refusalMu.Unlock()
		return nil
	}
	a.swept = now
	summaries := a.dropExpiredLocked(now, all)
	a.refusalMu.Unlock()
	return a.recordAll(ctx, summaries)
}

func (a *Audit) recordAll(ctx context.Context, events []Event) error {
	for _, e := range events {
		if err := a.Record(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// The bounds of a record's fields: whatever a caller sends, a record stays a few kilobytes.
// A failed login's user name is anyone's choice, so it gets the shortest bound.
const (
	maxUserField       = 256 // a valid user or robot name fits
	maxFailedUserField = 64
	maxShortField      = 64 // address, operation, resource type, result
	maxLongField       = 2048
)

// bounded clips every field of e to its bound.
func bounded(e Event) Event {
	user := maxUserField
	if e.Result == "failure" {
		user = maxFailedUserField
	}
	e.Username = clip(e.Username, user)
	e.Address = clip(e.Address, maxShortField)
	e.Operation = clip(e.Operation, maxShortField)
	e.ResourceType = clip(e.ResourceType, maxShortField)
	e.Result = clip(e.Result, maxShortField)
	e.Resource = clip(e.Resource, maxLongField)
	e.Detail = clip(e.Detail, maxLongField)
	return e
}

// clip returns s if it has at most n bytes, else its start (cut between characters) and a
// marker with its length, "…(40960 bytes)", n bytes in all; clip(clip(s, n), n) is clip(s, n).
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	marker := "…(" + strconv.Itoa(len(s)) + " bytes)"
	cut := max(n-len(marker), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + marker
}
