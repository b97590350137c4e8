package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"cove/internal/blobstore"
	"cove/internal/kv"
	"github.com/opencontainers/go-digest"
)

// Config configures a Store.
type Config struct {
	// Dir is the data directory; blobs/ and tmp/ are created below it.
	Dir string
	// DB is the index, opened by the caller: badger on one node (kv.NewBadger over OpenDB),
	// PostgreSQL in a fleet. The Store does not close it.
	DB kv.DB
	// Logger receives lifecycle and reconcile messages; nil discards them.
	Logger *slog.Logger
	// UploadPrefix starts every upload session id: in a fleet, the node's name (hex), so that
	// another node knows where a session lives.
	UploadPrefix string
	// UploadTTL is how long an idle upload session is kept; zero means 15 minutes (a session
	// in use is never idle: each chunk renews it).
	UploadTTL time.Duration
	// MaxUploads caps the open upload sessions of the whole registry; zero means 5000. It is
	// far above any one tenant's share: MaxUploadsPerAccount (zero: 100) caps one account's
	// sessions and MaxUploadsPerProject (zero: 500) one project's, so that one pusher cannot
	// take every other project's uploads (docs/SECURITY.md 18).
	MaxUploads           int
	MaxUploadsPerAccount int
	MaxUploadsPerProject int
	// MaxMirrored caps the bytes of mirrored content; above it the least recently used mirrored
	// blobs are evicted. Zero means no cap. Local content is never evicted.
	MaxMirrored int64
	// FillTimeout bounds one upstream download; zero means one hour.
	FillTimeout time.Duration
	// MinFree is the free-space floor of the data directory's disk in bytes (storage.min_free),
	// or MinFreePercent of its size; both zero: the smaller of 1 GiB and 5 %. See ErrStorageFull.
	MinFree        int64
	MinFreePercent float64
	// MaxBlobSize bounds an upstream blob whose size the upstream did not announce (no
	// Content-Length); zero: only the free-space floor bounds it.
	MaxBlobSize int64
	// ReadOnly opens the store without writing anything: cove started on a full disk and
	// opened its index read-only (see OpenDBReadOnly). Every write fails with ErrReadOnly.
	ReadOnly bool
	// SharedMetadata says that DB is shared with other nodes (PostgreSQL): a record whose file
	// this node lacks may be another node's, so start-up never drops it.
	SharedMetadata bool
	// DiskSpace reports the free and total bytes of a directory's file system; nil: statfs.
	DiskSpace func(dir string) (avail, total int64, err error)
	// Remote is the blob store the fleet shares (storage.blobs.kind: s3); nil on one node. With
	// it, the files under Dir are the node's hot tier (see remote.go).
	Remote blobstore.Store
	// HotTierMaxSize bounds the hot tier's bytes (storage.hot_tier_max_size); 0: only the
	// free-space floor does.
	HotTierMaxSize int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnQuota is told when a project's usage passes QuotaWarning of its quota, and of each write
	// its quota refused; nil: nobody.
	OnQuota QuotaEvent
	// Version is this cove's version, kept in the schema record (schema.go).
	Version string
	// BeforeMigrate is called before the index is migrated from an older schema, with its
	// version: the backup made first. An error stops the start with nothing migrated.
	BeforeMigrate func(from int) error
}

