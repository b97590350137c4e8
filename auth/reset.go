package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"cove/internal/kv"
)

// Password reset by mail, for local accounts (the directory keeps LDAP users' passwords): a
// one-time token of 32 random bytes goes out in a link; cove keeps only its SHA-256, with the
// account's id and epoch, for ResetTTL. Using it sets the password and moves the account's epoch
// on, which ends its sessions, access and refresh tokens (docs/SECURITY.md 16) and every other
// reset link of the account. Reset mails are limited per address and per node.

const (
	keyReset     = "auth/reset/"      // auth/reset/<hex SHA-256 of the token> → resetRecord
	keyResetRate = "auth/reset-rate/" // auth/reset-rate/<hex SHA-256 of the address> → []time.Time
	// ResetTTL is how long a reset link works.
	ResetTTL = 30 * time.Minute
	// ResetPerAddress bounds the reset mails to one address per ResetWindow.
	ResetPerAddress = 3
	// ResetPerNode bounds the reset mails one node sends per ResetWindow, all addresses together.
	ResetPerNode = 100
	// ResetWindow is the window of the two limits.
	ResetWindow = time.Hour
	// maxResetAccounts bounds the accounts one request mails a link for (accounts sharing an address).
	maxResetAccounts = 5
	// resetTokenLen is the length of a token: 32 bytes in unpadded base64url.
	resetTokenLen = 43
)

var (
	// ErrResetLimited means an address, or the node, had its reset mails for the window: the
	// request is answered as any other, and no mail goes out.
	ErrResetLimited = errors.New("password reset mails limited")
	// errResetToken is what a wrong, used or expired reset token answers.
	errResetToken = fmt.Errorf("%w: the password reset link is not valid", ErrInvalid)
)

type resetRecord struct {
	User    string    `json:"user"`
	UID     int64     `json:"uid"`
	Epoch   uint64    `json:"epoch"`
	Expires time.Time `json:"expires"`
	Used    bool      `json:"used,omitempty"`
}

// ResetTicket is a reset link's token for a user, to be mailed to u.Email; the token is shown
// nowhere else and kept by cove only as a hash.
type ResetTicket struct {
	User    User
	Token   string
	Expires time.Time
}

