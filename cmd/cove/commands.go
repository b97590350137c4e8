package main

// What the commands share: their flags parsed, and the configuration of a data directory loaded.

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// parseCommand parses args into fs for cove name: -1 to go on, else the exit status — 0 for
// --help (the usage on stdout), 2 for a usage error (on stderr). required names a flag that must
// be given.
func parseCommand(fs *flag.FlagSet, name, usage string, args []string, required string, stdout, stderr io.Writer) int {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if f := fs.Lookup(required); err == nil && f != nil && f.Value.String() == "" {
		err = fmt.Errorf("--%s is required", required)
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err != nil {
		fmt.Fprintf(stderr, "cove %s: %v\n%s", name, err, usage)
		return 2
	}
	return -1
}

// parseFlags parses args into fs for cove name, whose flags have their help texts: -1 to go on,
// else the exit status — 0 for --help (the usage and the flags on stdout), 2 for a usage error
// (on stderr).
func parseFlags(fs *flag.FlagSet, name, usage string, args []string, stdout, stderr io.Writer) int {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		out, code := stderr, 2
		if errors.Is(err, flag.ErrHelp) {
			out, code = stdout, 0
		} else {
			fmt.Fprintf(out, "cove %s: %v\n", name, err)
		}
		fmt.Fprint(out, usage)
		fs.SetOutput(out)
		fs.PrintDefaults()
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cove %s: unexpected argument %q (see cove %s --help)\n", name, fs.Arg(0), name)
		return 2
	}
	return -1
}

// dataDirConfig loads the configuration of a command that works on a data directory: the file of
// --config (or COVE_CONFIG) and the environment, with --data, when fs has it set, over them.
func dataDirConfig(fs *flag.FlagSet, configPath string, environ []string) (Config, error) {
	set := map[string]string{}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "data" {
			set["data"] = f.Value.String()
		}
	})
	return loadConfig(configPath, environ, set)
}
