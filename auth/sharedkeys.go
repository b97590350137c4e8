package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"cove/internal/kv"
)

// In a fleet the token signing keys live in the shared metadata store, not in a node's files:
// a token signed by one node verifies on every node (issue "Fleet mode"). The current key is one
// record; a rotation moves it under the retired prefix with an expiry of refreshTTL (after which
// no token it signed is valid) and writes a new one, in one transaction. Every node keeps the
// keys in memory, reads the current one again at most every sharedKeysRefresh (a rotation on
// another node reaches it within that; meanwhile its tokens are signed with a key that still
// verifies everywhere), and asks the store for a kid it does not know, at most once a second.

const (
	keyTokenCurrent = "auth/token-key/current"
	keyTokenRetired = "auth/token-key/retired/"
	// sharedKeysRefresh is how often a node reads the current key again.
	sharedKeysRefresh = 30 * time.Second
)

// loadSharedKeystore reads the signing keys from db, making the first key if there is none (nodes
// starting together agree: the transaction that loses the race reads the winner's key).
func loadSharedKeystore(ctx context.Context, db kv.DB, now func() time.Time) (*keystore, error) {
	ks := &keystore{db: db, now: now, verify: map[string]*ecdsa.PublicKey{}}
	err := kv.Retry(ctx, db, func(txn kv.Txn) error {
		if _, err := txn.Get([]byte(keyTokenCurrent)); !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		b, err := newKeyPEM()
		if err != nil {
			return err
		}
		return txn.Set([]byte(keyTokenCurrent), b)
	})
	if err != nil {
		return nil, fmt.Errorf("token signing key: %w", err)
	}
	if err := ks.reload(ctx); err != nil {
		return nil, err
	}
	return ks, nil
}

func newKeyPEM() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func parseKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("token key record: no PEM block")
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

// reload reads the current key and the retired ones still valid from the store.
func (ks *keystore) reload(ctx context.Context) error {
	var cur *ecdsa.PrivateKey
	verify := map[string]*ecdsa.PublicKey{}
	err := ks.db.View(ctx, func(txn kv.Txn) error {
		b, err := txn.Get([]byte(keyTokenCurrent))
		if err != nil {
			return err
		}
		if cur, err = parseKeyPEM(b); err != nil {
			return err
		}
		return txn.Scan([]byte(keyTokenRetired), kv.ScanOptions{}, func(_, v []byte) (bool, error) {
			old, err := parseKeyPEM(v)
			if err != nil {
				return false, err
			}
			verify[keyID(old)] = &old.PublicKey
			return true, nil
		})
	})
	if err != nil {
		return fmt.Errorf("read the token signing keys: %w", err)
	}
	verify[keyID(cur)] = &cur.PublicKey
	ks.mu.Lock()
	ks.key, ks.kid, ks.verify, ks.loaded = cur, keyID(cur), verify, ks.now()
	ks.mu.Unlock()
	return nil
}

// rotateShared retires the current key (it verifies until refreshTTL from now) and makes a new
// one current, in one transaction.
func (ks *keystore) rotateShared(ctx context.Context) (string, error) {
	err := kv.Retry(ctx, ks.db, func(txn kv.Txn) error {
		b, err := txn.Get([]byte(keyTokenCurrent))
		if err != nil {
			return err
		}
		old, err := parseKeyPEM(b)
		if err != nil {
			return err
		}
		if err := txn.SetExpiring([]byte(keyTokenRetired+keyID(old)), b, ks.now().Add(refreshTTL+tokenLeeway)); err != nil {
			return err
		}
		nb, err := newKeyPEM()
		if err != nil {
			return err
		}
		return txn.Set([]byte(keyTokenCurrent), nb)
	})
	if err != nil {
		return "", fmt.Errorf("rotate the token key: %w", err)
	}
	if err := ks.reload(ctx); err != nil {
		return "", err
	}
	_, kid := ks.signer()
	return kid, nil
}

// freshen reads the keys again when they are older than sharedKeysRefresh (shared stores only).
func (ks *keystore) freshen() {
	if ks.db == nil {
		return
	}
	ks.mu.RLock()
	stale := ks.now().Sub(ks.loaded) >= sharedKeysRefresh
	ks.mu.RUnlock()
	if stale {
		_ = ks.reload(context.Background()) // the keys in memory go on meanwhile
	}
}

// lookupShared asks the store for a kid this node does not know (a rotation on another node), at
// most once a second.
func (ks *keystore) lookupShared(kid string) (*ecdsa.PublicKey, bool) {
	ks.mu.Lock()
	if ks.now().Sub(ks.missed) < time.Second {
		ks.mu.Unlock()
		return nil, false
	}
	ks.missed = ks.now()
	ks.mu.Unlock()
	if ks.reload(context.Background()) != nil {
		return nil, false
	}
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	k, ok := ks.verify[kid]
	return k, ok
}
