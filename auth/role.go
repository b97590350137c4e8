package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"cove/internal/kv"
)

// Role is a member's role in a project, numbered as Harbor numbers them.
type Role int

// The project roles (Harbor's semantics): everyone with a role pulls; developers and up push;
// maintainers and up delete; project admins manage members.
const (
	RoleNone         Role = 0
	RoleProjectAdmin Role = 1
	RoleDeveloper    Role = 2
	RoleGuest        Role = 3
	RoleMaintainer   Role = 4
	RoleLimitedGuest Role = 5
)

// Name is the role's name as Harbor writes it.
func (r Role) Name() string {
	switch r {
	case RoleProjectAdmin:
		return "projectAdmin"
	case RoleDeveloper:
		return "developer"
	case RoleGuest:
		return "guest"
	case RoleMaintainer:
		return "maintainer"
	case RoleLimitedGuest:
		return "limitedGuest"
	}
	return ""
}

// rank orders roles by power, for choosing the strongest of several memberships.
func (r Role) rank() int {
	return map[Role]int{RoleLimitedGuest: 1, RoleGuest: 2, RoleDeveloper: 3, RoleMaintainer: 4, RoleProjectAdmin: 5}[r]
}

// Allows reports whether the role permits action, by Harbor's permission table (rolePermissions).
func (r Role) Allows(action Action) bool {
	return slices.Contains(rolePermissions[r], action)
}

// The project actions besides the repository ones (pull, push, delete), named after the
// resources and actions of Harbor's project RBAC (src/common/rbac/project/rbac_role.go).
const (
	// ActionReadMembers reads and lists the project's members (Harbor: member read, list).
	ActionReadMembers Action = "read-members"
	// ActionReadLogs lists the audit log of the project (Harbor: log list).
	ActionReadLogs Action = "read-logs"
	// ActionReadRobots reads and lists the project's robot accounts (Harbor: robot read, list).
	ActionReadRobots Action = "read-robots"
	// ActionManageMembers adds, changes and removes members and robot accounts (Harbor: member
	// and robot create, update, delete).
	ActionManageMembers Action = "manage-members"
	// ActionUpdateProject changes the project's settings, such as public (Harbor: metadata).
	ActionUpdateProject Action = "update-project"
	// ActionDeleteProject deletes the project (Harbor: self delete).
	ActionDeleteProject Action = "delete-project"
)

// rolePermissions is Harbor's project permission table, for the actions cove has: every role
// pulls; developers and up push; maintainers and up delete and change the project's settings;
// only project admins manage members and robots and delete the project; a limited guest pulls
// and nothing else — it sees neither the members, nor the robots, nor the project's log (the
// addresses of others are in it).
var rolePermissions = map[Role][]Action{
	RoleProjectAdmin: {ActionPull, ActionPush, ActionDelete, ActionReadMembers, ActionReadLogs, ActionReadRobots, ActionManageMembers, ActionUpdateProject, ActionDeleteProject},
	RoleMaintainer:   {ActionPull, ActionPush, ActionDelete, ActionReadMembers, ActionReadLogs, ActionReadRobots, ActionUpdateProject},
	RoleDeveloper:    {ActionPull, ActionPush, ActionReadMembers, ActionReadLogs, ActionReadRobots},
	RoleGuest:        {ActionPull, ActionReadMembers, ActionReadLogs, ActionReadRobots},
	RoleLimitedGuest: {ActionPull},
}

// Member kinds: a user, or a group of the directory (LDAP).
const (
	MemberUser  = "u"
	MemberGroup = "g"
)

// Member is a user's or a group's role in a project.
type Member struct {
	ID      int64     `json:"id"`
	Project string    `json:"project"`
	Kind    string    `json:"kind"`
	Name    string    `json:"name"`
	Role    Role      `json:"role"`
	Created time.Time `json:"created"`
}

const (
	keyMember    = "auth/member/"    // auth/member/<project>\x00<kind>\x00<name> → Member
	keyMemberID  = "auth/member-id/" // auth/member-id/<id> → the member key
	keyMemberSeq = SequencePrefix + "member"
)

func memberKey(project, kind, name string) []byte {
	return []byte(keyMember + project + "\x00" + kind + "\x00" + name)
}

