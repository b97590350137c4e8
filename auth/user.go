package auth

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"cove/internal/kv"
)

const (
	keyUser    = "auth/user/"    // auth/user/<name> → userRecord
	keyUserID  = "auth/user-id/" // auth/user-id/<id> → name
	keyUserSeq = SequencePrefix + "user"
)

// User is a person who logs in: a local account with a password hash, or an LDAP account created
// in cove at its first login (no hash: the directory checks the password).
type User struct {
	ID       int64     `json:"id"`
	Name     string    `json:"name"`
	Email    string    `json:"email,omitempty"`
	Realname string    `json:"realname,omitempty"`
	Admin    bool      `json:"admin"`
	LDAP     bool      `json:"ldap,omitempty"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
}

type userRecord struct {
	User
	Hash []byte `json:"hash,omitempty"`
	// For LDAP users, refreshed at each login: the directory groups, and whether one of them is
	// the admin group.
	Groups     []string `json:"groups,omitempty"`
	GroupAdmin bool     `json:"group_admin,omitempty"`
	// Epoch counts changes to what the account may do (password, admin); refresh tokens carry it.
	Epoch uint64 `json:"epoch,omitempty"`
}

// principal is who the record stands for.
func (r userRecord) principal() Principal {
	return Principal{Name: r.Name, Admin: r.Admin || r.GroupAdmin, Groups: r.Groups, uid: r.ID, epoch: r.Epoch}
}

// userName is what a user may be called: no robot prefix, no characters that break scopes or
// filters, at most 255 bytes.
var userName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._@-]{0,254}$`)

// CheckPasswordPolicy is Harbor's rule, bounded by bcrypt: at least 8 characters with an
// upper-case letter, a lower-case letter and a digit, and at most 72 bytes (bcrypt reads no
// further, and refuses longer passwords).
func CheckPasswordPolicy(p string) error {
	var upper, lower, digit bool
	for _, r := range p {
		upper = upper || unicode.IsUpper(r)
		lower = lower || unicode.IsLower(r)
		digit = digit || unicode.IsDigit(r)
	}
	if utf8.RuneCountInString(p) < 8 || len(p) > MaxPasswordBytes || !upper || !lower || !digit {
		return fmt.Errorf("%w: a password needs at least 8 characters and at most %d bytes, with an upper-case letter, a lower-case letter and a digit", ErrInvalid, MaxPasswordBytes)
	}
	return nil
}

// MaxPasswordBytes is bcrypt's limit on a password's length.
const MaxPasswordBytes = 72

// ValidUserName reports whether name may be a local user's: the name rules, not a robot's
// prefix, not the built-in admin's name.
func ValidUserName(name string) bool {
	return userName.MatchString(name) && !strings.HasPrefix(name, robotPrefix) && !strings.EqualFold(name, AdminName)
}

// CreateUser creates a local user with password.
func (i *Identity) CreateUser(ctx context.Context, u User, password string) (User, error) {
	if !userName.MatchString(u.Name) || strings.HasPrefix(u.Name, robotPrefix) {
		return User{}, fmt.Errorf("%w: user name %q", ErrInvalid, u.Name)
	}
	if strings.EqualFold(u.Name, AdminName) {
		// The built-in admin's name, whether it exists yet or not (it is created once cove is up).
		return User{}, fmt.Errorf("%w: the name %s is reserved for the built-in administrator", ErrInvalid, u.Name)
	}
	if err := CheckPasswordPolicy(password); err != nil {
		return User{}, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), i.cost)
	if err != nil {
		return User{}, err
	}
	u.LDAP = false
	return i.insertUser(u, hash)
}

func (i *Identity) insertUser(u User, hash []byte) (User, error) {
	id, err := i.nextID(keyUserSeq)
	if err != nil {
		return User{}, err
	}
	now := i.now().UTC()
	u.ID, u.Created, u.Updated = id, now, now
	err = i.update(func(txn kv.Txn) error {
		if _, err := txn.Get([]byte(keyUser + u.Name)); err == nil {
			return fmt.Errorf("%w: user %s", ErrConflict, u.Name)
		}
		if err := kv.Put(txn, []byte(keyUser+u.Name), userRecord{User: u, Hash: hash}); err != nil {
			return err
		}
		return txn.Set([]byte(keyUserID+strconv.FormatInt(id, 10)), []byte(u.Name))
	})
	return u, err
}

// User returns the user name, or ErrNotFound.
func (i *Identity) User(ctx context.Context, name string) (User, error) {
	var rec userRecord
	if err := i.readUser(name, &rec); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return User{}, fmt.Errorf("%w: user %s", ErrNotFound, name)
		}
		return User{}, err
	}
	return rec.User, nil
}

// UserByID returns the user with that id, or ErrNotFound.
func (i *Identity) UserByID(ctx context.Context, id int64) (User, error) {
	name, err := i.nameByID(keyUserID, id)
	if errors.Is(err, kv.ErrNotFound) {
		return User{}, fmt.Errorf("%w: user %d", ErrNotFound, id)
	}
	if err != nil {
		return User{}, err
	}
	return i.User(ctx, name)
}

// Users lists every user, in name order.
func (i *Identity) Users(ctx context.Context) ([]User, error) {
	var out []User
	err := i.db.View(context.Background(), func(txn kv.Txn) error {
		return eachJSON(txn, keyUser, func(r *userRecord) { out = append(out, r.User) })
	})
	return out, err
}

// SetPassword sets a local user's password. The verified-password cache forgets the old one.
func (i *Identity) SetPassword(ctx context.Context, name, password string) error {
	if err := CheckPasswordPolicy(password); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), i.cost)
	if err != nil {
		return err
	}
	return i.updateUser(name, func(rec *userRecord) error {
		if rec.LDAP {
			return fmt.Errorf("%w: %s is an LDAP user; the directory holds the password", ErrInvalid, name)
		}
		rec.Hash = hash
		rec.Epoch++
		return nil
	})
}

// SetAdmin grants or revokes system admin.
func (i *Identity) SetAdmin(ctx context.Context, name string, admin bool) error {
	return i.updateUser(name, func(rec *userRecord) error { rec.Admin, rec.Epoch = admin, rec.Epoch+1; return nil })
}

func (i *Identity) updateUser(name string, change func(*userRecord) error) error {
	defer i.forget(name)
	return i.writeUser(name, change)
}

// writeUser changes a user record without dropping its cached password check (the directory's
// news at a login, say).
func (i *Identity) writeUser(name string, change func(*userRecord) error) error {
	return i.update(func(txn kv.Txn) error {
		var rec userRecord
		if err := kv.Get(txn, []byte(keyUser+name), &rec); err != nil {
			if errors.Is(err, kv.ErrNotFound) {
				return fmt.Errorf("%w: user %s", ErrNotFound, name)
			}
			return err
		}
		if err := change(&rec); err != nil {
			return err
		}
		rec.Updated = i.now().UTC()
		return kv.Put(txn, []byte(keyUser+name), rec)
	})
}

// deleteUser removes the user name once removeMemberships, which takes it out of every project
// (Policy's records: Service.DeleteUser), succeeded.
func (i *Identity) deleteUser(ctx context.Context, name string, removeMemberships func() error) error {
	defer i.forget(name)
	u, err := i.User(ctx, name)
	if err != nil {
		return err
	}
	if err := removeMemberships(); err != nil {
		return err
	}
	return i.update(func(txn kv.Txn) error {
		if err := txn.Delete([]byte(keyUserID + strconv.FormatInt(u.ID, 10))); err != nil {
			return err
		}
		return txn.Delete([]byte(keyUser + name))
	})
}
