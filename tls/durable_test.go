package tls

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func pkixName(cn string) pkix.Name { return pkix.Name{CommonName: cn} }

// readCert parses the PEM certificate in path.
func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSelfSignedFilesAreWrittenWhole: the CA and server files parse, keys are 0600, certificates
// are not writable by others, and no temporary file stays.
func TestSelfSignedFilesAreWrittenWhole(t *testing.T) {
	dir := t.TempDir()
	// A temporary file a crash left, world-readable and torn: it must not become the key.
	if err := os.MkdirAll(filepath.Join(dir, "self-signed"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "self-signed", "ca.key.tmp"), []byte("-----BEGIN"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(context.Background(), Config{Mode: ModeSelfSigned, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(dir, "self-signed")
	entries, err := os.ReadDir(d)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"ca.key", "ca.pem", "server.key", "server.pem"}; !slices.Equal(names, want) {
		t.Errorf("ReadDir(%q) = %v, want %v", d, names, want)
	}
	for _, pair := range [][2]string{{"ca.pem", "ca.key"}, {"server.pem", "server.key"}} {
		cert, key := filepath.Join(d, pair[0]), filepath.Join(d, pair[1])
		if _, _, err := loadPair(cert, key); err != nil {
			t.Errorf("loadPair(%q) = %v", cert, err)
		}
		if info, err := os.Stat(key); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("Stat(%q) = %v, %v, want mode 0600", key, info.Mode(), err)
		}
		if info, err := os.Stat(cert); err != nil || info.Mode().Perm()&0o022 != 0 {
			t.Errorf("Stat(%q) = %v, %v, want writable by its owner only", cert, info.Mode(), err)
		}
	}
}

// syncCall is one fsync as recorded by recordSyncs: the file or directory, and what path then held.
type syncCall struct {
	name, content string
}

// recordSyncs returns a syncFunc that records each call, and fails the calls whose file or
// directory is named fail.
func recordSyncs(path, fail string, calls *[]syncCall) syncFunc {
	return func(f *os.File) error {
		b, _ := os.ReadFile(path)
		*calls = append(*calls, syncCall{f.Name(), string(b)})
		if f.Name() == fail {
			return errors.New("injected fsync failure")
		}
		return f.Sync()
	}
}

func TestWriteDurably(t *testing.T) {
	tests := []struct {
		name      string
		fail      string // "tmp" or "dir": the fsync that fails
		wantErr   bool
		wantAfter string // path's content after the write
	}{
		{name: "ok", wantAfter: "new"},
		{name: "file fsync fails", fail: "tmp", wantErr: true, wantAfter: "old"},
		{name: "directory fsync fails", fail: "dir", wantErr: true, wantAfter: "new"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "ca.key")
			if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
			fail := map[string]string{"tmp": path + ".tmp", "dir": dir}[tc.fail]
			var calls []syncCall
			err := writeDurably(path, []byte("new"), 0o600, recordSyncs(path, fail, &calls))
			if (err != nil) != tc.wantErr {
				t.Fatalf("writeDurably = %v, want error %v", err, tc.wantErr)
			}
			// The file is synced before it is renamed, the directory after.
			want := []syncCall{{path + ".tmp", "old"}, {dir, "new"}}
			if tc.fail == "tmp" {
				want = want[:1]
			}
			if !slices.Equal(calls, want) {
				t.Errorf("fsyncs (name, content of path then) = %v, want %v", calls, want)
			}
			if b, _ := os.ReadFile(path); string(b) != tc.wantAfter {
				t.Errorf("ReadFile(%q) = %q, want %q", path, b, tc.wantAfter)
			}
			if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Stat(%q) = %v, want it gone", path+".tmp", err)
			}
			if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
				t.Errorf("Stat(%q) = %v, %v, want mode 0600", path, info.Mode(), err)
			}
		})
	}
}

func TestMkdirAllSyncsParents(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "tls", "self-signed")
	var calls []syncCall
	if err := mkdirAll(dir, recordSyncs(dir, "", &calls)); err != nil {
		t.Fatal(err)
	}
	if want := []syncCall{{base, ""}, {filepath.Join(base, "tls"), ""}}; !slices.Equal(calls, want) {
		t.Errorf("fsyncs = %v, want %v", calls, want)
	}
	if info, err := os.Stat(dir); err != nil || !info.IsDir() || info.Mode().Perm() != 0o700 {
		t.Errorf("Stat(%q) = %v, %v, want a directory of mode 0700", dir, info, err)
	}
	calls = nil
	if err := mkdirAll(dir, recordSyncs(dir, "", &calls)); err != nil || len(calls) != 0 {
		t.Errorf("mkdirAll of an existing directory = %v, fsyncs %v, want none", err, calls)
	}
}
