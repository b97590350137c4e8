package auth

import (
	"context"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"cove/internal/kv"
)

// viewCounter counts the read transactions made on a DB.
type viewCounter struct {
	kv.DB
	views atomic.Int64
}

func (v *viewCounter) View(ctx context.Context, fn func(kv.Txn) error) error {
	v.views.Add(1)
	return v.DB.View(ctx, fn)
}

// Every request's routing asks whether its first name is a project: on one node the answer comes
// from memory while nothing was written, and a created, deleted or changed project is seen at once.
func TestProjectLookupsAreMemoizedAndSeeEveryWrite(t *testing.T) {
	ctx := context.Background()
	db := &viewCounter{DB: openDB(t)}
	s, err := New(ctx, db, Config{AdminPassword: "pw", BcryptCost: bcrypt.MinCost, KeyDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	exists := func(name string) bool {
		t.Helper()
		ok, err := s.Policy.ProjectExists(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if exists("library") {
		t.Fatal("library exists before it was made")
	}
	before := db.views.Load()
	for range 10 {
		exists("library")
	}
	if n := db.views.Load() - before; n != 0 {
		t.Errorf("10 lookups of an unchanged index read it %d times; want none", n)
	}
	if _, err := s.Policy.CreateProject(ctx, "library", false, "admin"); err != nil {
		t.Fatal(err)
	}
	if !exists("library") {
		t.Error("a project just made is not seen")
	}
	if _, err := s.Policy.SetProjectPublic(ctx, "library", true); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Policy.Project(ctx, "library"); err != nil || !p.Public {
		t.Errorf("a project made public = %+v, %v", p, err)
	}
	if err := s.Policy.DeleteProject(ctx, "library"); err != nil {
		t.Fatal(err)
	}
	if exists("library") {
		t.Error("a deleted project is still seen")
	}
}
