package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"cove/bench"
	"cove/cache"
	"cove/internal/kv"
)

const benchUsage = `usage: cove bench [flags]

cove bench runs this binary as the mirror under test against an upstream registry of generated
images, beside Debian's docker-registry as the peer mirror and a plain file server over the
upstream's files as the machine's limit (it copies each file in several ways, sendfile, splice
and user-space copies, and the fastest counts), and measures them over HTTP in one run. It prints
every scenario's figures and how they stand against the targets, the peer's figure only where
the run measured it; --out writes results.json and chart.svg.

The upstream is a loopback server unless --upstream-latency and --upstream-rate shape it as a
registry across a WAN: for example --upstream-latency 20ms --upstream-rate 100MB/s shows a cold
pull at the upstream's pace and a warm one at the disk's, as users see them.

Ports: by default each of the five servers (upstream, cove, peer, limit, and the in-memory
handler that cove's cached manifests are measured against) listens on 127.0.0.1 on a port the
kernel picks. --ports FIRST-LAST has them take the first free ports of the range on 127.0.0.1, in
that order; --listen-upstream, --listen-cove, --listen-peer, --listen-limit and --listen-memory set
one server's host:port and take precedence. An address in use is an error before anything runs.

flags:
`

// benchCmd is cove bench: it runs this binary as the mirror under test against a generated
// upstream, the peer mirror and the limit, and prints (and with --out writes) the report.
func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == bench.MemoryCommand { // the harness's own in-memory handler
		if err := bench.ServeMemory(args[1:], os.Stdin, stdout); err != nil {
			fmt.Fprintf(stderr, "cove bench %s: %v\n", bench.MemoryCommand, err)
			return 1
		}
		return 0
	}
	cfg, out, code := parseBench(args, stdout, stderr)
	if code >= 0 {
		return code
	}
	if cfg.Scale != "" {
		return benchScale(ctx, cfg.Scale, cfg.ScaleReps, out, cfg.ServerLog, stdout, stderr)
	}
	cfg.Progress = stderr
	bin, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "cove bench: %v\n", err)
		return 1
	}
	cfg.CoveBin = bin
	rep, err := bench.Run(ctx, cfg)
	if rep != nil && len(rep.Scenarios) > 0 {
		rep.WriteTable(stdout)
		if out != "" {
			if werr := rep.WriteFiles(out); werr != nil {
				fmt.Fprintf(stderr, "cove bench: %v\n", werr)
				return 1
			}
		}
	}
	var lerr *bench.ListenError
	if errors.As(err, &lerr) {
		fmt.Fprintf(stderr, "cove bench: %v\n(choose another address with --listen-%s, or other ports with --ports FIRST-LAST)\n", err, lerr.Role)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "cove bench: %v\n", err)
		return 1
	}
	return 0
}

