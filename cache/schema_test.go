package cache

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"cove/internal/kv"
)

// setSchema writes the schema record of s's index (version 0: removes it and the eviction
// index's marker, as a data directory from before schema records and the eviction index).
func setSchema(t *testing.T, s *Store, version int, by string) {
	t.Helper()
	err := s.db.Update(context.Background(), func(txn kv.Txn) error {
		if version == 0 {
			if err := txn.Delete([]byte(keyEvictIndex)); err != nil {
				return err
			}
			return txn.Delete([]byte(keySchema))
		}
		return kv.Put(txn, []byte(keySchema), schemaRecord{Version: version, By: by})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func schemaOf(t *testing.T, s *Store) int {
	t.Helper()
	v, _, err := ReadSchema(context.Background(), s.db)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A first start writes this cove's schema, with no migration and no backup.
func TestSchemaOfANewIndex(t *testing.T) {
	called := false
	s, _ := newStoreWith(t, Config{Version: "v-test", BeforeMigrate: func(int) error { called = true; return nil }})
	if v := schemaOf(t, s); v != SchemaVersion {
		t.Errorf("schema of a new index = %d, want %d", v, SchemaVersion)
	}
	if called {
		t.Error("a first start made a backup before migrating")
	}
}

// openAt opens a store on the badger index of dir; closeAll closes the store and the index.
func openAt(t *testing.T, dir string, cfg Config) (s *Store, closeAll func(), err error) {
	t.Helper()
	db, err := OpenDB(filepath.Join(dir, "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	meta := kv.NewBadger(db)
	cfg.Dir, cfg.DB = dir, meta
	s, err = Open(context.Background(), cfg)
	if err != nil {
		meta.Close()
		db.Close()
		return nil, nil, err
	}
	return s, func() { s.Close(); meta.Close(); db.Close() }, nil
}

// An index of an older schema is backed up, then migrated, at start; a failed backup stops the
// start with nothing migrated.
func TestSchemaMigratesAfterTheBackup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var from []int
	fail := false
	cfg := Config{BeforeMigrate: func(v int) error {
		from = append(from, v)
		if fail {
			return errors.New("the disk is full")
		}
		return nil
	}}
	open := func() (*Store, func()) {
		t.Helper()
		s, closeAll, err := openAt(t, dir, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s, closeAll
	}
	s, closeAll := open()
	d := mirrorBlob(t, s, "docker.io/library/a", []byte("a mirrored blob"))
	dropEvictIndex(t, s, true) // schema 1: no schema record, no eviction index
	if v := schemaOf(t, s); v != 1 {
		t.Fatalf("schema of a data directory from before the eviction index = %d, want 1", v)
	}
	closeAll()

	fail = true
	if _, _, err := openAt(t, dir, cfg); err == nil || !strings.Contains(err.Error(), "the disk is full") || !strings.Contains(err.Error(), "nothing was migrated") {
		t.Fatalf("a start whose backup failed: %v", err)
	}
	fail = false
	s, closeAll = open()
	if want := []int{1, 1}; !slices.Equal(from, want) {
		t.Errorf("backups before migrating from %v, want %v", from, want)
	}
	if v := schemaOf(t, s); v != SchemaVersion {
		t.Errorf("schema after the migration = %d, want %d", v, SchemaVersion)
	}
	if got := evictIndex(t, s); len(got) != 1 || !strings.HasSuffix(string(got[0]), d.String()) {
		t.Errorf("eviction index after the migration = %q, want the mirrored blob's entry", got)
	}
	// Schema 2 (the release before schema records): only the record is written.
	setSchema(t, s, 0, "")
	if err := s.db.Update(ctx, func(txn kv.Txn) error { return txn.Set([]byte(keyEvictIndex), []byte(`{}`)) }); err != nil {
		t.Fatal(err)
	}
	if v := schemaOf(t, s); v != 2 {
		t.Fatalf("schema of a data directory with the eviction index and no record = %d, want 2", v)
	}
	closeAll()
	s, closeAll = open()
	if v := schemaOf(t, s); v != SchemaVersion || from[len(from)-1] != 2 {
		t.Errorf("schema after migrating from 2 = %d (backups from %v)", v, from)
	}
	closeAll()
	// Started again: nothing to migrate, no backup.
	n := len(from)
	_, closeAll = open()
	closeAll()
	if len(from) != n {
		t.Errorf("a start at the current schema made a backup")
	}
}

// An index a newer cove wrote is refused, with a message that says what to do, and left as it
// was.
func TestSchemaTooNewIsRefused(t *testing.T) {
	dir := t.TempDir()
	s, closeAll, err := openAt(t, dir, Config{})
	if err != nil {
		t.Fatal(err)
	}
	setSchema(t, s, SchemaVersion+1, "v9.9.9")
	closeAll()
	_, _, err = openAt(t, dir, Config{})
	var tooNew *SchemaTooNewError
	if !errors.As(err, &tooNew) || tooNew.Have != SchemaVersion+1 {
		t.Fatalf("a start on a newer index: %v, want SchemaTooNewError", err)
	}
	for _, want := range []string{"newer cove (cove v9.9.9)", "run that cove or a newer one", "cove restore"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %q", err, want)
		}
	}
	db, err := OpenDB(filepath.Join(dir, "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, by, err := ReadSchema(context.Background(), kv.NewBadger(db)); err != nil || v != SchemaVersion+1 || by != "v9.9.9" {
		t.Errorf("the refused index's schema is now %d by %q (%v): it must be left as it was", v, by, err)
	}
}

// A schema record cove cannot read (not JSON, a version below 1) is refused with what to do, and
// never taken for a first start, which would skip the migrations and write this cove's version.
func TestSchemaDamagedIsRefused(t *testing.T) {
	for _, v := range []string{`garbage`, `{"version":0}`, `{"version":-5}`, `{"version":"3"}`} {
		dir := t.TempDir()
		s, closeAll, err := openAt(t, dir, Config{})
		if err != nil {
			t.Fatal(err)
		}
		setSchema(t, s, 0, "") // an index from before the eviction index…
		if err := s.db.Update(context.Background(), func(txn kv.Txn) error {
			return txn.Set([]byte(keySchema), []byte(v)) // …whose schema record is damaged
		}); err != nil {
			t.Fatal(err)
		}
		closeAll()
		migrated := false
		_, _, err = openAt(t, dir, Config{BeforeMigrate: func(int) error { migrated = true; return nil }})
		if !errors.Is(err, ErrSchemaDamaged) || !strings.Contains(err.Error(), "cove/schema") || !strings.Contains(err.Error(), "cove restore") {
			t.Errorf("%s: a start on a damaged schema record: %v", v, err)
		}
		if migrated {
			t.Errorf("%s: the start made a backup before migrating", v)
		}
		db, err := OpenDB(filepath.Join(dir, "index"), nil)
		if err != nil {
			t.Fatal(err)
		}
		err = kv.NewBadger(db).View(context.Background(), func(txn kv.Txn) error {
			got, err := txn.Get([]byte(keySchema))
			if err == nil && string(got) != v {
				t.Errorf("%s: the schema record is now %s: it must be left as it was", v, got)
			}
			_, eerr := txn.Get([]byte(keyEvictIndex))
			if !errors.Is(eerr, kv.ErrNotFound) {
				t.Errorf("%s: the eviction index was marked built (%v)", v, eerr)
			}
			return err
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
}
