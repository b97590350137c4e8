package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"

	"cove/internal/kv"
	"cove/internal/pgtest"
)

// newStore opens a store on a fresh directory; reopen gives the same directory a new Store, after
// a clean stop (Close), or after a crash with reopen(crash): the store's work ends but nothing
// records the stop. Its index is badger, or PostgreSQL within TestStoreOnPostgres.
func newStore(t *testing.T) (*Store, func(crash ...bool) *Store) {
	t.Helper()
	return newStoreWith(t, Config{})
}

// crash is reopen's argument for a stop that was no clean one.
const crash = true

// newStoreWith is newStore with cfg (its Dir and DB set by newStoreWith).
func newStoreWith(t *testing.T, cfg Config) (*Store, func(crash ...bool) *Store) {
	t.Helper()
	dir := t.TempDir()
	var db *badger.DB
	var meta kv.DB
	var s *Store
	first := true
	open := func(crashed ...bool) *Store {
		if s != nil {
			if len(crashed) > 0 && crashed[0] {
				s.stop()
			} else {
				s.Close()
			}
			meta.Close()
			if db != nil {
				db.Close()
			}
		}
		var err error
		if postgresDSN != "" {
			p, err := kv.OpenPostgres(context.Background(), postgresDSN)
			if err != nil {
				t.Fatal(err)
			}
			if first {
				if err := p.Truncate(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			meta = p
		} else {
			if db, err = OpenDB(filepath.Join(dir, "index"), nil); err != nil {
				t.Fatal(err)
			}
			meta = kv.NewBadger(db)
		}
		first = false
		cfg.Dir, cfg.DB = dir, meta
		s, err = Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Cleanup(func() {
		s.Close()
		meta.Close()
		if db != nil {
			db.Close()
		}
	})
	return open(), open
}

// postgresDSN, when set (by TestStoreOnPostgres), makes newStore use PostgreSQL.
var postgresDSN string

// TestStoreOnPostgres runs the store's tests with its index in PostgreSQL, as in a fleet: what
// passes on badger passes there.
func TestStoreOnPostgres(t *testing.T) {
	srv := pgtest.Start(t)
	postgresDSN = srv.DSN
	defer func() { postgresDSN = "" }()
	for name, test := range map[string]func(*testing.T){
		"PutBlobLinksOnlyItsRepository":     TestPutBlobLinksOnlyItsRepository,
		"PutBlobRefusesWrongContent":        TestPutBlobRefusesWrongContent,
		"ChunkedUpload":                     TestChunkedUpload,
		"ManifestsTagsReferrers":            TestManifestsTagsReferrers,
		"RepositoriesAndEmptyRepositories":  TestRepositoriesAndEmptyRepositories,
		"OpenReconciles":                    TestOpenReconciles,
		"Collect":                           TestCollect,
		"DigestNamesOneMediaType":           TestDigestNamesOneMediaType,
		"DeleteTouchesNothingElse":          TestDeleteTouchesNothingElse,
		"FillStreamsToEveryReaderOnce":      TestFillStreamsToEveryReaderOnce,
		"FillNeverCompletesAWrongBlob":      TestFillNeverCompletesAWrongBlob,
		"EvictionCutShortIsFinishedAtStart": TestEvictionCutShortIsFinishedAtStart,
		"Quotas":                            TestQuotas,
		"ImmutableTags":                     TestImmutableTags,
		"EvictIndexFollowsReads":            TestEvictIndexFollowsReads,
		"StartAfterACleanStop":              TestStartAfterACleanStop,
		"EvictPagesPastBlobsInUse":          TestEvictPagesPastBlobsInUse,
	} {
		t.Run(name, test)
	}
}

// openStore opens a store with cfg on a badger index in a fresh directory (cfg.Dir when set),
// closed at the end of the test.
func openStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	db, err := OpenDB(filepath.Join(cfg.Dir, "index"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg.DB = kv.NewBadger(db)
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func tmpEntries(t *testing.T, s *Store) []string {
	t.Helper()
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestPutBlobLinksOnlyItsRepository(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	content := []byte("hello blob")
	dgst := digest.FromBytes(content)
	if _, err := s.PutBlob(ctx, "p/a", dgst, bytes.NewReader(content), int64(len(content))); err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	f, err := s.OpenBlob(ctx, "p/a", dgst)
	if err != nil {
		t.Fatalf("OpenBlob(p/a) = %v", err)
	}
	info := f.Info
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, content) || info.Size != int64(len(content)) {
		t.Errorf("OpenBlob read %q (size %d), want %q", got, info.Size, content)
	}
	// A digest alone is not a capability: another repository cannot read it.
	if _, err := s.StatBlob(ctx, "p/b", dgst); !errors.Is(err, ErrBlobUnknown) {
		t.Errorf("StatBlob(p/b) = %v, want ErrBlobUnknown", err)
	}
	if _, err := s.LinkBlob(ctx, "p/b", dgst); err != nil {
		t.Fatalf("LinkBlob: %v", err)
	}
	if _, err := s.StatBlob(ctx, "p/b", dgst); err != nil {
		t.Errorf("StatBlob(p/b) after link = %v", err)
	}
	if err := s.UnlinkBlob(ctx, "p/a", dgst); err != nil {
		t.Fatalf("UnlinkBlob: %v", err)
	}
	if _, err := s.StatBlob(ctx, "p/a", dgst); !errors.Is(err, ErrBlobUnknown) {
		t.Errorf("StatBlob(p/a) after unlink = %v, want ErrBlobUnknown", err)
	}
	if n, b := s.Stats(); n != 1 || b != int64(len(content)) {
		t.Errorf("Stats() = %d, %d; want 1, %d", n, b, len(content))
	}
}

func TestPutBlobRefusesWrongContent(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	content := []byte("the real bytes")
	dgst := digest.FromBytes(content)
	tests := []struct {
		name string
		dgst digest.Digest
		body io.Reader
		size int64
		want error
	}{
		{"wrong content", dgst, strings.NewReader("other bytes"), -1, ErrDigestMismatch},
		{"short of announced size", dgst, bytes.NewReader(content), 99, ErrSizeInvalid},
		{"reader fails", dgst, iotest.ErrReader(io.ErrUnexpectedEOF), -1, io.ErrUnexpectedEOF},
		{"unsupported algorithm", digest.Digest("md5:d41d8cd98f00b204e9800998ecf8427e"), bytes.NewReader(content), -1, ErrDigestUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.PutBlob(ctx, "p/a", tt.dgst, tt.body, tt.size); !errors.Is(err, tt.want) {
				t.Fatalf("PutBlob = %v, want %v", err, tt.want)
			}
			if _, err := os.Stat(s.blobPath(dgst)); !os.IsNotExist(err) {
				t.Errorf("blob file exists after a refused put: %v", err)
			}
			if left := tmpEntries(t, s); len(left) > 0 {
				t.Errorf("tmp/ holds %v after a refused put", left)
			}
			if _, err := s.StatBlob(ctx, "p/a", dgst); !errors.Is(err, ErrBlobUnknown) {
				t.Errorf("StatBlob = %v, want ErrBlobUnknown", err)
			}
		})
	}
}

func TestChunkedUpload(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	content := bytes.Repeat([]byte("0123456789"), 1000)
	id, err := s.Uploads.New(ctx, "p/a", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Uploads.Append(ctx, "p/a", id, 0, bytes.NewReader(content[:4000])); err != nil {
		t.Fatalf("Uploads.Append(first) = %v", err)
	}
	// Out of order: refused, nothing changes.
	if _, err := s.Uploads.Append(ctx, "p/a", id, 5000, bytes.NewReader(content[5000:6000])); !errors.Is(err, ErrRangeInvalid) {
		t.Fatalf("Uploads.Append(out of order) = %v, want ErrRangeInvalid", err)
	}
	// A chunk cut short is rolled back, so the retry continues cleanly.
	cut := io.MultiReader(bytes.NewReader(content[4000:4500]), iotest.ErrReader(io.ErrUnexpectedEOF))
	if _, err := s.Uploads.Append(ctx, "p/a", id, 4000, cut); err == nil {
		t.Fatal("Uploads.Append(cut) succeeded")
	}
	if n, _ := s.Uploads.Size(ctx, "p/a", id); n != 4000 {
		t.Fatalf("Uploads.Size after cut chunk = %d, want 4000", n)
	}
	// Another repository cannot touch the session.
	if _, err := s.Uploads.Size(ctx, "p/b", id); !errors.Is(err, ErrUploadUnknown) {
		t.Errorf("Uploads.Size(p/b) = %v, want ErrUploadUnknown", err)
	}
	if _, err := s.Uploads.Append(ctx, "p/a", id, -1, bytes.NewReader(content[4000:9000])); err != nil {
		t.Fatal(err)
	}
	info, err := s.Uploads.Commit(ctx, "p/a", id, digest.FromBytes(content), 9000, bytes.NewReader(content[9000:]))
	if err != nil {
		t.Fatalf("Uploads.Commit = %v", err)
	}
	if info.Size != int64(len(content)) {
		t.Errorf("committed size %d, want %d", info.Size, len(content))
	}
	if _, err := s.Uploads.Size(ctx, "p/a", id); !errors.Is(err, ErrUploadUnknown) {
		t.Errorf("session still open after commit: %v", err)
	}
	if left := tmpEntries(t, s); len(left) > 0 {
		t.Errorf("tmp/ holds %v after commit", left)
	}
}

func TestCommitUploadDigests(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	content := []byte("some layer")
	tests := []struct {
		name string
		dgst digest.Digest
		want error
	}{
		{"sha256", digest.SHA256.FromBytes(content), nil},
		{"sha512", digest.SHA512.FromBytes(content), nil},
		{"mismatch", digest.SHA256.FromString("else"), ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, _ := s.Uploads.New(ctx, "p/a", "alice")
			_, err := s.Uploads.Commit(ctx, "p/a", id, tt.dgst, -1, bytes.NewReader(content))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Uploads.Commit = %v, want %v", err, tt.want)
			}
			_, err = s.StatBlob(ctx, "p/a", tt.dgst)
			if (err == nil) != (tt.want == nil) {
				t.Errorf("StatBlob = %v after commit error %v", err, tt.want)
			}
			if left := tmpEntries(t, s); len(left) > 0 {
				t.Errorf("tmp/ holds %v", left)
			}
		})
	}
}

func TestCancelUpload(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	id, _ := s.Uploads.New(ctx, "p/a", "alice")
	if _, err := s.Uploads.Append(ctx, "p/a", id, -1, strings.NewReader("partial")); err != nil {
		t.Fatal(err)
	}
	if err := s.Uploads.Cancel(ctx, "p/a", id); err != nil {
		t.Fatal(err)
	}
	if err := s.Uploads.Cancel(ctx, "p/a", id); !errors.Is(err, ErrUploadUnknown) {
		t.Errorf("second Uploads.Cancel = %v, want ErrUploadUnknown", err)
	}
	if left := tmpEntries(t, s); len(left) > 0 {
		t.Errorf("tmp/ holds %v after cancel", left)
	}
}

// putImage stores a config and a layer in repo and returns a manifest record that refers to them.
func putImage(t *testing.T, s *Store, repo string) (Manifest, []byte) {
	t.Helper()
	ctx := context.Background()
	var refs []digest.Digest
	for _, c := range []string{"config " + repo, "layer " + repo} {
		d := digest.FromString(c)
		if _, err := s.PutBlob(ctx, repo, d, strings.NewReader(c), -1); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, d)
	}
	body := []byte(`{"schemaVersion":2,"config":"` + refs[0] + `","layers":["` + refs[1] + `"]}`)
	return Manifest{Digest: digest.FromBytes(body), MediaType: "application/vnd.oci.image.manifest.v1+json", Blobs: refs}, body
}

func TestManifestsTagsReferrers(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	m, body := putImage(t, s, "p/a")

	missing := m
	missing.Blobs = append([]digest.Digest{digest.FromString("absent")}, m.Blobs...)
	var me *MissingError
	if err := s.Manifests.Put(ctx, "p/a", missing, body, []string{"orphan"}); !errors.As(err, &me) || me.Digest != digest.FromString("absent") {
		t.Fatalf("Manifests.Put(missing blob) = %v, want MissingError for the absent blob", err)
	}
	if _, err := s.Manifests.Resolve(ctx, "p/a", "orphan"); !errors.Is(err, ErrManifestUnknown) {
		t.Errorf("a refused manifest left tag orphan behind: %v", err)
	}

	if err := s.Manifests.Put(ctx, "p/a", m, body, []string{"v1", "latest"}); err != nil {
		t.Fatalf("Manifests.Put = %v", err)
	}
	got, gotBody, err := s.Manifests.Get(ctx, "p/a", "v1")
	if err != nil || got.Digest != m.Digest || !bytes.Equal(gotBody, body) || got.MediaType != m.MediaType {
		t.Fatalf("Manifests.Get(v1) = %v, %q, %v", got, gotBody, err)
	}
	if _, _, err := s.Manifests.Get(ctx, "p/b", m.Digest.String()); !errors.Is(err, ErrManifestUnknown) {
		t.Errorf("GetManifest from another repository = %v, want ErrManifestUnknown", err)
	}

	// A referrer whose subject is the image, and one with a different artifact type.
	sig := Manifest{MediaType: "application/vnd.oci.image.manifest.v1+json", Subject: m.Digest, ArtifactType: "application/x.sig", Blobs: m.Blobs}
	sigBody := []byte(`{"sig":1}`)
	sig.Digest = digest.FromBytes(sigBody)
	sbom := sig
	sbom.ArtifactType = "application/x.sbom"
	sbomBody := []byte(`{"sbom":1}`)
	sbom.Digest = digest.FromBytes(sbomBody)
	for _, r := range []struct {
		m Manifest
		b []byte
	}{{sig, sigBody}, {sbom, sbomBody}} {
		if err := s.Manifests.Put(ctx, "p/a", r.m, r.b, nil); err != nil {
			t.Fatal(err)
		}
	}
	all, _, _ := s.Manifests.Referrers(ctx, "p/a", m.Digest, "", "", 10, 1<<20)
	sigs, _, _ := s.Manifests.Referrers(ctx, "p/a", m.Digest, "application/x.sig", "", 10, 1<<20)
	if len(all) != 2 || len(sigs) != 1 || sigs[0].Digest != sig.Digest {
		t.Errorf("Referrers = %d all, %v filtered; want 2 and the signature", len(all), sigs)
	}
	// Pages: by count, and by size (one descriptor already passes a 10-byte budget).
	for _, page := range []struct{ n, maxBytes int }{{1, 1 << 20}, {10, 10}} {
		first, more, _ := s.Manifests.Referrers(ctx, "p/a", m.Digest, "", "", page.n, page.maxBytes)
		if len(first) != 1 || !more {
			t.Fatalf("Referrers(n=%d, maxBytes=%d) = %v, more=%v; want one and more", page.n, page.maxBytes, first, more)
		}
		rest, more, _ := s.Manifests.Referrers(ctx, "p/a", m.Digest, "", first[0].Digest.String(), page.n, page.maxBytes)
		if len(rest) != 1 || more || rest[0].Digest == first[0].Digest {
			t.Errorf("second page = %v, more=%v", rest, more)
		}
	}

	tags, more, err := s.Manifests.Tags(ctx, "p/a", "", 1)
	if err != nil || len(tags) != 1 || tags[0] != "latest" || !more {
		t.Errorf("Tags(n=1) = %v, %v, %v; want [latest], more", tags, more, err)
	}
	tags, more, _ = s.Manifests.Tags(ctx, "p/a", "latest", 10)
	if len(tags) != 1 || tags[0] != "v1" || more {
		t.Errorf("Tags(last=latest) = %v, %v; want [v1]", tags, more)
	}
	if _, _, err := s.Manifests.Tags(ctx, "p/none", "", 10); !errors.Is(err, ErrNameUnknown) {
		t.Errorf("Tags(unknown repo) = %v, want ErrNameUnknown", err)
	}

	if err := s.Manifests.DeleteTag(ctx, "p/a", "latest"); err != nil {
		t.Fatal(err)
	}
	if err := s.Manifests.Delete(ctx, "p/a", sig.Digest); err != nil {
		t.Fatal(err)
	}
	if refs, _, _ := s.Manifests.Referrers(ctx, "p/a", m.Digest, "", "", 10, 1<<20); len(refs) != 1 {
		t.Errorf("after deleting a referrer, Referrers = %v", refs)
	}
	if err := s.Manifests.Delete(ctx, "p/a", m.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Manifests.Resolve(ctx, "p/a", "v1"); !errors.Is(err, ErrManifestUnknown) {
		t.Errorf("tag v1 survived the deletion of its manifest: %v", err)
	}
}

func TestRepositoriesAndEmptyRepositories(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	for _, r := range []string{"p/c", "p/a", "q/b"} {
		putImage(t, s, r)
	}
	all := func(string) bool { return true }
	repos, more, _ := s.Manifests.Repositories(ctx, "", 2, all)
	if strings.Join(repos, ",") != "p/a,p/c" || !more {
		t.Errorf("Repositories(n=2) = %v, %v", repos, more)
	}
	repos, more, _ = s.Manifests.Repositories(ctx, "p/c", 2, all)
	if strings.Join(repos, ",") != "q/b" || more {
		t.Errorf("Repositories(last=p/c) = %v, %v", repos, more)
	}
	onlyQ := func(r string) bool { return strings.HasPrefix(r, "q/") }
	if repos, _, _ := s.Manifests.Repositories(ctx, "", 10, onlyQ); strings.Join(repos, ",") != "q/b" {
		t.Errorf("Repositories(visible q/) = %v", repos)
	}
	if n, _ := s.Manifests.CountRepositories(ctx, "p/"); n != 2 {
		t.Errorf("CountRepositories(p/) = %d, want 2", n)
	}
	// Unlinking every blob empties a repository: it leaves the catalog.
	for _, c := range []string{"config q/b", "layer q/b"} {
		if err := s.UnlinkBlob(ctx, "q/b", digest.FromString(c)); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := s.Manifests.CountRepositories(ctx, "q/"); n != 0 {
		t.Errorf("CountRepositories(q/) after emptying = %d, want 0", n)
	}
}

func TestOpenReconciles(t *testing.T) {
	ctx := context.Background()
	s, reopen := newStore(t)
	kept := []byte("kept")
	lost := []byte("lost")
	for _, c := range [][]byte{kept, lost} {
		if _, err := s.PutBlob(ctx, "p/a", digest.FromBytes(c), bytes.NewReader(c), -1); err != nil {
			t.Fatal(err)
		}
	}
	// A crash between rename and index write leaves a placed file without a record...
	orphan := []byte("orphan")
	od := digest.FromBytes(orphan)
	if err := os.MkdirAll(filepath.Dir(s.blobPath(od)), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.blobPath(od), orphan, 0o640); err != nil {
		t.Fatal(err)
	}
	// ...a file lost under the index leaves a record without a file, and an upload leaves tmp/.
	if err := os.Remove(s.blobPath(digest.FromBytes(lost))); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.tmpDir(), "upload-123"), []byte("half"), 0o640); err != nil {
		t.Fatal(err)
	}

	s = reopen(crash)
	if _, err := s.StatBlob(ctx, "p/a", digest.FromBytes(kept)); err != nil {
		t.Errorf("kept blob: %v", err)
	}
	if _, err := s.StatBlob(ctx, "p/a", digest.FromBytes(lost)); !errors.Is(err, ErrBlobUnknown) {
		t.Errorf("blob with no file: StatBlob = %v, want ErrBlobUnknown", err)
	}
	// The orphan is adopted (the store knows it) but no repository may read it.
	if _, err := s.LinkBlob(ctx, "p/z", od); err != nil {
		t.Errorf("orphan was not adopted: LinkBlob = %v", err)
	}
	if _, err := s.StatBlob(ctx, "p/a", od); !errors.Is(err, ErrBlobUnknown) {
		t.Errorf("adopted orphan readable in p/a: %v", err)
	}
	if left := tmpEntries(t, s); len(left) > 0 {
		t.Errorf("tmp/ holds %v after Open", left)
	}
	if n, b := s.Stats(); n != 2 || b != int64(len(kept)+len(orphan)) {
		t.Errorf("Stats() = %d, %d; want 2, %d", n, b, len(kept)+len(orphan))
	}
}

func TestCollect(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	m, body := putImage(t, s, "p/a")
	if err := s.Manifests.Put(ctx, "p/a", m, body, []string{"v1"}); err != nil {
		t.Fatal(err)
	}
	gone := []byte("deleted layer")
	gd := digest.FromBytes(gone)
	if _, err := s.PutBlob(ctx, "p/a", gd, bytes.NewReader(gone), -1); err != nil {
		t.Fatal(err)
	}
	if err := s.UnlinkBlob(ctx, "p/a", gd); err != nil {
		t.Fatal(err)
	}
	// Within the grace window nothing goes.
	if n, _, err := s.Evictor.Collect(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("Collect(grace 1h) removed %d, %v; want 0", n, err)
	}
	n, freed, err := s.Evictor.Collect(ctx, 0)
	if err != nil || n != 1 || freed != int64(len(gone)) {
		t.Fatalf("Collect = %d, %d, %v; want the one unlinked blob", n, freed, err)
	}
	if _, err := os.Stat(s.blobPath(gd)); !os.IsNotExist(err) {
		t.Errorf("collected file still there: %v", err)
	}
	// Linked blobs and manifest bodies stay.
	for _, d := range append([]digest.Digest{m.Digest}, m.Blobs...) {
		if _, err := os.Stat(s.blobPath(d)); err != nil {
			t.Errorf("referenced %s collected: %v", d, err)
		}
	}
	if _, _, err := s.Manifests.Get(ctx, "p/a", "v1"); err != nil {
		t.Errorf("manifest after collect: %v", err)
	}
	// A blob pushed for a manifest that has not come yet is kept within the grace window, though
	// no manifest names it.
	pending := []byte("a layer whose manifest is on its way")
	pd := digest.FromBytes(pending)
	if _, err := s.PutBlob(ctx, "p/a", pd, bytes.NewReader(pending), -1); err != nil {
		t.Fatal(err)
	}
	if n, _, err := s.Evictor.Collect(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("Collect(grace 1h) with a pending layer removed %d, %v; want 0", n, err)
	}
	// Deleting the manifest makes its body and the blobs only it named garbage, links and all;
	// the pending layer is a push in flight, kept even with no time window.
	if err := s.Manifests.Delete(ctx, "p/a", m.Digest); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := s.Evictor.Collect(ctx, 0); n != 3 {
		t.Errorf("Collect after manifest delete removed %d, want 3 (the manifest, its config and layer)", n)
	}
	if blobs, _ := s.Stats(); blobs != 1 {
		t.Errorf("Stats after collect = %d blobs, want 1 (the pending layer)", blobs)
	}
	if _, err := s.StatBlob(ctx, "p/a", pd); err != nil {
		t.Errorf("the layer of a push in flight was collected: %v", err)
	}
	for _, d := range m.Blobs {
		if _, err := s.StatBlob(ctx, "p/a", d); !errors.Is(err, ErrBlobUnknown) {
			t.Errorf("a collected blob is still linked: %v", err)
		}
	}
}

// A blob linked for a push whose manifest never comes is kept for inFlight, whatever the time
// window, then collected; one a manifest named and then lost is not in flight.
func TestCollectAbandonedPush(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	s := openStore(t, Config{Now: func() time.Time { return now }})
	body := []byte("a layer whose manifest never came")
	d := digest.FromBytes(body)
	if _, err := s.PutBlob(ctx, "p/a", d, bytes.NewReader(body), -1); err != nil {
		t.Fatal(err)
	}
	now = now.Add(inFlight - time.Minute)
	if n, _, err := s.Evictor.Collect(ctx, 0); err != nil || n != 0 {
		t.Fatalf("Collect within inFlight = %d, %v; want 0", n, err)
	}
	now = now.Add(2 * time.Minute)
	if n, _, err := s.Evictor.Collect(ctx, 0); err != nil || n != 1 {
		t.Fatalf("Collect after inFlight = %d, %v; want the abandoned layer", n, err)
	}
}

func TestUploadSessionsAreCapped(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	s := openStore(t, Config{MaxUploads: 2, UploadTTL: time.Hour, Now: func() time.Time { return now }})
	first, _ := s.Uploads.New(ctx, "p/a", "alice")
	if _, err := s.Uploads.New(ctx, "p/a", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Uploads.New(ctx, "p/a", "alice"); !errors.Is(err, ErrTooManyUploads) {
		t.Fatalf("third Uploads.New = %v, want ErrTooManyUploads", err)
	}
	now = now.Add(2 * time.Hour) // both sessions idle past the TTL: they expire and make room
	if _, err := s.Uploads.New(ctx, "p/a", "alice"); err != nil {
		t.Fatalf("Uploads.New after expiry = %v", err)
	}
	if _, err := s.Uploads.Size(ctx, "p/a", first); !errors.Is(err, ErrUploadUnknown) {
		t.Errorf("expired session still open: %v", err)
	}
	if left := tmpEntries(t, s); len(left) != 1 {
		t.Errorf("tmp/ holds %v, want only the live session", left)
	}
}

func TestRefusedManifestLeavesNoFile(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	m, body := putImage(t, s, "p/a")
	m.Blobs = append(m.Blobs, digest.FromString("absent"))
	if err := s.Manifests.Put(ctx, "p/a", m, body, []string{"v1"}); err == nil {
		t.Fatal("Manifests.Put with a missing blob succeeded")
	}
	if _, err := os.Stat(s.blobPath(m.Digest)); !os.IsNotExist(err) {
		t.Errorf("a refused manifest left its file: %v", err)
	}
	if left := tmpEntries(t, s); len(left) > 0 {
		t.Errorf("tmp/ holds %v", left)
	}
}

func TestDigestNamesOneMediaType(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	m, body := putImage(t, s, "p/a")
	if err := s.Manifests.Put(ctx, "p/a", m, body, nil); err != nil {
		t.Fatal(err)
	}
	m.MediaType = "application/vnd.docker.distribution.manifest.v2+json"
	if err := s.Manifests.Put(ctx, "p/a", m, body, nil); !errors.Is(err, ErrMediaTypeConflict) {
		t.Errorf("re-push under another media type = %v, want ErrMediaTypeConflict", err)
	}
	if got, _ := s.Manifests.Resolve(ctx, "p/a", m.Digest.String()); got.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("media type changed to %s", got.MediaType)
	}
	// Another repository's push of the same bytes under another type neither fails nor changes
	// how p/a serves them (the type was registry-wide, taken from the first pusher).
	for _, c := range []string{"config p/a", "layer p/a"} {
		if _, err := s.PutBlob(ctx, "q/b", digest.FromString(c), strings.NewReader(c), -1); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Manifests.Put(ctx, "q/b", m, body, []string{"x"}); err != nil {
		t.Errorf("another repository's push under its own media type = %v", err)
	}
	if got, _ := s.Manifests.Resolve(ctx, "q/b", "x"); got.MediaType != m.MediaType {
		t.Errorf("q/b serves %s, want its own %s", got.MediaType, m.MediaType)
	}
	if got, _ := s.Manifests.Resolve(ctx, "p/a", m.Digest.String()); got.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("p/a's media type changed to %s by q/b's push", got.MediaType)
	}
}

// Deleting a manifest by digest, or a tag, touches nothing else: with several tags and manifests
// in a repository, each delete in turn leaves every other tag pointing where it pointed and every
// other manifest readable. (A delete by digest once kept badger's iteration keys past their step
// and deleted another image's tag.)
func TestDeleteTouchesNothingElse(t *testing.T) {
	ctx := context.Background()
	const n = 12
	for _, byTag := range []bool{false, true} {
		for victim := 0; victim < n; victim++ {
			s, _ := newStore(t)
			repo := "team/r2"
			want := map[string]digest.Digest{} // tag → manifest
			var digests []digest.Digest
			for i := 0; i < n; i++ {
				c := fmt.Sprintf("config %d", i)
				d := digest.FromString(c)
				if _, err := s.PutBlob(ctx, repo, d, strings.NewReader(c), -1); err != nil {
					t.Fatal(err)
				}
				body := []byte(fmt.Sprintf(`{"schemaVersion":2,"config":%q,"n":%d}`, d, i))
				m := Manifest{Digest: digest.FromBytes(body), MediaType: "application/vnd.oci.image.manifest.v1+json", Blobs: []digest.Digest{d}}
				tag := fmt.Sprintf("t%02d", i)
				if err := s.Manifests.Put(ctx, repo, m, body, []string{tag}); err != nil {
					t.Fatal(err)
				}
				want[tag] = m.Digest
				digests = append(digests, m.Digest)
			}
			// A second repository sharing one manifest is never touched either.
			other := "team/other"
			if _, err := s.PutBlob(ctx, other, digest.FromString("config 0"), strings.NewReader("config 0"), -1); err != nil {
				t.Fatal(err)
			}
			body0 := []byte(fmt.Sprintf(`{"schemaVersion":2,"config":%q,"n":%d}`, digest.FromString("config 0"), 0))
			if err := s.Manifests.Put(ctx, other, Manifest{Digest: digests[0], MediaType: "application/vnd.oci.image.manifest.v1+json", Blobs: []digest.Digest{digest.FromString("config 0")}}, body0, []string{"t00"}); err != nil {
				t.Fatal(err)
			}
			vtag := fmt.Sprintf("t%02d", victim)
			if byTag {
				if err := s.Manifests.DeleteTag(ctx, repo, vtag); err != nil {
					t.Fatal(err)
				}
			} else if err := s.Manifests.Delete(ctx, repo, digests[victim]); err != nil {
				t.Fatal(err)
			}
			tags, _, err := s.Manifests.Tags(ctx, repo, "", -1)
			if err != nil {
				t.Fatal(err)
			}
			var wantTags []string
			for tag := range want {
				if tag != vtag {
					wantTags = append(wantTags, tag)
				}
			}
			slices.Sort(wantTags)
			if !slices.Equal(tags, wantTags) {
				t.Errorf("byTag=%v, victim %s: tags %v, want %v", byTag, vtag, tags, wantTags)
			}
			for tag, d := range want {
				m, _, err := s.Manifests.Get(ctx, repo, tag)
				switch {
				case tag == vtag && !errors.Is(err, ErrManifestUnknown):
					t.Errorf("byTag=%v: deleted tag %s still resolves: %v", byTag, tag, err)
				case tag != vtag && (err != nil || m.Digest != d):
					t.Errorf("byTag=%v, victim %s: tag %s = %v, %v; want %s", byTag, vtag, tag, m.Digest, err, d)
				}
			}
			for i, d := range digests {
				_, _, err := s.Manifests.Get(ctx, repo, d.String())
				gone := i == victim && !byTag
				if gone != errors.Is(err, ErrManifestUnknown) || (!gone && err != nil) {
					t.Errorf("byTag=%v, victim %s: manifest %d by digest: %v", byTag, vtag, i, err)
				}
			}
			if m, _, err := s.Manifests.Get(ctx, other, "t00"); err != nil || m.Digest != digests[0] {
				t.Errorf("byTag=%v, victim %s: the other repository's tag = %v, %v", byTag, vtag, m.Digest, err)
			}
		}
	}
}

// One pusher cannot take everyone's uploads: sessions are capped per account and per project,
// under a global cap far above either.
func TestUploadCapsPerAccountAndProject(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, Config{MaxUploads: 5, MaxUploadsPerAccount: 2, MaxUploadsPerProject: 3})
	open := func(repo, owner string) error {
		_, err := s.Uploads.New(ctx, repo, owner)
		return err
	}
	for range 2 {
		if err := open("p/a", "alice"); err != nil {
			t.Fatal(err)
		}
	}
	var le *UploadLimitError
	if err := open("q/a", "alice"); !errors.As(err, &le) || le.Scope != "account alice" || !errors.Is(err, ErrTooManyUploads) {
		t.Errorf("alice's third session = %v, want her account's limit", err)
	}
	if err := open("p/b", "bob"); err != nil {
		t.Errorf("bob's first session, beside alice's two = %v", err)
	}
	if err := open("p/c", "carol"); !errors.As(err, &le) || le.Scope != "project p" {
		t.Errorf("a fourth session in project p = %v, want the project's limit", err)
	}
	for _, who := range []string{"carol", "dave"} {
		if err := open("q/x", who); err != nil {
			t.Errorf("%s in another project = %v", who, err)
		}
	}
	if err := open("r/x", "erin"); !errors.As(err, &le) || le.Scope != "registry" {
		t.Errorf("a sixth session = %v, want the registry's limit", err)
	}
}