// Store is cove's content: blob files and their index. Its parts are types of their own, each
// with its own state, so that a reader takes one at a time:
//
//   - Store itself is blob storage: stat, open, put and link blobs (this file), and in a fleet the
//     shared blob store with this node's hot tier (remote.go);
//   - Manifests is the metadata: manifests, tags, repositories, referrers (manifest.go, browse.go);
//   - Uploads holds the upload sessions of pushes (upload.go);
//   - Fills are the downloads into the store, from upstreams and from the shared store (fill.go);
//   - Evictor removes content: eviction of mirrored blobs and garbage collection (evict.go, gc.go);
//   - Disk keeps the free-space floor that every write asks first (space.go).
//
// Create it with Open. It is safe for concurrent use.
type Store struct {
	Manifests *Manifests
	Uploads   *Uploads
	Fills     *Fills
	Evictor   *Evictor
	Disk      *Disk

	dir      string
	db       kv.DB
	log      *slog.Logger
	now      func() time.Time
	shared   bool         // the index is shared with other nodes (Config.SharedMetadata)
	blobs    atomic.Int64 // number of blob files indexed
	stored   atomic.Int64 // bytes in indexed blob files
	mirrored atomic.Int64 // bytes of evictable (mirrored, not local) blobs

	// ctx and cancel bound the store's own work (fills, access-time flushes); wg waits for it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// inUse counts the open readers of each blob, guarded by mu.
	inUse map[digest.Digest]int

	// gcMu orders garbage collection against the writes that make a blob referenced: they hold it
	// shared from placing a file to indexing the reference, and count themselves in refs once
	// their index write is done; Collect holds it exclusively while it deletes.
	gcMu sync.RWMutex
	refs atomic.Uint64

	// onQuota is told of quota warnings and refusals (Config.OnQuota).
	onQuota QuotaEvent
	// version and beforeMigrate are Config's, for Upgrade.
	version       string
	beforeMigrate func(from int) error
	// dropSlots bounds the deletes that hold a fleet-wide lock at once (dropUnderLock).
	dropSlots chan struct{}

	// syncer makes the files of mirrored blobs durable in batches (durable.go); nil in a fleet,
	// whose blobs are in the shared store before their records are written.
	syncer *syncer

	// remote, hotMax and hot are fleet mode's (remote.go).
	remote blobstore.Store
	hotMax int64
	hot    hotTier
}

// BlobInfo describes a stored blob.
type BlobInfo struct {
	Digest  digest.Digest
	Size    int64
	Created time.Time
}

// Open prepares the store under cfg.Dir: it empties tmp/ (uploads and downloads cut short by a
// stop), then reconciles the index with the blob files (see the package invariants).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.DB == nil {
		return nil, errors.New("cache: no index database")
	}
	var gdb *kv.Counted
	db := cfg.DB
	if !cfg.SharedMetadata { // a fleet's index has its locks, which a wrapper would hide; no memo
		gdb = kv.NewCounted(cfg.DB)
		db = gdb
	}
	s := &Store{
		dir:     cfg.Dir,
		db:      db,
		log:     cfg.Logger,
		now:     cfg.Now,
		inUse:   map[digest.Digest]int{},
		shared:  cfg.SharedMetadata,
		remote:  cfg.Remote,
		hotMax:  cfg.HotTierMaxSize,
		onQuota: cfg.OnQuota,

		version: cfg.Version, beforeMigrate: cfg.BeforeMigrate,

		dropSlots: make(chan struct{}, 8),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "cache")
	if s.now == nil {
		s.now = time.Now
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.Disk = &Disk{dir: cfg.Dir, log: s.log, minFree: cfg.MinFree, minFreePct: cfg.MinFreePercent,
		readOnly: cfg.ReadOnly, diskSpace: cfg.DiskSpace, st: s}
	if s.Disk.diskSpace == nil {
		s.Disk.diskSpace = diskSpace
	}
	s.Evictor = &Evictor{st: s, disk: s.Disk, db: s.db, log: s.log, maxSize: cfg.MaxMirrored,
		accessed: map[digest.Digest]time.Time{}}
	s.Disk.ev = s.Evictor
	s.Fills = &Fills{st: s, ev: s.Evictor, disk: s.Disk, log: s.log, ttl: cfg.FillTimeout, maxBlob: cfg.MaxBlobSize,
		fills: map[digest.Digest]*Fill{}}
	s.Fills.ctx, s.Fills.cut = context.WithCancelCause(s.ctx)
	if s.Fills.ttl <= 0 {
		s.Fills.ttl = time.Hour
	}
	s.Evictor.fills = s.Fills
	s.Uploads = &Uploads{st: s, disk: s.Disk, prefix: cfg.UploadPrefix, ttl: cfg.UploadTTL, max: cfg.MaxUploads,
		maxPerAcct: cfg.MaxUploadsPerAccount, maxPerProj: cfg.MaxUploadsPerProject, sessions: map[string]*upload{}}
	if s.Uploads.ttl <= 0 {
		s.Uploads.ttl = 15 * time.Minute
	}
	if s.Uploads.max <= 0 {
		s.Uploads.max = 5000
	}
	if s.Uploads.maxPerAcct <= 0 {
		s.Uploads.maxPerAcct = 100
	}
	if s.Uploads.maxPerProj <= 0 {
		s.Uploads.maxPerProj = 500
	}
	s.Manifests = &Manifests{st: s, ev: s.Evictor, db: s.db}
	if s.remote == nil {
		s.syncer = &syncer{st: s}
	}
	if gdb != nil {
		s.Manifests.memo = newManifestMemo(gdb)
	}
	if err := s.prepare(ctx); err != nil {
		s.cancel()
		return nil, err
	}
	s.wg.Go(s.Evictor.flushLoop)
	if s.syncer != nil {
		s.wg.Go(s.syncer.loop)
	}
	return s, nil
}

