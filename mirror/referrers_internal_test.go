package mirror

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// An upstream's next page of referrers is followed only on its own origin and its own referrers
// path of the repository (docs/SECURITY.md 19): a Link elsewhere ends the list.
func TestNextReferrersPage(t *testing.T) {
	up := &upstream{base: "https://registry.example:5000/prefix"}
	for _, c := range []struct {
		name, link, want string
	}{
		{"relative", `</prefix/v2/lib/app/referrers/sha256:ab?last=x&n=2>; rel="next"`, "referrers/sha256:ab?last=x&n=2"},
		{"absolute, same origin", `<https://registry.example:5000/prefix/v2/lib/app/referrers/sha256:ab?last=x>; rel="next"`, "referrers/sha256:ab?last=x"},
		{"none", "", ""},
		{"not next", `</prefix/v2/lib/app/referrers/sha256:ab?last=x>; rel="prev"`, ""},
		{"another host", `<https://evil.example/prefix/v2/lib/app/referrers/sha256:ab>; rel="next"`, ""},
		{"another scheme", `<http://registry.example:5000/prefix/v2/lib/app/referrers/sha256:ab>; rel="next"`, ""},
		{"another repository", `</prefix/v2/lib/other/referrers/sha256:ab>; rel="next"`, ""},
		{"another endpoint", `</prefix/v2/lib/app/blobs/sha256:ab>; rel="next"`, ""},
		{"outside the prefix", `</v2/lib/app/referrers/sha256:ab>; rel="next"`, ""},
		{"climbing out", `</prefix/v2/lib/app/../../other/referrers/sha256:ab>; rel="next"`, ""},
		{"climbing out, encoded", `</prefix/v2/lib/app/referrers/%2e%2e/%2e%2e/x?last=6>; rel="next"`, ""},
		{"no brackets", `/prefix/v2/lib/app/referrers/sha256:ab; rel="next"`, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := nextReferrersPage(up, "lib/app", c.link); got != c.want {
				t.Errorf("nextReferrersPage(%q) = %q, want %q", c.link, got, c.want)
			}
		})
	}
}

// A referrers list keeps each descriptor as the upstream wrote it (annotations and all, never
// decoded into maps, which take many times their size), drops those that are not well-formed,
// and counts in the cache what it holds.
func TestIndexManifestsKeepsBytes(t *testing.T) {
	d1 := digest.FromString("one")
	ann := map[string]string{}
	for i := range 2000 {
		ann["k"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+strings.Repeat("y", i%5)] = ""
	}
	annJSON, _ := json.Marshal(ann)
	body := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` +
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + d1.String() + `","size":10,"artifactType":"a/b","annotations":` + string(annJSON) + `},` +
		`{"mediaType":"x","digest":"sha256:nothex","size":1},` +
		`{"mediaType":"x","digest":"` + d1.String() + `","size":-1}]}`
	descs, err := indexManifests([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(descs) != 1 || descs[0].digest != d1 || descs[0].artifactType != "a/b" || !strings.Contains(string(descs[0].raw), string(annJSON)) {
		t.Fatalf("descs = %d, first %+v", len(descs), descs)
	}
	a := newReferrersAnswer(uniqueReferrers(append(descs, descs[0])), time.Time{})
	if len(a.descs) != 1 || a.size != len(descs[0].raw)+referrerOverhead {
		t.Errorf("answer of %d descriptors, size %d; want 1 (duplicates dropped), %d", len(a.descs), a.size, len(descs[0].raw)+referrerOverhead)
	}
}
