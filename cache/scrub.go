package cache

// Scrub: a walk of the whole store that checks what the index says against what is stored. Every
// blob's bytes are hashed (streamed, one blob at a time, at an optional rate: never read into
// memory), every manifest's references are looked up, and every tag's manifest. What it finds is
// reported, and kept in the index (the last run's result, for /metrics and the dashboard).
//
// What it does about it:
//
//   - Protect (the server's scheduled scrub always; cove scrub with --repair), as each bad blob
//     is found: the file of a corrupt blob (its bytes do not hash to its digest, or its size is
//     not its record's) is moved to <data>/quarantine/<algorithm>/<hex>, so that it is never
//     served again and a push or fill of the same digest can place good bytes; a mirrored blob
//     that is corrupt or missing loses its record, as Evictor.forgetLost does for a blob the
//     shared store lost, so that the next pull fetches it from its upstream (one pushed as well
//     comes back as pushed content: lost/, damaged.go). A pushed blob keeps its record: its
//     requests answer BLOB_UNKNOWN (404) until it is pushed again (a client that asks for each
//     blob before it uploads sees it missing).
//   - Repair (cove scrub --repair, scrub.repair): besides, the records of missing or corrupt
//     pushed blobs are dropped (a manifest's with its tags, as a start drops a record without its
//     file), and tags that name no manifest are deleted.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/internal/blobstore"
	"cove/internal/kv"
)

// Kinds of scrub problems.
const (
	ScrubCorrupt          = "corrupt"           // the bytes do not hash to the digest
	ScrubSize             = "size"              // the file's size is not the record's
	ScrubMissing          = "missing"           // a record without its file (or shared object)
	ScrubMissingReference = "missing_reference" // a manifest names a blob or manifest the repository lacks
	ScrubDanglingTag      = "dangling_tag"      // a tag names a manifest the repository lacks
)

// ScrubKinds are the kinds of problems, in report order.
var ScrubKinds = []string{ScrubCorrupt, ScrubSize, ScrubMissing, ScrubMissingReference, ScrubDanglingTag}

// ScrubOptions says what a scrub does besides reporting.
type ScrubOptions struct {
	// Protect takes corrupt bytes out of service and drops the records of corrupt or missing
	// mirrored blobs (they are fetched again); see the file's comment.
	Protect bool
	// Repair is Protect, and drops the records of corrupt or missing pushed blobs and the tags
	// that name no manifest.
	Repair bool
	// Rate bounds the bytes read per second; 0: no bound.
	Rate int64
	// Mirrored says which repositories are mirrored: their manifests need not have their blobs
	// (they are fetched when asked for). nil: none is.
	Mirrored func(repo string) bool
}

// ScrubProblem is one thing a scrub found.
type ScrubProblem struct {
	Kind   string        `json:"kind"`
	Digest digest.Digest `json:"digest,omitempty"`
	Repo   string        `json:"repository,omitempty"`
	Tag    string        `json:"tag,omitempty"`
	Detail string        `json:"detail"`
	// Pushed is set for a blob that cannot be fetched again (local content).
	Pushed bool `json:"pushed,omitempty"`
	// Breaks names what a bad blob breaks: repositories, repo@manifest and repo:tag.
	Breaks []string `json:"breaks,omitempty"`
	// Action is what the scrub did about it; empty: nothing.
	Action string `json:"action,omitempty"`
}

