package mirror

import (
	"strings"
)

// Kind is the kind of /v2 endpoint a path addresses.
type Kind string

// The /v2 endpoints (OCI distribution spec v1.1, "Endpoints").
const (
	KindBase        Kind = "base"         // /v2/
	KindCatalog     Kind = "catalog"      // /v2/_catalog
	KindManifest    Kind = "manifest"     // /v2/<name>/manifests/<reference>
	KindBlob        Kind = "blob"         // /v2/<name>/blobs/<digest>
	KindUploadStart Kind = "upload_start" // /v2/<name>/blobs/uploads/
	KindUpload      Kind = "upload"       // /v2/<name>/blobs/uploads/<id>
	KindTags        Kind = "tags"         // /v2/<name>/tags/list
	KindReferrers   Kind = "referrers"    // /v2/<name>/referrers/<digest>
	KindUnknown     Kind = "unknown"
)

// route is a parsed /v2 path.
type route struct {
	kind Kind
	repo string // repository name; checked with validName by the server, not by parse
	ref  string // tag or digest (manifest), digest (blob, referrers), session id (upload)
}

// parse splits a /v2 path into its route. A repository name may itself contain path elements
// such as "blobs" or "manifests", so the path is read from its end. parse does not validate the
// name; the server does, so that a bad name gets NAME_INVALID rather than "unknown endpoint".
func parse(path string) route {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		if path == "/v2" {
			return route{kind: KindBase}
		}
		return route{kind: KindUnknown}
	}
	switch rest {
	case "":
		return route{kind: KindBase}
	case "_catalog":
		return route{kind: KindCatalog}
	}
	if name, ok := strings.CutSuffix(rest, "/blobs/uploads/"); ok {
		return route{kind: KindUploadStart, repo: name}
	}
	if name, ok := strings.CutSuffix(rest, "/blobs/uploads"); ok {
		return route{kind: KindUploadStart, repo: name}
	}
	if name, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		return route{kind: KindTags, repo: name}
	}
	parts := strings.Split(rest, "/")
	n := len(parts)
	if n < 3 || parts[n-1] == "" {
		return route{kind: KindUnknown}
	}
	name := strings.Join(parts[:n-2], "/")
	switch parts[n-2] {
	case "manifests":
		return route{kind: KindManifest, repo: name, ref: parts[n-1]}
	case "blobs":
		return route{kind: KindBlob, repo: name, ref: parts[n-1]}
	case "referrers":
		return route{kind: KindReferrers, repo: name, ref: parts[n-1]}
	case "uploads":
		if n >= 4 && parts[n-3] == "blobs" {
			return route{kind: KindUpload, repo: strings.Join(parts[:n-3], "/"), ref: parts[n-1]}
		}
	}
	return route{kind: KindUnknown}
}

// RouteKind names the endpoint of a request path, for metrics labels.
func RouteKind(path string) Kind { return parse(path).kind }

// Metric is the kind's name in metrics and the access log: "v2_" and the kind.
func (k Kind) Metric() string {
	if n, ok := kindMetrics[k]; ok {
		return n
	}
	return "v2_" + string(k)
}

var kindMetrics = func() map[Kind]string {
	m := map[Kind]string{}
	for _, k := range []Kind{KindBase, KindCatalog, KindManifest, KindBlob, KindUploadStart, KindUpload, KindTags, KindReferrers, KindUnknown} {
		m[k] = "v2_" + string(k)
	}
	return m
}()

// The OCI distribution spec's grammar of repository names and tags, which validName and validTag
// match by hand (every request checks its name: a regular expression cost 2.5 % of the CPU of
// cached manifest GETs); route_test.go holds them to these expressions.
var (
	nameRE = `^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`
	tagRE  = `^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`
)

// maxNameLength bounds a repository name; with a registry host it stays under Docker's 255.
const maxNameLength = 255

// validName reports whether name is a repository name: components of lower-case letters and
// digits joined by a separator (".", "_", "__" or a run of "-"), separated by "/".
func validName(name string) bool {
	if name == "" || len(name) > maxNameLength {
		return false
	}
	for comp := range strings.SplitSeq(name, "/") {
		if !validComponent(comp) {
			return false
		}
	}
	return true
}

func validComponent(c string) bool {
	alnum := func(b byte) bool { return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' }
	if c == "" || !alnum(c[0]) || !alnum(c[len(c)-1]) {
		return false
	}
	for i := 1; i < len(c); i++ {
		b := c[i]
		switch {
		case alnum(b):
		case b == '.':
			if !alnum(c[i-1]) { // one dot, between alphanumerics
				return false
			}
		case b == '_':
			if c[i-1] == '_' && (i < 2 || !alnum(c[i-2])) || c[i-1] != '_' && !alnum(c[i-1]) { // "_" or "__"
				return false
			}
		case b == '-':
			if !alnum(c[i-1]) && c[i-1] != '-' { // a run of dashes
				return false
			}
		default:
			return false
		}
	}
	return true
}

// validTag reports whether tag is a tag: up to 128 letters, digits, "_", "." and "-", not
// beginning with "." or "-".
func validTag(tag string) bool {
	if tag == "" || len(tag) > 128 || tag[0] == '.' || tag[0] == '-' {
		return false
	}
	for i := 0; i < len(tag); i++ {
		b := tag[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '.' || b == '-') {
			return false
		}
	}
	return true
}
