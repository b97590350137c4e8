package auth

import (
	"context"
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
	// ActionReadWebhooks reads the project's webhook policies and their deliveries (Harbor:
	// notification-policy read, list).
	ActionReadWebhooks Action = "read-webhooks"
	// ActionManageWebhooks creates, changes and deletes them (Harbor: notification-policy create,
	// update, delete: project admins only).
	ActionManageWebhooks Action = "manage-webhooks"
)

// rolePermissions is Harbor's project permission table, for the actions cove has: every role
// pulls; developers and up push; maintainers and up delete and change the project's settings;
// only project admins manage members and robots and delete the project; a limited guest pulls
// and nothing else — it sees neither the members, nor the robots, nor the project's log (the
// addresses of others are in it).
var rolePermissions = map[Role][]Action{
	RoleProjectAdmin: {ActionPull, ActionPush, ActionDelete, ActionReadMembers, ActionReadLogs, ActionReadRobots, ActionManageMembers, ActionUpdateProject, ActionDeleteProject,
		ActionReadWebhooks, ActionManageWebhooks},
	RoleMaintainer:   {ActionPull, ActionPush, ActionDelete, ActionReadMembers, ActionReadLogs, ActionReadRobots, ActionUpdateProject, ActionReadWebhooks},
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
func (po *Policy) AddMember(ctx context.Context, project, kind, name string, role Role) (Member, error) {
	if role.Name() == "" {
		return Member{}, fmt.Errorf("%w: role %d is not one of 1 (projectAdmin), 2 (developer), 3 (guest), 4 (maintainer), 5 (limitedGuest)", ErrInvalid, role)
	}
	if _, err := po.Project(ctx, project); err != nil {
		return Member{}, err
	}
	switch kind {
	case MemberUser:
		if _, err := po.identity.User(ctx, name); err != nil {
			return Member{}, err
		}
	case MemberGroup:
		if name == "" {
			return Member{}, fmt.Errorf("%w: a group member needs a group name", ErrInvalid)
		}
	default:
		return Member{}, fmt.Errorf("%w: member kind %q", ErrInvalid, kind)
	}
	id, err := po.nextID(keyMemberSeq)
	if err != nil {
		return Member{}, err
	}
	m := Member{ID: id, Project: project, Kind: kind, Name: name, Role: role, Created: po.now().UTC()}
	err = po.update(func(txn kv.Txn) error {
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
func (po *Policy) Members(ctx context.Context, project string) ([]Member, error) {
	var out []Member
	err := po.db.View(context.Background(), func(txn kv.Txn) error {
		return eachJSON(txn, keyMember+project+"\x00", func(m *Member) { out = append(out, *m) })
	})
	return out, err
}

// MemberByID returns member id of project, or ErrNotFound — also when the id belongs to
// another project (docs/SECURITY.md 10: the id is checked against the project in the URL).
func (po *Policy) MemberByID(ctx context.Context, project string, id int64) (Member, error) {
	var m Member
	err := po.db.View(context.Background(), func(txn kv.Txn) error {
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
func (po *Policy) SetMemberRole(ctx context.Context, project string, id int64, role Role) (Member, error) {
	if role.Name() == "" {
		return Member{}, fmt.Errorf("%w: role %d", ErrInvalid, role)
	}
	m, err := po.MemberByID(ctx, project, id)
	if err != nil {
		return Member{}, err
	}
	m.Role = role
	return m, po.update(func(txn kv.Txn) error { return kv.Put(txn, memberKey(m.Project, m.Kind, m.Name), m) })
}

// RemoveMember takes a member out of project.
func (po *Policy) RemoveMember(ctx context.Context, project string, id int64) (Member, error) {
	m, err := po.MemberByID(ctx, project, id)
	if err != nil {
		return Member{}, err
	}
	return m, po.update(func(txn kv.Txn) error {
		if err := txn.Delete([]byte(keyMemberID + strconv.FormatInt(id, 10))); err != nil {
			return err
		}
		return txn.Delete(memberKey(m.Project, m.Kind, m.Name))
	})
}

// removeUser takes the user name out of every project, one project at a time (Service.DeleteUser).
func (po *Policy) removeUser(ctx context.Context, name string) error {
	projects, err := po.Projects(ctx, Principal{Name: AdminName, Admin: true}, func(Project) bool { return true })
	if err != nil {
		return err
	}
	for _, p := range projects {
		err := po.update(func(txn kv.Txn) error {
			var m Member
			if kv.Get(txn, memberKey(p.Name, MemberUser, name), &m) != nil {
				return nil
			}
			if err := txn.Delete([]byte(keyMemberID + strconv.FormatInt(m.ID, 10))); err != nil {
				return err
			}
			return txn.Delete(memberKey(p.Name, MemberUser, name))
		})
		if err != nil {
			return fmt.Errorf("remove %s from %s: %w", name, p.Name, err)
		}
	}
	return nil
}

// RoleOf returns p's strongest role in project: as a user member, or through one of its groups.
func (po *Policy) RoleOf(ctx context.Context, p Principal, project string) Role {
	if p.Anonymous() || p.Robot {
		return RoleNone
	}
	best := RoleNone
	_ = po.db.View(context.Background(), func(txn kv.Txn) error {
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
