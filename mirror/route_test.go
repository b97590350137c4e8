package mirror

import (
	"regexp"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		path string
		want route
	}{
		{"/v2/", route{kind: KindBase}},
		{"/v2", route{kind: KindBase}},
		{"/v2/_catalog", route{kind: KindCatalog}},
		{"/v2/p/app/manifests/latest", route{kind: KindManifest, repo: "p/app", ref: "latest"}},
		{"/v2/p/app/manifests/sha256:abc", route{kind: KindManifest, repo: "p/app", ref: "sha256:abc"}},
		{"/v2/p/blobs/manifests/v1", route{kind: KindManifest, repo: "p/blobs", ref: "v1"}},
		{"/v2/p/manifests/blobs/sha256:abc", route{kind: KindBlob, repo: "p/manifests", ref: "sha256:abc"}},
		{"/v2/p/app/blobs/uploads/", route{kind: KindUploadStart, repo: "p/app"}},
		{"/v2/p/app/blobs/uploads", route{kind: KindUploadStart, repo: "p/app"}},
		{"/v2/p/app/blobs/uploads/ID123", route{kind: KindUpload, repo: "p/app", ref: "ID123"}},
		{"/v2/p/uploads/blobs/uploads/ID", route{kind: KindUpload, repo: "p/uploads", ref: "ID"}},
		{"/v2/a/b/c/tags/list", route{kind: KindTags, repo: "a/b/c"}},
		{"/v2/p/app/referrers/sha256:abc", route{kind: KindReferrers, repo: "p/app", ref: "sha256:abc"}},
		{"/v2/p/app/manifests/", route{kind: KindUnknown}},
		{"/v2/p/app/other/x", route{kind: KindUnknown}},
		{"/v2/manifests/x", route{kind: KindUnknown}},
		{"/v3/p/app/manifests/x", route{kind: KindUnknown}},
	}
	for _, tt := range tests {
		if got := parse(tt.path); got != tt.want {
			t.Errorf("parse(%q) = %+v, want %+v", tt.path, got, tt.want)
		}
	}
}

func TestValidName(t *testing.T) {
	tests := map[string]bool{
		"p/app":                  true,
		"a":                      true,
		"a.b_c__d-e--f/g0":       true,
		"A/b":                    false,
		"a//b":                   false,
		"a/":                     false,
		"-a/b":                   false,
		"a/b_":                   false,
		"a/b___c":                false,
		"a/../b":                 false,
		strings.Repeat("a", 256): false,
	}
	for name, want := range tests {
		if got := validName(name); got != want {
			t.Errorf("validName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in         string
		start, end int64
		ok         bool
	}{
		{"0-99", 0, 99, true},
		{"100-100", 100, 100, true},
		{"bytes=5-9", 5, 9, true},
		{"9-5", 0, 0, false},
		{"-5", 0, 0, false},
		{"a-b", 0, 0, false},
		{"0-", 0, 0, false},
		{"99999999999999999999-1", 0, 0, false},
	}
	for _, tt := range tests {
		start, end, err := parseContentRange(tt.in)
		if (err == nil) != tt.ok || start != tt.start || end != tt.end {
			t.Errorf("parseContentRange(%q) = %d, %d, %v; want %d, %d, ok=%v", tt.in, start, end, err, tt.start, tt.end, tt.ok)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/a/b/manifests/c", "/v2/a/blobs/uploads/x", "/v2/a/tags/list", "/v2//blobs/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		r := parse(path)
		if r.kind == KindUnknown && (r.repo != "" || r.ref != "") {
			t.Fatalf("parse(%q) = %+v: unknown routes carry nothing", path, r)
		}
		if r.kind != KindUnknown && r.kind != KindBase && r.kind != KindCatalog && !strings.Contains(path, r.repo) {
			t.Fatalf("parse(%q) = %+v: repo not from the path", path, r)
		}
	})
}

func FuzzContentRange(f *testing.F) {
	for _, s := range []string{"0-1", "bytes=1-2", "5-3", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		start, end, err := parseContentRange(v)
		if err == nil && (start < 0 || end < start) {
			t.Fatalf("parseContentRange(%q) = %d, %d: accepted a bad range", v, start, end)
		}
	})
}

// validName and validTag are hand-written matchers of the spec's grammar: they agree with its
// regular expressions on every short string of the characters that matter, and on long ones.
func TestNameAndTagMatchTheGrammar(t *testing.T) {
	name, tag := regexp.MustCompile(nameRE), regexp.MustCompile(tagRE)
	const alphabet = "a0._-/A"
	var each func(prefix string, n int)
	checked := 0
	each = func(s string, n int) {
		if got, want := validName(s), name.MatchString(s); got != want {
			t.Errorf("validName(%q) = %v, the grammar says %v", s, got, want)
		}
		if got, want := validTag(s), tag.MatchString(s); got != want {
			t.Errorf("validTag(%q) = %v, the grammar says %v", s, got, want)
		}
		checked++
		if n == 0 {
			return
		}
		for i := range len(alphabet) {
			each(s+alphabet[i:i+1], n-1)
		}
	}
	each("", 7) // every string of up to 7 of these characters: 960,800
	long := strings.Repeat("a", maxNameLength)
	for _, c := range []struct {
		s         string
		name, tag bool
	}{
		{long, true, false}, {long + "a", false, false}, {strings.Repeat("a", 128), true, true}, {strings.Repeat("a", 129), true, false},
		{"library/alpine", true, false}, {"a__b/c-d--e.f", true, false}, {"v1.2.3_rc-1", true, true}, {"V1", false, true},
	} {
		if validName(c.s) != c.name || validTag(c.s) != c.tag {
			t.Errorf("%q: validName %v validTag %v, want %v %v", c.s, validName(c.s), validTag(c.s), c.name, c.tag)
		}
	}
	if checked < 900_000 {
		t.Errorf("only %d strings checked", checked)
	}
}
