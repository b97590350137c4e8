// Package kv holds the two helpers that every package keeping records in badger needs: a JSON
// value read and written under a key. Keys, prefixes and transactions stay with their owners.
package kv

import (
	"encoding/json"

	"github.com/dgraph-io/badger/v4"
)

// GetJSON decodes the value of key into v; badger.ErrKeyNotFound when there is none.
func GetJSON(txn *badger.Txn, key []byte, v any) error {
	item, err := txn.Get(key)
	if err != nil {
		return err
	}
	return item.Value(func(b []byte) error { return json.Unmarshal(b, v) })
}

// PutJSON encodes v as the value of key.
func PutJSON(txn *badger.Txn, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return txn.Set(key, b)
}