// IssuePasswordResets makes a reset token for each local account whose e-mail is address (none
// for an address no local account has, LDAP accounts included). Over the limits it returns
// ErrResetLimited and no tickets. The caller answers the request the same way in every case.
func (i *Identity) IssuePasswordResets(ctx context.Context, address string) ([]ResetTicket, error) {
	address = strings.TrimSpace(address)
	if address == "" {
		return nil, nil
	}
	var matched []userRecord
	err := i.db.View(ctx, func(txn kv.Txn) error {
		return eachJSON(txn, keyUser, func(r *userRecord) {
			if !r.LDAP && len(r.Hash) > 0 && strings.EqualFold(strings.TrimSpace(r.Email), address) && len(matched) < maxResetAccounts {
				matched = append(matched, *r)
			}
		})
	})
	if err != nil || len(matched) == 0 {
		return nil, err // only addresses of accounts are counted: nobody can fill the store with made-up ones
	}
	if !i.admitReset() {
		return nil, fmt.Errorf("%w: this node sent %d reset mails within %s", ErrResetLimited, ResetPerNode, ResetWindow)
	}
	now := i.now().UTC()
	var tickets []ResetTicket
	err = i.update(func(txn kv.Txn) error {
		tickets = nil
		sum := sha256.Sum256([]byte(strings.ToLower(address)))
		rateKey := []byte(keyResetRate + hex.EncodeToString(sum[:]))
		var sent []time.Time
		if err := kv.Get(txn, rateKey, &sent); err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		recent := sent[:0]
		for _, t := range sent {
			if now.Sub(t) < ResetWindow {
				recent = append(recent, t)
			}
		}
		if len(recent) >= ResetPerAddress {
			return fmt.Errorf("%w: %d reset mails to this address within %s", ErrResetLimited, len(recent), ResetWindow)
		}
		recent = append(recent, now)
		if err := putExpiring(txn, rateKey, recent, now.Add(ResetWindow)); err != nil {
			return err
		}
		for _, u := range matched {
			raw := make([]byte, 32)
			if _, err := rand.Read(raw); err != nil {
				return err
			}
			token := base64.RawURLEncoding.EncodeToString(raw)
			rec := resetRecord{User: u.Name, UID: u.ID, Epoch: u.Epoch, Expires: now.Add(ResetTTL)}
			if err := putExpiring(txn, resetKey(token), rec, rec.Expires); err != nil {
				return err
			}
			tickets = append(tickets, ResetTicket{User: u.User, Token: token, Expires: rec.Expires})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return tickets, nil
}

// admitReset counts a reset mail against the node's limit, reporting false when it is reached.
func (i *Identity) admitReset() bool {
	now := i.now()
	i.resetMu.Lock()
	defer i.resetMu.Unlock()
	recent := i.resetSent[:0]
	for _, t := range i.resetSent {
		if now.Sub(t) < ResetWindow {
			recent = append(recent, t)
		}
	}
	i.resetSent = recent
	if len(recent) >= ResetPerNode {
		return false
	}
	i.resetSent = append(i.resetSent, now)
	return true
}

// resetKey is where the record of token is kept: under its hash, never the token itself.
func resetKey(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return []byte(keyReset + hex.EncodeToString(sum[:]))
}

// ResetPassword sets the password of token's account, once: the token is used up in the same
// transaction, and the account's epoch moves on (its sessions and tokens end). A wrong, used or
// expired token, or one of an account changed since, is an ErrInvalid that says which; a
// password against the policy is refused before the token is looked at, and leaves it usable.
func (i *Identity) ResetPassword(ctx context.Context, token, password string) (User, error) {
	if err := CheckPasswordPolicy(password); err != nil {
		return User{}, err
	}
	if len(token) != resetTokenLen {
		return User{}, errResetToken
	}
	if _, err := base64.RawURLEncoding.DecodeString(token); err != nil {
		return User{}, errResetToken
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), i.cost)
	if err != nil {
		return User{}, err
	}
	key := resetKey(token)
	var u User
	err = i.update(func(txn kv.Txn) error {
		var rec resetRecord
		if err := kv.Get(txn, key, &rec); errors.Is(err, kv.ErrNotFound) {
			return fmt.Errorf("%w; ask for a new one", errResetToken)
		} else if err != nil {
			return err
		}
		now := i.now().UTC()
		switch {
		case rec.Used:
			return fmt.Errorf("%w: it was used already; ask for a new one", errResetToken)
		case !now.Before(rec.Expires):
			return fmt.Errorf("%w: it expired (a link works for %s); ask for a new one", errResetToken, ResetTTL)
		}
		var ur userRecord
		if err := kv.Get(txn, []byte(keyUser+rec.User), &ur); errors.Is(err, kv.ErrNotFound) {
			return fmt.Errorf("%w: its account is gone", errResetToken)
		} else if err != nil {
			return err
		}
		if ur.ID != rec.UID || ur.Epoch != rec.Epoch || ur.LDAP {
			return fmt.Errorf("%w: its account changed since it was sent; ask for a new one", errResetToken)
		}
		ur.Hash, ur.Epoch, ur.Updated = hash, ur.Epoch+1, now
		if err := kv.Put(txn, []byte(keyUser+ur.Name), ur); err != nil {
			return err
		}
		rec.Used = true
		u = ur.User
		return putExpiring(txn, key, rec, rec.Expires)
	})
	if err != nil {
		return User{}, err
	}
	i.forget(u.Name)
	return u, nil
}

// putExpiring writes v as JSON under key until expires.
func putExpiring(txn kv.Txn, key []byte, v any, expires time.Time) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return txn.SetExpiring(key, b, expires)
}
