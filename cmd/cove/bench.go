package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"cove/bench"
)

// benchCmd is cove bench: it runs this binary as the mirror under test against a generated
// upstream, the peer mirror and the limit, and prints (and with --out writes) the report.
func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "every scenario at small sizes, one repetition: a smoke check")
	out := fs.String("out", "", "directory to write results.json and chart.svg to")
	noPeer := fs.Bool("no-peer", false, "do not run docker-registry as the peer mirror")
	reps := fs.Int("reps", 0, "repetitions of each scenario (default 3; 1 with --quick)")
	blob := fs.Int64("blob-mib", 0, "size of the cold and warm blob in MiB (default 1024)")
	herdMiB := fs.Int64("herd-mib", 0, "size of the herd's blob in MiB (default 256)")
	herd := fs.Int("herd", 0, "clients in the herd (default 16)")
	conc := fs.Int("concurrency", 0, "clients of the manifest and token loads (default 16)")
	serverLog := fs.String("server-log", "", "file to copy the log of the cove under test to")
	dur := fs.Duration("duration", 0, "length of each manifest and token load (default 3s)")
	if err := fs.Parse(args); err != nil {
		return 2
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
	if *dur > 0 {
		cfg.Duration = *dur
	}
	cfg.Peer = !*noPeer
	cfg.ServerLog = *serverLog
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
		if *out != "" {
			if werr := rep.WriteFiles(*out); werr != nil {
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
