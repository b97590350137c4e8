package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"cove/internal/kv"
)

// Settings are what an admin may change while cove runs. The configuration file gives their
// starting values; a change through the API is kept in the index and wins from then on.
type Settings struct {
	SelfRegistration bool   `json:"self_registration"`
	AnonymousPull    string `json:"anonymous_pull"` // mirror | none
	// ProjectCreation says who may create projects: adminonly (the default) or everyone. A local
	// project's name wins over the default upstream, so a project named like a Docker Hub
	// organisation takes over its pulls: that is an admin's decision by default.
	ProjectCreation string `json:"project_creation_restriction"`
}

const keySettings = "auth/settings"

// settingsCache holds the effective settings in memory; every decision reads them.
type settingsCache struct {
	mu sync.RWMutex
	// cur is guarded by mu.
	cur Settings
}

func (c *settingsCache) get() Settings {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cur
}

// loadSettings starts from the configuration and applies what an admin stored.
func (po *Policy) loadSettings(defaults Settings) error {
	cur := defaults
	if cur.ProjectCreation == "" {
		cur.ProjectCreation = "adminonly"
	}
	err := po.db.View(context.Background(), func(txn kv.Txn) error { return kv.Get(txn, []byte(keySettings), &cur) })
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return fmt.Errorf("read settings: %w", err)
	}
	if po.identity.usesDirectory() {
		cur.SelfRegistration = false // see UpdateSettings
	}
	po.settings.mu.Lock()
	po.settings.cur = cur
	po.settings.mu.Unlock()
	return nil
}

// Settings returns the settings in effect.
func (po *Policy) Settings(ctx context.Context) Settings { return po.settings.get() }

// UpdateSettings applies change to the settings, checks them, stores and uses them.
func (po *Policy) UpdateSettings(ctx context.Context, change func(*Settings)) (Settings, error) {
	po.settings.mu.Lock()
	defer po.settings.mu.Unlock()
	next := po.settings.cur
	change(&next)
	if next.AnonymousPull != "mirror" && next.AnonymousPull != "none" {
		return po.settings.cur, fmt.Errorf("%w: anonymous_pull must be mirror or none, not %q", ErrInvalid, next.AnonymousPull)
	}
	if next.ProjectCreation != "adminonly" && next.ProjectCreation != "everyone" {
		return po.settings.cur, fmt.Errorf("%w: project_creation_restriction must be adminonly or everyone, not %q", ErrInvalid, next.ProjectCreation)
	}
	if next.SelfRegistration && po.identity.usesDirectory() {
		return po.settings.cur, fmt.Errorf("%w: self-registration is off with LDAP: local accounts could take directory users' names", ErrInvalid)
	}
	if err := po.update(func(txn kv.Txn) error { return kv.Put(txn, []byte(keySettings), next) }); err != nil {
		return po.settings.cur, err
	}
	po.settings.cur = next
	return next, nil
}