// prepare refuses an index of a newer schema, empties tmp/, creates the directories, reconciles
// the index with the blob files unless the last stop was clean (resumeCleanStop), and migrates an
// index of an older schema (Upgrade).
func (s *Store) prepare(ctx context.Context) error {
	// An index a newer cove wrote is refused before anything in it changes.
	if err := CheckSchema(ctx, s.db); err != nil {
		return err
	}
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return fmt.Errorf("clean %s: %w", s.tmpDir(), err)
	}
	for _, d := range []string{s.tmpDir(), filepath.Join(s.dir, "blobs")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	if s.Disk.readOnly {
		s.log.Warn("read-only: the index is not reconciled with the blob files, nor migrated, until a start with free space")
		return nil
	}
	dropped, err := s.dropUnsynced()
	if err != nil {
		return err
	}
	clean, err := s.resumeCleanStop(ctx)
	if err != nil {
		return fmt.Errorf("resume after a clean stop: %w", err)
	}
	if !clean || dropped > 0 { // files dropped above leave records that reconcile drops
		start := time.Now()
		if err := s.reconcile(ctx); err != nil {
			return fmt.Errorf("reconcile index with %s: %w", s.dir, err)
		}
		s.log.Info("reconciled the index with the blob files", "blobs", s.blobs.Load(), "took", time.Since(start))
	} else {
		s.log.Info("took the blob counts of the last clean stop; the blob files were not walked", "blobs", s.blobs.Load())
	}
	return Upgrade(ctx, s.db, s.version, s.beforeMigrate, s.log)
}

// Close ends every open upload session and removes its temporary file, and records the stop as
// clean for the next start. Call it after the last request that uses the store has ended, and
// before the index closes.
func (s *Store) Close() error {
	s.stop()
	s.markCleanStop()
	return nil
}

// stop ends the store's own work: fills, access-time flushes, upload sessions.
func (s *Store) stop() {
	s.cancel()
	s.wg.Wait() // fills end, access times are written
	if s.syncer != nil {
		if err := s.syncer.sync(context.Background()); err != nil {
			s.log.Error("syncing mirrored blobs at the stop", "err", err)
		}
	}
	s.Uploads.close()
}

// Stats reports the number of blob files and their total size.
func (s *Store) Stats() (blobs, bytes int64) { return s.blobs.Load(), s.stored.Load() }

func (s *Store) tmpDir() string { return filepath.Join(s.dir, "tmp") }

func (s *Store) blobPath(dgst digest.Digest) string { return BlobPath(s.dir, dgst) }

