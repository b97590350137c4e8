// Package webhook sends cove's events (a push, a pull, a delete, a quota or retention event) to
// the HTTP receivers of webhook policies, in Harbor's v2.0 shapes: policies per project (and, for
// mirrored repositories, which have no project, on the system), a persistent queue in the
// metadata store, at-least-once delivery with retries, and a history of executions and tasks.
//
// A push or a pull only hands its event to a bounded queue in memory; a writer stores the events
// in batches, and workers deliver them: a slow, failing or hanging receiver never delays a client.
package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"cove/internal/kv"
)

// The event types cove fires (Harbor's names).
const (
	PushArtifact   = "PUSH_ARTIFACT"
	PullArtifact   = "PULL_ARTIFACT"
	DeleteArtifact = "DELETE_ARTIFACT"
	QuotaExceed    = "QUOTA_EXCEED"
	QuotaWarning   = "QUOTA_WARNING"
	TagRetention   = "TAG_RETENTION"
)

// EventTypes lists the event types cove fires, in Harbor's order.
var EventTypes = []string{PushArtifact, PullArtifact, DeleteArtifact, QuotaExceed, QuotaWarning, TagRetention}

// The payload formats of a target.
const (
	FormatDefault     = "Default"
	FormatCloudEvents = "CloudEvents"
)

