package main

// cove backup and cove restore: a data directory (or a fleet's metadata) into a directory of its
// own, and back into a new data directory or an empty database.
//
// A backup directory holds:
//
//	cove-backup.json    what the backup is (backupManifest); written last: a backup without it is unfinished
//	records.bin.gz      every record of the index, from one snapshot (kv's stream format, gzipped)
//	blobs.list          the blobs those records name: "digest size" a line
//	keys/, tls/         the token-signing keys and the ACME account and certificates of the data directory
//	blobs/              the blob files of the snapshot's records, hard links where the file system allows
//
// Blob files are never changed once written, so a link is a copy. The records are taken first,
// the files after: a blob deleted in between (garbage collection, eviction) is listed as missing.

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"cove/cache"
	"cove/internal/kv"
)

const backupUsage = `usage: cove backup --to DIR [--metadata-only] [--config FILE] [--data DIR]

Writes a backup of cove's data into DIR, which must be new or empty: every record of the index
from one moment, the token-signing keys, the ACME account and certificates, and the blob files of
those records (hard links when DIR is on the data directory's file system, copies otherwise).
It works while cove runs (through the control socket DATA/cove.sock) and while it is stopped.
In a fleet (storage.metadata.kind postgres) it backs up the database's records; the bucket has
its own backups, so --metadata-only is required there.
Restore with cove restore --from DIR into a new data directory (or an empty database).
`

const restoreUsage = `usage: cove restore --from DIR [--config FILE] [--data DIR]

Restores a backup made by cove backup into a new data directory (--data, or the configuration's
data), or, in a fleet, into an empty database (storage.metadata.postgres.dsn). A backup made by
a newer cove is refused. Start cove on it afterwards: the first start checks every blob file
against the records, and migrates the records if the backup is of an older cove.
`

// backupFormat is the version of the backup directory's layout.
const backupFormat = 1

const (
	backupManifestFile = "cove-backup.json"
	backupRecordsFile  = "records.bin.gz"
	backupBlobList     = "blobs.list"
	// maxMissingListed bounds the digests of missing blobs the manifest lists (MissingCount
	// counts them all).
	maxMissingListed = 1000
)

// backupManifest is cove-backup.json.
type backupManifest struct {
	Format  int       `json:"format"`
	Created time.Time `json:"created"`
	Cove    string    `json:"cove"`   // the version of the cove that made it
	Commit  string    `json:"commit"` // and its commit
	Source  string    `json:"source"` // badger (a data directory) or postgres (a fleet's database)
	Online  bool      `json:"online"` // taken from a running cove
	// Schema is the schema version of the records (cache.SchemaVersion when they were taken).
	Schema        int    `json:"schema"`
	Records       int64  `json:"records"`
	RecordsSHA256 string `json:"records_sha256"`
	MetadataOnly  bool   `json:"metadata_only"`
	Blobs         int    `json:"blobs"`
	BlobBytes     int64  `json:"blob_bytes"`
	Linked        int    `json:"linked"`
	// Missing lists the blobs whose records are in the backup and whose files are not: deleted
	// after the records were taken. A restored cove drops their records at its first start.
	Missing      []string `json:"missing,omitempty"`
	MissingCount int      `json:"missing_count,omitempty"`
}

// backupCmd is cove backup.
func backupCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("backup", flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	configPath := fset.String("config", envValue(environ, "COVE_CONFIG"), "")
	data := fset.String("data", "", "")
	to := fset.String("to", "", "")
	metadataOnly := fset.Bool("metadata-only", false, "")
	if err := fset.Parse(args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, backupUsage)
		return 0
	} else if err != nil || *to == "" || fset.NArg() > 0 {
		if err == nil {
			err = errors.New("--to is required")
		}
		fmt.Fprintf(stderr, "cove backup: %v\n%s", err, backupUsage)
		return 2
	}
	set := map[string]string{}
	if *data != "" {
		set["data"] = *data
	}
	cfg, err := loadConfig(*configPath, environ, set)
	if err != nil {
		fmt.Fprintf(stderr, "cove backup: %v\n", err)
		return 2
	}
	m, err := backup(ctx, cfg, *to, *metadataOnly, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "cove backup: %v\n", err)
		return 1
	}
	what := fmt.Sprintf("%d records and %d blobs (%s; %d linked, %d copied)", m.Records, m.Blobs, byteCount(m.BlobBytes), m.Linked, m.Blobs-m.Linked)
	if m.MetadataOnly {
		what = fmt.Sprintf("%d records (metadata only)", m.Records)
	}
	fmt.Fprintf(stdout, "backed up %s of schema %d into %s\n", what, m.Schema, *to)
	if m.MissingCount > 0 {
		fmt.Fprintf(stdout, "%d blobs were deleted while the backup ran (garbage collection or eviction), the first %s: their records are in the backup, their files not; a restored cove drops those records at its first start (mirrored blobs are fetched again; run the backup again to have every pushed one)\n",
			m.MissingCount, m.Missing[0])
	}
	return 0
}