// ScrubResult is a scrub's report.
type ScrubResult struct {
	Started   time.Time      `json:"started"`
	Duration  float64        `json:"duration_seconds"`
	Blobs     int64          `json:"blobs_checked"`
	Bytes     int64          `json:"bytes_checked"`
	Manifests int64          `json:"manifests_checked"`
	Tags      int64          `json:"tags_checked"`
	Repair    bool           `json:"repair"`
	Counts    map[string]int `json:"problems"`
	Problems  []ScrubProblem `json:"details"`
	// Truncated counts the problems left out of Problems (maxScrubProblems).
	Truncated int    `json:"truncated,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Total is the number of problems found.
func (r ScrubResult) Total() int {
	n := 0
	for _, c := range r.Counts {
		n += c
	}
	return n
}

const (
	keyScrubLast = "scrub/last"
	// maxScrubProblems bounds the problems a report lists (the counts are complete).
	maxScrubProblems = 1000
	// maxScrubKept bounds the problems the index keeps of the last run.
	maxScrubKept = 100
	// scrubPage is how many blob records are read at once: no transaction stays open while
	// blobs are hashed.
	scrubPage = 256
)

// LastScrub returns the last scrub's result, and false when none has run.
func (s *Store) LastScrub(ctx context.Context) (ScrubResult, bool, error) {
	var r ScrubResult
	err := s.db.View(ctx, func(txn kv.Txn) error { return kv.Get(txn, []byte(keyScrubLast), &r) })
	if errors.Is(err, kv.ErrNotFound) {
		return r, false, nil
	}
	return r, err == nil, err
}

// badBlob is a blob the blob pass found missing or corrupt.
type badBlob struct {
	idx int // its problem's index in the report
	rec blobRecord
}

// scrubRun is one run's state.
type scrubRun struct {
	s   *Store
	opt ScrubOptions
	res *ScrubResult
	bad map[digest.Digest]*badBlob
	buf []byte
}

// Scrub checks the whole store (see the file's comment) and returns its report, which it also
// keeps in the index as the last run's. It honours ctx; a cut run reports what it saw.
func (s *Store) Scrub(ctx context.Context, opt ScrubOptions) (ScrubResult, error) {
	if opt.Repair {
		opt.Protect = true
	}
	res := ScrubResult{Started: s.now().UTC(), Repair: opt.Repair, Counts: map[string]int{}}
	for _, k := range ScrubKinds {
		res.Counts[k] = 0
	}
	sr := &scrubRun{s: s, opt: opt, res: &res, bad: map[digest.Digest]*badBlob{}, buf: make([]byte, 1<<20)}
	start := time.Now()
	err := sr.blobs(ctx)
	if err == nil {
		err = sr.manifestsAndTags(ctx)
	}
	if err == nil && opt.Repair {
		err = sr.repair(ctx)
	}
	res.Duration = time.Since(start).Seconds()
	if err != nil {
		res.Error = err.Error()
	}
	if ctx.Err() != nil {
		return res, err // a stop: the last complete run's result stays
	}
	kept := res
	if len(kept.Problems) > maxScrubKept {
		kept.Truncated += len(kept.Problems) - maxScrubKept
		kept.Problems = kept.Problems[:maxScrubKept]
	}
	// Kept even on a full disk: a small record, and what an operator most needs to see.
	if werr := s.db.Update(context.WithoutCancel(ctx), func(txn kv.Txn) error {
		return kv.Put(txn, []byte(keyScrubLast), kept)
	}); werr != nil && err == nil {
		err = fmt.Errorf("keep the scrub's result: %w", werr)
	}
	lvl := "scrub ended"
	if res.Total() > 0 {
		s.log.Error(lvl+": problems found", "problems", res.Counts, "blobs", res.Blobs, "took", time.Since(start))
	} else {
		s.log.Info(lvl, "blobs", res.Blobs, "bytes", res.Bytes, "took", time.Since(start))
	}
	return res, err
}

// add reports p and returns its index, or -1 past maxScrubProblems.
func (sr *scrubRun) add(p ScrubProblem) int {
	sr.res.Counts[p.Kind]++
	if len(sr.res.Problems) >= maxScrubProblems {
		sr.res.Truncated++
		return -1
	}
	sr.res.Problems = append(sr.res.Problems, p)
	return len(sr.res.Problems) - 1
}

// blobs hashes every blob's bytes, a page of records at a time.
func (sr *scrubRun) blobs(ctx context.Context) error {
	s := sr.s
	var after []byte
	for {
		type entry struct {
			dgst digest.Digest
			rec  blobRecord
		}
		var page []entry
		err := s.db.View(ctx, func(txn kv.Txn) error {
			page = page[:0]
			var from []byte
			if after != nil {
				from = append(slices.Clone(after), 0)
			}
			return txn.Scan([]byte(prefixBlob), kv.ScanOptions{From: from}, func(key, val []byte) (bool, error) {
				var rec blobRecord
				if err := json.Unmarshal(val, &rec); err != nil {
					return false, err
				}
				page = append(page, entry{digest.Digest(key[len(prefixBlob):]), rec})
				return len(page) < scrubPage, nil
			})
		})
		if err != nil {
			return fmt.Errorf("read the blob records: %w", err)
		}
		for _, e := range page {
			if err := sr.blob(ctx, e.dgst, e.rec); err != nil {
				return err
			}
		}
		if len(page) < scrubPage {
			return nil
		}
		after = blobKey(page[len(page)-1].dgst)
	}
}

// blob checks the bytes of one blob.
func (sr *scrubRun) blob(ctx context.Context, dgst digest.Digest, rec blobRecord) error {
	s := sr.s
	if err := supported(dgst); err != nil {
		return nil // a record cove never writes; nothing to hash it with
	}
	release := s.hold(dgst) // eviction leaves it alone while it is read
	defer release()
	kind, detail, fi, err := sr.check(ctx, dgst, rec.Size)
	if err != nil {
		return err
	}
	if kind == ScrubMissing && s.shared && s.remote == nil {
		return nil // metadata shared without a shared blob store: the file may be another node's
	}
	sr.res.Blobs++
	if kind == "" {
		return nil
	}
	if kind == ScrubMissing && !s.hasRecord(ctx, dgst) {
		return nil // evicted or collected while the scrub ran
	}
	pushed := !rec.Mirrored // a mirrored blob is fetched again, also one pushed as well (condemn)
	idx := sr.add(ScrubProblem{Kind: kind, Digest: dgst, Detail: detail, Pushed: pushed})
	sr.bad[dgst] = &badBlob{idx: idx, rec: rec}
	if !sr.opt.Protect {
		return nil
	}
	// At once, not at the end of a walk that may take hours: the bad bytes are not served
	// meanwhile. The records of pushed blobs wait for the end (Repair), which names what they
	// break first.
	action, err := s.condemn(ctx, dgst, rec, fi, kind != ScrubMissing, false)
	if err != nil {
		return fmt.Errorf("take %s out of service: %w", dgst, err)
	}
	if idx >= 0 {
		sr.res.Problems[idx].Action = action
	}
	return nil
}

// check hashes the stored bytes of dgst: its file on one node, its shared object in a fleet. It
// returns the kind of problem found, or "", with the file it read (one node), and an error only
// for a failure of the scrub itself.
func (sr *scrubRun) check(ctx context.Context, dgst digest.Digest, size int64) (kind, detail string, fi os.FileInfo, err error) {
	s := sr.s
	var r io.ReadCloser
	got := int64(-1)
	if s.remote != nil {
		rc, n, err := s.remote.Get(ctx, dgst)
		if err != nil {
			if errors.Is(err, blobstore.ErrNotFound) {
				return ScrubMissing, "no object in the shared blob store", nil, nil
			}
			return "", "", nil, &RemoteError{Err: err}
		}
		r, got = rc, n
	} else {
		f, err := os.Open(s.blobPath(dgst))
		if errors.Is(err, os.ErrNotExist) {
			return ScrubMissing, "no file " + s.blobPath(dgst), nil, nil
		}
		if err != nil {
			return "", "", nil, fmt.Errorf("open blob %s: %w", dgst, err)
		}
		if fi, err = f.Stat(); err != nil {
			f.Close()
			return "", "", nil, fmt.Errorf("stat blob %s: %w", dgst, err)
		}
		r, got = f, fi.Size()
	}
	defer r.Close()
	if got >= 0 && got != size {
		return ScrubSize, fmt.Sprintf("%d bytes stored, the record says %d", got, size), fi, nil
	}
	h := dgst.Algorithm().Hash()
	n, err := sr.copy(ctx, h, r)
	sr.res.Bytes += n
	if err != nil {
		if ctx.Err() != nil {
			return "", "", nil, ctx.Err()
		}
		return "", "", nil, fmt.Errorf("read blob %s: %w", dgst, err)
	}
	if n != size {
		return ScrubSize, fmt.Sprintf("%d bytes stored, the record says %d", n, size), fi, nil
	}
	if sum := digest.NewDigest(dgst.Algorithm(), h); sum != dgst {
		return ScrubCorrupt, "the bytes hash to " + sum.String(), fi, nil
	}
	return "", "", nil, nil
}

// copy reads r into w at the run's rate, checking ctx between reads.
func (sr *scrubRun) copy(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	var n int64
	start := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, err := r.Read(sr.buf)
		if m > 0 {
			_, _ = w.Write(sr.buf[:m])
			n += int64(m)
			if sr.opt.Rate > 0 {
				// Throttle, not synchronisation: hold the read back until the rate allows it.
				due := start.Add(time.Duration(float64(n) / float64(sr.opt.Rate) * float64(time.Second)))
				if wait := time.Until(due); wait > 0 {
					t := time.NewTimer(wait)
					select {
					case <-ctx.Done():
						t.Stop()
						return n, ctx.Err()
					case <-t.C:
					}
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// hasRecord reports whether the blob dgst has a record.
func (s *Store) hasRecord(ctx context.Context, dgst digest.Digest) bool {
	err := s.db.View(ctx, func(txn kv.Txn) error {
		_, err := txn.Get(blobKey(dgst))
		return err
	})
	return err == nil
}

// repoManifest names a manifest of a repository.
type repoManifest struct {
	repo string
	dgst digest.Digest
}

// manifestsAndTags checks every manifest's references and every tag's manifest, and names what
// the bad blobs break.
func (sr *scrubRun) manifestsAndTags(ctx context.Context) error {
	s := sr.s
	affected := map[repoManifest]bool{}
	breaks := map[digest.Digest]map[string]bool{}
	breaks1 := func(d digest.Digest, what string) {
		if breaks[d] == nil {
			breaks[d] = map[string]bool{}
		}
		breaks[d][what] = true
	}
	type index struct {
		rm       repoManifest
		children []digest.Digest
	}
	var indexes []index
	var dangling []ScrubProblem
	err := s.db.View(ctx, func(txn kv.Txn) error {
		// Manifests, with their references.
		err := eachJSON(txn, prefixManifest, func(key []byte, m *Manifest) error {
			sr.res.Manifests++
			repo := strings.TrimPrefix(string(key[:len(key)-len(lastPart(key))-1]), prefixManifest)
			m.Digest = digest.Digest(lastPart(key))
			rm := repoManifest{repo, m.Digest}
			if _, bad := sr.bad[m.Digest]; bad {
				affected[rm] = true
				breaks1(m.Digest, repo+"@"+m.Digest.String())
			} else if _, err := txn.Get(blobKey(m.Digest)); errors.Is(err, kv.ErrNotFound) {
				sr.add(ScrubProblem{Kind: ScrubMissingReference, Repo: repo, Digest: m.Digest,
					Detail: "the manifest has a record but its bytes have none"})
			}
			for _, d := range m.Blobs {
				if _, bad := sr.bad[d]; bad {
					affected[rm] = true
					breaks1(d, repo+"@"+m.Digest.String())
				}
			}
			if len(m.Children) > 0 && len(sr.bad) > 0 {
				indexes = append(indexes, index{rm, m.Children})
			}
			if sr.opt.Mirrored != nil && sr.opt.Mirrored(repo) {
				return nil // a mirrored manifest's content is fetched when asked for
			}
			for _, d := range m.Blobs {
				_, lerr := txn.Get(linkKey(repo, d))
				_, berr := txn.Get(blobKey(d))
				if errors.Is(lerr, kv.ErrNotFound) || errors.Is(berr, kv.ErrNotFound) {
					if _, bad := sr.bad[d]; bad {
						continue // reported as the blob's problem
					}
					sr.add(ScrubProblem{Kind: ScrubMissingReference, Repo: repo, Digest: m.Digest,
						Detail: "names the blob " + d.String() + ", which the repository does not have"})
				}
			}
			for _, d := range m.Children {
				if _, err := txn.Get(manifestKey(repo, d)); errors.Is(err, kv.ErrNotFound) {
					sr.add(ScrubProblem{Kind: ScrubMissingReference, Repo: repo, Digest: m.Digest,
						Detail: "names the manifest " + d.String() + ", which the repository does not have"})
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		// An index is broken by a broken child (one level: an index of indexes is rare).
		for _, ix := range indexes {
			for _, c := range ix.children {
				if affected[repoManifest{ix.rm.repo, c}] {
					affected[ix.rm] = true
					for d, b := range breaks {
						if b[ix.rm.repo+"@"+c.String()] {
							breaks1(d, ix.rm.repo+"@"+ix.rm.dgst.String())
						}
					}
				}
			}
		}
		// Repositories that link a bad blob.
		if len(sr.bad) > 0 {
			err := scan(txn, []byte(prefixLink), "", func(key, _ []byte) bool {
				d := digest.Digest(lastPart(key))
				if _, bad := sr.bad[d]; bad {
					breaks1(d, strings.TrimPrefix(string(key[:len(key)-len(d)-1]), prefixLink))
				}
				return true
			})
			if err != nil {
				return err
			}
		}
		// Tags.
		return scan(txn, []byte(prefixTag), "", func(key, val []byte) bool {
			sr.res.Tags++
			tag := lastPart(key)
			repo := strings.TrimPrefix(string(key[:len(key)-len(tag)-1]), prefixTag)
			d := digest.Digest(val)
			if affected[repoManifest{repo, d}] {
				for bd, b := range breaks {
					if b[repo+"@"+d.String()] {
						breaks1(bd, repo+":"+tag)
					}
				}
			}
			if _, err := txn.Get(manifestKey(repo, d)); errors.Is(err, kv.ErrNotFound) {
				dangling = append(dangling, ScrubProblem{Kind: ScrubDanglingTag, Repo: repo, Tag: tag, Digest: d,
					Detail: "the tag names a manifest the repository does not have"})
			}
			return true
		})
	})
	if err != nil {
		return fmt.Errorf("read the manifests and tags: %w", err)
	}
	for d, b := range sr.bad {
		if b.idx < 0 {
			continue
		}
		names := make([]string, 0, len(breaks[d]))
		for n := range breaks[d] {
			names = append(names, n)
		}
		sort.Strings(names)
		sr.res.Problems[b.idx].Breaks = names
	}
	for _, p := range dangling {
		sr.add(p)
	}
	return nil
}

// repair drops the records of the bad pushed blobs (the mirrored ones' went when they were
// found), and the dangling tags (see the file's comment).
func (sr *scrubRun) repair(ctx context.Context) error {
	s := sr.s
	for _, d := range slices.Sorted(maps.Keys(sr.bad)) {
		b := sr.bad[d]
		if b.rec.Mirrored {
			continue // dropped when found (condemn)
		}
		dropped, err := s.dropBad(ctx, d)
		if err != nil {
			return fmt.Errorf("drop the records of %s: %w", d, err)
		}
		if dropped && b.idx >= 0 {
			p := &sr.res.Problems[b.idx]
			p.Action = strings.TrimPrefix(p.Action+"; record dropped: push it again", "; ")
		}
	}
	for i := range sr.res.Problems {
		p := &sr.res.Problems[i]
		if p.Kind != ScrubDanglingTag {
			continue
		}
		// Only while it still names that manifest, and the manifest is still absent: a push
		// meanwhile may have made it whole.
		dropped := false
		err := s.update(func(ct *commitTxn) error {
			dropped = false
			cur, err := ct.Get(tagKey(p.Repo, p.Tag))
			if err != nil || string(cur) != p.Digest.String() {
				return notFound(err, nil)
			}
			if _, err := ct.Get(manifestKey(p.Repo, p.Digest)); !errors.Is(err, kv.ErrNotFound) {
				return err
			}
			if err := ct.Delete(tagKey(p.Repo, p.Tag)); err != nil {
				return err
			}
			dropped = true
			return ct.Delete(checkedKey(p.Repo, p.Tag))
		})
		if err != nil {
			return fmt.Errorf("drop the dangling tag %s:%s: %w", p.Repo, p.Tag, err)
		}
		if dropped {
			p.Action = "tag deleted"
		}
	}
	return nil
}
