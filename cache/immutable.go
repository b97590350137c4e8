package cache

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/bmatcuk/doublestar/v4"

	"cove/internal/kv"
)

// Tag immutability (HARBOR-API §5): rules per project name the tags that, once they exist, are
// never moved to another manifest nor deleted. They are kept in the index and checked in the
// same transaction as the push or the delete, so that no path (a push, a copy, the API, /v2)
// goes around them.

// ImmutableRule is one rule: the tags matching its tag selector in the repositories matching its
// scope selector are immutable. Patterns are doublestar globs; a repository's pattern is matched
// against its name without the project ("app", "team/app" in project p for p/team/app).
type ImmutableRule struct {
	ID       int64  `json:"id"`
	Project  string `json:"project"`
	Priority int    `json:"priority"`
	Disabled bool   `json:"disabled"`
	// TagPattern and TagExcludes: the tags it names (matches), or all but those (excludes).
	TagPattern  string `json:"tag_pattern"`
	TagExcludes bool   `json:"tag_excludes"`
	// RepoPattern and RepoExcludes: the repositories it covers, the same way.
	RepoPattern  string `json:"repo_pattern"`
	RepoExcludes bool   `json:"repo_excludes"`
}

var (
	// ErrTagImmutable means a push would move, or a delete remove, an immutable tag.
	ErrTagImmutable = errors.New("the tag is immutable")
	// ErrRuleInvalid is a rule with a bad pattern.
	ErrRuleInvalid = errors.New("invalid immutability rule")
	// ErrRuleUnknown means the project has no rule of that id.
	ErrRuleUnknown = errors.New("no such immutability rule")
	// ErrRuleExists means the project has the same rule already.
	ErrRuleExists = errors.New("the project has that rule already")
)

// ImmutableError names the tag an operation was refused for.
type ImmutableError struct {
	Repo, Tag string // Repo without its project, as Harbor's message has it
	Delete    bool   // a delete, not a push
}

func (e *ImmutableError) Error() string {
	if e.Delete {
		return fmt.Sprintf("the tag %s:%s configured as immutable, cannot be deleted", e.Repo, e.Tag)
	}
	return fmt.Sprintf("Failed to process request due to '%s:%s' configured as immutable.", e.Repo, e.Tag)
}

func (e *ImmutableError) Is(target error) bool { return target == ErrTagImmutable }

const (
	prefixImmutable = "immutable/" // immutable/<project>\x00<id> → ImmutableRule
	keyImmutableSeq = "immutable-seq"
)

func immutableKey(project string, id int64) []byte {
	return fmt.Appendf(nil, "%s%s%s%020d", prefixImmutable, project, sep, id)
}

// matches reports whether the rule covers tag in rest, a repository's name without its project.
func (r ImmutableRule) matches(rest, tag string) bool {
	if r.Disabled {
		return false
	}
	repoOK, _ := doublestar.Match(r.RepoPattern, rest)
	tagOK, _ := doublestar.Match(r.TagPattern, tag)
	return repoOK != r.RepoExcludes && tagOK != r.TagExcludes
}

func (r ImmutableRule) validate() error {
	for _, p := range []string{r.TagPattern, r.RepoPattern} {
		if p == "" || !doublestar.ValidatePattern(p) {
			return fmt.Errorf("%w: %q is not a pattern (doublestar: *, **, ?, [a-z], {a,b})", ErrRuleInvalid, p)
		}
	}
	return nil
}

// rulesOf reads the rules of project in txn.
func rulesOf(txn kv.Txn, project string) ([]ImmutableRule, error) {
	var out []ImmutableRule
	err := eachJSON(txn, prefixImmutable+project+sep, func(_ []byte, r *ImmutableRule) error {
		out = append(out, *r)
		return nil
	})
	return out, err
}

// checkMutable returns an *ImmutableError when a rule of repo's project makes tag immutable.
func checkMutable(txn kv.Txn, repo, tag string) error { return checkMutableFor(txn, repo, tag, false) }

// checkDeletable is checkMutable for a delete, in Harbor's words for one.
func checkDeletable(txn kv.Txn, repo, tag string) error { return checkMutableFor(txn, repo, tag, true) }

func checkMutableFor(txn kv.Txn, repo, tag string, del bool) error {
	project, rest, ok := strings.Cut(repo, "/")
	if !ok {
		return nil
	}
	rules, err := rulesOf(txn, project)
	if err != nil {
		return err
	}
	for _, r := range rules {
		if r.matches(rest, tag) {
			return &ImmutableError{Repo: rest, Tag: tag, Delete: del}
		}
	}
	return nil
}

// Immutable reports which of tags in repo are immutable.
func (ms *Manifests) Immutable(ctx context.Context, repo string, tags []string) (map[string]bool, error) {
	out := map[string]bool{}
	err := ms.db.View(ms.st.ctx, func(txn kv.Txn) error {
		for _, t := range tags {
			err := checkMutable(txn, repo, t)
			if errors.Is(err, ErrTagImmutable) {
				out[t] = true
			} else if err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// ImmutableRules lists the rules of project, by priority then id.
func (ms *Manifests) ImmutableRules(ctx context.Context, project string) ([]ImmutableRule, error) {
	var out []ImmutableRule
	err := ms.db.View(ms.st.ctx, func(txn kv.Txn) error {
		var err error
		out, err = rulesOf(txn, project)
		return err
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Priority < out[j].Priority })
	return out, err
}

// AddImmutableRule adds r to its project and returns it with its id; the same rule twice is
// ErrRuleExists.
func (ms *Manifests) AddImmutableRule(ctx context.Context, r ImmutableRule) (ImmutableRule, error) {
	if err := r.validate(); err != nil {
		return r, err
	}
	err := ms.st.update(func(ct *commitTxn) error {
		rules, err := rulesOf(ct.Txn, r.Project)
		if err != nil {
			return err
		}
		for _, o := range rules {
			if o.TagPattern == r.TagPattern && o.TagExcludes == r.TagExcludes && o.RepoPattern == r.RepoPattern && o.RepoExcludes == r.RepoExcludes {
				return ErrRuleExists
			}
		}
		var seq int64
		if err := kv.Get(ct.Txn, []byte(keyImmutableSeq), &seq); err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		seq++
		r.ID = seq
		if err := kv.Put(ct.Txn, []byte(keyImmutableSeq), seq); err != nil {
			return err
		}
		return kv.Put(ct.Txn, immutableKey(r.Project, r.ID), r)
	})
	return r, err
}

// UpdateImmutableRule replaces the rule r.ID of r.Project.
func (ms *Manifests) UpdateImmutableRule(ctx context.Context, r ImmutableRule) error {
	if err := r.validate(); err != nil {
		return err
	}
	return ms.st.update(func(ct *commitTxn) error {
		if _, err := ct.Get(immutableKey(r.Project, r.ID)); err != nil {
			return notFound(err, ErrRuleUnknown)
		}
		return kv.Put(ct.Txn, immutableKey(r.Project, r.ID), r)
	})
}

// DeleteImmutableRule removes the rule id of project.
func (ms *Manifests) DeleteImmutableRule(ctx context.Context, project string, id int64) error {
	return ms.st.update(func(ct *commitTxn) error {
		if _, err := ct.Get(immutableKey(project, id)); err != nil {
			return notFound(err, ErrRuleUnknown)
		}
		return ct.Delete(immutableKey(project, id))
	})
}