// backup writes the backup of cfg's data into to.
func backup(ctx context.Context, cfg Config, to string, metadataOnly bool, progress io.Writer) (backupManifest, error) {
	m := newBackupManifest(cfg, metadataOnly)
	if cfg.Storage.Blobs.Kind == "s3" && !metadataOnly {
		return m, fmt.Errorf("the blobs are in the bucket %q (storage.blobs.s3): back the bucket up with your S3 store's own tools, and pass --metadata-only for the records", cfg.Storage.Blobs.S3.Bucket)
	}
	if err := checkBackupPlace(cfg.Data, to); err != nil {
		return m, err
	}
	if err := emptyDir(to); err != nil {
		return m, err
	}
	// The records: from the running cove's snapshot, or from the index or database directly.
	var stream func(fn func(kv.Record) error) error
	if cfg.Storage.Metadata.Kind == "postgres" {
		pg, err := kv.OpenPostgres(ctx, cfg.Storage.Metadata.Postgres.DSN)
		if err != nil {
			return m, err
		}
		defer pg.Close()
		m.Online = true // the nodes may run meanwhile
		stream = func(fn func(kv.Record) error) error { return exportRecords(ctx, pg, fn) }
	} else {
		if _, err := os.Stat(filepath.Join(cfg.Data, "index", "MANIFEST")); err != nil {
			return m, fmt.Errorf("%s is not the data directory of a cove that has run (no index/ in it): check --data or --config", cfg.Data)
		}
		db, err := cache.OpenDB(filepath.Join(cfg.Data, "index"), nil)
		switch {
		case err == nil:
			b := kv.NewBadger(db)
			defer func() { b.Close(); db.Close() }()
			stream = func(fn func(kv.Record) error) error { return exportRecords(ctx, b, fn) }
		case strings.Contains(err.Error(), "directory lock"):
			m.Online = true
			// Asked before anything is written: a refusal leaves the directory empty.
			body, err := controlRecords(ctx, cfg.Data)
			if err != nil {
				return m, err
			}
			defer body.Close()
			stream = func(fn func(kv.Record) error) error {
				sr, err := kv.NewStreamReader(body)
				if err != nil {
					return fmt.Errorf("the running cove's records: %w", err)
				}
				for {
					r, err := sr.Next()
					if errors.Is(err, io.EOF) {
						return nil
					}
					if errors.Is(err, kv.ErrBadStream) {
						return fmt.Errorf("the running cove's records: %w: it stopped, or failed, while it sent them (its log says why); delete %s and run the backup again", err, to)
					}
					if err != nil {
						return fmt.Errorf("the running cove's records: %w", err)
					}
					if err := fn(r); err != nil {
						return err
					}
				}
			}
		default:
			return m, err
		}
	}
	return m, writeBackup(&m, cfg.Data, to, stream, progress)
}

