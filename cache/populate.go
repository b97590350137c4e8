package cache

// Populate fills a fresh data directory with generated records for cove bench --scale (issue #16,
// point 4): what a mirror that has cached many blobs holds, written straight into the index in
// write batches instead of through N fills, which would take hours at a million blobs.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"cove/internal/kv"
)

// PopulateConfig says what Populate generates.
type PopulateConfig struct {
	// Blobs is the number of blob records: Tags of them image manifests, the rest their layers.
	Blobs int
	// Tags is the number of tags, each on a manifest of its own, spread over about √Tags
	// repositories of about √Tags tags each (so that both the catalog and a tag list grow).
	Tags int
	// LayerSize is the size of each layer; its file is sparse (it takes no disk blocks).
	LayerSize int64
	// Now is when the blobs were last read: the layers' reads are a millisecond apart before it.
	Now time.Time
}

// Populated says what Populate wrote.
type Populated struct {
	Blobs     int   `json:"blobs"`
	Layers    int   `json:"layers"`    // mirrored, evictable blobs
	Manifests int   `json:"manifests"` // mirrored image manifests, each tagged once
	Tags      int   `json:"tags"`
	Repos     int   `json:"repos"`
	Links     int   `json:"links"`
	Mirrored  int64 `json:"mirrored_bytes"` // the layers' bytes: what eviction counts
	// DeepRepo is a repository 90 % of the way through the catalog, and DeepTag a tag 90 % of the
	// way through FirstRepo's list, each with ten or more names after it: where a client paging
	// through them comes late.
	FirstRepo string `json:"first_repo"`
	DeepRepo  string `json:"deep_repo"`
	DeepTag   string `json:"deep_tag"`
}

// populateBatch is how many index writes Populate hands to one DB.Write.
const populateBatch = 20000

// Populate writes cfg's generated content into the empty data directory dir, whose index is db:
// the records of mirrored layers and image manifests, their repositories' links, manifests and
// tags, the eviction index, and a file for every blob (a sparse one for a layer, whose digest is
// generated and does not match its zero bytes; the manifest's real body for a manifest), since a
// start that reconciles drops the records of blobs without files. It leaves dir as a clean stop
// does. No store may be open on dir meanwhile.
func Populate(ctx context.Context, dir string, db kv.DB, cfg PopulateConfig) (Populated, error) {
	if cfg.Tags < 1 || cfg.Blobs < 2*cfg.Tags {
		return Populated{}, errors.New("populate: need at least one tag, and at least a layer per manifest")
	}
	if cfg.Now.IsZero() {
		cfg.Now = time.Now()
	}
	now := cfg.Now.UTC()
	nrepos := int(math.Ceil(math.Sqrt(float64(cfg.Tags))))
	repo := func(i int) string { return fmt.Sprintf("docker.io/scale/r%06d", i) }
	// Deep is 90 % of the way through n names, or the one with ten names after it.
	deep := func(n int) int { return max(min(n*9/10, n-11), 0) }
	p := Populated{Blobs: cfg.Blobs, Manifests: cfg.Tags, Layers: cfg.Blobs - cfg.Tags, Tags: cfg.Tags, Repos: nrepos,
		FirstRepo: repo(0), DeepRepo: repo(deep(nrepos))}
	p.Mirrored = int64(p.Layers) * cfg.LayerSize
	p.DeepTag = fmt.Sprintf("v%07d", deep((cfg.Tags-1)/nrepos+1)) // repository 0 has tags v0 … v(Tags-1)/repos

	var ops []kv.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		err := db.Write(ctx, ops)
		ops = ops[:0]
		return err
	}
	put := func(key []byte, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		ops = append(ops, kv.Op{Key: key, Value: b})
		if len(ops) >= populateBatch {
			return flush()
		}
		return nil
	}
	stored := p.Mirrored // and the manifests' bytes, below
	files := make(chan blobFile, 1024)
	g, gctx := errgroup.WithContext(ctx)
	for range 4 {
		g.Go(func() error { return writeBlobFiles(gctx, dir, files) })
	}
	g.Go(func() error {
		defer close(files)
		for r := range nrepos {
			if err := put(repoKey(repo(r)), nil); err != nil {
				return err
			}
		}
		for m := range cfg.Tags {
			r := repo(m % nrepos)
			// Manifest m's layers are m, m+Tags, m+2·Tags, …: its config and layers.
			var layers []ocispec.Descriptor
			var names []digest.Digest
			for l := m; l < p.Layers; l += cfg.Tags {
				d := digest.FromString(fmt.Sprintf("cove populate layer %d", l))
				layers = append(layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: cfg.LayerSize})
				names = append(names, d)
				rec := blobRecord{Size: cfg.LayerSize, Created: now, Mirrored: true, Gen: 1, Linked: now,
					Accessed: now.Add(-time.Duration(p.Layers-l) * time.Millisecond)}
				if err := put(blobKey(d), rec); err != nil {
					return err
				}
				ops = append(ops, kv.Op{Key: evictKey(rec.Accessed, d), Value: []byte{}}, kv.Op{Key: linkKey(r, d), Value: []byte{}})
				p.Links++
				select {
				case files <- blobFile{dgst: d, size: cfg.LayerSize}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			layers[0].MediaType = ocispec.MediaTypeImageConfig
			body, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: layers[0], Layers: layers[1:]})
			if err != nil {
				return err
			}
			md := digest.FromBytes(body)
			stored += int64(len(body))
			mrec := Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: int64(len(body)), Created: now, Blobs: names}
			if err := put(manifestKey(r, md), mrec); err != nil {
				return err
			}
			if err := put(blobKey(md), blobRecord{Size: int64(len(body)), Created: now, MediaType: ocispec.MediaTypeImageManifest,
				Mirrored: true, Gen: 1, Named: now, Accessed: now}); err != nil {
				return err
			}
			ops = append(ops, kv.Op{Key: tagKey(r, fmt.Sprintf("v%07d", m/nrepos)), Value: []byte(md.String())})
			select {
			case files <- blobFile{dgst: md, body: body}:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		if err := flush(); err != nil {
			return err
		}
		// The eviction index is written above: a start need not build it. The directory is as a
		// clean stop leaves it: the start takes these statistics (keyCleanStop).
		return db.Update(ctx, func(txn kv.Txn) error {
			if err := txn.Set([]byte(keyEvictIndex), []byte(`{}`)); err != nil {
				return err
			}
			return kv.Put(txn, []byte(keyCleanStop), cleanStop{Blobs: int64(p.Blobs), Stored: stored, Mirrored: p.Mirrored})
		})
	})
	if err := g.Wait(); err != nil {
		return p, fmt.Errorf("populate %s: %w", dir, err)
	}
	return p, nil
}

// blobFile is a file for Populate to write: body, or size sparse bytes when body is nil.
type blobFile struct {
	dgst digest.Digest
	size int64
	body []byte
}

// writeBlobFiles writes the files that come on files under dir's blob tree.
func writeBlobFiles(ctx context.Context, dir string, files <-chan blobFile) error {
	for bf := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		path := BlobPath(dir, bf.dgst)
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
		if errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
				return err
			}
			f, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
		}
		if err != nil {
			return err
		}
		if bf.body != nil {
			_, err = f.Write(bf.body)
		} else {
			err = f.Truncate(bf.size)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}
