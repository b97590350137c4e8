package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"cove/auth"
	"cove/cache"
	"cove/internal/blobstore"
	"cove/internal/kv"

	"github.com/opencontainers/go-digest"
)

const migrateUsage = `usage: cove migrate --to-config FLEET.yaml [--config CURRENT.yaml] [--data DIR]

Moves the data of a stopped single node (badger and the data directory, as --config and --data
say) into a fleet (FLEET.yaml: storage.metadata.kind postgres, storage.blobs.kind s3): every blob
goes into the bucket first, then every record into the database, which must be empty. The node's
data is left as it was. Then start the fleet's nodes with FLEET.yaml. The COVE_* environment
variables apply to FLEET.yaml (COVE_STORAGE_BLOBS_S3_SECRET_KEY, COVE_CLUSTER_SECRET, ...), not
to the source, which --config and --data give.
`

// migrateCmd is cove migrate.
func migrateCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	configPath := fset.String("config", "", "")
	data := fset.String("data", "", "")
	toPath := fset.String("to-config", "", "")
	if err := fset.Parse(args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, migrateUsage)
		return 0
	} else if err != nil || *toPath == "" || fset.NArg() > 0 {
		if err == nil {
			err = errors.New("--to-config is required")
		}
		fmt.Fprintf(stderr, "cove migrate: %v\n%s", err, migrateUsage)
		return 2
	}
	set := map[string]string{}
	if *data != "" {
		set["data"] = *data
	}
	from, err := loadConfig(*configPath, nil, set)
	if err != nil {
		fmt.Fprintf(stderr, "cove migrate: the source (--config, --data): %v\n", err)
		return 2
	}
	to, err := loadConfig(*toPath, environ, nil)
	if err != nil {
		fmt.Fprintf(stderr, "cove migrate: the target %s: %v\n", *toPath, err)
		return 2
	}
	if from.Storage.Metadata.Kind != "badger" || from.Storage.Blobs.Kind != "filesystem" {
		fmt.Fprintf(stderr, "cove migrate: the source must be a single node (metadata badger, blobs filesystem)\n")
		return 2
	}
	if !to.fleet() {
		fmt.Fprintf(stderr, "cove migrate: %s is no fleet: want storage.metadata.kind postgres and storage.blobs.kind s3\n", *toPath)
		return 2
	}
	blobs, records, err := migrate(ctx, from, to, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "cove migrate: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "migrated %d blobs and %d records into the fleet of %s\n", blobs, records, *toPath)
	return 0
}

// migrate copies the blobs of from's data directory into to's bucket, then from's records into
// to's database.
func migrate(ctx context.Context, from, to Config, progress io.Writer) (blobs, records int, err error) {
	if _, err := os.Stat(filepath.Join(from.Data, "index", "MANIFEST")); err != nil {
		return 0, 0, fmt.Errorf("%s is not the data directory of a cove that has run (no index/ in it): check --data or --config", from.Data)
	}
	db, err := cache.OpenDB(filepath.Join(from.Data, "index"), nil)
	if err != nil {
		if strings.Contains(err.Error(), "directory lock") {
			return 0, 0, fmt.Errorf("the data directory %s is in use: stop cove first", from.Data)
		}
		return 0, 0, err
	}
	defer db.Close()
	src := kv.NewBadger(db)
	defer src.Close()
	if err := cache.CheckSchema(ctx, src); err != nil {
		return 0, 0, err
	}
	pg, err := kv.OpenPostgres(ctx, to.Storage.Metadata.Postgres.DSN)
	if err != nil {
		return 0, 0, err
	}
	defer pg.Close()
	if err := pg.CheckEmpty(ctx); err != nil { // before hours of blobs, not after
		return 0, 0, err
	}
	s3, err := blobstore.NewS3(to.Storage.Blobs.S3.blobstore())
	if err != nil {
		return 0, 0, err
	}
	if err := s3.Check(ctx); err != nil {
		return 0, 0, err
	}
	// Every record must have its file: a fleet never drops a record whose blob it lacks, so a
	// record copied without its blob would answer errors for ever. A stopped cove has none (each
	// start drops them): a file deleted by hand since is the cause.
	var missing []string
	err = cache.EachBlobRecord(ctx, src, func(dgst digest.Digest, size int64) error {
		if fi, err := os.Stat(cache.BlobPath(from.Data, dgst)); err != nil || fi.Size() != size {
			missing = append(missing, dgst.String())
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("read the blob records: %w", err)
	}
	if len(missing) > 0 {
		return 0, 0, fmt.Errorf("%d blob records of %s have no file of their size (the first: %s): start cove on this data directory once, which drops them, stop it, and migrate again",
			len(missing), from.Data, missing[0])
	}
	// Blobs first: a record in the fleet always has its blob.
	root := filepath.Join(from.Data, "blobs")
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		parts := strings.Split(rel, string(filepath.Separator))
		if len(parts) != 3 {
			return nil // not a blob file
		}
		dgst := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[2])
		if dgst.Validate() != nil {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if size, err := s3.Stat(ctx, dgst); err == nil && size == fi.Size() {
			blobs++
			return nil
		}
		// A damaged file must not become the fleet's copy: it is checked first.
		h := dgst.Algorithm().Hash()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		if got := digest.NewDigest(dgst.Algorithm(), h); got != dgst {
			return fmt.Errorf("the file of %s hashes to %s: the disk damaged it; remove %s, start cove once (it drops the record), and migrate again", dgst, got, path)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := s3.Put(ctx, dgst, f, fi.Size()); err != nil {
			return err
		}
		blobs++
		if blobs%100 == 0 {
			fmt.Fprintf(progress, "%d blobs copied\n", blobs)
		}
		return nil
	})
	if err != nil {
		return blobs, 0, fmt.Errorf("copy the blobs: %w", err)
	}
	records, err = src.CopyTo(ctx, pg, func(key []byte) bool { return bytes.HasPrefix(key, []byte(auth.SequencePrefix)) })
	if err != nil {
		return blobs, records, fmt.Errorf("copy the records: %w", err)
	}
	return blobs, records, nil
}
