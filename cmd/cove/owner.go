package main

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// keepOwner is for the commands that write into a data directory while cove is stopped (admin,
// scrub, restore, an offline backup): run as root on a directory that belongs to another user
// (the systemd unit's dynamic user, the image's 65532), they would leave files owned by root in
// it — index files, quarantine/, blobs/ directories — which cove, started again as that user,
// cannot open ("permission denied"). It notes the directory's owner before the command runs and
// returns the function to call after it: that gives every entry root created under dir back to
// the directory's owner, and says on w what it could not give back and the chown that does.
// For any other caller, or a directory that does not exist yet or is root's, it does nothing.
func keepOwner(dir string, w io.Writer) func() {
	if os.Geteuid() != 0 {
		return func() {}
	}
	info, err := os.Stat(dir)
	if err != nil {
		return func() {}
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return func() {}
	}
	uid, gid := int(st.Uid), int(st.Gid)
	return func() {
		if err := chownRootEntries(dir, uid, gid); err != nil {
			fmt.Fprintf(w, "cove: %v; the data directory belongs to uid %d: run chown -R %d:%d %s before cove starts on it\n",
				err, uid, uid, gid, dir)
		}
	}
}

// chownRootEntries gives every entry under dir (dir included) owned by root to uid:gid.
func chownRootEntries(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // removed meanwhile
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid == 0 {
			if err := os.Lchown(path, uid, gid); err != nil {
				return fmt.Errorf("give %s back to the data directory's owner: %w", path, err)
			}
		}
		return nil
	})
}