// StatBlob returns the blob dgst if repo may read it, or ErrBlobUnknown.
func (s *Store) StatBlob(ctx context.Context, repo string, dgst digest.Digest) (BlobInfo, error) {
	var info BlobInfo
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
		if _, err := txn.Get(linkKey(repo, dgst)); err != nil {
			return notFound(err, ErrBlobUnknown)
		}
		rec, err := getBlobRecord(txn, dgst)
		if err != nil {
			return err
		}
		info = BlobInfo{Digest: dgst, Size: rec.Size, Created: rec.Created}
		return nil
	})
	return info, err
}

// HasBlob reports whether the blob dgst is stored, for any repository.
func (s *Store) HasBlob(ctx context.Context, dgst digest.Digest) bool {
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
		_, err := txn.Get(blobKey(dgst))
		return err
	})
	return err == nil
}

// hold marks dgst as being read until the returned func is called; eviction skips it meanwhile.
func (s *Store) hold(dgst digest.Digest) (release func()) {
	s.mu.Lock()
	s.inUse[dgst]++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.inUse[dgst]--; s.inUse[dgst] <= 0 {
			delete(s.inUse, dgst)
		}
		s.mu.Unlock()
	}
}

// reading reports whether dgst has open readers.
func (s *Store) reading(dgst digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inUse[dgst] > 0
}

// BlobFile is an open blob. Serve its *os.File (so that sendfile does the copy) and Close the
// BlobFile: while it is open, eviction leaves the blob alone.
type BlobFile struct {
	*os.File
	Info    BlobInfo
	release func()
}

// Close closes the file and lets eviction consider the blob again.
func (b *BlobFile) Close() error {
	b.release()
	return b.File.Close()
}

// OpenBlob opens the blob dgst for reading if repo may read it, and records the access.
func (s *Store) OpenBlob(ctx context.Context, repo string, dgst digest.Digest) (*BlobFile, error) {
	info, err := s.StatBlob(ctx, repo, dgst)
	if err != nil {
		return nil, err
	}
	release := s.hold(dgst)
	f, err := s.openLocal(ctx, dgst, true)
	if err != nil {
		release()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s has a record but no file", ErrBlobUnknown, dgst)
		}
		return nil, fmt.Errorf("open blob %s: %w", dgst, err)
	}
	// A file whose size is not its record's is never served (one fstat): it is taken out of
	// service as scrub would, and a mirrored blob is fetched again (scrub.go).
	if fi, err := f.Stat(); err == nil && fi.Size() != info.Size {
		f.Close()
		release()
		return nil, s.badSize(ctx, dgst, fi.Size(), info.Size)
	}
	s.Evictor.touch(dgst)
	return &BlobFile{File: f, Info: info, release: release}, nil
}

// PutBlob stores the content of r under dgst and links it to repo. size is the announced length,
// or -1 when unknown. The content is hashed as it is written and kept only if it matches dgst.
func (s *Store) PutBlob(ctx context.Context, repo string, dgst digest.Digest, r io.Reader, size int64) (BlobInfo, error) {
	if err := supported(dgst); err != nil {
		return BlobInfo{}, err
	}
	f, err := os.CreateTemp(s.tmpDir(), "put-*")
	if err != nil {
		return BlobInfo{}, fmt.Errorf("create temp file: %w", err)
	}
	defer removeTemp(f)
	h := dgst.Algorithm().Hash()
	if size > 0 {
		if err := s.checkQuotaFor(ctx, repo, dgst, size); err != nil {
			return BlobInfo{}, err // before a byte is read
		}
	}
	if r, err = s.Disk.guardPushSpace(ctx, r, size); err != nil {
		return BlobInfo{}, err
	}
	if r, err = s.guardQuota(ctx, repo, 0, r); err != nil {
		return BlobInfo{}, err
	}
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err != nil {
		return BlobInfo{}, fmt.Errorf("write blob %s: %w", dgst, err)
	}
	if size >= 0 && n != size {
		return BlobInfo{}, fmt.Errorf("%w: got %d bytes, announced %d", ErrSizeInvalid, n, size)
	}
	if got := digest.NewDigest(dgst.Algorithm(), h); got != dgst {
		return BlobInfo{}, fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, dgst)
	}
	return s.commitFile(ctx, f, repo, dgst, n)
}

