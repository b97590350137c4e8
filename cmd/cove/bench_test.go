package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"cove/bench"
)

// TestBenchFlags: the shaping flags reach the run's configuration, the standard run stays
// unshaped, and a bad value is refused with a message that names the flag and the form wanted.
func TestBenchFlags(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		want  bench.Shaping
		first int
	}{
		{"standard: loopback", nil, bench.Shaping{}, 128},
		{"a WAN", []string{"--upstream-latency", "20ms", "--upstream-rate", "100MB/s"}, bench.Shaping{Latency: 20 * time.Millisecond, Rate: 100e6}, 128},
		{"rate alone", []string{"--upstream-rate=1GB/s"}, bench.Shaping{Rate: 1e9}, 128},
		{"quick, fewer accounts", []string{"--quick", "--first-checks", "7"}, bench.Shaping{}, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cfg, _, code := parseBench(tc.args, &stdout, &stderr)
			if code >= 0 {
				t.Fatalf("parseBench(%q) ended with %d: %s", tc.args, code, stderr.String())
			}
			if cfg.Upstream != tc.want || cfg.FirstChecks != tc.first {
				t.Errorf("parseBench(%q) = shaping %+v, %d first checks; want %+v, %d", tc.args, cfg.Upstream, cfg.FirstChecks, tc.want, tc.first)
			}
		})
	}
	for _, tc := range []struct {
		args []string
		msg  string // in what stderr says
	}{
		{[]string{"--upstream-rate", "fast"}, "upstream-rate"},
		{[]string{"--upstream-rate", "100"}, "such as 100MB/s"},
		{[]string{"--upstream-rate", "0MB/s"}, "upstream-rate"},
		{[]string{"--upstream-latency", "20"}, "upstream-latency"},
		{[]string{"--upstream-latency", "-5ms"}, "want a duration of 0 or more"},
		{[]string{"--first-checks", "-1"}, "first-checks"},
	} {
		var stdout, stderr bytes.Buffer
		if _, _, code := parseBench(tc.args, &stdout, &stderr); code != 2 {
			t.Errorf("parseBench(%q) = code %d, want 2", tc.args, code)
		}
		if !strings.Contains(stderr.String(), tc.msg) {
			t.Errorf("parseBench(%q) said %q, want it to say %q", tc.args, stderr.String(), tc.msg)
		}
	}
	var stdout, stderr bytes.Buffer
	if _, _, code := parseBench([]string{"--help"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "--upstream-latency 20ms --upstream-rate 100MB/s") {
		t.Errorf("--help: code %d, and the usage does not show the WAN example:\n%s", code, stdout.String())
	}
}
