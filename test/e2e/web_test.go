package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWebPage runs the browser test of the admin page (test/web, headless Chromium driven by
// playwright-core) against a cove started here. Screenshots go to test-results/web.
func TestWebPage(t *testing.T) {
	node := requireTool(t, "node")
	requireTool(t, "chromium")
	requireTool(t, "skopeo")
	requireTool(t, "docker-registry")
	if _, err := os.Stat("../web/node_modules/playwright-core"); err != nil {
		missing(t, "playwright-core is not installed (make deps runs npm ci in test/web)")
	}
	reg := startRegistry(t, "", nil)
	reg.seed(t, "library/mirrored:1", ociImage(t, 1, 64<<10, nil))
	// The upstream speaks of a pull limit, as Docker Hub does: the dashboard shows it.
	proxy := newFaultProxy(t, reg.url)
	proxy.setFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if strings.Contains(r.URL.Path, "/manifests/") {
			w.Header().Set("Ratelimit-Limit", "100;w=21600")
			w.Header().Set("Ratelimit-Remaining", "42;w=21600")
		}
		return false
	})
	// Mail for the password reset: a real SMTP server; public_url names cove's port, the links' base.
	smtp := startPlainSMTP(t)
	port := freePort(t)
	config := mirrorConfig(proxy.srv.URL, fmt.Sprintf("scrub:\n  interval: 1h\nwebhooks:\n  allow_private_targets: true\npublic_url: http://127.0.0.1:%d\nemail:\n  server: 127.0.0.1\n  port: %d\n  from: cove@example.org\n  starttls: false\n", port, smtp.port))
	path := filepath.Join(t.TempDir(), "cove.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startCoveArgs(t, t.TempDir(), []string{"--listen", fmt.Sprintf("127.0.0.1:%d", port)}, "COVE_CONFIG="+path)
	hooks := newHookReceiver(t)
	layout := writeLayout(t, ociImage(t, 2, 128<<10, nil), newOCIIndex(t))
	artifacts, _ := filepath.Abs("../../test-results/web")
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, 5*time.Minute, []string{
		"COVE_URL=" + s.url, "COVE_HOOK_URL=" + hooks.srv.URL, "COVE_PASSWORD=" + adminPassword, "COVE_LAYOUT=" + layout, "ARTIFACTS=" + artifacts, "MAILDIR=" + smtp.maildir,
	}, node, "--test", "--test-reporter=spec", "../web/admin.test.mjs")
	t.Logf("browser test:\n%s", out)
	if err != nil {
		t.Fatalf("the browser test failed: %v", err)
	}
	if n := len(hooks.events(t, "PUSH_ARTIFACT")); n < 1 {
		t.Errorf("the webhook made on the page received %d pushes", n)
	}
}

var _ = exec.Command
