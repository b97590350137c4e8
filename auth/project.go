package auth

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"time"

	"cove/internal/kv"
)

const (
	keyProject    = "auth/project/"    // auth/project/<name> → Project
	keyProjectID  = "auth/project-id/" // auth/project-id/<id> → name
	keyProjectSeq = SequencePrefix + "project"
)

// projectName is Harbor's rule for project names; every such name is also a valid first element
// of an OCI repository name.
var projectName = regexp.MustCompile(`^[a-z0-9]+(?:[._-][a-z0-9]+)*$`)

// Project is a namespace of repositories with its own visibility (and, later, members).
type Project struct {
	ID      int64     `json:"id"`
	Name    string    `json:"name"`
	Public  bool      `json:"public"`
	Owner   string    `json:"owner"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// ValidProjectName reports whether name may name a project.
func ValidProjectName(name string) bool {
	return len(name) <= 255 && projectName.MatchString(name)
}

// CreateProject creates the project name, owned by owner.
func (po *Policy) CreateProject(ctx context.Context, name string, public bool, owner string) (Project, error) {
	if !ValidProjectName(name) {
		return Project{}, fmt.Errorf("%w: project name %q must be lower-case letters and digits, separated by single '.', '_' or '-'", ErrInvalid, name)
	}
	if po.reserved[name] {
		return Project{}, fmt.Errorf("%w: %q names an upstream registry and cannot name a project", ErrInvalid, name)
	}
	id, err := po.nextID(keyProjectSeq)
	if err != nil {
		return Project{}, err
	}
	now := po.now().UTC()
	p := Project{ID: id, Name: name, Public: public, Owner: owner, Created: now, Updated: now}
	err = po.update(func(txn kv.Txn) error {
		if _, err := txn.Get([]byte(keyProject + name)); err == nil {
			return ErrProjectExists
		} else if !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		if err := kv.Put(txn, []byte(keyProject+name), p); err != nil {
			return err
		}
		return txn.Set([]byte(keyProjectID+strconv.FormatInt(p.ID, 10)), []byte(name))
	})
	return p, err
}

// Project returns the project name, or ErrProjectUnknown.
func (po *Policy) Project(ctx context.Context, name string) (Project, error) {
	if po.projects == nil {
		return po.project(name)
	}
	if p, err, ok := po.projects.get(name); ok {
		return p, err
	}
	gen := po.projects.db.Generation()
	p, err := po.project(name)
	if err == nil || errors.Is(err, ErrProjectUnknown) {
		po.projects.put(gen, name, p, err)
	}
	return p, err
}

func (po *Policy) project(name string) (Project, error) {
	var p Project
	err := po.db.View(context.Background(), func(txn kv.Txn) error { return kv.Get(txn, []byte(keyProject+name), &p) })
	if errors.Is(err, kv.ErrNotFound) {
		return Project{}, ErrProjectUnknown
	}
	return p, err
}

// ProjectByID returns the project with that id, or ErrProjectUnknown.
func (po *Policy) ProjectByID(ctx context.Context, id int64) (Project, error) {
	name, err := po.nameByID(keyProjectID, id)
	if errors.Is(err, kv.ErrNotFound) {
		return Project{}, ErrProjectUnknown
	}
	if err != nil {
		return Project{}, err
	}
	return po.Project(ctx, name)
}

// Projects returns the projects that p may see, in name order, with keep deciding on each.
func (po *Policy) Projects(ctx context.Context, p Principal, keep func(Project) bool) ([]Project, error) {
	var out []Project
	err := po.db.View(context.Background(), func(txn kv.Txn) error {
		return eachJSON(txn, keyProject, func(proj *Project) {
			if decide(p, proj, po.RoleOf(ctx, p, proj.Name), ActionPull) == nil && keep(*proj) {
				out = append(out, *proj)
			}
		})
	})
	return out, err
}

// SetProjectPublic makes a project public (anyone pulls) or private.
func (po *Policy) SetProjectPublic(ctx context.Context, name string, public bool) (Project, error) {
	var p Project
	err := po.update(func(txn kv.Txn) error {
		if err := kv.Get(txn, []byte(keyProject+name), &p); err != nil {
			if errors.Is(err, kv.ErrNotFound) {
				return ErrProjectUnknown
			}
			return err
		}
		p.Public, p.Updated = public, po.now().UTC()
		return kv.Put(txn, []byte(keyProject+name), p)
	})
	return p, err
}

// DeleteProject removes the project name with its members and robot accounts, so that a project
// made later under the same name starts with none of them. The caller makes sure it holds no
// repositories.
func (po *Policy) DeleteProject(ctx context.Context, name string) error {
	return po.identity.withRobotKeys(ctx, name, func(robotKeys [][]byte) error {
		return po.update(func(txn kv.Txn) error {
			var doomed [][]byte
			err := eachJSON(txn, keyMember+name+"\x00", func(m *Member) {
				doomed = append(doomed, memberKey(m.Project, m.Kind, m.Name), []byte(keyMemberID+strconv.FormatInt(m.ID, 10)))
			})
			if err != nil {
				return err
			}
			doomed = append(doomed, robotKeys...)
			for _, k := range doomed {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			var p Project
			if err := kv.Get(txn, []byte(keyProject+name), &p); err != nil {
				if errors.Is(err, kv.ErrNotFound) {
					return ErrProjectUnknown
				}
				return err
			}
			if err := txn.Delete([]byte(keyProjectID + strconv.FormatInt(p.ID, 10))); err != nil {
				return err
			}
			return txn.Delete([]byte(keyProject + name))
		})
	})
}

// projectMemo remembers which projects exist, as every request's routing asks (a pull of
// library/alpine asks whether "library" is a project), while nothing was written to the index
// since. It holds at most 4096 names.
type projectMemo struct {
	db *kv.Counted

	mu sync.Mutex
	// gen is the generation known was read in; both guarded by mu.
	gen   uint64
	known map[string]projectSeen
}

type projectSeen struct {
	p   Project
	err error // nil or ErrProjectUnknown
}

func (m *projectMemo) get(name string) (Project, error, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.db.Generation(); g != m.gen {
		m.gen = g
		clear(m.known)
	}
	s, ok := m.known[name]
	return s.p, s.err, ok
}

// put remembers a lookup made in generation gen (taken before the read): not when the index
// changed since.
func (m *projectMemo) put(gen uint64, name string, p Project, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.db.Generation(); g != m.gen {
		m.gen = g
		clear(m.known)
	}
	if gen != m.gen {
		return
	}
	if len(m.known) >= 4096 {
		clear(m.known)
	}
	m.known[name] = projectSeen{p: p, err: err}
}