// commitFile places the verified temporary file f as blob dgst, then indexes it and links it to repo.
func (s *Store) commitFile(ctx context.Context, f *os.File, repo string, dgst digest.Digest, size int64) (BlobInfo, error) {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	defer s.refs.Add(1) // after the index write, before RUnlock: see Collect
	if err := s.checkQuotaFor(ctx, repo, dgst, size); err != nil {
		return BlobInfo{}, err // before the file is placed
	}
	placed, err := s.place(f, dgst, false)
	if err != nil {
		return BlobInfo{}, err
	}
	var info BlobInfo
	err = s.update(func(ct *commitTxn) error {
		// The digest's fleet-wide lock first, before the record is read: eviction and garbage
		// collection on another node take it while they delete (see Evictor.evict).
		if err := kv.LockTxn(ct.Txn, "blob:"+dgst.String()); err != nil {
			return err
		}
		rec, err := s.ensureBlobRecord(ct, dgst, size, "", originLocal)
		if err != nil {
			return err
		}
		info = BlobInfo{Digest: dgst, Size: rec.Size, Created: rec.Created}
		return s.link(ct, repo, dgst, rec.Size)
	})
	if err != nil {
		s.unplace(placed, dgst)
		return info, err
	}
	return info, s.ensureShared(f, dgst)
}

// unplace removes a file that place has just put there when indexing it failed, so that a failed
// write leaves no file behind. The caller holds gcMu, so no other writer has indexed it meanwhile
// unless its record exists, in which case the file stays.
func (s *Store) unplace(placed bool, dgst digest.Digest) {
	if !placed {
		return
	}
	err := s.db.View(s.ctx, func(txn kv.Txn) error {
		_, err := txn.Get(blobKey(dgst))
		return err
	})
	if errors.Is(err, kv.ErrNotFound) {
		_ = os.Remove(s.blobPath(dgst))
	}
}

// LinkBlob lets repo, a local repository, read the blob dgst, which must already be stored (a
// cross-repository mount: the caller has checked that the requester may read it where it came
// from). The blob is local content from then on, never evicted.
func (s *Store) LinkBlob(ctx context.Context, repo string, dgst digest.Digest) (BlobInfo, error) {
	return s.linkExisting(repo, dgst, originLocal)
}

// LinkMirroredBlob lets repo, a mirrored repository, read the stored blob dgst: the caller has
// checked with the upstream that the repository has it.
func (s *Store) LinkMirroredBlob(ctx context.Context, repo string, dgst digest.Digest) (BlobInfo, error) {
	return s.linkExisting(repo, dgst, originNone)
}

func (s *Store) linkExisting(repo string, dgst digest.Digest, from origin) (BlobInfo, error) {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	defer s.refs.Add(1) // after the index write, before RUnlock: see Collect
	var info BlobInfo
	err := s.update(func(ct *commitTxn) error {
		txn := ct.Txn
		if err := kv.LockTxn(txn, "blob:"+dgst.String()); err != nil {
			return err
		}
		rec, err := getBlobRecord(txn, dgst)
		if err != nil {
			return err
		}
		if from != originNone {
			if rec, err = s.ensureBlobRecord(ct, dgst, rec.Size, "", from); err != nil {
				return err
			}
		}
		info = BlobInfo{Digest: dgst, Size: rec.Size, Created: rec.Created}
		return s.link(ct, repo, dgst, rec.Size)
	})
	if err != nil {
		return info, err
	}
	return info, s.ensureShared(nil, dgst)
}

