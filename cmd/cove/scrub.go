package main

// cove scrub, and the server's scheduled scrub (scrub.interval): both run cache.Store.Scrub.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"cove/cache"
	"cove/internal/kv"
)

const scrubUsage = `usage: cove scrub [--repair] [--json] [--rate SIZE] [--config FILE | --data DIR]

Checks every stored blob's bytes against its digest (one SHA-256 pass over each, one blob at a
time), every manifest's references and every tag, and reports what it finds: corrupt blobs (the
bytes do not hash to the digest), size mismatches, missing blob files, manifests that name content
their repository lacks, and tags that name no manifest. A damaged pushed blob is reported with the
repositories, manifests and tags it breaks.

On one node cove must be stopped (the index is locked while it runs; the running server scrubs
itself with scrub.interval). In a fleet (storage.metadata.kind postgres) it may run beside the
nodes: it checks the shared blob store's objects, and one scrub runs at a time.

Without --repair nothing is changed. With --repair: the file of a corrupt blob is moved to
<data>/quarantine/; a damaged or missing mirrored blob's record is dropped (the next pull fetches
it from its upstream again); a damaged or missing pushed blob's record is dropped (its requests
answer BLOB_UNKNOWN until it is pushed again); tags that name no manifest are deleted.

Exit status: 0 no problem found, 1 problems found (with --repair too), 2 usage or configuration
error, 3 the scrub could not run or was cut short.

flags:
  --config FILE   YAML configuration file, for its data directory and storage (env COVE_CONFIG)
  --data DIR      data directory (default ./data, or the configuration's)
  --repair        act on what is found (see above)
  --json          print the report as JSON
  --rate SIZE     read at most SIZE bytes per second (e.g. 100MiB); default scrub.rate, 0: no bound
`

func scrubCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("scrub", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", envValue(environ, "COVE_CONFIG"), "")
	fs.String("data", "", "")
	repair := fs.Bool("repair", false, "")
	asJSON := fs.Bool("json", false, "")
	rate := fs.String("rate", "", "")
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, scrubUsage)
		return 0
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err != nil {
		fmt.Fprintf(stderr, "cove scrub: %v\n%s", err, scrubUsage)
		return 2
	}
	cfg, err := dataDirConfig(fs, *configPath, environ)
	if err != nil {
		fmt.Fprintf(stderr, "cove: %v\n", err)
		return 2
	}
	if *rate != "" {
		var b ByteSize
		if err := b.UnmarshalYAML(yamlScalar(*rate)); err != nil {
			fmt.Fprintf(stderr, "cove scrub: --rate: %v\n", err)
			return 2
		}
		cfg.Scrub.Rate = b
	}
	defer keepOwner(cfg.Data, stderr)()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := offlineScrub(ctx, cfg, *repair, log)
	if err != nil && res == nil {
		fmt.Fprintf(stderr, "cove scrub: %v\n", err)
		return 3
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	} else {
		writeScrubReport(stdout, cfg.Data, *res)
	}
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "cove scrub: %v\n", err)
		return 3
	case res.Total() > 0:
		return 1
	}
	return 0
}

// offlineScrub opens cfg's store as cove serve does (refused while cove runs on a badger index)
// and scrubs it. In a fleet it takes the fleet-wide "scrub" lock, so that no node scrubs
// meanwhile.
func offlineScrub(ctx context.Context, cfg Config, repair bool, log *slog.Logger) (*cache.ScrubResult, error) {
	var meta kv.DB
	fleet := cfg.Storage.Metadata.Kind == "postgres"
	if fleet {
		pg, err := kv.OpenPostgres(ctx, cfg.Storage.Metadata.Postgres.DSN)
		if err != nil {
			return nil, err
		}
		defer pg.Close()
		meta = pg
	} else {
		// A data directory cove has run on: never a new index made by a mistyped --data.
		if _, err := os.Stat(filepath.Join(cfg.Data, "index", "MANIFEST")); err != nil {
			return nil, fmt.Errorf("%s is not the data directory of a cove that has run (no index/ in it): check --data or --config", cfg.Data)
		}
		db, err := cache.OpenDB(filepath.Join(cfg.Data, "index"), nil)
		if err != nil {
			if strings.Contains(err.Error(), "directory lock") {
				return nil, fmt.Errorf("the data directory %s is in use: stop cove first (cove scrub works on a stopped registry; the running one scrubs itself with scrub.interval)", cfg.Data)
			}
			return nil, err
		}
		defer db.Close()
		b := kv.NewBadger(db)
		defer b.Close()
		meta = b
	}
	remote, err := openBlobStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	dir := cfg.Data
	if fleet {
		// The scrub reads the bucket, not a node's hot tier; and a start on a running node's data
		// directory would empty its tmp/ under its uploads.
		if dir, err = os.MkdirTemp("", "cove-scrub-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	store, err := cache.Open(ctx, cache.Config{Dir: dir, DB: meta, Logger: log, Remote: remote, SharedMetadata: fleet,
		HotTierMaxSize: int64(cfg.Storage.HotTierMaxSize)})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	var res cache.ScrubResult
	ran, err := kv.RunOnce(ctx, meta, "scrub", func() error {
		var err error
		opt := scrubOptions(cfg, repair)
		opt.Protect = repair // without --repair, nothing is changed
		res, err = store.Scrub(ctx, opt)
		return err
	})
	if err == nil && !ran {
		return nil, errors.New("another scrub is running in the fleet (a node's scrub.interval, or another cove scrub): try again when it has ended")
	}
	return &res, err
}

