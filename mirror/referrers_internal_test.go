package mirror

import "testing"

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
		{"no brackets", `/prefix/v2/lib/app/referrers/sha256:ab; rel="next"`, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := nextReferrersPage(up, "lib/app", c.link); got != c.want {
				t.Errorf("nextReferrersPage(%q) = %q, want %q", c.link, got, c.want)
			}
		})
	}
}