// UnlinkBlob removes repo's access to the blob dgst, or returns ErrBlobUnknown. The file stays
// until garbage collection finds no repository using it.
func (s *Store) UnlinkBlob(ctx context.Context, repo string, dgst digest.Digest) error {
	return s.update(func(ct *commitTxn) error {
		txn := ct.Txn
		if _, err := txn.Get(linkKey(repo, dgst)); err != nil {
			return notFound(err, ErrBlobUnknown)
		}
		// A layer or config of a manifest of the repository stays: the image would break.
		if by, err := namedBy(txn, repo, dgst, func(m Manifest) []digest.Digest { return m.Blobs }); err != nil {
			return err
		} else if by != "" {
			return &InUseError{Digest: dgst, By: by}
		}
		if err := txn.Delete(linkKey(repo, dgst)); err != nil {
			return err
		}
		rec, err := getBlobRecord(txn, dgst)
		if err != nil && !errors.Is(err, ErrBlobUnknown) {
			return err
		}
		if err := s.held(ct, repo, dgst, rec.Size, -1); err != nil {
			return err
		}
		return dropRepoIfEmpty(txn, repo)
	})
}

// place moves the verified temporary file f to its final path (placeLocal), and in fleet mode
// puts it into the shared blob store, before the caller writes its record. It reports whether it
// placed the file.
func (s *Store) place(f *os.File, dgst digest.Digest, fromShared bool) (bool, error) {
	return s.placeSynced(f, dgst, fromShared, true)
}

// placeSynced is place, with the file's and its directory's fsync only when synced (a mirrored
// fill on one node is synced in a batch later: durable.go).
func (s *Store) placeSynced(f *os.File, dgst digest.Digest, fromShared, synced bool) (bool, error) {
	placed, err := s.placeLocal(f, dgst, synced)
	if err != nil {
		return false, err
	}
	if fromShared {
		// Read from the shared store just now: it has the blob.
	} else if err := s.upload(s.ctx, f, dgst); err != nil {
		if placed {
			_ = os.Remove(s.blobPath(dgst))
		}
		return false, err
	}
	if placed && s.remote != nil {
		if fi, err := f.Stat(); err == nil {
			s.hot.add(dgst, fi.Size(), time.Now())
			defer s.trimHot(0)
		}
	}
	return placed, nil
}

// placeLocal moves the verified temporary file f to its final path: fsync, rename, fsync the
// directory (and every directory it had to create, up to blobs/). When the blob is already there
// the temporary file is left for the caller to drop. It reports whether it placed the file.
func (s *Store) placeLocal(f *os.File, dgst digest.Digest, synced bool) (bool, error) {
	dst := s.blobPath(dgst)
	if !synced {
		// Nothing but the rename now (durable.go).
	} else if err := f.Sync(); err != nil {
		return false, fmt.Errorf("sync blob %s: %w", dgst, err)
	}
	if _, err := os.Stat(dst); err == nil {
		return false, nil
	}
	dir := filepath.Dir(dst)
	if err := s.mkdirSynced(dir); err != nil {
		return false, err
	}
	// Never over a file another writer placed meanwhile: a push's synced file must not be
	// replaced by a fill's unsynced one (durable.go), nor the other way round.
	if placed, err := renameNoReplace(f.Name(), dst); err != nil || !placed {
		if err != nil {
			err = fmt.Errorf("place blob %s: %w", dgst, err)
		}
		return false, err
	}
	if !synced {
		return true, nil
	}
	return true, syncDir(dir)
}

// mkdirSynced creates dir and its missing parents below the data directory, fsyncing the parent
// of each one it creates, so that a machine crash cannot lose a directory entry that an indexed
// blob lives under.
func (s *Store) mkdirSynced(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir && parent != s.dir {
		if err := s.mkdirSynced(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// removeTemp closes f and removes it; after a successful place the name is already gone.
func removeTemp(f *os.File) {
	_ = f.Close()
	_ = os.Remove(f.Name())
}
