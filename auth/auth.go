// Package auth decides who a request comes from and what it may do. It has four parts, each with
// its own state; Service holds them, New builds the first three over one Config and takes the
// Audit from it (NewAudit):
//
//   - Identity: users, robot accounts and their passwords (local bcrypt hashes or the LDAP
//     directory), the admin page's sessions, the built-in admin, the limits on failed logins.
//   - Policy: projects, members and their roles, the run-time settings, and the decisions over
//     them. Decisions deny by default: a request may do only what Authorize allows.
//   - Tokens: the Docker token service (/service/token), its signing keys, and the verification
//     of the tokens it issued; it authenticates requests.
//   - Audit: the audit log of logins, tokens and changes.
//
// Identity depends on no other part; Policy asks Identity; Tokens asks both. The records are kept
// in the metadata store (badger, or PostgreSQL for a fleet) under the "auth/" prefix.
package auth

import (
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Action is what a request does to a repository (OCI distribution: GET/HEAD pull, POST/PUT/PATCH
// push, DELETE delete).
type Action string

// The repository actions.
const (
	ActionPull   Action = "pull"
	ActionPush   Action = "push"
	ActionDelete Action = "delete"
)

// Principal is who a request comes from. The zero Principal is anonymous.
type Principal struct {
	Name  string
	Admin bool
	// Groups are the directory groups of an LDAP user (DNs and cns), for group memberships.
	Groups []string
	// Robot is set for a robot account, which may act only in its own project.
	Robot        bool
	robotProject string
	robotActions []Action
	// Token is set when the request carried a valid bearer token (an anonymous one, too): its
	// grants, and nothing else, decide what the request may do.
	Token       bool
	access      map[string][]string // the token's grants, by "type:name"
	refused     map[string][]string // what the token was asked and refused, by "type:name"
	tokenIssued time.Time
	// uid and epoch are the account's id and epoch when it was authenticated (robots: id only).
	// Tokens and sessions carry them, and are refused once the account changed or is gone, even
	// if an account of the same name came back (docs/SECURITY.md 16).
	uid   int64
	epoch uint64
}

// Identity is p without a token's grants: who it is, for decisions by policy rather than by grant
// (what the catalog lists).
func (p Principal) Identity() Principal {
	p.Token, p.access = false, nil
	return p
}

// Anonymous reports whether p carries no identity.
func (p Principal) Anonymous() bool { return p.Name == "" }

// Asked reports whether a token principal's token has an entry for the resource, granted or not:
// the client asked for it.
func (p Principal) Asked(typ, name string) bool {
	_, ok := p.access[typ+":"+name]
	return ok
}

// AskedFor reports whether a token principal's token was asked for action on the resource,
// granted or not.
func (p Principal) AskedFor(typ, name string, action string) bool {
	return p.Granted(typ, name, action) || slices.Contains(p.refused[typ+":"+name], action)
}

// Granted reports whether a token principal's grants include action on the resource.
func (p Principal) Granted(typ, name string, action string) bool {
	return slices.Contains(p.access[typ+":"+name], action) || slices.Contains(p.access[typ+":"+name], "*")
}

// Errors returned by the methods of Identity, Policy and Tokens; compare with errors.Is.
var (
	// ErrBadCredentials means credentials were given and are wrong. They never fall back to anonymous.
	ErrBadCredentials = errors.New("invalid username or password")
	// ErrUnauthenticated means the request is anonymous and needs an identity.
	ErrUnauthenticated = errors.New("authentication required")
	// ErrDenied means the identity may not do what it asks.
	ErrDenied = errors.New("requested access to the resource is denied")
	// ErrProjectUnknown means the repository's project does not exist.
	ErrProjectUnknown = errors.New("project does not exist")
	// ErrNoProject means a repository name has no project part: local repositories are
	// named <project>/<repository>.
	ErrNoProject = errors.New("repository name has no project")
	// ErrProjectExists means a project of that name exists already.
	ErrProjectExists = errors.New("project already exists")
	// ErrInvalid means a name or value is not acceptable.
	ErrInvalid = errors.New("invalid value")
	// ErrNotFound means the user, member or robot asked for does not exist (for this caller).
	ErrNotFound = errors.New("not found")
	// ErrConflict means the thing to create exists already.
	ErrConflict = errors.New("already exists")
	// ErrDirectoryUnavailable means the LDAP directory could not be asked; no password was judged.
	ErrDirectoryUnavailable = errors.New("directory unavailable")
	// ErrTooManyAttempts means logins for this user or from this address failed too often lately.
	ErrTooManyAttempts = errors.New("too many failed logins; try again later")
)

// ProjectOf returns the project of a repository name: its first path element.
func ProjectOf(repo string) string {
	p, _, _ := strings.Cut(repo, "/")
	return p
}

// RemoteHost is the address a request comes from, without the port.
func RemoteHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}
