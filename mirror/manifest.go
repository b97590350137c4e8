package mirror

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"cove/cache"
	"cove/internal/webhook"
)

// The manifest media types cove stores. Docker schema 1 is long deprecated and refused.
const (
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerForeign  = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// manifestDoc is the part of a manifest or index that the registry reads.
type manifestDoc struct {
	SchemaVersion int                  `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	ArtifactType  string               `json:"artifactType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Subject       *ocispec.Descriptor  `json:"subject"`
	Annotations   map[string]string    `json:"annotations"`
}

func (s *Server) handleGetManifest(w http.ResponseWriter, r *http.Request, req request) error {
	if err := checkRef(req.ref); err != nil {
		return err
	}
	m, body, err := s.readManifest(r, req.repo, req.ref)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", m.MediaType)
	h.Set("Docker-Content-Digest", m.Digest.String())
	h.Set("Etag", `"`+m.Digest.String()+`"`)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
		s.record(r, req, "pull", req.repo+"@"+m.Digest.String())
		s.event(r, req, webhook.PullArtifact, m.Digest, refTag(req.ref))
	}
	return nil
}

// refTag is ref when it is a tag, "" when it is a digest.
func refTag(ref string) string {
	if strings.Contains(ref, ":") {
		return ""
	}
	return ref
}

// readManifest reads a stored manifest for a client: a GET counts as a pull (Harbor's pull count
// and time, and the cache's LRU), a HEAD does not (clients HEAD a tag, then GET its digest), nor
// does a warm's.
func (s *Server) readManifest(r *http.Request, repo, ref string) (cache.Manifest, []byte, error) {
	if r.Method == http.MethodHead || warming(r) {
		return s.store.Manifests.Read(r.Context(), repo, ref)
	}
	return s.store.Manifests.Get(r.Context(), repo, ref)
}

// checkRef refuses a reference that is neither a tag nor a well-formed digest.
func checkRef(ref string) error {
	if strings.Contains(ref, ":") {
		if _, err := digest.Parse(ref); err != nil {
			return newError(http.StatusBadRequest, CodeDigestInvalid, "invalid digest %q", ref)
		}
		return nil
	}
	if !validTag(ref) {
		return newError(http.StatusBadRequest, CodeTagInvalid, "invalid tag %q", ref)
	}
	return nil
}

func (s *Server) handlePutManifest(w http.ResponseWriter, r *http.Request, req request) error {
	if err := checkRef(req.ref); err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, cache.MaxManifestSize))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return newError(http.StatusRequestEntityTooLarge, CodeSizeInvalid, "manifest exceeds the limit of %d bytes", cache.MaxManifestSize)
		}
		return newError(http.StatusBadRequest, CodeManifestInvalid, "reading manifest: %v", err)
	}
	m, err := parseManifest(r.Header.Get("Content-Type"), body)
	if err != nil {
		return err
	}
	var tags []string
	if dgst, err := digest.Parse(req.ref); err == nil {
		if dgst.Algorithm() != digest.SHA256 && dgst.Algorithm() != digest.SHA512 {
			return newError(http.StatusBadRequest, CodeDigestInvalid, "digest algorithm %s is not supported (sha256, sha512)", dgst.Algorithm())
		}
		m.Digest = dgst.Algorithm().FromBytes(body)
		if m.Digest != dgst {
			return newError(http.StatusBadRequest, CodeDigestInvalid, "manifest content hashes to %s, not %s", m.Digest, dgst)
		}
		// A push by digest may name tags as ?tag= parameters (distribution spec v1.1.1).
		tags = r.URL.Query()["tag"]
		for _, t := range tags {
			if !validTag(t) {
				return newError(http.StatusBadRequest, CodeTagInvalid, "invalid tag %q", t)
			}
		}
	} else {
		m.Digest = digest.SHA256.FromBytes(body)
		tags = []string{req.ref}
	}
	if err := s.store.Manifests.Put(r.Context(), req.repo, m, body, tags); err != nil {
		return err
	}
	h := w.Header()
	h.Set("Location", fmt.Sprintf("/v2/%s/manifests/%s", req.repo, m.Digest))
	h.Set("Docker-Content-Digest", m.Digest.String())
	if m.Subject != "" {
		h.Set("OCI-Subject", m.Subject.String())
	}
	for _, t := range tags {
		h.Add("OCI-Tag", t)
	}
	s.record(r, req, "push", req.repo+":"+req.ref)
	tag := ""
	if len(tags) > 0 {
		tag = tags[0]
	}
	s.event(r, req, webhook.PushArtifact, m.Digest, tag)
	w.WriteHeader(http.StatusCreated)
	return nil
}

