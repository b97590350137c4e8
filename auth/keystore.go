package auth

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"cove/internal/kv"
)

// keystore holds the token signing key: ES256 on P-256, generated at first start and kept in a
// file of its own under the data directory (docs/SECURITY.md 6: no default secrets). Rotation retires
// the current key to keys/retired/<kid>.pem; a retired key keeps verifying until every token it can
// have signed has expired (refreshTTL), then it is deleted. It is safe for concurrent use.
type keystore struct {
	dir string
	now func() time.Time
	// db, when set, holds the keys instead of dir: a fleet's shared store (sharedkeys.go).
	db kv.DB

	mu sync.RWMutex
	// key, kid and verify are guarded by mu.
	key    *ecdsa.PrivateKey
	kid    string
	verify map[string]*ecdsa.PublicKey // by kid: the current key and the retired ones still valid
	// loaded and missed are when the shared keys were last read, and last asked for a kid
	// unknown here; guarded by mu.
	loaded, missed time.Time
}

func loadKeystore(dir string, now func() time.Time) (*keystore, error) {
	if err := os.MkdirAll(filepath.Join(dir, "retired"), 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	ks := &keystore{dir: dir, now: now, verify: map[string]*ecdsa.PublicKey{}}
	path := filepath.Join(dir, "token-signing.pem")
	key, err := readKey(path)
	if errors.Is(err, os.ErrNotExist) {
		key, err = newKey(path)
	}
	if err != nil {
		return nil, err
	}
	ks.key, ks.kid = key, keyID(key)
	ks.verify[ks.kid] = &key.PublicKey
	retired, err := os.ReadDir(filepath.Join(dir, "retired"))
	if err != nil {
		return nil, err
	}
	for _, e := range retired {
		p := filepath.Join(dir, "retired", e.Name())
		info, err := e.Info()
		if err != nil {
			return nil, err
		}
		if now().Sub(info.ModTime()) > refreshTTL+tokenLeeway {
			_ = os.Remove(p) // every token it signed has expired
			continue
		}
		old, err := readKey(p)
		if err != nil {
			return nil, err
		}
		ks.verify[keyID(old)] = &old.PublicKey
	}
	return ks, nil
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("read %s: no PEM block", path)
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return key, nil
}

// newKey generates a key and writes it to path durably: a temporary file (made anew, so 0600
// even over one a crash left), fsynced, renamed over path, then the directory fsynced. A crash
// leaves the old file or the new one whole; a key lost after tokens were signed with it would
// end them all.
func newKey(path string) (*ecdsa.PrivateKey, error) {
	pemBytes, err := newKeyPEM()
	if err != nil {
		return nil, err
	}
	key, err := parseKeyPEM(pemBytes)
	if err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	err = func() error {
		if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = f.Write(pemBytes)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		d, err := os.Open(filepath.Dir(path))
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}()
	if err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("write token key: %w", err)
	}
	return key, nil
}

func keyID(key *ecdsa.PrivateKey) string {
	spki, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	sum := sha256.Sum256(spki)
	return hex.EncodeToString(sum[:8])
}

// signer returns the current key and its id.
func (ks *keystore) signer() (*ecdsa.PrivateKey, string) {
	ks.freshen()
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return ks.key, ks.kid
}

// lookup returns the public key of kid, if it is cove's and still valid.
func (ks *keystore) lookup(kid string) (*ecdsa.PublicKey, bool) {
	ks.mu.RLock()
	k, ok := ks.verify[kid]
	ks.mu.RUnlock()
	if !ok && ks.db != nil {
		return ks.lookupShared(kid)
	}
	return k, ok
}

// rotate retires the current key and starts signing with a new one.
func (ks *keystore) rotate() (string, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	// The new key is written whole first, under a name of its own: until it replaces the current
	// one at the end, every failure (a full disk, say) leaves the current key as it was.
	cur := filepath.Join(ks.dir, "token-signing.pem")
	next := cur + ".next"
	_ = os.Remove(cur + ".tmp") // a torn temporary file a crash left: never reused
	key, err := newKey(next)
	if err != nil {
		return "", err
	}
	retired := filepath.Join(ks.dir, "retired", ks.kid+".pem")
	err = func() error {
		// A second name for the current key (no data to write), then its time, which decides when
		// it is deleted, and its directory entry are made durable.
		if err := os.Link(cur, retired); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		now := ks.now()
		_ = os.Chtimes(retired, now, now)
		for _, p := range []string{retired, filepath.Join(ks.dir, "retired")} {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			err = f.Sync()
			_ = f.Close()
			if err != nil {
				return err
			}
		}
		if err := os.Rename(next, cur); err != nil {
			return err
		}
		d, err := os.Open(ks.dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}()
	if err != nil {
		_ = os.Remove(next)
		return "", fmt.Errorf("rotate the token key (the current one stays): %w", err)
	}
	ks.key, ks.kid = key, keyID(key)
	ks.verify[ks.kid] = &key.PublicKey
	return ks.kid, nil
}
