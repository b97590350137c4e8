package mirror

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// handleMirrorReferrers passes the upstream's referrers list through. An upstream without the
// referrers API has, as far as cove can tell, no referrers: an empty list.
func (s *Server) handleMirrorReferrers(w http.ResponseWriter, r *http.Request, req request) error {
	subject, err := parseDigest(req.ref)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.budget(req.up))
	defer cancel()
	path := "referrers/" + subject.String()
	if at := r.URL.Query().Get("artifactType"); at != "" {
		path += "?" + url.Values{"artifactType": {at}}.Encode()
	}
	empty := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	empty.SchemaVersion = 2
	resp, err := req.up.do(ctx, http.MethodGet, req.upRepo, path, nil)
	if isNotFound(err) {
		return writeJSON(w, ocispec.MediaTypeImageIndex, empty)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var index ocispec.Index
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxReferrersBytes)).Decode(&index); err != nil {
		return &UpstreamError{Upstream: req.up.Name, Status: resp.StatusCode, Cause: fmt.Errorf("referrers: %w", err)}
	}
	if f := resp.Header.Get("OCI-Filters-Applied"); f != "" {
		w.Header().Set("OCI-Filters-Applied", f)
	}
	if index.Manifests == nil {
		index.Manifests = []ocispec.Descriptor{}
	}
	return writeJSON(w, ocispec.MediaTypeImageIndex, index)
}
