package auth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"

	"cove/internal/kv"
	"cove/internal/mail"
)

// The e-mail settings: the configuration file's email: keys give them; a key an admin sets
// through the API (PUT /api/v2.0/configurations) is kept in the metadata store and wins over the
// file's from then on, key by key (a key never set through the API follows the file). They are
// read from the store at each use, so every node of a fleet sends with what was set last.

const keyEmail = "auth/email"

// EmailChange is what an admin sets: nil fields keep their value.
type EmailChange struct {
	Server             *string `json:"server,omitempty"`
	Port               *int    `json:"port,omitempty"`
	Username           *string `json:"username,omitempty"`
	Password           *string `json:"password,omitempty"`
	From               *string `json:"from,omitempty"`
	SSL                *bool   `json:"ssl,omitempty"`
	StartTLS           *bool   `json:"starttls,omitempty"`
	InsecureSkipVerify *bool   `json:"insecure_skip_verify,omitempty"`
}

// Over returns cfg with the fields of ch set over it.
func (ch EmailChange) Over(cfg mail.Config) mail.Config {
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = strings.TrimSpace(*src)
		}
	}
	set(&cfg.Server, ch.Server)
	set(&cfg.Username, ch.Username)
	set(&cfg.From, ch.From)
	if ch.Password != nil {
		cfg.Password = *ch.Password // a password may start or end with a space
	}
	setBool := func(dst *bool, src *bool) {
		if src != nil {
			*dst = *src
		}
	}
	setBool(&cfg.SSL, ch.SSL)
	setBool(&cfg.StartTLS, ch.StartTLS)
	setBool(&cfg.InsecureSkipVerify, ch.InsecureSkipVerify)
	if ch.Port != nil {
		cfg.Port = *ch.Port
	}
	return cfg
}

// merge sets the fields of next over ch (those next has: non-nil).
func (ch EmailChange) merge(next EmailChange) EmailChange {
	ch.Server, ch.Port, ch.Username = cmp.Or(next.Server, ch.Server), cmp.Or(next.Port, ch.Port), cmp.Or(next.Username, ch.Username)
	ch.Password, ch.From, ch.SSL = cmp.Or(next.Password, ch.Password), cmp.Or(next.From, ch.From), cmp.Or(next.SSL, ch.SSL)
	ch.StartTLS, ch.InsecureSkipVerify = cmp.Or(next.StartTLS, ch.StartTLS), cmp.Or(next.InsecureSkipVerify, ch.InsecureSkipVerify)
	return ch
}

// EmailSettingsError lists what is wrong with e-mail settings; it is an ErrInvalid. Keys are the
// email: keys' names (server, port, …).
type EmailSettingsError struct{ Problems []mail.Problem }

func (e *EmailSettingsError) Error() string {
	var s []string
	for _, p := range e.Problems {
		s = append(s, "email."+p.Key+": "+p.Msg)
	}
	return ErrInvalid.Error() + ": " + strings.Join(s, "; ")
}

// Unwrap makes the error an ErrInvalid.
func (e *EmailSettingsError) Unwrap() error { return ErrInvalid }

// EmailSettings returns the e-mail settings in effect: the file's, with those set through the
// API over them. The password is in it: it is for sending, never for showing.
func (po *Policy) EmailSettings(ctx context.Context) (mail.Config, error) {
	var stored EmailChange
	err := po.db.View(ctx, func(txn kv.Txn) error { return kv.Get(txn, []byte(keyEmail), &stored) })
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return mail.Config{}, fmt.Errorf("read e-mail settings: %w", err)
	}
	return stored.Over(po.email), nil
}

// UpdateEmailSettings sets the fields of ch, checks the settings that result (an
// *EmailSettingsError when they are wrong: nothing is stored), stores and returns them.
func (po *Policy) UpdateEmailSettings(ctx context.Context, ch EmailChange) (mail.Config, error) {
	var next mail.Config
	err := po.update(func(txn kv.Txn) error {
		var stored EmailChange
		if err := kv.Get(txn, []byte(keyEmail), &stored); err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		stored = stored.merge(ch)
		next = stored.Over(po.email)
		if p := next.Validate(); len(p) > 0 {
			return &EmailSettingsError{Problems: p}
		}
		return kv.Put(txn, []byte(keyEmail), stored)
	})
	if err != nil {
		return mail.Config{}, err
	}
	return next, nil
}