// writeBackup writes the records stream gives, the keys and TLS files of data, and unless
// m.MetadataOnly the blob files of the records, into to, then m.
func writeBackup(m *backupManifest, data, to string, stream func(fn func(kv.Record) error) error, progress io.Writer) error {
	var schema cache.SchemaTracker
	// The list of the snapshot's blobs goes to a file, not memory: it grows with the blobs.
	list, err := os.OpenFile(filepath.Join(to, backupBlobList), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer list.Close()
	lw := bufio.NewWriter(list)
	blobs := 0
	f, err := os.OpenFile(filepath.Join(to, backupRecordsFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	sum := sha256.New()
	zw, _ := gzip.NewWriterLevel(io.MultiWriter(f, sum), gzip.BestSpeed)
	sw, err := kv.NewStreamWriter(zw)
	if err != nil {
		return err
	}
	err = stream(func(r kv.Record) error {
		if !r.Sequence {
			schema.See(r.Key, r.Value)
			if d, size, ok := cache.BlobOfRecord(r.Key, r.Value); ok {
				fmt.Fprintf(lw, "%s %d\n", d, size)
				blobs++
			}
		}
		return sw.Write(r)
	})
	if err != nil {
		return fmt.Errorf("read the records: %w", err)
	}
	if m.Records, err = sw.Close(); err != nil {
		return err
	}
	if err := errors.Join(zw.Close(), f.Sync()); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	m.RecordsSHA256 = hex.EncodeToString(sum.Sum(nil))
	m.Schema = schema.Version()
	if m.Schema == 0 {
		m.Schema = cache.SchemaVersion // nothing written yet: what this cove would write
	}
	fmt.Fprintf(progress, "%d records taken\n", m.Records)
	// The files of the data directory that are not records.
	for _, dir := range []string{"keys", "tls"} {
		if err := copyTree(filepath.Join(data, dir), filepath.Join(to, dir)); err != nil {
			return err
		}
	}
	if err := errors.Join(lw.Flush(), list.Sync()); err != nil {
		return fmt.Errorf("write %s: %w", list.Name(), err)
	}
	if !m.MetadataOnly {
		if _, err := list.Seek(0, io.SeekStart); err != nil {
			return err
		}
		sc := bufio.NewScanner(list)
		for i := 0; sc.Scan(); i++ {
			var dgst digest.Digest
			var size int64
			if _, err := fmt.Sscanf(sc.Text(), "%s %d", &dgst, &size); err != nil {
				return fmt.Errorf("%s: %w", list.Name(), err)
			}
			linked, err := placeBlob(cache.BlobPath(data, dgst), cache.BlobPath(to, dgst), dgst, size)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				m.MissingCount++
				if len(m.Missing) < maxMissingListed {
					m.Missing = append(m.Missing, dgst.String())
				}
				continue
			case errors.Is(err, errBlobDamaged) || errors.Is(err, errBlobNotFile):
				return fmt.Errorf("blob %s: %w: stop cove with kill -9, delete the file and start cove (that start drops the blob's records; a mirrored blob is fetched again, a pushed one must be pushed again), then run the backup again", dgst, err)
			case err != nil:
				return fmt.Errorf("blob %s: %w", dgst, err)
			}
			m.Blobs++
			m.BlobBytes += size
			if linked {
				m.Linked++
			}
			if (i+1)%1000 == 0 {
				fmt.Fprintf(progress, "%d of %d blobs\n", i+1, blobs)
			}
		}
		if err := sc.Err(); err != nil {
			return err
		}
	}
	// Every file durable, then the manifest that says the backup is whole.
	if err := syncFS(to); err != nil {
		return err
	}
	if err := writeFileSync(filepath.Join(to, backupManifestFile), m); err != nil {
		return err
	}
	return nil
}

func newBackupManifest(cfg Config, metadataOnly bool) backupManifest {
	ver, rev, _ := versionInfo()
	return backupManifest{Format: backupFormat, Created: time.Now().UTC(), Cove: ver, Commit: rev, MetadataOnly: metadataOnly, Source: cfg.Storage.Metadata.Kind}
}

// backupBeforeMigrate is the backup a start makes before it migrates the index from an older
// schema: the records of meta (open in this process), keys and TLS files, into
// DATA/backups/before-schema-N-TIME; restore it with cove restore and the older cove.
func backupBeforeMigrate(ctx context.Context, cfg Config, meta kv.DB, log *slog.Logger) func(from int) error {
	return func(from int) error {
		exp, ok := meta.(kv.Exporter)
		if !ok {
			return errors.New("this metadata store cannot export its records")
		}
		to := filepath.Join(cfg.Data, "backups", fmt.Sprintf("before-schema-%d-%s", cache.SchemaVersion, time.Now().UTC().Format("20060102T150405Z")))
		if err := emptyDir(to); err != nil {
			return err
		}
		m := newBackupManifest(cfg, true)
		m.Online = true
		stream := func(fn func(kv.Record) error) error { return exportRecords(ctx, exp, fn) }
		if err := writeBackup(&m, cfg.Data, to, stream, io.Discard); err != nil {
			return err
		}
		log.Info("backed up the index before migrating it (restore it with cove restore --from and the cove of before, into a new data directory)", "path", to, "schema", from, "records", m.Records)
		return nil
	}
}

// restoreCmd is cove restore.
func restoreCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("restore", flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	configPath := fset.String("config", envValue(environ, "COVE_CONFIG"), "")
	data := fset.String("data", "", "")
	from := fset.String("from", "", "")
	if err := fset.Parse(args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, restoreUsage)
		return 0
	} else if err != nil || *from == "" || fset.NArg() > 0 {
		if err == nil {
			err = errors.New("--from is required")
		}
		fmt.Fprintf(stderr, "cove restore: %v\n%s", err, restoreUsage)
		return 2
	}
	set := map[string]string{}
	if *data != "" {
		set["data"] = *data
	}
	cfg, err := loadConfig(*configPath, environ, set)
	if err != nil {
		fmt.Fprintf(stderr, "cove restore: %v\n", err)
		return 2
	}
	m, records, err := restore(ctx, cfg, *from, availBytes)
	if err != nil {
		fmt.Fprintf(stderr, "cove restore: %v\n", err)
		return 1
	}
	where := cfg.Data
	if cfg.Storage.Metadata.Kind == "postgres" {
		where = "the database of storage.metadata.postgres.dsn"
	}
	fmt.Fprintf(stdout, "restored %d records and %d blobs (schema %d, backed up %s by cove %s) into %s; start cove on it\n",
		records, m.Blobs, m.Schema, m.Created.Format(time.RFC3339), m.Cove, where)
	return 0
}

// restore puts the backup in from into cfg's data directory, or its database. avail tells the
// bytes free on a directory's file system.
func restore(ctx context.Context, cfg Config, from string, avail func(dir string) (int64, error)) (backupManifest, int, error) {
	var m backupManifest
	b, err := os.ReadFile(filepath.Join(from, backupManifestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return m, 0, fmt.Errorf("%s holds no %s: it is no backup, or one that did not finish", from, backupManifestFile)
	}
	if err != nil {
		return m, 0, err
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Format == 0 {
		return m, 0, fmt.Errorf("%s: not a backup manifest cove can read (%v)", filepath.Join(from, backupManifestFile), err)
	}
	if m.Format > backupFormat {
		return m, 0, fmt.Errorf("the backup was made by a newer cove (%s; backup format %d, this cove reads %d): restore it with that cove or a newer one", m.Cove, m.Format, backupFormat)
	}
	if m.Schema > cache.SchemaVersion {
		return m, 0, fmt.Errorf("the backup holds records of schema %d, written by a newer cove (%s); this cove reads schema %d at most: restore it with that cove or a newer one", m.Schema, m.Cove, cache.SchemaVersion)
	}
	// The records are checked whole before anything is written.
	recPath := filepath.Join(from, backupRecordsFile)
	if got, err := fileSHA256(recPath); err != nil {
		return m, 0, err
	} else if got != m.RecordsSHA256 {
		return m, 0, fmt.Errorf("%s is damaged: its SHA-256 is %s, the backup recorded %s", recPath, got, m.RecordsSHA256)
	}
	records := func(fn func(next func() (kv.Record, error)) (int, error)) (int, error) {
		f, err := os.Open(recPath)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", recPath, err)
		}
		sr, err := kv.NewStreamReader(zr)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", recPath, err)
		}
		return fn(sr.Next)
	}
	if cfg.Storage.Metadata.Kind == "postgres" {
		if !m.MetadataOnly {
			return m, 0, errors.New("this backup is of a single node, with its blob files: restore it into a data directory (storage.metadata.kind badger), then move it into the fleet with cove migrate")
		}
		pg, err := kv.OpenPostgres(ctx, cfg.Storage.Metadata.Postgres.DSN)
		if err != nil {
			return m, 0, err
		}
		defer pg.Close()
		n, err := records(func(next func() (kv.Record, error)) (int, error) { return pg.Import(ctx, next) })
		return m, n, err
	}
	if m.MetadataOnly && m.Source == "postgres" {
		return m, 0, errors.New("this backup is of a fleet's database, without blob files: restore it with the fleet's configuration (storage.metadata.kind postgres), into an empty database")
	}
	if sameFile(from, cfg.Data) {
		return m, 0, fmt.Errorf("--data %s is the backup itself: restore into a new data directory, and keep the backup as it is (cove changes and removes files of its data directory)", cfg.Data)
	}
	index := filepath.Join(cfg.Data, "index")
	if _, err := os.Stat(index); err == nil {
		return m, 0, fmt.Errorf("%s holds an index already: restore into a new data directory (--data), never over one", cfg.Data)
	}
	if err := os.MkdirAll(cfg.Data, 0o750); err != nil {
		return m, 0, err
	}
	// Blob files and keys first, the index last: a restore cut short leaves no index, and can be
	// run again.
	if !m.MetadataOnly {
		root := filepath.Join(from, "blobs")
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				if errors.Is(err, fs.ErrNotExist) && path == root {
					return nil
				}
				return err
			}
			rel, _ := filepath.Rel(root, path)
			parts := strings.Split(rel, string(filepath.Separator))
			if len(parts) != 3 {
				return nil
			}
			dgst := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[2])
			if dgst.Validate() != nil {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if _, err := placeBlob(path, cache.BlobPath(cfg.Data, dgst), dgst, fi.Size()); errors.Is(err, errBlobDamaged) || errors.Is(err, errBlobNotFile) {
				return fmt.Errorf("blob %s of the backup: %w (damaged or changed since the backup was made): restore another backup, or delete that file from %s and restore again (the restored cove drops the blob's records at its first start)", dgst, err, root)
			} else if err != nil {
				return fmt.Errorf("blob %s: %w", dgst, err)
			}
			return nil
		})
		if err != nil {
			return m, 0, err
		}
	}
	for _, dir := range []string{"keys", "tls"} {
		if err := copyTree(filepath.Join(from, dir), filepath.Join(cfg.Data, dir)); err != nil {
			return m, 0, err
		}
	}
	// badger writes into memory-mapped files: on a full disk that is a SIGBUS, not an error. An
	// index takes about twice its records' gzipped size; cove's floor comes on top.
	recInfo, err := os.Stat(recPath)
	if err != nil {
		return m, 0, err
	}
	need := cache.MinFloor + 4*recInfo.Size()
	if free, err := avail(cfg.Data); err != nil {
		return m, 0, err
	} else if free < need {
		return m, 0, fmt.Errorf("the file system of %s has %s free, and building the index of %d records needs about %s (cove's floor of %s included): free some space, or restore onto a larger file system; the blob files placed so far are kept, run the restore again",
			cfg.Data, byteCount(free), m.Records, byteCount(need), byteCount(cache.MinFloor))
	}
	// The index is made beside its place and renamed into it once whole.
	tmp := index + ".restoring"
	if err := os.RemoveAll(tmp); err != nil {
		return m, 0, err
	}
	db, err := cache.OpenDB(tmp, nil)
	if err != nil {
		return m, 0, err
	}
	bdb := kv.NewBadger(db)
	n, err := records(func(next func() (kv.Record, error)) (int, error) { return bdb.Import(ctx, next) })
	if errors.Is(err, kv.ErrBadRecord) {
		err = fmt.Errorf("%s: %w: the file was changed since the backup was made (and its SHA-256 in %s with it); restore another backup", recPath, err, backupManifestFile)
	}
	if err := errors.Join(err, db.Close()); err != nil {
		os.RemoveAll(tmp)
		return m, n, err
	}
	if err := os.Rename(tmp, index); err != nil {
		return m, n, err
	}
	return m, n, syncFS(cfg.Data)
}