// AddMember gives a user or group a role in project. A user must exist; a group is a name of the
// directory (its DN or its cn).
func (s *Service) AddMember(ctx context.Context, project, kind, name string, role Role) (Member, error) {
	if role.Name() == "" {
		return Member{}, fmt.Errorf("%w: role %d is not one of 1 (projectAdmin), 2 (developer), 3 (guest), 4 (maintainer), 5 (limitedGuest)", ErrInvalid, role)
	}
	if _, err := s.Project(ctx, project); err != nil {
		return Member{}, err
	}
	switch kind {
	case MemberUser:
		if _, err := s.User(ctx, name); err != nil {
			return Member{}, err
		}
	case MemberGroup:
		if name == "" {
			return Member{}, fmt.Errorf("%w: a group member needs a group name", ErrInvalid)
		}
	default:
		return Member{}, fmt.Errorf("%w: member kind %q", ErrInvalid, kind)
	}
	id, err := s.nextID(keyMemberSeq)
	if err != nil {
		return Member{}, err
	}
	m := Member{ID: id, Project: project, Kind: kind, Name: name, Role: role, Created: s.now().UTC()}
	err = s.update(func(txn kv.Txn) error {
		if _, err := txn.Get(memberKey(project, kind, name)); err == nil {
			return fmt.Errorf("%w: %s is a member of %s already", ErrConflict, name, project)
		}
		if err := kv.Put(txn, memberKey(project, kind, name), m); err != nil {
			return err
		}
		return txn.Set([]byte(keyMemberID+strconv.FormatInt(id, 10)), memberKey(project, kind, name))
	})
	return m, err
}

// Members lists the members of project.
func (s *Service) Members(ctx context.Context, project string) ([]Member, error) {
	var out []Member
	err := s.db.View(context.Background(), func(txn kv.Txn) error {
		return eachJSON(txn, keyMember+project+"\x00", func(m *Member) { out = append(out, *m) })
	})
	return out, err
}

// MemberByID returns member id of project, or ErrNotFound — also when the id belongs to
// another project (docs/SECURITY.md 10: the id is checked against the project in the URL).
func (s *Service) MemberByID(ctx context.Context, project string, id int64) (Member, error) {
	var m Member
	err := s.db.View(context.Background(), func(txn kv.Txn) error {
		key, err := txn.Get([]byte(keyMemberID + strconv.FormatInt(id, 10)))
		if err != nil {
			return err
		}
		return kv.Get(txn, key, &m)
	})
	if errors.Is(err, kv.ErrNotFound) || (err == nil && m.Project != project) {
		return Member{}, fmt.Errorf("%w: member %d of %s", ErrNotFound, id, project)
	}
	return m, err
}

// SetMemberRole changes a member's role.
func (s *Service) SetMemberRole(ctx context.Context, project string, id int64, role Role) (Member, error) {
	if role.Name() == "" {
		return Member{}, fmt.Errorf("%w: role %d", ErrInvalid, role)
	}
	m, err := s.MemberByID(ctx, project, id)
	if err != nil {
		return Member{}, err
	}
	m.Role = role
	return m, s.update(func(txn kv.Txn) error { return kv.Put(txn, memberKey(m.Project, m.Kind, m.Name), m) })
}

// RemoveMember takes a member out of project.
func (s *Service) RemoveMember(ctx context.Context, project string, id int64) (Member, error) {
	m, err := s.MemberByID(ctx, project, id)
	if err != nil {
		return Member{}, err
	}
	return m, s.update(func(txn kv.Txn) error {
		if err := txn.Delete([]byte(keyMemberID + strconv.FormatInt(id, 10))); err != nil {
			return err
		}
		return txn.Delete(memberKey(m.Project, m.Kind, m.Name))
	})
}

// RoleOf returns p's strongest role in project: as a user member, or through one of its groups.
func (s *Service) RoleOf(ctx context.Context, p Principal, project string) Role {
	if p.Anonymous() || p.Robot {
		return RoleNone
	}
	best := RoleNone
	_ = s.db.View(context.Background(), func(txn kv.Txn) error {
		consider := func(kind, name string) {
			var m Member
			if kv.Get(txn, memberKey(project, kind, name), &m) == nil && m.Role.rank() > best.rank() {
				best = m.Role
			}
		}
		consider(MemberUser, p.Name)
		for _, g := range p.Groups {
			consider(MemberGroup, g)
		}
		return nil
	})
	return best
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

// SequencePrefix starts the keys of auth's sequences (ids of users, projects, members, robots):
// on badger, sequences are records under these keys; a move into PostgreSQL makes them sequences
// there (cove migrate).
const SequencePrefix = "auth/seq/"

// nextID draws the next number of the sequence key (the metadata seam's NextID: numbers are
// never given twice, and may be skipped); ids start at 1.
func (s *Service) nextID(key string) (int64, error) {
	if s.writable != nil {
		if err := s.writable(); err != nil {
			return 0, err // a full disk or a read-only start, said as such
		}
	}
	return s.db.NextID(context.Background(), key)
}

// eachJSON decodes every value under prefix into a fresh T and hands it to fn.
func eachJSON[T any](txn kv.Txn, prefix string, fn func(*T)) error {
	return txn.Scan([]byte(prefix), kv.ScanOptions{}, func(_, val []byte) (bool, error) {
		v := new(T)
		if err := json.Unmarshal(val, v); err != nil {
			return false, err
		}
		fn(v)
		return true, nil
	})
}
