package auth

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"cove/internal/kv"
	"cove/internal/mail"
)

// Policy answers "may it do this?": it keeps the projects (project.go), their members and roles
// (role.go) and the settings an admin changes at run time (settings.go), and decides every
// request by them, deny by default (decide). A robot's permissions come with its Principal, from
// Identity. It is safe for concurrent use.
type Policy struct {
	records
	now func() time.Time
	// identity says whether a user exists (AddMember), whose passwords the directory checks
	// (settings), and deletes a project's robot accounts with it (DeleteProject).
	identity *Identity
	reserved map[string]bool // upstream names: no project's (Config.ReservedNames)
	settings settingsCache
	email    mail.Config // the file's e-mail settings (Config.Email); email.go
	// projects remembers lookups of projects by name while the index is unchanged; nil in a
	// fleet, whose index other nodes write.
	projects *projectMemo
}

// newPolicy returns the Policy of cfg over db, with the settings stored there, if any, over those
// of cfg.
func newPolicy(db kv.DB, cfg Config, identity *Identity, now func() time.Time) (*Policy, error) {
	po := &Policy{records: records{db: db, writable: cfg.Writable}, now: now, identity: identity, reserved: map[string]bool{}, email: cfg.Email}
	anonymous := "none"
	if cfg.AnonymousMirrorPull {
		anonymous = "mirror"
	}
	if err := po.loadSettings(Settings{SelfRegistration: cfg.SelfRegistration, AnonymousPull: anonymous, ProjectCreation: cfg.ProjectCreation}); err != nil {
		return nil, err
	}
	for _, n := range cfg.ReservedNames {
		po.reserved[n] = true
		if n == "docker.io" {
			// Docker Hub's official images: docker pull alpine asks for library/alpine.
			po.reserved["library"] = true
		}
	}
	return po, nil
}

// Authorize decides whether p may do action on repo, a local repository: by the token's grants
// for a token principal, else by the project's policy (see decide).
func (po *Policy) Authorize(ctx context.Context, p Principal, repo string, action Action) error {
	if p.Token {
		// A grant made before the project existed was made under another policy (the mirror's,
		// say): it does not carry over to the project.
		if proj, err := po.Project(ctx, ProjectOf(repo)); err == nil && p.tokenIssued.Before(proj.Created.Truncate(time.Second)) {
			return ErrUnauthenticated
		}
		return tokenDecision(p, repo, action)
	}
	return po.authorizeLocal(ctx, p, repo, action)
}

// tokenDecision: a token grants what it says and nothing else. Lacking a grant is a 401 — the
// client asks the token service for the scope, as the token spec has it — unless the token of
// a named account was asked for that very action and refused it: asking again would change
// nothing, so it is a 403 (docker retries a 401 for a minute, and stops at a 403 saying
// "denied").
func tokenDecision(p Principal, name string, action Action) error {
	if p.Granted("repository", name, string(action)) {
		return nil
	}
	if !p.Anonymous() && p.AskedFor("repository", name, string(action)) {
		return ErrDenied
	}
	return ErrUnauthenticated
}

func (po *Policy) authorizeLocal(ctx context.Context, p Principal, repo string, action Action) error {
	if !strings.Contains(repo, "/") {
		// A one-element name is in no project (it is not the project's own repository).
		if err := decide(p, nil, RoleNone, action); !errors.Is(err, ErrProjectUnknown) {
			return err
		}
		return ErrNoProject
	}
	return po.AuthorizeProject(ctx, p, ProjectOf(repo), action)
}

// AuthorizeProject decides whether p may do action in project (pull, push, delete, or manage
// members and robots).
func (po *Policy) AuthorizeProject(ctx context.Context, p Principal, project string, action Action) error {
	proj, err := po.Project(ctx, project)
	if errors.Is(err, ErrProjectUnknown) {
		return decide(p, nil, RoleNone, action)
	}
	if err != nil {
		return err
	}
	return decide(p, &proj, po.RoleOf(ctx, p, project), action)
}

// AuthorizeMirror decides whether p may do action on name, a mirrored repository: by the token's
// grants for a token principal; else pull only, for every identity, and for the anonymous when the
// configuration allows it. Mirrors are read-only.
func (po *Policy) AuthorizeMirror(ctx context.Context, p Principal, name string, action Action) error {
	if p.Token {
		return tokenDecision(p, name, action)
	}
	return po.authorizeMirror(p, action)
}

func (po *Policy) authorizeMirror(p Principal, action Action) error {
	switch {
	case action != ActionPull:
		return ErrDenied
	case (p.Anonymous() || p.Robot) && po.settings.get().AnonymousPull != "mirror":
		// A robot reaches nothing beyond its project: mirrored content only as the anonymous do.
		if p.Robot {
			return ErrDenied
		}
		return ErrUnauthenticated
	}
	return nil
}

// ProjectExists reports whether the project name exists.
func (po *Policy) ProjectExists(ctx context.Context, name string) (bool, error) {
	_, err := po.Project(ctx, name)
	if errors.Is(err, ErrProjectUnknown) {
		return false, nil
	}
	return err == nil, err
}

// allowed decides one action on a repository name for a token (Tokens.grant), for a principal
// authenticated by password (or none): the local project's policy when the name is in a
// project, else the mirror's.
func (po *Policy) allowed(ctx context.Context, p Principal, name string, action Action) bool {
	first, _, nested := strings.Cut(name, "/")
	if nested && !po.reserved[first] {
		exists, err := po.ProjectExists(ctx, first)
		if err != nil {
			// Unknown whether the name is a private project's: nothing is granted, rather
			// than a mirror's pull on what may be a private name.
			return false
		}
		if exists {
			return po.authorizeLocal(ctx, p, name, action) == nil
		}
	}
	return po.authorizeMirror(p, action) == nil
}

// decide is the policy: may p, with role in the project, do action there (proj nil: the project
// does not exist)? System admins may do everything; robots only what they were given, in their
// own project; everyone else what the role allows, and anyone may pull a public project.
// Anonymous callers learn nothing about private or missing projects beyond "log in".
func decide(p Principal, proj *Project, role Role, action Action) error {
	switch {
	case proj == nil && p.Anonymous():
		return ErrUnauthenticated
	case proj == nil && p.Admin:
		return ErrProjectUnknown
	case proj == nil:
		return ErrDenied
	case p.Admin:
		return nil
	case p.Robot:
		if p.robotProject == proj.Name && slices.Contains(p.robotActions, action) {
			return nil
		}
		return ErrDenied
	case action == ActionPull && proj.Public:
		return nil
	case role.Allows(action):
		return nil
	case p.Anonymous():
		return ErrUnauthenticated
	}
	return ErrDenied
}