// parseManifest checks a manifest body against its Content-Type and returns what the store needs:
// the blobs and child manifests the repository must hold, the subject and the artifact type.
func parseManifest(contentType string, body []byte) (cache.Manifest, error) {
	invalid := func(format string, args ...any) (cache.Manifest, error) {
		return cache.Manifest{}, newError(http.StatusBadRequest, CodeManifestInvalid, format, args...)
	}
	var doc manifestDoc
	if !utf8.Valid(body) {
		// JSON is UTF-8 (RFC 8259); Go's decoder would take invalid bytes and store them.
		return invalid("manifest is not valid UTF-8")
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return invalid("manifest is not valid JSON: %v", err)
	}
	mt := ""
	if contentType != "" {
		parsed, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return invalid("invalid Content-Type %q", contentType)
		}
		mt = parsed
	}
	switch {
	case doc.MediaType != "" && mt != "" && doc.MediaType != mt:
		return invalid("Content-Type %q does not match the manifest's mediaType %q", mt, doc.MediaType)
	case mt == "":
		mt = doc.MediaType
	}
	if doc.SchemaVersion != 2 {
		return invalid("schemaVersion must be 2")
	}
	m := cache.Manifest{MediaType: mt, ArtifactType: doc.ArtifactType, Annotations: doc.Annotations}
	if doc.Subject != nil {
		if err := checkDescriptor(*doc.Subject); err != nil {
			return invalid("subject: %v", err)
		}
		m.Subject = doc.Subject.Digest
	}
	switch mt {
	case ocispec.MediaTypeImageManifest, mediaTypeDockerManifest:
		if doc.Config == nil {
			return invalid("an image manifest needs a config descriptor")
		}
		if doc.Manifests != nil {
			return invalid("an image manifest has no manifests list")
		}
		for i, d := range append([]ocispec.Descriptor{*doc.Config}, doc.Layers...) {
			if err := checkDescriptor(d); err != nil {
				return invalid("descriptor %d: %v", i, err)
			}
			m.ContentSize += d.Size
			if !nondistributable(d) {
				m.Blobs = append(m.Blobs, d.Digest)
			}
		}
		if m.ArtifactType == "" {
			m.ArtifactType = doc.Config.MediaType
		}
	case ocispec.MediaTypeImageIndex, mediaTypeDockerList:
		if doc.Config != nil || doc.Layers != nil {
			return invalid("an index has no config or layers")
		}
		for i, d := range doc.Manifests {
			if err := checkDescriptor(d); err != nil {
				return invalid("manifest descriptor %d: %v", i, err)
			}
			m.ContentSize += d.Size
			m.Children = append(m.Children, d.Digest)
		}
	default:
		return invalid("unsupported manifest media type %q", mt)
	}
	m.ContentSize += int64(len(body))
	return m, nil
}

// checkDescriptor checks a descriptor's digest and size, and its embedded data when present.
func checkDescriptor(d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("invalid digest %q: %v", d.Digest, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("negative size %d", d.Size)
	}
	if d.Data != nil {
		if int64(len(d.Data)) != d.Size || d.Digest.Algorithm().FromBytes(d.Data) != d.Digest {
			return fmt.Errorf("embedded data does not match digest %s and size %d", d.Digest, d.Size)
		}
	}
	return nil
}

// nondistributable reports whether a layer may live elsewhere: the registry does not require it.
func nondistributable(d ocispec.Descriptor) bool {
	return strings.Contains(d.MediaType, ".nondistributable.") || d.MediaType == mediaTypeDockerForeign
}

func (s *Server) handleDeleteManifest(w http.ResponseWriter, r *http.Request, req request) error {
	if err := checkRef(req.ref); err != nil {
		return err
	}
	var err error
	dgst, perr := digest.Parse(req.ref)
	if perr == nil {
		err = s.store.Manifests.Delete(r.Context(), req.repo, dgst)
	} else {
		err = s.store.Manifests.DeleteTag(r.Context(), req.repo, req.ref)
	}
	if err != nil {
		return err
	}
	s.record(r, req, "delete", req.repo+":"+req.ref)
	s.event(r, req, webhook.DeleteArtifact, dgst, refTag(req.ref))
	w.WriteHeader(http.StatusAccepted)
	return nil
}
