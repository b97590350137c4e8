package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"cove/auth"
	"cove/cache"
	"cove/internal/kv"
)

const adminUsage = `usage: cove admin <command> [flags] NAME

Offline changes to the data directory, for automation and for a lost password. cove must not be
running on that data directory (the index is locked while it runs).

commands:
  reset-password USER   set USER's password (the admin is created if it does not exist yet);
                        ends the user's admin-page sessions and refresh tokens
  create-user NAME      create a local user

flags (after the command):
  --config FILE         YAML configuration file, for its data directory (env COVE_CONFIG)
  --data DIR            data directory (default ./data, or the configuration's)
  --password-stdin      read the password from the first line of standard input; without it a
                        password is generated and printed
  --admin               create-user: make the user a system admin
  --email ADDR          create-user: the user's e-mail address
`

// adminCmd is cove admin: offline account changes on a data directory.
func adminCmd(ctx context.Context, args, environ []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		w := stderr
		if len(args) > 0 {
			w = stdout
		}
		fmt.Fprint(w, adminUsage)
		return map[bool]int{true: 2, false: 0}[len(args) == 0]
	}
	sub := args[0]
	if sub != "reset-password" && sub != "create-user" {
		fmt.Fprintf(stderr, "cove admin: unknown command %q\n%s", sub, adminUsage)
		return 2
	}
	fs := flag.NewFlagSet("admin "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", envValue(environ, "COVE_CONFIG"), "")
	fs.String("data", "", "")
	fromStdin := fs.Bool("password-stdin", false, "")
	makeAdmin := fs.Bool("admin", false, "")
	email := fs.String("email", "", "")
	names, err := parseInterspersed(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, adminUsage)
		return 0
	}
	if err != nil || len(names) != 1 {
		if err == nil {
			err = fmt.Errorf("want exactly one user name, got %d", len(names))
		}
		fmt.Fprintf(stderr, "cove admin %s: %v\n%s", sub, err, adminUsage)
		return 2
	}
	if sub == "reset-password" && (*makeAdmin || *email != "") {
		fmt.Fprintf(stderr, "cove admin reset-password: --admin and --email are for create-user\n")
		return 2
	}
	cfg, err := dataDirConfig(fs, *configPath, environ)
	if err != nil {
		fmt.Fprintf(stderr, "cove: %v\n", err)
		return 2
	}
	defer keepOwner(cfg.Data, stderr)()
	password, generated := "", false
	if *fromStdin {
		line, err := bufio.NewReader(io.LimitReader(stdin, 4<<10)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			fmt.Fprintf(stderr, "cove admin %s: read the password: %v\n", sub, err)
			return 1
		}
		password = strings.TrimRight(line, "\r\n")
	} else {
		password, generated = auth.GeneratePassword(), true
	}
	if err := auth.CheckPasswordPolicy(password); err != nil {
		fmt.Fprintf(stderr, "cove admin %s: %v\n", sub, err)
		return 2
	}
	if sub == "create-user" && !auth.ValidUserName(names[0]) {
		fmt.Fprintf(stderr, "cove admin create-user: %q is not a user name a user may have (letters, digits, . _ @ -; not %q)\n", names[0], auth.AdminName)
		return 2
	}
	if err := offlineAccountChange(ctx, cfg, sub, names[0], password, *makeAdmin, *email); err != nil {
		fmt.Fprintf(stderr, "cove admin %s: %v\n", sub, err)
		return 1
	}
	switch {
	case generated:
		fmt.Fprintf(stdout, "password of %s: %s\n", names[0], password)
	case sub == "create-user":
		fmt.Fprintf(stdout, "created user %s\n", names[0])
	default:
		fmt.Fprintf(stdout, "password of %s set\n", names[0])
	}
	return 0
}

// offlineAccountChange opens cfg's index (refused while cove runs on it: badger locks it) and
// makes the change, audited as made by "cove admin".
func offlineAccountChange(ctx context.Context, cfg Config, sub, name, password string, makeAdmin bool, email string) error {
	var meta kv.DB
	if cfg.Storage.Metadata.Kind == "postgres" {
		// The fleet's database: cove may run meanwhile, its nodes see the change at once.
		pg, err := kv.OpenPostgres(ctx, cfg.Storage.Metadata.Postgres.DSN)
		if err != nil {
			return err
		}
		defer pg.Close()
		meta = pg
	} else {
		// A data directory cove has run on: never a new index made by a mistyped --data.
		if _, err := os.Stat(filepath.Join(cfg.Data, "index", "MANIFEST")); err != nil {
			return fmt.Errorf("%s is not the data directory of a cove that has run (no index/ in it): check --data or --config", cfg.Data)
		}
		db, err := cache.OpenDB(filepath.Join(cfg.Data, "index"), nil)
		if err != nil {
			if strings.Contains(err.Error(), "directory lock") {
				return fmt.Errorf("the data directory %s is in use: stop cove first (cove admin works on a stopped registry)", cfg.Data)
			}
			return err
		}
		defer db.Close()
		b := kv.NewBadger(db)
		defer b.Close()
		meta = b
	}
	if err := cache.CheckSchema(ctx, meta); err != nil {
		return err
	}
	audit := auth.NewAudit(meta, time.Duration(cfg.Auth.AuditRetention), nil)
	defer audit.Close()
	svc, err := auth.New(ctx, meta, auth.Config{KeyDir: filepath.Join(cfg.Data, "keys"), Audit: audit, SharedKeys: cfg.Storage.Metadata.Kind == "postgres"})
	if err != nil {
		return err
	}
	ev := auth.Event{Username: "cove admin (offline)", Operation: "update", ResourceType: "user", Resource: name, Detail: "password reset"}
	switch {
	case sub == "create-user":
		_, err = svc.Identity.CreateUser(ctx, auth.User{Name: name, Email: email, Admin: makeAdmin}, password)
		ev.Operation, ev.Detail = "create", ""
	case name == auth.AdminName:
		err = svc.Identity.ResetAdminPassword(ctx, password)
	default:
		err = svc.Identity.SetPassword(ctx, name, password)
	}
	if err != nil {
		return err
	}
	return audit.Record(ctx, ev)
}

// parseInterspersed parses flags that may come before or after the positional arguments
// ("cove admin reset-password admin --data DIR"), returning the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
