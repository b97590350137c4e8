//go:build coveprof

package main

import (
	"log/slog"
	"net/http"
	_ "net/http/pprof" // the profiles, on their own listener below
	"os"
)

// A cove built with -tags coveprof serves Go's profiles on COVEPROF_LISTEN (not COVE_: that prefix is the configurations) (for example
// 127.0.0.1:6060) when it serves, apart from every other listener: for profiling a benchmark run, never in a
// release build.
func init() {
	addr := os.Getenv("COVEPROF_LISTEN")
	if addr == "" || len(os.Args) < 2 || os.Args[1] != "serve" { // cove bench passes it on to its cove
		return
	}
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			slog.Error("the profiling listener stopped", "addr", addr, "err", err)
		}
	}()
}