// The blob files placeBlob refuses; the callers say what to do.
var (
	errBlobDamaged = errors.New("the file is damaged")
	errBlobNotFile = errors.New("cove writes only regular files into blobs/")
)

// placeBlob puts the blob file src at dst: a hard link when both are on one file system, else a
// copy whose digest is checked (a damaged file fails the backup rather than pass into it). A
// file already at dst of the right size is kept. linked says which it was.
func placeBlob(src, dst string, dgst digest.Digest, size int64) (linked bool, err error) {
	if fi, err := os.Stat(dst); err == nil && fi.Size() == size {
		return false, nil
	}
	// Never followed: a link would place the file it names, wherever that is, among the blobs.
	fi, err := os.Lstat(src)
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("%s is no regular file (%s): %w", src, fi.Mode().Type(), errBlobNotFile)
	}
	if fi.Size() != size {
		return false, fmt.Errorf("%s has %d bytes, its record %d: %w", src, fi.Size(), size, errBlobDamaged)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return false, err
	}
	if err := os.Link(src, dst); err == nil {
		return true, nil
	} else if !errors.Is(err, syscall.EXDEV) && !errors.Is(err, syscall.EPERM) {
		return false, err
	}
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	tmp := dst + ".part"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return false, err
	}
	h := dgst.Algorithm().Hash()
	_, err = io.Copy(io.MultiWriter(out, h), in)
	if err = errors.Join(err, out.Sync(), out.Close()); err != nil {
		os.Remove(tmp)
		return false, err
	}
	if got := digest.NewDigest(dgst.Algorithm(), h); got != dgst {
		os.Remove(tmp)
		return false, fmt.Errorf("%s hashes to %s: %w", src, got, errBlobDamaged)
	}
	return false, os.Rename(tmp, dst)
}

