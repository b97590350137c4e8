package e2e

import (
	"bytes"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// conformanceBin returns the OCI conformance suite binary: $E2E_CONFORMANCE_BIN, or one built
// from test/tools (its own module, pinned to the suite's version).
func conformanceBin(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("E2E_CONFORMANCE_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("E2E_CONFORMANCE_BIN: %v", err)
		}
		return bin
	}
	bin := filepath.Join(t.TempDir(), "conformance.test")
	build := exec.Command("go", "test", "-c", "-o", bin, "github.com/opencontainers/distribution-spec/conformance")
	build.Dir = filepath.Join("..", "tools")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the conformance suite: %v\n%s", err, out)
	}
	return bin
}

// TestConformance runs the official OCI distribution conformance suite against cove with every
// area on: pull, push, content discovery, content management, and the optional checks
// (upload cancel, digest headers, tag parameters). It must report no failure.
func TestConformance(t *testing.T) {
	s := startCove(t, t.TempDir())
	s.createProject("conformance", false)
	runConformance(t, s)
}

// runConformance runs the suite against s, whose project conformance exists, and fails t on
// any failure.
func runConformance(t *testing.T, s *server) {
	t.Helper()
	bin := conformanceBin(t)
	results := t.TempDir()
	cmd := exec.Command(bin)
	cmd.Dir = results
	cmd.Env = append(os.Environ(),
		"OCI_REGISTRY="+s.addr,
		"OCI_TLS=disabled",
		"OCI_REPO1=conformance/repo1",
		"OCI_REPO2=conformance/repo2",
		"OCI_USERNAME=admin",
		"OCI_PASSWORD="+adminPassword,
		"OCI_RESULTS_DIR="+results,
		"OCI_API_PULL=true",
		"OCI_API_PUSH=true",
		"OCI_API_BLOBS_DELETE=true",
		"OCI_API_BLOBS_UPLOAD_CANCEL=true",
		"OCI_API_BLOBS_DIGEST_HEADER=true",
		"OCI_API_MANIFESTS_DELETE=true",
		"OCI_API_MANIFESTS_DIGEST_HEADER=true",
		"OCI_API_MANIFESTS_TAG_PARAM=true",
		"OCI_API_TAGS_DELETE=true",
		"OCI_API_TAGS_LIST=true",
		"OCI_API_REFERRER=true",
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()

	junit, err := os.ReadFile(filepath.Join(results, "junit.xml"))
	if err != nil {
		t.Fatalf("no junit.xml from the suite (%v):\n%s", runErr, out.String())
	}
	var suites struct {
		Tests    int `xml:"tests,attr"`
		Skipped  int `xml:"skipped,attr"`
		Failures []struct {
			Failures int `xml:"failures,attr"`
			Errors   int `xml:"errors,attr"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(junit, &suites); err != nil {
		t.Fatalf("parse junit.xml: %v", err)
	}
	failures := 0
	for _, s := range suites.Failures {
		failures += s.Failures + s.Errors
	}
	// The summary: the suite's own per-area table, then the counts.
	text := out.String()
	if i := strings.Index(text, "API conformance:"); i >= 0 {
		text = text[i:]
	}
	t.Logf("OCI conformance suite:\n%s", strings.TrimSpace(text))
	t.Logf("OCI conformance summary: %d tests, %d failures, %d skipped", suites.Tests, failures, suites.Skipped)
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, ": Skip") {
			t.Log("skipped:", strings.TrimSpace(line))
		}
	}
	if failures > 0 || runErr != nil || suites.Tests < 800 {
		t.Errorf("conformance: %d failures in %d tests (exit: %v)", failures, suites.Tests, runErr)
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, ": Fail") {
				t.Log(line)
			}
		}
	}
}
