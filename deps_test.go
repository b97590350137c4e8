// Package cove_test holds checks over the whole module.
package cove_test

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// allowed lists, for each package, the project packages it may import (docs/DESIGN.md "Packages":
// imports flow downward only, cmd → admin/mirror/bench → auth/cache).
var allowed = map[string][]string{
	"cove/cmd/cove":           {"*"},
	"cove/mirror":             {"cove/auth", "cove/cache", "cove/internal/telemetry", "cove/internal/cluster", "cove/internal/webhook"}, // never admin: the two are siblings
	"cove/admin":              {"cove/auth", "cove/cache", "cove/internal/telemetry", "cove/internal/webhook", "cove/internal/mail"},    // never mirror: it asks cmd for what it needs
	"cove/auth":               {"cove/internal/kv", "cove/internal/telemetry", "cove/internal/mail"},                                    // the base layer: no project imports but kv, telemetry and mail's settings type
	"cove/cache":              {"cove/internal/kv", "cove/internal/blobstore"},                                                          // the base layer: the two seams only
	"cove/internal/kv":        {},                                                                                                       // the metadata seam: badger and PostgreSQL
	"cove/internal/pgtest":    {},
	"cove/internal/blobstore": {}, // the blob-storage seam: S3
	"cove/internal/s3test":    {},
	"cove/internal/cluster":   {"cove/internal/kv"}, // fleet membership: heartbeats, owners, node signatures // JSON records in badger
	"cove/internal/telemetry": {},                   // the HTTP boundary: request ids, causes of 5xx, access log
	"cove/internal/webhook":   {"cove/internal/kv"}, // webhook policies, their queue and deliveries
	"cove/internal/mail":      {},                   // SMTP through net/smtp: settings, composition, the outbox
	"cove/tls":                {},                   // listeners; starts no servers
	"cove/bench":              {},                   // black-box: cove is a process it runs
	"cove/deploy/image":       {},                   // make image's assembler: files and a binary in, an image out
}

// storageOwners may import badger: no package outside auth and cache touches its keys.
var storageOwners = []string{"cove/cache", "cove/auth", "cove/internal/kv"}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var pkg struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&pkg); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(pkg.ImportPath, "cove/test/") || pkg.ImportPath == "cove" {
			continue
		}
		seen++
		ok, known := allowed[pkg.ImportPath]
		if !known {
			t.Errorf("package %s has no entry in allowed: decide where it sits in the import flow", pkg.ImportPath)
			continue
		}
		for _, imp := range pkg.Imports {
			if strings.HasPrefix(imp, "cove/") && !slices.Contains(ok, "*") && !slices.Contains(ok, imp) {
				t.Errorf("%s imports %s, against the flow in docs/DESIGN.md", pkg.ImportPath, imp)
			}
			if strings.HasPrefix(imp, "github.com/dgraph-io/badger") && !slices.Contains(storageOwners, pkg.ImportPath) {
				t.Errorf("%s imports badger: only %v may touch the index", pkg.ImportPath, storageOwners)
			}
		}
	}
	if seen < len(allowed) {
		t.Errorf("checked %d packages, want at least %d", seen, len(allowed))
	}
}

// TestDocReferencesExist: comments cite docs/SECURITY.md and docs/DESIGN.md by rule; the pages
// they cite are the repository's own.
func TestDocReferencesExist(t *testing.T) {
	out, err := exec.Command("git", "grep", "-ohE", `docs/[A-Za-z-]+\.md`, "--", "*.go").Output()
	if err != nil {
		t.Fatalf("git grep: %v", err)
	}
	seen := map[string]bool{}
	for _, ref := range strings.Fields(string(out)) {
		if seen[ref] {
			continue
		}
		seen[ref] = true
		if _, err := os.Stat(ref); err != nil {
			t.Errorf("a comment cites %s, which the repository does not have", ref)
		}
	}
	if len(seen) == 0 {
		t.Error("no comment cites docs/: the check checks nothing")
	}
}