// scrubOptions are the scrub's options from cfg: damaged bytes taken out of service, repair as
// asked, and mirrored repositories those under an upstream's name.
func scrubOptions(cfg Config, repair bool) cache.ScrubOptions {
	var ups []string
	for name := range cfg.Mirror.Upstreams {
		ups = append(ups, name)
	}
	return cache.ScrubOptions{Protect: true, Repair: repair, Rate: int64(cfg.Scrub.Rate),
		Mirrored: func(repo string) bool { return cache.IsMirrored(repo, ups) }}
}

// writeScrubReport prints res for a person.
func writeScrubReport(w io.Writer, data string, res cache.ScrubResult) {
	fmt.Fprintf(w, "scrub of %s: %d blobs (%d bytes), %d manifests, %d tags checked in %.1fs\n",
		data, res.Blobs, res.Bytes, res.Manifests, res.Tags, res.Duration)
	var counts []string
	for _, k := range cache.ScrubKinds {
		counts = append(counts, fmt.Sprintf("%d %s", res.Counts[k], k))
	}
	if res.Total() == 0 {
		fmt.Fprintln(w, "no problem found")
		return
	}
	fmt.Fprintf(w, "problems: %s\n", strings.Join(counts, ", "))
	for _, p := range res.Problems {
		what := string(p.Digest)
		switch {
		case p.Tag != "":
			what = p.Repo + ":" + p.Tag + " -> " + string(p.Digest)
		case p.Repo != "":
			what = p.Repo + "@" + string(p.Digest)
		}
		origin := ""
		switch {
		case p.Kind == cache.ScrubCorrupt || p.Kind == cache.ScrubSize || p.Kind == cache.ScrubMissing:
			origin = " (mirrored: fetched again once its record is dropped)"
			if p.Pushed {
				origin = " (pushed: cannot be fetched again)"
			}
		}
		fmt.Fprintf(w, "%s %s%s: %s\n", p.Kind, what, origin, p.Detail)
		if len(p.Breaks) > 0 {
			fmt.Fprintf(w, "    breaks: %s\n", strings.Join(p.Breaks, ", "))
		}
		if p.Action != "" {
			fmt.Fprintf(w, "    done: %s\n", p.Action)
		}
	}
	if res.Truncated > 0 {
		fmt.Fprintf(w, "(%d more problems not listed)\n", res.Truncated)
	}
	if !res.Repair {
		fmt.Fprintln(w, "nothing was changed: cove scrub --repair acts on these")
	}
}

// scrubSchedule runs a scrub every cfg.Interval, on one node of a fleet at a time (the
// fleet-wide "scrub" lock, and the time of the last run kept in the metadata store): the first
// when the last is older than the interval, so that a restart does not scrub again early. A
// scheduled scrub always takes damaged bytes out of service (a mirrored blob is fetched again);
// with cfg.Repair it also drops what scrub --repair drops.
func scrubSchedule(ctx context.Context, store *cache.Store, meta kv.DB, cfg Config, log *slog.Logger) {
	interval := time.Duration(cfg.Scrub.Interval)
	start := func() {
		_, err := kv.RunOnceEvery(ctx, meta, "scrub", interval, func() error {
			opt := scrubOptions(cfg, cfg.Scrub.Repair)
			_, err := store.Scrub(ctx, opt)
			return err
		})
		if err != nil && ctx.Err() == nil {
			log.Error("the scheduled scrub (scrub.interval) failed", "err", err)
		}
	}
	start()
	every(ctx, min(interval, time.Minute), start)
}

// yamlScalar is v as a YAML scalar, for the flags that take a configuration value.
func yamlScalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }
