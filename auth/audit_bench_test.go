package auth

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"cove/internal/kv"
)

// BenchmarkAuditQuery reads one page of an audit log of 100,000 records: the newest page, a page
// further on, an hour of a day's records, a filter that has to read every record, and the newest
// page by a new Audit (which counts the records once).
func BenchmarkAuditQuery(b *testing.B) {
	bdb, err := badger.Open(badger.DefaultOptions(filepath.Join(b.TempDir(), "index")).WithLogger(nil))
	if err != nil {
		b.Fatal(err)
	}
	defer bdb.Close()
	db := kv.NewBadger(bdb)
	const records = 100_000
	end := time.Now().UTC().Truncate(time.Second)
	a := NewAudit(db, 0, nil)
	defer a.Close()
	ctx := context.Background()
	for i := range records {
		// One a second for a little over a day, the newest now; every 100th a push by bob.
		e := Event{Username: "alice", Address: "192.0.2.1", Operation: "pull", ResourceType: "artifact",
			Resource: fmt.Sprintf("team/app%d@sha256:%064x", i%50, i), Time: end.Add(-time.Duration(records-1-i) * time.Second)}
		if i%100 == 0 {
			e.Username, e.Operation = "bob", "push"
			e.Time = e.Time.Add(time.Nanosecond) // pushes are written at once, one transaction each
		}
		if err := a.Record(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	if _, total, err := a.Query(ctx, Filter{}, 1, 1); err != nil || total != records {
		b.Fatalf("Query = %d records, %v; want %d", total, err, records)
	}
	for _, bc := range []struct {
		name       string
		f          Filter
		page, size int
		want       int // the total
	}{
		{"newest page", Filter{}, 1, 15, records},
		{"page 100", Filter{}, 100, 15, records},
		{"last hour", Filter{From: end.Add(-time.Hour + time.Second), To: end}, 1, 15, 3600},
		{"hour a day ago", Filter{From: end.Add(-24 * time.Hour), To: end.Add(-23*time.Hour - time.Second)}, 1, 15, 3600},
		{"one user", Filter{Username: "bob"}, 1, 15, records / 100},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				events, total, err := a.Query(ctx, bc.f, bc.page, bc.size)
				if err != nil || total != bc.want || len(events) != bc.size {
					b.Fatalf("Query = %d events of %d, %v; want %d of %d", len(events), total, err, bc.size, bc.want)
				}
			}
		})
	}
	// The first unfiltered query after a start counts the records (keys only) once.
	b.Run("newest page after a start", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			fresh := NewAudit(db, 0, nil)
			if _, total, err := fresh.Query(ctx, Filter{}, 1, 15); err != nil || total != records {
				b.Fatalf("Query = %d records, %v; want %d", total, err, records)
			}
			fresh.Close()
		}
	})
}
