package auth

import (
	"context"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func TestAuditRecordsExpireAfterRetention(t *testing.T) {
	db := openDB(t)
	now := time.Unix(1_800_000_000, 0)
	a := NewAudit(db, 48*time.Hour, func() time.Time { return now })
	ctx := context.Background()
	for i, op := range []string{"push", "pull", "delete"} {
		e := Event{Username: "alice", Operation: op, ResourceType: "artifact", Resource: "team/app:v1", Time: now.Add(time.Duration(i) * time.Second)}
		if err := a.Record(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	events, total, err := a.Query(ctx, Filter{}, 1, 2)
	if err != nil || total != 3 || len(events) != 2 || events[0].Operation != "delete" {
		t.Fatalf("Query = %v (%d), %v; want the newest two of three", events, total, err)
	}
	events, _, _ = a.Query(ctx, Filter{Operation: "pull", From: now, To: now.Add(time.Second)}, 1, 10)
	if len(events) != 1 {
		t.Errorf("filtered query = %v", events)
	}
	// Every record carries the retention as its time to live.
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(keyAudit)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			exp := time.Unix(int64(it.Item().ExpiresAt()), 0)
			if left := time.Until(exp); left < 47*time.Hour || left > 49*time.Hour {
				t.Errorf("record expires in %s, want the 48h retention", left)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
