package main

// cove restore: a backup made by cove backup (backup.go) into a new data directory, or a fleet's
// into an empty database.

import (
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
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/cache"
	"cove/internal/kv"
)

const restoreUsage = `usage: cove restore --from DIR [--config FILE] [--data DIR]

Restores a backup made by cove backup into a new data directory (--data, or the configuration's
data), or, in a fleet, into an empty database (storage.metadata.postgres.dsn). A backup made by
a newer cove is refused. Start cove on it afterwards: the first start checks every blob file
against the records, and migrates the records if the backup is of an older cove.
`

// restoreCmd is cove restore.
func restoreCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("restore", flag.ContinueOnError)
	configPath := fset.String("config", envValue(environ, "COVE_CONFIG"), "")
	fset.String("data", "", "")
	from := fset.String("from", "", "")
	if code := parseCommand(fset, "restore", restoreUsage, args, "from", stdout, stderr); code >= 0 {
		return code
	}
	cfg, err := dataDirConfig(fset, *configPath, environ)
	if err != nil {
		fmt.Fprintf(stderr, "cove restore: %v\n", err)
		return 2
	}
	defer keepOwner(cfg.Data, stderr)()
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
			// Every file is checked against its digest: a backup's disk may have damaged it.
			if _, err := placeBlob(path, cache.BlobPath(cfg.Data, dgst), dgst, fi.Size(), true); err != nil {
				return fmt.Errorf("blob %s of the backup: %w; restore another backup, or delete that file from %s and restore again (the restored cove drops the blob's records at its first start)", dgst, err, root)
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
	return m, n, cache.SyncFS(cfg.Data)
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
