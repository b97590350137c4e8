package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"cove/cache"
	"cove/internal/kv"
	"cove/internal/pgtest"
)

// withRecords opens the index of data (made if new), runs fn in an update, and closes it.
func withRecords(t *testing.T, data string, fn func(kv.Txn) error) {
	t.Helper()
	db, err := cache.OpenDB(filepath.Join(data, "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := kv.NewBadger(db)
	defer b.Close()
	if err := b.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

// An index of a newer schema is refused by every command that opens it, with a message that
// names what to do, and is left as it was.
func TestNewerSchemaRefused(t *testing.T) {
	data := t.TempDir()
	withRecords(t, data, func(txn kv.Txn) error {
		return txn.Set([]byte("cove/schema"), []byte(`{"version":99,"by":"v9.0.0"}`))
	})
	code, _, errOut := cli(t, "", "serve", "--data", data, "--listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errOut, "written by a newer cove (cove v9.0.0)") || !strings.Contains(errOut, "schema is version 99") {
		t.Errorf("serve on a newer index: exit %d\n%s", code, errOut)
	}
	if code, _, errOut := cli(t, "", "admin", "reset-password", "admin", "--data", data); code != 1 || !strings.Contains(errOut, "newer cove") {
		t.Errorf("admin reset-password on a newer index: exit %d\n%s", code, errOut)
	}
	// The refused index is as it was: no admin, no schema written over.
	db, err := cache.OpenDB(filepath.Join(data, "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	v, by, err := cache.ReadSchema(context.Background(), kv.NewBadger(db))
	db.Close()
	if err != nil || v != 99 || by != "v9.0.0" {
		t.Errorf("the refused index's schema: %d by %q (%v)", v, by, err)
	}

	// A backup of it is refused by restore.
	to := filepath.Join(t.TempDir(), "b")
	if code, out, errOut := cli(t, "", "backup", "--to", to, "--data", data); code != 0 {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := cli(t, "", "restore", "--from", to, "--data", filepath.Join(t.TempDir(), "d")); code != 1 || !strings.Contains(errOut, "newer cove") {
		t.Errorf("restore of a newer backup: exit %d\n%s", code, errOut)
	}
}

// A backup keeps the records of the content, not those of the run that took it: the counts of a
// clean stop (the restored directory must be walked), the marks of unsynced files, a fleet's
// heartbeats.
func TestBackupLeavesOutTheRunsRecords(t *testing.T) {
	data := t.TempDir()
	withRecords(t, data, func(txn kv.Txn) error {
		for _, k := range []string{"cache/clean-stop", "unsynced/sha256:00", "cluster/node/a", "auth/user/x", "cove/schema"} {
			v := "{}"
			if k == "cove/schema" {
				v = `{"version":3}`
			}
			if err := txn.Set([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	to := filepath.Join(t.TempDir(), "b")
	if code, out, errOut := cli(t, "", "backup", "--to", to, "--data", data); code != 0 {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
	}
	restored := filepath.Join(t.TempDir(), "r")
	if code, out, errOut := cli(t, "", "restore", "--from", to, "--data", restored); code != 0 {
		t.Fatalf("restore: exit %d\n%s%s", code, out, errOut)
	}
	db, err := cache.OpenDB(filepath.Join(restored, "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var keys []string
	kv.NewBadger(db).View(context.Background(), func(txn kv.Txn) error {
		return txn.Scan(nil, kv.ScanOptions{KeysOnly: true}, func(k, _ []byte) (bool, error) {
			keys = append(keys, string(k))
			return true, nil
		})
	})
	if strings.Join(keys, " ") != "auth/user/x cove/schema" {
		t.Errorf("restored keys %q, want only the content's", keys)
	}
	var m backupManifest
	b, _ := os.ReadFile(filepath.Join(to, backupManifestFile))
	if err := json.Unmarshal(b, &m); err != nil || m.Schema != 3 || m.Records != 2 || m.Online {
		t.Errorf("manifest %+v (%v): want schema 3, 2 records, offline", m, err)
	}
}

// Bad uses of backup and restore are refused with what to do.
func TestBackupRestoreUsage(t *testing.T) {
	data := t.TempDir()
	withRecords(t, data, func(txn kv.Txn) error { return txn.Set([]byte("auth/user/x"), []byte("{}")) })
	// What a backup cut short (kill -9, a full disk) leaves.
	unfinished := t.TempDir()
	for _, f := range []string{backupRecordsFile, backupBlobList} {
		if err := os.WriteFile(filepath.Join(unfinished, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"backup"}, 2, "--to is required"},
		{[]string{"restore"}, 2, "--from is required"},
		{[]string{"backup", "--to", t.TempDir(), "--data", t.TempDir()}, 1, "no index/"},
		{[]string{"restore", "--from", t.TempDir(), "--data", data}, 1, "no cove-backup.json"},
		{[]string{"backup", "--to", unfinished, "--data", data}, 1, "holds a backup that did not finish (no cove-backup.json): delete it"},
		// cove empties tmp/ at every start: a backup there would be gone.
		{[]string{"backup", "--to", filepath.Join(data, "tmp", "b"), "--data", data}, 1, "is inside the data directory"},
		{[]string{"backup", "--to", filepath.Join(data, "x", "..", "blobs"), "--data", data}, 1, "is inside the data directory"},
		{[]string{"backup", "--to", filepath.Join(data, "backups", "b"), "--data", data}, 0, ""},
		{[]string{"restore", "--from", filepath.Join(data, "backups", "b"), "--data", filepath.Join(data, "backups", "b", "..", "b")}, 1, "is the backup itself"},
	} {
		if code, _, errOut := cli(t, "", c.args...); code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("cove %s: exit %d, %q; want %d and %q", strings.Join(c.args, " "), code, errOut, c.code, c.want)
		}
	}
}

// A fleet's database is backed up while its nodes may run, records only (the bucket has its own
// backups), and restored into an empty database, never over one.
func TestBackupOfAFleetsDatabase(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.Start(t)
	pg, err := kv.OpenPostgres(ctx, srv.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	if err := pg.Update(ctx, func(txn kv.Txn) error {
		for _, k := range []string{"auth/user/x", "cluster/node/a", "tag/team/app\x00v1"} {
			if err := txn.Set([]byte(k), []byte("{}")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.NextID(ctx, "auth/seq/user"); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Data = t.TempDir()
	cfg.Storage.Metadata.Kind, cfg.Storage.Metadata.Postgres.DSN = "postgres", srv.DSN
	cfg.Storage.Blobs.Kind, cfg.Storage.Blobs.S3.Bucket = "s3", "cove"
	to := filepath.Join(t.TempDir(), "b")
	if _, err := backup(ctx, cfg, to, false, io.Discard); err == nil || !strings.Contains(err.Error(), "--metadata-only") {
		t.Errorf("a fleet's backup without --metadata-only: %v", err)
	}
	m, err := backup(ctx, cfg, to, true, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !m.MetadataOnly || m.Records != 3 || m.Source != "postgres" { // two records and the sequence
		t.Errorf("manifest %+v: want metadata only, 3 records, from postgres", m)
	}
	if _, _, err := restore(ctx, cfg, to, availBytes); err == nil || !strings.Contains(err.Error(), "holds cove records already") {
		t.Errorf("a restore over the fleet's database: %v", err)
	}
	cfg.Storage.Metadata.Postgres.DSN = srv.CreateDB(t, "restored")
	if _, n, err := restore(ctx, cfg, to, availBytes); err != nil || n != 3 {
		t.Fatalf("restore into an empty database: %d records, %v", n, err)
	}
	dst, err := kv.OpenPostgres(ctx, cfg.Storage.Metadata.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if id, err := dst.NextID(ctx, "auth/seq/user"); err != nil || id <= 1 {
		t.Errorf("the restored sequence gave %d (%v): the source had given 1", id, err)
	}
	// A single node's data directory cannot take it (it has no blob files).
	cfg.Storage.Metadata.Kind, cfg.Storage.Blobs.Kind = "badger", "filesystem"
	if _, _, err := restore(ctx, cfg, to, availBytes); err == nil || !strings.Contains(err.Error(), "storage.metadata.kind postgres") {
		t.Errorf("a fleet's backup restored into a data directory: %v", err)
	}
}

// A damaged blob file stops a backup or a restore with what to do about it: on the data
// directory, take it out of service; in a backup, find another copy.
func TestPlaceBlobSaysWhatToDoWithADamagedFile(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "blob")
	if err := os.WriteFile(src, []byte("not the bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := digest.FromString("the bytes")
	for _, c := range []struct {
		size   int64
		verify bool
		want   string
	}{
		{100, false, "cove scrub --repair"},
		{100, true, "the backup's copy is damaged"},
		{13, true, "the backup's copy is damaged"},
	} {
		_, err := placeBlob(src, filepath.Join(t.TempDir(), "x", "dst"), good, c.size, c.verify)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("placeBlob(size %d, verify %v) = %v; want an error saying %q", c.size, c.verify, err, c.want)
		}
	}
	// A copy across file systems (/dev/shm is a tmpfs of its own) hashes what it copies.
	shm, err := os.MkdirTemp("/dev/shm", "cove-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(shm)
	_, err = placeBlob(src, filepath.Join(shm, "dst"), good, 13, false)
	if err == nil || !strings.Contains(err.Error(), "cove scrub --repair") {
		t.Errorf("a damaged copy across file systems = %v; want it to name cove scrub --repair", err)
	}
}

// A damaged blob file does not cost the backup of the others: it is left out, named in the
// output and the manifest, and the status says the backup is not whole.
func TestBackupLeavesOutADamagedBlob(t *testing.T) {
	data := t.TempDir()
	good, bad := []byte("a good blob"), []byte("a blob whose file was cut")
	dg, db := digest.FromBytes(good), digest.FromBytes(bad)
	withRecords(t, data, func(txn kv.Txn) error {
		for d, n := range map[digest.Digest]int{dg: len(good), db: len(bad)} {
			if err := txn.Set([]byte("blob/"+d.String()), fmt.Appendf(nil, `{"size":%d}`, n)); err != nil {
				return err
			}
		}
		return nil
	})
	for d, b := range map[digest.Digest][]byte{dg: good, db: bad[:5]} {
		p := cache.BlobPath(data, d)
		os.MkdirAll(filepath.Dir(p), 0o750)
		if err := os.WriteFile(p, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	to := filepath.Join(t.TempDir(), "b")
	code, out, errOut := cli(t, "", "backup", "--to", to, "--data", data)
	if code != 1 || !strings.Contains(out, "1 blob files are damaged and were left out, the first "+db.String()) || !strings.Contains(out, "cove scrub --repair") {
		t.Errorf("backup with a damaged blob: exit %d\n%s%s", code, out, errOut)
	}
	var m backupManifest
	b, _ := os.ReadFile(filepath.Join(to, backupManifestFile))
	if err := json.Unmarshal(b, &m); err != nil || m.Blobs != 1 || m.DamagedCount != 1 || len(m.Damaged) != 1 || m.Damaged[0] != db.String() {
		t.Errorf("manifest %+v (%v): want the good blob backed up and the damaged one named", m, err)
	}
	if _, err := os.Stat(cache.BlobPath(to, dg)); err != nil {
		t.Errorf("the good blob is not in the backup: %v", err)
	}
	if _, err := os.Stat(cache.BlobPath(to, db)); err == nil {
		t.Error("the damaged blob is in the backup")
	}
}

// A symbolic link among a backup's blob files (cove backup writes none) is refused by restore,
// never placed in the data directory: cove would serve the file it names, wherever that is.
func TestRestoreRefusesALinkAmongTheBlobs(t *testing.T) {
	data := t.TempDir()
	withRecords(t, data, func(txn kv.Txn) error { return txn.Set([]byte("auth/user/x"), []byte("{}")) })
	to := filepath.Join(t.TempDir(), "b")
	if code, out, errOut := cli(t, "", "backup", "--to", to, "--data", data); code != 0 {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	// As long as its own name, as a link to it is: the sizes agree.
	if err := os.WriteFile(secret, []byte(strings.Repeat("s", len(secret))), 0o600); err != nil {
		t.Fatal(err)
	}
	hex := strings.Repeat("ab", 32)
	link := filepath.Join(to, "blobs", "sha256", "ab", hex)
	if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(t.TempDir(), "r")
	code, _, errOut := cli(t, "", "restore", "--from", to, "--data", restored)
	if code != 1 || !strings.Contains(errOut, link) || !strings.Contains(errOut, "no regular file") || !strings.Contains(errOut, "restore another backup") {
		t.Errorf("restore of a backup with a link among its blobs: exit %d\n%s", code, errOut)
	}
	if _, err := os.Lstat(filepath.Join(restored, "blobs", "sha256", "ab", hex)); !os.IsNotExist(err) {
		t.Errorf("the link was placed in the data directory (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(restored, "index")); !os.IsNotExist(err) {
		t.Errorf("a refused restore left an index (%v)", err)
	}
}

// A blob file whose size is not its record's is refused with what to do, never a command that
// does not exist.
func TestPlaceBlobDamaged(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	dgst := digest.FromString("12345")
	if _, err := placeBlob(src, filepath.Join(dir, "dst"), dgst, 4, false); !errors.Is(err, errDamaged) || strings.Contains(err.Error(), "damaged; run") {
		t.Errorf("a file of the wrong size: %v", err)
	}
}

// A restore onto a file system without room for the index is refused before badger writes it (a
// write into its memory-mapped files on a full disk is a SIGBUS), with what to do.
func TestRestoreRefusesAFullDisk(t *testing.T) {
	data := t.TempDir()
	withRecords(t, data, func(txn kv.Txn) error { return txn.Set([]byte("auth/user/x"), []byte("{}")) })
	to := filepath.Join(t.TempDir(), "b")
	if code, out, errOut := cli(t, "", "backup", "--to", to, "--data", data); code != 0 {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
	}
	restored := filepath.Join(t.TempDir(), "r")
	cfg, err := loadConfig("", nil, map[string]string{"data": restored})
	if err != nil {
		t.Fatal(err)
	}
	full := func(string) (int64, error) { return 1 << 20, nil }
	_, _, err = restore(context.Background(), cfg, to, full)
	if err == nil || !strings.Contains(err.Error(), "1.0 MiB free") || !strings.Contains(err.Error(), "free some space") {
		t.Errorf("a restore onto a full disk: %v", err)
	}
	for _, dir := range []string{"index", "index.restoring"} {
		if _, err := os.Stat(filepath.Join(restored, dir)); !os.IsNotExist(err) {
			t.Errorf("a refused restore left %s (%v)", dir, err)
		}
	}
	if _, n, err := restore(context.Background(), cfg, to, availBytes); err != nil || n != 1 {
		t.Errorf("the restore again, with room: %d records, %v", n, err)
	}
}

// A backup of a data directory whose index another command holds, with no cove answering on its
// control socket, says what may hold it, and writes nothing into the backup's directory.
func TestBackupOfALockedIndex(t *testing.T) {
	data := t.TempDir()
	withRecords(t, data, func(txn kv.Txn) error { return txn.Set([]byte("auth/user/x"), []byte("{}")) })
	db, err := cache.OpenDB(filepath.Join(data, "index"), nil) // as cove admin would
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	to := t.TempDir()
	code, _, errOut := cli(t, "", "backup", "--to", to, "--data", data)
	if code != 1 || !strings.Contains(errOut, "another cove command") {
		t.Errorf("backup of a locked index: exit %d\n%s", code, errOut)
	}
	if ents, _ := os.ReadDir(to); len(ents) > 0 {
		t.Errorf("the refused backup wrote %v", ents)
	}
}

// The backup before a migration removes those that starts cut short left unfinished, and keeps
// the finished ones.
func TestBackupBeforeMigrateRemovesUnfinishedOnes(t *testing.T) {
	data := t.TempDir()
	unfinished := filepath.Join(data, "backups", "before-schema-3-20260101T000000Z")
	finished := filepath.Join(data, "backups", "before-schema-3-20250101T000000Z")
	for _, f := range []string{filepath.Join(unfinished, backupRecordsFile), filepath.Join(finished, backupManifestFile)} {
		os.MkdirAll(filepath.Dir(f), 0o700)
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	db, err := cache.OpenDB(filepath.Join(data, "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	meta := kv.NewBadger(db)
	cfg := DefaultConfig()
	cfg.Data = data
	if err := backupBeforeMigrate(context.Background(), cfg, meta, slog.New(slog.DiscardHandler))(2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(unfinished); !os.IsNotExist(err) {
		t.Errorf("the unfinished backup is still there (%v)", err)
	}
	if _, err := os.Stat(finished); err != nil {
		t.Errorf("the finished backup was removed: %v", err)
	}
	if got, _ := filepath.Glob(filepath.Join(data, "backups", "before-schema-*", backupManifestFile)); len(got) != 2 {
		t.Errorf("finished backups: %v, want the old one and the new one", got)
	}
}
