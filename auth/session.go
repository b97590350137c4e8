package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"cove/internal/kv"
)

// Sessions of the admin page: a random id in an HttpOnly, SameSite cookie (Secure under TLS),
// standing for a user who signed in with a password. Robots have no sessions. Changes from the
// browser are protected against cross-site requests by the caller (http.CrossOriginProtection).

const (
	keySession = "auth/session/"
	// SessionCookie names the session cookie.
	SessionCookie = "cove_session"
	// sessionTTL is how long a session lasts without signing in again.
	sessionTTL = 8 * time.Hour
)

type sessionRecord struct {
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	// UID and Epoch bind the session to the account as it was at sign-in: a password or admin
	// change, or the account's deletion (even if the name comes back), ends it.
	UID   int64  `json:"uid"`
	Epoch uint64 `json:"epoch"`
}

// NewSession opens a session for p and sets its cookie on w.
func (i *Identity) NewSession(ctx context.Context, w http.ResponseWriter, r *http.Request, p Principal) error {
	if p.Anonymous() || p.Robot || p.Token {
		return fmt.Errorf("%w: sessions are for users", ErrInvalid)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	id := hex.EncodeToString(raw)
	if p.uid == 0 {
		return fmt.Errorf("%w: a session needs an authenticated account", ErrInvalid)
	}
	b, err := json.Marshal(sessionRecord{User: p.Name, Created: i.now().UTC(), UID: p.uid, Epoch: p.epoch})
	if err != nil {
		return err
	}
	if err := i.update(func(txn kv.Txn) error {
		return txn.SetExpiring([]byte(keySession+id), b, i.now().Add(sessionTTL))
	}); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: id, Path: "/", MaxAge: int(sessionTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	return nil
}

// EndSession closes the request's session and clears its cookie.
func (i *Identity) EndSession(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		_ = i.update(func(txn kv.Txn) error { return txn.Delete([]byte(keySession + c.Value)) })
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}

// sessionPrincipal returns the user of a session id, or ErrBadCredentials.
func (i *Identity) sessionPrincipal(ctx context.Context, id string) (Principal, error) {
	if len(id) != 64 {
		return Principal{}, ErrBadCredentials
	}
	var sess sessionRecord
	err := i.db.View(context.Background(), func(txn kv.Txn) error {
		return kv.Get(txn, []byte(keySession+id), &sess)
	})
	if errors.Is(err, kv.ErrNotFound) {
		return Principal{}, fmt.Errorf("%w: no such session", ErrBadCredentials)
	}
	if err != nil {
		return Principal{}, err
	}
	var rec userRecord
	err = i.readUser(sess.User, &rec)
	if errors.Is(err, kv.ErrUnavailable) {
		return Principal{}, err
	}
	if err != nil || rec.ID != sess.UID || rec.Epoch != sess.Epoch {
		return Principal{}, fmt.Errorf("%w: the session's account changed or is gone", ErrBadCredentials)
	}
	return rec.principal(), nil
}
