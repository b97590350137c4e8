package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
)

// smallDisk is a file system of capacity bytes holding the blob and temporary files of dir (the
// index is not counted: the floor for it is tested apart).
type smallDisk struct {
	dir      string
	capacity int64
}

func (d *smallDisk) space(string) (avail, total int64, err error) {
	var used int64
	for _, sub := range []string{"blobs", "tmp"} {
		_ = filepath.WalkDir(filepath.Join(d.dir, sub), func(_ string, e fs.DirEntry, err error) error {
			if err == nil && !e.IsDir() {
				if fi, err := e.Info(); err == nil {
					used += fi.Size()
				}
			}
			return nil
		})
	}
	return d.capacity - used, d.capacity, nil
}

func spaceStore(t *testing.T, capacity, minFree, maxBlob int64) (*Store, *smallDisk) {
	t.Helper()
	disk := &smallDisk{dir: t.TempDir(), capacity: capacity}
	return openStore(t, Config{Dir: disk.dir, MinFree: minFree, MaxBlobSize: maxBlob, DiskSpace: disk.space}), disk
}

func fill(t *testing.T, s *Store, data []byte, size int64) error {
	t.Helper()
	for range 100 {
		// A fill of the same digest that has just ended (failed) may still be found: as the
		// mirror does, start again.
		if err := fillOnce(t, s, data, size); !IsFillEnded(err) {
			return err
		}
	}
	return errors.New("every fill joined had ended")
}

func fillOnce(t *testing.T, s *Store, data []byte, size int64) error {
	t.Helper()
	f, _, err := s.Fills.FromUpstream(digest.FromBytes(data), "docker.io/library/x", func(context.Context) (io.ReadCloser, int64, error) {
		return io.NopCloser(bytes.NewReader(data)), size, nil
	})
	if err != nil {
		return err
	}
	r, err := f.Reader(context.Background())
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = io.Copy(io.Discard, r)
	if err == nil {
		waitFor(t, func() bool { return s.HasBlob(context.Background(), digest.FromBytes(data)) })
	}
	return err
}

// Fills keep the free-space floor: mirrored content is evicted, least recently used first, to
// make room; a blob that cannot fit even so is refused (507), and nothing of it is kept.
func TestFillsKeepTheFreeSpaceFloor(t *testing.T) {
	const mib = 1 << 20
	s, disk := spaceStore(t, 80*mib, 64*mib, 0) // the floor is never under MinFloor (64 MiB)
	var olds [][]byte
	for range 3 { // 15 MiB of mirrored content: 65 MiB free, above the 64 MiB floor
		b := randomBytes(t, 5*mib)
		if err := fill(t, s, b, int64(len(b))); err != nil {
			t.Fatal(err)
		}
		olds = append(olds, b)
	}
	// A fourth blob fits only once the least recently used one is evicted.
	b4 := randomBytes(t, 5*mib)
	if err := fill(t, s, b4, int64(len(b4))); err != nil {
		t.Fatalf("a fill that eviction makes room for = %v", err)
	}
	if s.HasBlob(context.Background(), digest.FromBytes(olds[0])) {
		t.Error("the least recently used blob was not evicted")
	}
	if avail, _, _ := disk.space(""); avail < 64*mib {
		t.Errorf("%d bytes free after the fill, under the 64 MiB floor", avail)
	}
	// A blob larger than the disk can hold above the floor: refused, nothing kept.
	huge := randomBytes(t, 17*mib)
	for _, size := range []int64{int64(len(huge)), -1} {
		if size < 0 {
			// A blob of announced size that could not fit even in an empty cache evicted
			// nothing on its way to the 507 (one of unknown size can only find out by trying).
			for i, b := range [][]byte{olds[1], olds[2], b4} {
				if !s.HasBlob(context.Background(), digest.FromBytes(b)) {
					t.Errorf("cached blob %d was evicted for a blob that could never fit", i)
				}
			}
		}
		err := fill(t, s, huge, size)
		if !errors.Is(err, ErrStorageFull) || !strings.Contains(err.Error(), "storage.min_free") {
			t.Errorf("size %d: a blob that cannot fit = %v, want ErrStorageFull naming storage.min_free", size, err)
		}
		if s.HasBlob(context.Background(), digest.FromBytes(huge)) {
			t.Errorf("size %d: the refused blob was stored", size)
		}
		waitFor(t, func() bool { return len(tmpEntries(t, s)) == 0 })
	}
	if s.Disk.Refusals() == 0 {
		t.Error("no refusal counted")
	}
}

