package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"cove/internal/kv"
)

// robotPrefix starts every robot account's name: robot$<project>+<name>, as Harbor names them.
const robotPrefix = "robot$"

const (
	keyRobot    = "auth/robot/"    // auth/robot/<full name> → robotRecord
	keyRobotID  = "auth/robot-id/" // auth/robot-id/<id> → full name
	keyRobotSeq = SequencePrefix + "robot"
)

// Robot is a robot account: a secret for automation, able to do only the given actions, only in
// its project, until it expires.
type Robot struct {
	ID          int64     `json:"id"`
	Name        string    `json:"name"` // robot$<project>+<name>
	Project     string    `json:"project"`
	Actions     []Action  `json:"actions"`
	Description string    `json:"description,omitempty"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"` // zero: never
	Disabled    bool      `json:"disabled,omitempty"`
	Created     time.Time `json:"created"`
}

type robotRecord struct {
	Robot
	Hash []byte `json:"hash"`
}

var robotShortName = regexp.MustCompile(`^[a-z0-9]+(?:[._-][a-z0-9]+)*$`)

// createRobot creates a robot account in project and returns it with its secret, which is shown
// this once and stored only as a hash. Once the name is checked, projectExists (Policy's to
// answer: Service.CreateRobot) refuses the robot with its error when project does not exist.
func (i *Identity) createRobot(ctx context.Context, project, name string, actions []Action, ttl time.Duration, description string, projectExists func() error) (Robot, string, error) {
	if !robotShortName.MatchString(name) || len(name) > 64 {
		return Robot{}, "", fmt.Errorf("%w: robot name %q", ErrInvalid, name)
	}
	if err := projectExists(); err != nil {
		return Robot{}, "", err
	}
	if len(actions) == 0 {
		return Robot{}, "", fmt.Errorf("%w: a robot needs at least one permission", ErrInvalid)
	}
	for _, a := range actions {
		if a != ActionPull && a != ActionPush && a != ActionDelete {
			return Robot{}, "", fmt.Errorf("%w: robot permission %q (pull, push, delete)", ErrInvalid, a)
		}
	}
	secret := rand.Text() + rand.Text()
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), i.cost)
	if err != nil {
		return Robot{}, "", err
	}
	id, err := i.nextID(keyRobotSeq)
	if err != nil {
		return Robot{}, "", err
	}
	r := Robot{ID: id, Name: robotPrefix + project + "+" + name, Project: project, Actions: actions, Description: description, Created: i.now().UTC()}
	if ttl > 0 {
		r.ExpiresAt = r.Created.Add(ttl)
	}
	err = i.update(func(txn kv.Txn) error {
		if _, err := txn.Get([]byte(keyRobot + r.Name)); err == nil {
			return fmt.Errorf("%w: robot %s", ErrConflict, r.Name)
		}
		if err := kv.Put(txn, []byte(keyRobot+r.Name), robotRecord{Robot: r, Hash: hash}); err != nil {
			return err
		}
		return txn.Set([]byte(keyRobotID+strconv.FormatInt(id, 10)), []byte(r.Name))
	})
	if err != nil {
		return Robot{}, "", err
	}
	return r, secret, nil
}

// Robots lists the robot accounts, of one project or (project empty) all.
func (i *Identity) Robots(ctx context.Context, project string) ([]Robot, error) {
	prefix := keyRobot
	if project != "" {
		prefix += robotPrefix + project + "+"
	}
	var out []Robot
	err := i.db.View(context.Background(), func(txn kv.Txn) error {
		return eachJSON(txn, prefix, func(r *robotRecord) { out = append(out, r.Robot) })
	})
	return out, err
}

// RobotByID returns the robot account with that id, or ErrNotFound.
func (i *Identity) RobotByID(ctx context.Context, id int64) (Robot, error) {
	var rec robotRecord
	err := i.db.View(context.Background(), func(txn kv.Txn) error {
		name, err := txn.Get([]byte(keyRobotID + strconv.FormatInt(id, 10)))
		if err != nil {
			return err
		}
		return kv.Get(txn, []byte(keyRobot+string(name)), &rec)
	})
	if errors.Is(err, kv.ErrNotFound) {
		return Robot{}, fmt.Errorf("%w: robot %d", ErrNotFound, id)
	}
	return rec.Robot, err
}

// DeleteRobot removes a robot account.
func (i *Identity) DeleteRobot(ctx context.Context, id int64) (Robot, error) {
	r, err := i.RobotByID(ctx, id)
	if err != nil {
		return Robot{}, err
	}
	defer i.forget(r.Name)
	return r, i.update(func(txn kv.Txn) error {
		if err := txn.Delete([]byte(keyRobotID + strconv.FormatInt(id, 10))); err != nil {
			return err
		}
		return txn.Delete([]byte(keyRobot + r.Name))
	})
}

// checkRobot verifies a robot's secret; an expired or disabled robot never gets in.
func (i *Identity) checkRobot(name, secret string) (Principal, []byte, time.Time, error) {
	var rec robotRecord
	err := i.readRobot(name, &rec)
	if err != nil || rec.Disabled || (!rec.ExpiresAt.IsZero() && !i.now().Before(rec.ExpiresAt)) {
		// The same time as a real comparison: the answer does not tell which robots exist.
		_ = bcrypt.CompareHashAndPassword(i.dummy, []byte(secret))
		return Principal{}, nil, time.Time{}, fmt.Errorf("%w: no such robot, or disabled or expired", ErrBadCredentials)
	}
	return robotPrincipal(rec.Robot), rec.Hash, rec.ExpiresAt, nil
}

// readRobot reads the record of the robot account name.
func (i *Identity) readRobot(name string, rec *robotRecord) error {
	return i.db.View(context.Background(), func(txn kv.Txn) error { return kv.Get(txn, []byte(keyRobot+name), rec) })
}

// withRobotKeys hands fn the keys of project's robot accounts, for fn to delete them in the
// transaction that deletes the project (Policy.DeleteProject), and forgets their cached checks
// once fn returned.
func (i *Identity) withRobotKeys(ctx context.Context, project string, fn func(keys [][]byte) error) error {
	robots, err := i.Robots(ctx, project)
	if err != nil {
		return err
	}
	var keys [][]byte
	for _, r := range robots {
		defer i.forget(r.Name)
		keys = append(keys, []byte(keyRobot+r.Name), []byte(keyRobotID+strconv.FormatInt(r.ID, 10)))
	}
	return fn(keys)
}

func robotPrincipal(r Robot) Principal {
	return Principal{Name: r.Name, Robot: true, robotProject: r.Project, robotActions: slices.Clone(r.Actions), uid: r.ID}
}

// isRobot reports whether a login name is a robot account's.
func isRobot(name string) bool { return strings.HasPrefix(name, robotPrefix) }