// copyTree copies the regular files under src into dst with their modes (nothing when src does
// not exist).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == src {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
}

// checkBackupPlace refuses a backup directory inside the data directory data, but for under its
// backups/: cove empties tmp/ at every start, and the rest is its own.
func checkBackupPlace(data, to string) error {
	absData, err := filepath.Abs(data)
	if err != nil {
		return err
	}
	absTo, err := filepath.Abs(to)
	if err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(absData); err == nil {
		absData = real
	}
	// The deepest part of to that exists, with its links resolved, and the rest as given.
	for dir, rest := absTo, ""; ; dir, rest = filepath.Dir(dir), filepath.Join(filepath.Base(dir), rest) {
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			absTo = filepath.Join(real, rest)
			break
		}
		if dir == filepath.Dir(dir) {
			break
		}
	}
	inside := func(parent string) bool {
		rel, err := filepath.Rel(parent, absTo)
		return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
	}
	if inside(absData) && !inside(filepath.Join(absData, "backups")) {
		return fmt.Errorf("--to %s is inside the data directory %s, whose files are cove's (it empties tmp/ at every start): back up outside it, or into %s", to, data, filepath.Join(data, "backups", "NAME"))
	}
	return nil
}

// sameFile says whether a and b both exist and are the same file or directory.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// emptyDir makes dir if it does not exist, and fails unless it is empty.
func emptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		_, errManifest := os.Stat(filepath.Join(dir, backupManifestFile))
		_, errRecords := os.Stat(filepath.Join(dir, backupRecordsFile))
		switch {
		case errManifest == nil:
			return fmt.Errorf("%s holds a backup already: back up into a new or empty directory", dir)
		case errRecords == nil:
			return fmt.Errorf("%s holds a backup that did not finish (no %s): delete it, or back up into a new or empty directory", dir, backupManifestFile)
		}
		return fmt.Errorf("%s is not empty: back up into a new or empty directory", dir)
	}
	return nil
}

// availBytes is the space free to cove on dir's file system.
func availBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// syncFS makes every file written on dir's file system durable.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// writeFileSync writes v as JSON into path, durably (the file, then its directory).
func writeFileSync(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err := errors.Join(err, f.Sync(), f.Close()); err != nil {
		return err
	}
	return syncFS(filepath.Dir(path))
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var h hash.Hash = sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// byteCount is n in binary units, for messages.
func byteCount(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for x := n / unit; x >= unit; x /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
