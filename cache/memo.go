package cache

import (
	"sync"
	"time"

	"cove/internal/kv"

	"github.com/opencontainers/go-digest"
)

// Bounds of the manifest memo: the references it remembers, and the bytes of the manifests.
const (
	memoRefs  = 4096
	memoBytes = 16 << 20
)

// manifestMemo answers manifest reads (Manifests.Read and MirroredTag) from memory: a reference's
// record and a tag's last check, as read in the index's current generation (any write to the
// index forgets them all), and the bytes of manifests by digest (immutable, kept across
// generations), each within its bound. It serves one node's own index: with metadata shared by a
// fleet, another node's writes would go unseen, and there is no memo.
type manifestMemo struct {
	db *kv.Counted

	mu sync.Mutex
	// gen is the generation refs and checks were read in; all fields guarded by mu.
	gen    uint64
	refs   map[string]Manifest // "repo\x00ref"
	checks map[string]time.Time
	bodies map[digest.Digest][]byte
	order  []digest.Digest // bodies, oldest first
	bytes  int
}

func newManifestMemo(db *kv.Counted) *manifestMemo {
	return &manifestMemo{db: db, refs: map[string]Manifest{}, checks: map[string]time.Time{}, bodies: map[digest.Digest][]byte{}}
}

// current forgets refs and checks of an older generation than now's. mu is held.
func (mm *manifestMemo) current() {
	if g := mm.db.Generation(); g != mm.gen {
		mm.gen = g
		clear(mm.refs)
		clear(mm.checks)
	}
}

// read returns what the memo holds for ref of repo: its record and bytes.
func (mm *manifestMemo) read(repo, ref string) (Manifest, []byte, bool) {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	mm.current()
	m, ok := mm.refs[repo+"\x00"+ref]
	if !ok {
		return Manifest{}, nil, false
	}
	body, ok := mm.bodies[m.Digest]
	return m, body, ok
}

// tag returns what the memo holds for a mirrored tag: its record and last check.
func (mm *manifestMemo) tag(repo, tag string) (Manifest, time.Time, bool) {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	mm.current()
	key := repo + "\x00" + tag
	m, ok := mm.refs[key]
	checked, ok2 := mm.checks[key]
	return m, checked, ok && ok2
}

// remember keeps what was read in generation gen (read before the index was): nothing when the
// index changed since. body may be nil (a record without its bytes); checked is kept when set.
func (mm *manifestMemo) remember(gen uint64, repo, ref string, m Manifest, body []byte, checked *time.Time) {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	mm.current()
	if gen != mm.gen {
		return
	}
	if len(mm.refs) >= memoRefs {
		clear(mm.refs)
		clear(mm.checks)
	}
	key := repo + "\x00" + ref
	mm.refs[key] = m
	if checked != nil {
		mm.checks[key] = *checked
	}
	if body == nil || len(body) > memoBytes/16 {
		return
	}
	if _, ok := mm.bodies[m.Digest]; ok {
		return
	}
	for mm.bytes+len(body) > memoBytes && len(mm.order) > 0 {
		old := mm.order[0]
		mm.order = mm.order[1:]
		mm.bytes -= len(mm.bodies[old])
		delete(mm.bodies, old)
	}
	mm.bodies[m.Digest] = body
	mm.order = append(mm.order, m.Digest)
	mm.bytes += len(body)
}

// generation is the index's generation now: taken before a read that is to be remembered.
func (mm *manifestMemo) generation() uint64 { return mm.db.Generation() }
