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
	// Damaged lists the blobs whose files were found damaged (their size; their bytes when
	// copied): left out, as the missing ones.
	Damaged      []string `json:"damaged,omitempty"`
	DamagedCount int      `json:"damaged_count,omitempty"`
}

// backupCmd is cove backup.
func backupCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("backup", flag.ContinueOnError)
	configPath := fset.String("config", envValue(environ, "COVE_CONFIG"), "")
	fset.String("data", "", "")
	to := fset.String("to", "", "")
	metadataOnly := fset.Bool("metadata-only", false, "")
	if code := parseCommand(fset, "backup", backupUsage, args, "to", stdout, stderr); code >= 0 {
		return code
	}
	cfg, err := dataDirConfig(fset, *configPath, environ)
	if err != nil {
		fmt.Fprintf(stderr, "cove backup: %v\n", err)
		return 2
	}
	defer keepOwner(cfg.Data, stderr)()
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
	if m.DamagedCount > 0 {
		fmt.Fprintf(stdout, "%d blob files are damaged and were left out, the first %s (see above): take them out of service with cove scrub --repair (cove stopped) or the server's scrub (scrub.interval), then back up again to have every pushed one\n",
			m.DamagedCount, m.Damaged[0])
		return 1
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
			linked, err := placeBlob(cache.BlobPath(data, dgst), cache.BlobPath(to, dgst), dgst, size, false)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				m.MissingCount++
				if len(m.Missing) < maxMissingListed {
					m.Missing = append(m.Missing, dgst.String())
				}
				continue
			case errors.Is(err, errDamaged):
				// One bad file does not cost the backup of the rest: it is left out and named.
				m.DamagedCount++
				if len(m.Damaged) < maxMissingListed {
					m.Damaged = append(m.Damaged, dgst.String())
				}
				fmt.Fprintf(progress, "left out: %v\n", err)
				continue
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
	if err := cache.SyncFS(to); err != nil {
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
		// The backups of starts cut short before their backup finished (no manifest) are of no
		// use: they go, so that a start killed again and again does not fill the disk.
		left, _ := filepath.Glob(filepath.Join(cfg.Data, "backups", "before-schema-*"))
		for _, dir := range left {
			if _, err := os.Stat(filepath.Join(dir, backupManifestFile)); errors.Is(err, fs.ErrNotExist) {
				if err := os.RemoveAll(dir); err != nil {
					return fmt.Errorf("remove the unfinished backup %s: %w", dir, err)
				}
				log.Warn("removed the backup of a start cut short before it finished", "path", dir)
			}
		}
		to := filepath.Join(cfg.Data, "backups", fmt.Sprintf("before-schema-%d-%s", cache.SchemaVersion, time.Now().UTC().Format("20060102T150405.000Z")))
		if err := emptyDir(to); err != nil {
			return err
		}
		m := newBackupManifest(cfg, true)
		m.Online = true
		stream := func(fn func(kv.Record) error) error { return exportRecords(ctx, exp, fn) }
		if err := writeBackup(&m, cfg.Data, to, stream, io.Discard); err != nil {
			return err
		}
		log.Info("backed up the index before migrating it (to go back: stop cove, move the index aside, cove restore --from this path --data the data directory, start the cove of before; README \"Upgrades\")", "path", to, "schema", from, "records", m.Records)
		return nil
	}
}

// placeBlob puts the blob file src at dst: a hard link when both are on one file system, else a
// copy whose digest is checked (a damaged file fails the backup rather than pass into it); with
// verify, a linked file's digest is checked too. A file already at dst of the right size is kept.
// linked says which it was.
func placeBlob(src, dst string, dgst digest.Digest, size int64, verify bool) (linked bool, err error) {
	if fi, err := os.Stat(dst); err == nil && fi.Size() == size {
		return false, nil
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return false, err
	}
	// Never followed: a link would place the file it names, wherever that is, among the blobs.
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("%w: %s is no regular file (%s): cove writes only regular files into blobs/", errDamaged, src, fi.Mode().Type())
	}
	// What to do about a damaged file: with verify (a restore) src is the backup's copy.
	hint := "take it out of service with cove scrub --repair (cove stopped) or the server's scrub (scrub.interval), then back up again"
	if verify {
		hint = "the backup's copy is damaged"
	}
	if fi.Size() != size {
		return false, fmt.Errorf("%w: %s has %d bytes, its record %d; %s", errDamaged, src, fi.Size(), size, hint)
	}
	if verify {
		if err := checkDigest(src, dgst); err != nil {
			return false, fmt.Errorf("%w: %w; %s", errDamaged, err, hint)
		}
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
		return false, fmt.Errorf("%w: %s hashes to %s; %s", errDamaged, src, got, hint)
	}
	return false, os.Rename(tmp, dst)
}

// errDamaged is placeBlob's error for a blob file whose size or bytes are not its digest's.
var errDamaged = errors.New("a damaged blob file")

// checkDigest reads the file path and fails unless it hashes to dgst.
func checkDigest(path string, dgst digest.Digest) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := dgst.Algorithm().Hash()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := digest.NewDigest(dgst.Algorithm(), h); got != dgst {
		return fmt.Errorf("%s hashes to %s: the file is damaged", path, got)
	}
	return nil
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

// availBytes is the space free to cove on dir's file system.
func availBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
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
	return cache.SyncFS(filepath.Dir(path))
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
