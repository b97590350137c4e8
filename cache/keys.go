package cache

import (
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Key layout. A repository name never contains NUL, so "\x00" separates it from what follows and a
// prefix scan of one repository never runs into another whose name merely starts the same way.
const (
	prefixBlob     = "blob/"     // blob/<digest> → blobRecord
	prefixLink     = "link/"     // link/<repo>\x00<digest> → empty: the repository may read the blob
	prefixRepo     = "repo/"     // repo/<repo> → empty: the repository has content
	prefixManifest = "manifest/" // manifest/<repo>\x00<digest> → manifestRecord
	prefixTag      = "tag/"      // tag/<repo>\x00<tag> → digest
	prefixReferrer = "referrer/" // referrer/<repo>\x00<subject>\x00<digest> → empty
	prefixChecked  = "checked/"  // checked/<repo>\x00<tag> → when the upstream last confirmed the tag
	prefixEvicting = "evicting/" // evicting/<digest> → empty: the record is gone, the file may remain
	prefixRepoInfo = "repoinfo/" // repoinfo/<repo> → RepoInfo: description, pulls
	prefixPulled   = "pulled/"   // pulled/<repo>\x00<digest> → the repository's last pull of the manifest, empty before any
	prefixUnsynced = "unsynced/" // unsynced/<digest> → empty: a mirrored blob's file placed without fsync, not yet synced (durable.go)
	prefixEvict    = "evict/"    // evict/<last read>\x00<digest> → empty: an evictable blob, least recently read first (evictKey)
	prefixLost     = "lost/"     // lost/<digest> → empty: pushed content whose record scrub dropped; its links remain (scrub.go)
	sep            = "\x00"
)

func blobKey(dgst digest.Digest) []byte { return []byte(prefixBlob + dgst.String()) }

// evictKey is the eviction index's key of an evictable blob last read at accessed: the time as
// 16 hex digits of Unix nanoseconds (0 before 1970), so that key order is the order of last reads,
// and the blob's digest for the ties (the order a stable sort of the records in digest order gave).
func evictKey(accessed time.Time, dgst digest.Digest) []byte {
	var ns int64
	if accessed.After(time.Unix(0, 0)) {
		ns = accessed.UnixNano()
	}
	return fmt.Appendf(nil, "%s%016x%s%s", prefixEvict, ns, sep, dgst)
}

func repoKey(repo string) []byte { return []byte(prefixRepo + repo) }

func linkKey(repo string, dgst digest.Digest) []byte {
	return []byte(prefixLink + repo + sep + dgst.String())
}

func manifestKey(repo string, dgst digest.Digest) []byte {
	return []byte(prefixManifest + repo + sep + dgst.String())
}

func tagKey(repo, tag string) []byte { return []byte(prefixTag + repo + sep + tag) }

func checkedKey(repo, tag string) []byte { return []byte(prefixChecked + repo + sep + tag) }

func referrerKey(repo string, subject, dgst digest.Digest) []byte {
	return []byte(prefixReferrer + repo + sep + subject.String() + sep + dgst.String())
}

func pulledKey(repo string, dgst digest.Digest) []byte {
	return []byte(prefixPulled + repo + sep + dgst.String())
}

// repoPrefix is the scan prefix of one repository's records of one kind.
func repoPrefix(kind, repo string) []byte { return []byte(kind + repo + sep) }

// lastPart returns what follows the final separator of a key.
func lastPart(key []byte) string {
	k := string(key)
	return k[strings.LastIndex(k, sep)+1:]
}
