package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cove/cache"
)

func TestScrubCommandRefusesBadUse(t *testing.T) {
	data := t.TempDir()
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"scrub", "--bogus"}, 2, "flag provided but not defined"},
		{"argument", []string{"scrub", "--data", data, "now"}, 2, `unexpected argument "now"`},
		{"bad rate", []string{"scrub", "--data", data, "--rate", "fast"}, 2, "--rate: want a size"},
		{"not a data directory", []string{"scrub", "--data", data}, 3, "no index/ in it"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, errOut := cli(t, "", c.args...)
			if code != c.code || !strings.Contains(errOut, c.want) {
				t.Errorf("cove %v = %d, %q; want %d and %q", c.args, code, errOut, c.code, c.want)
			}
		})
	}
	if code, out, _ := cli(t, "", "scrub", "--help"); code != 0 || !strings.Contains(out, "Exit status") {
		t.Errorf("cove scrub --help = %d, %q", code, out)
	}
	// A running cove holds the index: the scrub says to stop it.
	db, err := cache.OpenDB(filepath.Join(data, "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if code, _, errOut := cli(t, "", "scrub", "--data", data); code != 3 || !strings.Contains(errOut, "stop cove first") {
		t.Errorf("cove scrub on a data directory in use = %d, %q", code, errOut)
	}
}

func TestScrubConfig(t *testing.T) {
	cfg, err := loadConfig("", []string{"COVE_SCRUB_INTERVAL=168h", "COVE_SCRUB_REPAIR=true", "COVE_SCRUB_RATE=100MiB"}, nil)
	if err != nil || time.Duration(cfg.Scrub.Interval) != 168*time.Hour || !cfg.Scrub.Repair || cfg.Scrub.Rate != 100<<20 {
		t.Errorf("scrub from the environment = %+v, %v", cfg.Scrub, err)
	}
	if d := DefaultConfig().Scrub; d.Interval != 0 || d.Repair || d.Rate != 0 {
		t.Errorf("default scrub = %+v, want none scheduled", d)
	}
	if _, err := Parse(strings.NewReader("scrub:\n  interval: -1s\n")); err != nil {
		t.Fatal(err)
	}
	_, err = loadConfig("", []string{"COVE_SCRUB_INTERVAL=-1s"}, nil)
	if err == nil || !strings.Contains(err.Error(), "scrub.interval: must not be negative") {
		t.Errorf("a negative scrub.interval = %v, want a problem naming it", err)
	}
}