// parseBench reads cove bench's flags into a run's configuration and the --out directory. A
// code ≥ 0 ends the command with it: 0 after --help, 2 after a bad flag (said on stderr).
func parseBench(args []string, stdout, stderr io.Writer) (bench.Config, string, int) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // --help prints to stdout below; a bad flag gets a one-line hint
	quick := fs.Bool("quick", false, "every scenario at small sizes, one repetition: a smoke check")
	out := fs.String("out", "", "directory to write results.json and chart.svg to")
	noPeer := fs.Bool("no-peer", false, "do not run docker-registry as the peer mirror")
	reps := fs.Int("reps", 0, "repetitions of each scenario (default 3; 1 with --quick); with --scale, requests per page\nmeasured (default 50)")
	blob := fs.Int64("blob-mib", 0, "size of the cold and warm blob in MiB (default 1024)")
	herdMiB := fs.Int64("herd-mib", 0, "size of the herd's blob in MiB (default 256)")
	herd := fs.Int("herd", 0, "clients in the herd (default 16)")
	conc := fs.Int("concurrency", 0, "clients of the manifest and token loads (default 16)")
	firstChecks := fs.Int("first-checks", 0, "accounts created for each repetition of the first-check token load: each is used once,\nso the load ends when they run out (default 128; 16 with --quick)")
	serverLog := fs.String("server-log", "", "file to copy the log of the cove under test to")
	dur := fs.Duration("duration", 0, "length of each manifest and token load (default 3s)")
	scale := fs.String("scale", "", "instead of the scenarios: cove with N blob records and N/10 tags, for each `N` of a list\n(10000,100000,1000000), each in a fresh data directory: start-up, eviction, cold fill, paging, memory, index size")
	latency := fs.Duration("upstream-latency", 0, "a round trip the generated upstream adds before every answer and on every new connection,\nas a registry across a WAN (such as 20ms; default none: loopback)")
	var rate int64
	fs.Func("upstream-rate", "the `rate` of each of the generated upstream's blob answers, per connection, as a CDN limits each\ndownload (such as 100MB/s, 1GB/s, 50MiB/s, 800Mbit/s; default none: loopback)", func(v string) error {
		var err error
		rate, err = bench.ParseRate(v)
		return err
	})
	ports := fs.String("ports", "", "a `FIRST-LAST` range of ports on 127.0.0.1: the upstream, cove, the peer, the limit and the\nin-memory handler take the first free ones, in that order (default: ports the kernel picks)")
	var listen bench.Listen
	fs.StringVar(&listen.Upstream, "listen-upstream", "", "the `address` (host:port) of the generated upstream registry; overrides --ports")
	fs.StringVar(&listen.Cove, "listen-cove", "", "the `address` (host:port) of the cove under test; overrides --ports")
	fs.StringVar(&listen.Peer, "listen-peer", "", "the `address` (host:port) of docker-registry, the peer mirror; overrides --ports")
	fs.StringVar(&listen.Limit, "listen-limit", "", "the `address` (host:port) of the plain file server, the limit; overrides --ports")
	fs.StringVar(&listen.Memory, "listen-memory", "", "the `address` (host:port) of the in-memory handler of the manifest scenario; overrides --ports")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, benchUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return bench.Config{}, "", 0
		}
		fmt.Fprintln(stderr, "cove bench --help lists the flags")
		return bench.Config{}, "", 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cove bench: unexpected argument %q (cove bench --help lists the flags)\n", fs.Arg(0))
		return bench.Config{}, "", 2
	}
	if *latency < 0 {
		fmt.Fprintf(stderr, "cove bench: --upstream-latency %v: want a duration of 0 or more, such as 20ms\n", *latency)
		return bench.Config{}, "", 2
	}
	if *firstChecks < 0 {
		fmt.Fprintf(stderr, "cove bench: --first-checks %d: want 0 or more\n", *firstChecks)
		return bench.Config{}, "", 2
	}
	cfg := bench.Standard()
	if *quick {
		cfg = bench.QuickConfig()
	}
	if *reps > 0 {
		cfg.Reps = *reps
	}
	if *blob > 0 {
		cfg.BlobSize = *blob << 20
	}
	if *herdMiB > 0 {
		cfg.HerdSize = *herdMiB << 20
	}
	if *herd > 0 {
		cfg.Herd = *herd
	}
	if *conc > 0 {
		cfg.Concurrency = *conc
	}
	if *firstChecks > 0 {
		cfg.FirstChecks = *firstChecks
	}
	if *dur > 0 {
		cfg.Duration = *dur
	}
	cfg.Upstream = bench.Shaping{Latency: *latency, Rate: rate}
	if *ports != "" {
		p, err := bench.ParsePorts(*ports)
		if err != nil {
			fmt.Fprintf(stderr, "cove bench: --%v\n", err)
			return bench.Config{}, "", 2
		}
		cfg.Ports = p
	}
	cfg.Listen = listen
	cfg.Peer = !*noPeer
	cfg.ServerLog = *serverLog
	cfg.Scale, cfg.ScaleReps = *scale, *reps
	return cfg, *out, -1
}

// benchScale is cove bench --scale sizes: bench.RunScale, its table, and with out its files.
func benchScale(ctx context.Context, sizes string, reps int, out, serverLog string, stdout, stderr io.Writer) int {
	ns, err := bench.ParseSizes(sizes)
	if err != nil {
		fmt.Fprintf(stderr, "cove bench: --%v\n", err)
		return 2
	}
	bin, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "cove bench: %v\n", err)
		return 1
	}
	rep, err := bench.RunScale(ctx, bench.ScaleConfig{CoveBin: bin, Sizes: ns, Reps: reps, ServerLog: serverLog, Progress: stderr})
	if rep != nil && len(rep.Scenarios) > 0 {
		rep.WriteScaleTable(stdout, ns)
		if out != "" {
			if werr := rep.WriteFiles(out); werr != nil {
				fmt.Fprintf(stderr, "cove bench: %v\n", werr)
				return 1
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "cove bench: %v\n", err)
		return 1
	}
	return 0
}

// benchPopulateCmd is cove bench-populate, which cove bench --scale runs in a fresh data
// directory: it writes generated blob records, manifests and tags there (cache.Populate) and
// prints what it wrote as JSON. It is no command for people: it is left out of the usage.
func benchPopulateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench-populate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "", "the data directory to populate; it must not exist yet")
	blobs := fs.Int("blobs", 10000, "blob records to write")
	tags := fs.Int("tags", 0, "tags to write (default blobs/10)")
	layer := fs.Int64("layer-size", 4096, "size of each layer in bytes (its file is sparse)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *data == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: cove bench-populate --data DIR [--blobs N] [--tags N] [--layer-size BYTES]")
		return 2
	}
	if *tags == 0 {
		*tags = *blobs / 10
	}
	if _, err := os.Stat(*data); err == nil {
		fmt.Fprintf(stderr, "cove bench-populate: %s exists: it populates a fresh data directory only\n", *data)
		return 2
	}
	db, err := cache.OpenDB(filepath.Join(*data, "index"), nil)
	if err != nil {
		fmt.Fprintf(stderr, "cove bench-populate: %v\n", err)
		return 1
	}
	p, err := cache.Populate(ctx, *data, kv.NewBadger(db), cache.PopulateConfig{Blobs: *blobs, Tags: *tags, LayerSize: *layer})
	if err == nil {
		// Compacted, as the index of a cove that has run for a while: not still compacting what
		// was just written while the measures run.
		err = db.Flatten(2)
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintf(stderr, "cove bench-populate: %v\n", err)
		return 1
	}
	if err := json.NewEncoder(stdout).Encode(p); err != nil {
		return 1
	}
	return 0
}
