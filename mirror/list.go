package mirror

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"cove/auth"
)

// maxPage caps n on the tags and catalog endpoints, and the referrers of one page; a client asking
// for more gets a Link to the rest.
const maxPage = 1000

// maxReferrersBytes bounds one page of referrers, whose annotations can be large.
const maxReferrersBytes = 4 << 20

// pageParams reads n and last. n is maxPage when absent.
func pageParams(r *http.Request) (n int, last string, err error) {
	q := r.URL.Query()
	n = maxPage
	if v := q.Get("n"); v != "" {
		n, err = strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, "", newError(http.StatusBadRequest, CodeUnsupported, "n must be a whole number from 0 to %d, not %q", maxPage, v)
		}
		n = min(n, maxPage)
	}
	return n, q.Get("last"), nil
}

// nextLink sets the RFC 5988 Link header to the page after last.
func nextLink(w http.ResponseWriter, path string, n int, last string) {
	q := url.Values{"n": {strconv.Itoa(n)}, "last": {last}}
	w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, q.Encode()))
}

func writeJSON(w http.ResponseWriter, contentType string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	return nil
}

func (s *Server) handleListTags(w http.ResponseWriter, r *http.Request, req request) error {
	n, last, err := pageParams(r)
	if err != nil {
		return err
	}
	tags, more, err := s.store.Manifests.Tags(r.Context(), req.repo, last, n)
	if err != nil {
		return err
	}
	if more && len(tags) > 0 {
		nextLink(w, "/v2/"+req.repo+"/tags/list", n, tags[len(tags)-1])
	}
	return writeJSON(w, "application/json", map[string]any{"name": req.repo, "tags": tags})
}

func (s *Server) handleCatalog(w http.ResponseWriter, r *http.Request, req request) error {
	n, last, err := pageParams(r)
	if err != nil {
		return err
	}
	if req.who.Token && !req.who.Granted("registry", "catalog", "*") {
		return &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: "authentication required",
			challenge: s.auth.Challenge(r, "registry:catalog:*")}
	}
	// Listed is what the caller's identity may pull (a token's repository grants do not matter
	// here). One decision per project or upstream, not per repository: the policy is per project.
	who := req.who.Identity()
	decided := map[string]bool{}
	visible := func(repo string) bool {
		first := auth.ProjectOf(repo)
		if first == repo { // a one-element name is in no project: decide on it alone
			return s.policy.Authorize(r.Context(), who, repo, auth.ActionPull) == nil
		}
		ok, seen := decided[first]
		if !seen {
			if s.upstreams[first] != nil {
				ok = s.policy.AuthorizeMirror(r.Context(), who, repo, auth.ActionPull) == nil
			} else {
				ok = s.policy.Authorize(r.Context(), who, repo, auth.ActionPull) == nil
			}
			decided[first] = ok
		}
		return ok
	}
	repos, more, err := s.store.Manifests.Repositories(r.Context(), last, n, visible)
	if err != nil {
		return err
	}
	if more && len(repos) > 0 {
		nextLink(w, "/v2/_catalog", n, repos[len(repos)-1])
	}
	return writeJSON(w, "application/json", map[string]any{"repositories": repos})
}

func (s *Server) handleListReferrers(w http.ResponseWriter, r *http.Request, req request) error {
	subject, err := parseDigest(req.ref)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	artifactType := q.Get("artifactType")
	descs, more, err := s.store.Manifests.Referrers(r.Context(), req.repo, subject, artifactType, q.Get("last"), maxPage, maxReferrersBytes)
	if err != nil {
		return err
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	if more {
		// The spec lets the referrers list be paginated with a Link header; clients follow it as given.
		next := url.Values{"last": {descs[len(descs)-1].Digest.String()}}
		if artifactType != "" {
			next.Set("artifactType", artifactType)
		}
		w.Header().Set("Link", fmt.Sprintf(`</v2/%s/referrers/%s?%s>; rel="next"`, req.repo, subject, next.Encode()))
	}
	index := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: descs}
	index.SchemaVersion = 2
	return writeJSON(w, ocispec.MediaTypeImageIndex, index)
}