// Pushes keep the floor too: monolithic and chunked uploads are refused (507) once the disk is at
// its floor, and leave nothing behind; the upload session stays usable for a retry.
func TestPushesKeepTheFreeSpaceFloor(t *testing.T) {
	const mib = 1 << 20
	s, _ := spaceStore(t, 72*mib, 64*mib, 0)
	ctx := context.Background()
	ok := randomBytes(t, 3*mib)
	if _, err := s.PutBlob(ctx, "p/a", digest.FromBytes(ok), bytes.NewReader(ok), int64(len(ok))); err != nil {
		t.Fatal(err)
	}
	big := randomBytes(t, 6*mib)
	if _, err := s.PutBlob(ctx, "p/a", digest.FromBytes(big), bytes.NewReader(big), int64(len(big))); !errors.Is(err, ErrStorageFull) {
		t.Errorf("a push past the floor = %v, want ErrStorageFull", err)
	}
	id, err := s.Uploads.New(ctx, "p/a", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Uploads.Append(ctx, "p/a", id, 0, bytes.NewReader(big)); !errors.Is(err, ErrStorageFull) {
		t.Errorf("a chunk past the floor = %v, want ErrStorageFull", err)
	}
	if n, err := s.Uploads.Size(ctx, "p/a", id); err != nil || n != 0 {
		t.Errorf("after the refused chunk the session holds %d bytes (%v), want 0", n, err)
	}
	small := randomBytes(t, 1*mib)
	if _, err := s.Uploads.Commit(ctx, "p/a", id, digest.FromBytes(small), 0, bytes.NewReader(small)); err != nil {
		t.Errorf("a chunk that fits, after a refused one = %v", err)
	}
}

// The index is never written on a disk under half its floor (badger's mapped files would meet a
// full disk: a SIGBUS), and a read-only store writes nothing.
func TestIndexWritesStopUnderHalfTheFloor(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := OpenDB(filepath.Join(dir, "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	avail := int64(100 << 20)
	s, err := Open(ctx, Config{Dir: dir, DB: kv.NewBadger(db), MinFree: 10 << 20, DiskSpace: func(string) (int64, int64, error) { return avail, 1 << 30, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Manifests.TagChecked(ctx, "docker.io/library/x", "latest", s.now()); err != nil {
		t.Fatalf("an index write with room = %v", err)
	}
	avail = 4 << 20 // someone else filled the disk
	if err := s.Manifests.TagChecked(ctx, "docker.io/library/x", "latest", s.now()); !errors.Is(err, ErrStorageFull) {
		t.Errorf("an index write under half the floor = %v, want ErrStorageFull", err)
	}
	if s.Disk.WriteCheck() == nil {
		t.Error("WriteCheck allows index writes under half the floor")
	}

	ro, err := Open(ctx, Config{Dir: t.TempDir(), DB: kv.NewBadger(db), ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Uploads.New(ctx, "p/a", "alice"); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Uploads.New read-only = %v", err)
	}
	if err := ro.Manifests.TagChecked(ctx, "docker.io/library/x", "latest", s.now()); !errors.Is(err, ErrReadOnly) {
		t.Errorf("an index write read-only = %v", err)
	}
}

// An upstream blob of unknown size is bounded by mirror.max_blob_size.
func TestUnannouncedBlobIsBounded(t *testing.T) {
	s, _ := spaceStore(t, 1<<30, 1<<20, 64<<10)
	b := randomBytes(t, 200<<10)
	if err := fill(t, s, b, -1); !errors.Is(err, ErrUpstreamCut) || !strings.Contains(err.Error(), "max_blob_size") {
		t.Errorf("an unannounced blob over max_blob_size = %v", err)
	}
	if err := fill(t, s, b, int64(len(b))); err != nil {
		t.Errorf("the same blob with its size announced = %v (the bound is for unannounced sizes)", err)
	}
}

// An eviction cut short between its index write and its file removal (a crash) is finished at
// the next start: the file goes, instead of staying as a blob nobody would ever free.
func TestEvictionCutShortIsFinishedAtStart(t *testing.T) {
	s, reopen := newStore(t)
	data := randomBytes(t, 100<<10)
	dgst := digest.FromBytes(data)
	if err := fill(t, s, data, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	keep := randomBytes(t, 50<<10)
	if err := fill(t, s, keep, int64(len(keep))); err != nil {
		t.Fatal(err)
	}
	// What evict writes before it removes the file, and then a crash.
	if err := s.db.Update(context.Background(), func(txn kv.Txn) error {
		if err := txn.Delete(blobKey(dgst)); err != nil {
			return err
		}
		return txn.Set([]byte(prefixEvicting+dgst.String()), nil)
	}); err != nil {
		t.Fatal(err)
	}
	s = reopen(crash)
	if _, err := os.Stat(s.blobPath(dgst)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the file of the cut eviction is still there: %v", err)
	}
	if blobs, bytes := s.Stats(); blobs != 1 || bytes != int64(len(keep)) {
		t.Errorf("after the start: %d blobs, %d bytes; want the kept one only", blobs, bytes)
	}
	if !s.HasBlob(context.Background(), digest.FromBytes(keep)) {
		t.Error("the other blob was lost")
	}
}

// A push that announces a large size and sends little does not empty the mirror's cache: room is
// made as the bytes arrive.
func TestPushMakesRoomAsBytesArrive(t *testing.T) {
	const mib = 1 << 20
	s, _ := spaceStore(t, 80*mib, 64*mib, 0)
	var cached [][]byte
	for range 3 {
		b := randomBytes(t, 5*mib)
		if err := fill(t, s, b, int64(len(b))); err != nil {
			t.Fatal(err)
		}
		cached = append(cached, b)
	}
	little := randomBytes(t, 1000)
	_, err := s.PutBlob(context.Background(), "p/a", digest.FromString("announced"), bytes.NewReader(little), 14*mib)
	if err == nil {
		t.Fatal("a push shorter than announced was accepted")
	}
	for i, b := range cached {
		if !s.HasBlob(context.Background(), digest.FromBytes(b)) {
			t.Errorf("cached blob %d was evicted for bytes that never came", i)
		}
	}
}
