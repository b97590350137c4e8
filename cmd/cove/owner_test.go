package main

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"cove/cache"
)

// TestDataDirCommandsAsRootKeepTheOwner: run as root (as an operator does with the systemd unit,
// whose data directory belongs to a dynamic user) on a data directory that belongs to another
// user, admin, scrub, backup and restore leave no file owned by root in it — such a file stopped
// cove, started again as its user, with "permission denied" on the index.
func TestDataDirCommandsAsRootKeepTheOwner(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		// Not root: nothing to give back, and nothing is touched.
		keepOwner(data, io.Discard)()
		t.Log("not root: only the no-op is checked")
		return
	}
	const uid, gid = 61000, 61001
	db, err := cache.OpenDB(filepath.Join(data, "index"), nil) // as cove's first start leaves it
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := chownRootEntries(data, uid, gid); err != nil {
		t.Fatal(err)
	}
	backups := t.TempDir()
	for _, args := range [][]string{
		{"admin", "reset-password", "admin", "--data", data},
		{"admin", "create-user", "dev1", "--data", data},
		{"scrub", "--repair", "--data", data},
		{"backup", "--to", filepath.Join(backups, "b"), "--data", data},
	} {
		if code, _, errOut := cli(t, "", args...); code != 0 {
			t.Fatalf("cove %s = %d: %s", strings.Join(args, " "), code, errOut)
		}
		checkOwner(t, data, uid, gid, args[0])
	}
	// The way back after an upgrade: the index moved aside, a backup restored into the directory.
	if err := os.Rename(filepath.Join(data, "index"), filepath.Join(data, "index.new")); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := cli(t, "", "restore", "--from", filepath.Join(backups, "b"), "--data", data); code != 0 {
		t.Fatalf("cove restore = %d: %s", code, errOut)
	}
	checkOwner(t, data, uid, gid, "restore")
}

func checkOwner(t *testing.T, dir string, uid, gid uint32, after string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n++
		if st := info.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != gid {
			t.Errorf("after cove %s: %s is owned by %d:%d, not the data directory's owner %d:%d", after, path, st.Uid, st.Gid, uid, gid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Fatalf("after cove %s: only %d entries in %s", after, n, dir)
	}
}