// Policy is a webhook policy: where to send which events of a project (ProjectID 0: the
// system's, for mirrored repositories). Secret, when set, signs each delivery's body; it is never
// shown again.
type Policy struct {
	ID          int64     `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	ProjectID   int64     `json:"project_id"`
	Project     string    `json:"-"` // its name, "" for the system
	Targets     []Target  `json:"targets"`
	EventTypes  []string  `json:"event_types"`
	Creator     string    `json:"creator"`
	Created     time.Time `json:"creation_time"`
	Updated     time.Time `json:"update_time"`
	Enabled     bool      `json:"enabled"`
	Secret      string    `json:"secret,omitempty"`
}

// stored is a policy as the store keeps it (with its project's name and its secret).
type stored struct {
	Policy
	ProjectName string `json:"project_name"`
	Key         string `json:"key,omitempty"` // the secret
}

// Target is where a policy sends its events.
type Target struct {
	Type           string `json:"type"`
	Address        string `json:"address"`
	AuthHeader     string `json:"auth_header,omitempty"`
	SkipCertVerify bool   `json:"skip_cert_verify"`
	PayloadFormat  string `json:"payload_format"`
}

var (
	// ErrInvalid means a policy is not well-formed; the message says why.
	ErrInvalid = errors.New("invalid webhook policy")
	// ErrNotFound means there is no such policy (in that project).
	ErrNotFound = errors.New("no such webhook policy")
	// ErrExists means another policy of the project has that name.
	ErrExists = errors.New("a webhook policy of that name exists in the project")
)

const (
	prefixPolicy = "webhook/policy/"
	seqPolicy    = "webhook/seq/policy"
)

func policyKey(id int64) []byte { return []byte(prefixPolicy + pad(id)) }

// pad writes n so that keys sort as numbers.
func pad(n int64) string { return fmt.Sprintf("%020d", n) }

// validate checks p and fills its defaults; targets are checked against the private-address
// rule when allowPrivate is false.
func (p *Policy) validate(allowPrivate bool) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	p.Name = strings.TrimSpace(p.Name)
	if p.Name == "" || len(p.Name) > 256 {
		return bad("name is required (at most 256 characters)")
	}
	if len(p.Description) > 1024 {
		return bad("description is longer than 1024 characters")
	}
	if len(p.EventTypes) == 0 {
		return bad("event_types is required: one or more of %s", strings.Join(EventTypes, ", "))
	}
	for _, e := range p.EventTypes {
		if !slices.Contains(EventTypes, e) {
			return bad("event type %q is none of %s", e, strings.Join(EventTypes, ", "))
		}
	}
	slices.Sort(p.EventTypes)
	p.EventTypes = slices.Compact(p.EventTypes)
	if len(p.Targets) == 0 || len(p.Targets) > 10 {
		return bad("targets: one to ten are required")
	}
	for i := range p.Targets {
		t := &p.Targets[i]
		if t.Type == "" {
			t.Type = "http"
		}
		if t.Type != "http" {
			return bad("target type %q: cove sends http only", t.Type)
		}
		if t.PayloadFormat == "" {
			t.PayloadFormat = FormatDefault
		}
		if t.PayloadFormat != FormatDefault && t.PayloadFormat != FormatCloudEvents {
			return bad("payload_format %q is neither Default nor CloudEvents", t.PayloadFormat)
		}
		if strings.ContainsFunc(t.AuthHeader, func(r rune) bool { return (r < 0x20 && r != '\t') || r == 0x7f }) {
			return bad("auth_header has a control character")
		}
		u, err := url.Parse(t.Address)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return bad("address %q: want an absolute http(s) URL without credentials", t.Address)
		}
		if err := checkHost(u.Hostname(), allowPrivate); err != nil {
			return bad("address %q: %v", t.Address, err)
		}
	}
	if len(p.Secret) > 256 {
		return bad("secret is longer than 256 characters")
	}
	return nil
}

// Policies keeps webhook policies in the metadata store. It is safe for concurrent use.
type Policies struct {
	db           kv.DB
	now          func() time.Time
	allowPrivate bool
	changed      func() // called after each change: the dispatcher reloads its policies
}

// List returns the policies of project (id 0: the system's), by id.
func (ps *Policies) List(ctx context.Context, projectID int64) ([]Policy, error) {
	all, err := ps.all(ctx)
	if err != nil {
		return nil, err
	}
	out := []Policy{}
	for _, s := range all {
		if s.ProjectID == projectID {
			out = append(out, s.public())
		}
	}
	return out, nil
}

func (s stored) public() Policy {
	p := s.Policy
	p.Project = s.ProjectName
	p.Secret = ""
	return p
}

// all reads every policy.
func (ps *Policies) all(ctx context.Context) ([]stored, error) {
	var out []stored
	err := ps.db.View(ctx, func(txn kv.Txn) error {
		return txn.Scan([]byte(prefixPolicy), kv.ScanOptions{}, func(_, v []byte) (bool, error) {
			var s stored
			if err := jsonUnmarshal(v, &s); err != nil {
				return false, err
			}
			out = append(out, s)
			return true, nil
		})
	})
	return out, err
}

// Get returns the policy id of project.
func (ps *Policies) Get(ctx context.Context, projectID, id int64) (Policy, error) {
	var s stored
	err := ps.db.View(ctx, func(txn kv.Txn) error { return kv.Get(txn, policyKey(id), &s) })
	if errors.Is(err, kv.ErrNotFound) || (err == nil && s.ProjectID != projectID) {
		return Policy{}, ErrNotFound
	}
	return s.public(), err
}

// Create stores p as a new policy of project (projectName "" and id 0: the system's).
func (ps *Policies) Create(ctx context.Context, projectID int64, projectName string, p Policy, creator string) (Policy, error) {
	if err := p.validate(ps.allowPrivate); err != nil {
		return Policy{}, err
	}
	id, err := ps.db.NextID(ctx, seqPolicy)
	if err != nil {
		return Policy{}, err
	}
	now := ps.now().UTC()
	s := stored{Policy: p, ProjectName: projectName, Key: p.Secret}
	s.ID, s.ProjectID, s.Creator, s.Created, s.Updated, s.Secret = id, projectID, creator, now, now, ""
	err = kv.Retry(ctx, ps.db, func(txn kv.Txn) error {
		if err := ps.nameFree(txn, projectID, s.Name, 0); err != nil {
			return err
		}
		return kv.Put(txn, policyKey(id), s)
	})
	if err != nil {
		return Policy{}, err
	}
	ps.changed()
	return s.public(), nil
}

// nameFree is ErrExists when another policy of project (not id) has name.
func (ps *Policies) nameFree(txn kv.Txn, projectID int64, name string, id int64) error {
	return txn.Scan([]byte(prefixPolicy), kv.ScanOptions{}, func(_, v []byte) (bool, error) {
		var s stored
		if err := jsonUnmarshal(v, &s); err != nil {
			return false, err
		}
		if s.ProjectID == projectID && s.ID != id && s.Name == name {
			return false, ErrExists
		}
		return true, nil
	})
}

// Update replaces the policy id of project with p; a p without a secret keeps the old one.
func (ps *Policies) Update(ctx context.Context, projectID, id int64, p Policy) (Policy, error) {
	if err := p.validate(ps.allowPrivate); err != nil {
		return Policy{}, err
	}
	var s stored
	err := kv.Retry(ctx, ps.db, func(txn kv.Txn) error {
		if err := kv.Get(txn, policyKey(id), &s); errors.Is(err, kv.ErrNotFound) || (err == nil && s.ProjectID != projectID) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		if err := ps.nameFree(txn, projectID, p.Name, id); err != nil {
			return err
		}
		if p.Secret != "" {
			s.Key = p.Secret
		}
		s.Name, s.Description, s.Targets, s.EventTypes, s.Enabled = p.Name, p.Description, p.Targets, p.EventTypes, p.Enabled
		s.Updated = ps.now().UTC()
		return kv.Put(txn, policyKey(id), s)
	})
	if err != nil {
		return Policy{}, err
	}
	ps.changed()
	return s.public(), nil
}

// Delete removes the policy id of project, and its history.
func (ps *Policies) Delete(ctx context.Context, projectID, id int64) error {
	err := kv.Retry(ctx, ps.db, func(txn kv.Txn) error {
		var s stored
		if err := kv.Get(txn, policyKey(id), &s); errors.Is(err, kv.ErrNotFound) || (err == nil && s.ProjectID != projectID) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		return txn.Delete(policyKey(id))
	})
	if err != nil {
		return err
	}
	ps.changed()
	// The history and the deliveries waiting go after the policy, in batches (a delivery in
	// flight finds its policy gone and ends).
	var ops []kv.Op
	err = ps.db.View(ctx, func(txn kv.Txn) error {
		for _, prefix := range []string{execPrefix(id), queuePrefix(id)} {
			err := txn.Scan([]byte(prefix), kv.ScanOptions{KeysOnly: true}, func(k, _ []byte) (bool, error) {
				ops = append(ops, kv.Op{Key: k, Delete: true})
				return len(ops) < 100_000, nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || len(ops) == 0 {
		return err
	}
	return ps.db.Write(ctx, ops)
}

// DeleteProject removes the policies of a project that is deleted.
func (ps *Policies) DeleteProject(ctx context.Context, projectID int64) error {
	list, err := ps.List(ctx, projectID)
	if err != nil {
		return err
	}
	for _, p := range list {
		if err := ps.Delete(ctx, projectID, p.ID); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}
