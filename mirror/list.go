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

// maxPage caps n on the tags and catalog endpoints; a client asking for more gets a Link to the rest.
const maxPage = 1000

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
	tags, more, err := s.store.Tags(r.Context(), req.repo, last, n)
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
	visible := func(repo string) bool {
		return s.auth.Authorize(r.Context(), req.who, repo, auth.ActionPull) == nil
	}
	repos, more, err := s.store.Repositories(r.Context(), last, n, visible)
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
	artifactType := r.URL.Query().Get("artifactType")
	descs, err := s.store.Referrers(r.Context(), req.repo, subject, artifactType)
	if err != nil {
		return err
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	index := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: descs}
	index.SchemaVersion = 2
	return writeJSON(w, ocispec.MediaTypeImageIndex, index)
}
