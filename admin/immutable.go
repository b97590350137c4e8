package admin

import (
	"errors"
	"fmt"
	"net/http"

	"cove/auth"
	"cove/cache"
)

// Tag immutability rules in Harbor's shape (HARBOR-API §5): project admins and maintainers change
// them, members read them.

type selector struct {
	Kind       string `json:"kind"`
	Decoration string `json:"decoration"`
	Pattern    string `json:"pattern"`
	Extras     string `json:"extras,omitempty"`
}

type immutableRule struct {
	ID             int64                 `json:"id"`
	Priority       int                   `json:"priority"`
	Disabled       bool                  `json:"disabled"`
	Action         string                `json:"action"`
	Template       string                `json:"template"`
	Params         map[string]any        `json:"params"`
	TagSelectors   []selector            `json:"tag_selectors"`
	ScopeSelectors map[string][]selector `json:"scope_selectors"`
}

func toImmutableRule(r cache.ImmutableRule) immutableRule {
	tag, repo := "matches", "repoMatches"
	if r.TagExcludes {
		tag = "excludes"
	}
	if r.RepoExcludes {
		repo = "repoExcludes"
	}
	return immutableRule{ID: r.ID, Priority: r.Priority, Disabled: r.Disabled, Action: "immutable", Template: "immutable_template",
		Params:         map[string]any{},
		TagSelectors:   []selector{{Kind: "doublestar", Decoration: tag, Pattern: r.TagPattern}},
		ScopeSelectors: map[string][]selector{"repository": {{Kind: "doublestar", Decoration: repo, Pattern: r.RepoPattern}}}}
}

// fromImmutableRule reads a rule: one doublestar tag selector, one repository selector.
func fromImmutableRule(project string, in immutableRule) (cache.ImmutableRule, error) {
	bad := func(format string, a ...any) (cache.ImmutableRule, error) {
		return cache.ImmutableRule{}, &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: fmt.Sprintf(format, a...)}
	}
	repos := in.ScopeSelectors["repository"]
	if len(in.TagSelectors) != 1 || len(repos) != 1 {
		return bad("a rule has one tag selector and one repository scope selector")
	}
	t, r := in.TagSelectors[0], repos[0]
	if (t.Kind != "" && t.Kind != "doublestar") || (r.Kind != "" && r.Kind != "doublestar") {
		return bad("selectors are of kind doublestar")
	}
	if t.Decoration != "matches" && t.Decoration != "excludes" {
		return bad("a tag selector's decoration is matches or excludes, not %q", t.Decoration)
	}
	if r.Decoration != "repoMatches" && r.Decoration != "repoExcludes" {
		return bad("a repository selector's decoration is repoMatches or repoExcludes, not %q", r.Decoration)
	}
	if in.Action != "" && in.Action != "immutable" {
		return bad("the action of an immutability rule is immutable")
	}
	return cache.ImmutableRule{ID: in.ID, Project: project, Priority: in.Priority, Disabled: in.Disabled,
		TagPattern: t.Pattern, TagExcludes: t.Decoration == "excludes", RepoPattern: r.Pattern, RepoExcludes: r.Decoration == "repoExcludes"}, nil
}

func ruleError(err error) error {
	switch {
	case errors.Is(err, cache.ErrRuleInvalid):
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: err.Error()}
	case errors.Is(err, cache.ErrRuleExists):
		return &apiError{Status: http.StatusConflict, Code: "CONFLICT", Message: err.Error()}
	case errors.Is(err, cache.ErrRuleUnknown):
		return notFound("%s", err.Error())
	}
	return err
}

// ruleProject is the project of a rules request, once who may do action there.
func (s *Server) ruleProject(r *http.Request, who auth.Principal, action auth.Action) (auth.Project, error) {
	if s.content == nil {
		return auth.Project{}, errNoContent
	}
	p, err := s.visible(r.Context(), who, r.PathValue("name"), r.Header.Get("X-Is-Resource-Name") == "true")
	if err != nil {
		return p, err
	}
	if action != auth.ActionPull {
		err = s.auth.Policy.AuthorizeProject(r.Context(), who, p.Name, action)
	}
	return p, err
}

func (s *Server) handleListImmutableRules(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, err := s.ruleProject(r, who, auth.ActionPull)
	if err != nil {
		return err
	}
	rules, err := s.content.ImmutableRules(r.Context(), p.Name)
	if err != nil {
		return err
	}
	out := make([]immutableRule, 0, len(rules))
	for _, rule := range rules {
		out = append(out, toImmutableRule(rule))
	}
	return writePage(w, r, out)
}

func (s *Server) handleAddImmutableRule(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, err := s.ruleProject(r, who, auth.ActionUpdateProject)
	if err != nil {
		return err
	}
	var in immutableRule
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	rule, err := fromImmutableRule(p.Name, in)
	if err != nil {
		return err
	}
	if rule, err = s.content.AddImmutableRule(r.Context(), rule); err != nil {
		return ruleError(err)
	}
	s.record(r, who, "create", "immutable-rule", fmt.Sprintf("%s/%d", p.Name, rule.ID), rule.RepoPattern+":"+rule.TagPattern)
	w.Header().Set("Location", fmt.Sprintf("%s/%d", r.URL.Path, rule.ID))
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (s *Server) handleUpdateImmutableRule(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, err := s.ruleProject(r, who, auth.ActionUpdateProject)
	if err != nil {
		return err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var in immutableRule
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	in.ID = id
	rule, err := fromImmutableRule(p.Name, in)
	if err != nil {
		return err
	}
	if err := s.content.UpdateImmutableRule(r.Context(), rule); err != nil {
		return ruleError(err)
	}
	s.record(r, who, "update", "immutable-rule", fmt.Sprintf("%s/%d", p.Name, id), rule.RepoPattern+":"+rule.TagPattern)
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) handleDeleteImmutableRule(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, err := s.ruleProject(r, who, auth.ActionUpdateProject)
	if err != nil {
		return err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := s.content.DeleteImmutableRule(r.Context(), p.Name, id); err != nil {
		return ruleError(err)
	}
	s.record(r, who, "delete", "immutable-rule", fmt.Sprintf("%s/%d", p.Name, id), "")
	w.WriteHeader(http.StatusOK)
	return nil
}
