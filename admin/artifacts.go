package admin

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"cove/auth"
	"cove/cache"
	"cove/internal/webhook"
)

// Repositories, artifacts and tags in Harbor's shapes (HARBOR-API §1). A repository's path
// element {repo} is its name without the project, URL-encoded twice ("a%252Fb" for "a/b").

// Content is what the API changes of the store's repositories; cache.Manifests implements it.
type Content interface {
	Artifact(ctx context.Context, repo, ref string) (cache.Artifact, error)
	Read(ctx context.Context, repo, ref string) (cache.Manifest, []byte, error)
	SetDescription(ctx context.Context, repo, description string) error
	DeleteRepository(ctx context.Context, repo string) error
	DeleteArtifact(ctx context.Context, repo string, dgst digest.Digest) error
	Copy(ctx context.Context, from, ref, to string, tags []string) (digest.Digest, error)
	AddTag(ctx context.Context, repo, ref, tag string) error
	DeleteTag(ctx context.Context, repo, tag string) error
	Immutable(ctx context.Context, repo string, tags []string) (map[string]bool, error)
	ImmutableRules(ctx context.Context, project string) ([]cache.ImmutableRule, error)
	AddImmutableRule(ctx context.Context, r cache.ImmutableRule) (cache.ImmutableRule, error)
	UpdateImmutableRule(ctx context.Context, r cache.ImmutableRule) error
	DeleteImmutableRule(ctx context.Context, project string, id int64) error
}

// BlobReader reads small blobs, the configs of images; cache.Store implements it.
type BlobReader interface {
	ReadBlob(ctx context.Context, repo string, dgst digest.Digest, max int64) ([]byte, error)
}

// repository is a repository in Harbor's JSON shape.
type repository struct {
	ID            int64     `json:"id"`
	ProjectID     int64     `json:"project_id"`
	Name          string    `json:"name"`
	Description   string    `json:"description"`
	ArtifactCount int       `json:"artifact_count"`
	PullCount     int64     `json:"pull_count"`
	CreationTime  time.Time `json:"creation_time,omitzero"`
	UpdateTime    time.Time `json:"update_time,omitzero"`
	// PullTime and Size are cove's own: the last pull and the artifacts' sizes.
	PullTime time.Time `json:"pull_time,omitzero"`
	Size     int64     `json:"size"`
}

type tag struct {
	ID           int64     `json:"id"`
	RepositoryID int64     `json:"repository_id"`
	ArtifactID   int64     `json:"artifact_id"`
	Name         string    `json:"name"`
	PushTime     time.Time `json:"push_time"`
	PullTime     time.Time `json:"pull_time,omitzero"`
	Immutable    bool      `json:"immutable"`
}

// artifact is an artifact in Harbor's JSON shape.
type artifact struct {
	ID                int64             `json:"id"`
	Type              string            `json:"type"`
	MediaType         string            `json:"media_type"`
	ManifestMediaType string            `json:"manifest_media_type"`
	ProjectID         int64             `json:"project_id"`
	RepositoryID      int64             `json:"repository_id"`
	Digest            string            `json:"digest"`
	Size              int64             `json:"size"`
	PushTime          time.Time         `json:"push_time"`
	PullTime          time.Time         `json:"pull_time,omitzero"`
	ExtraAttrs        map[string]any    `json:"extra_attrs,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
	References        []reference       `json:"references,omitempty"`
	Tags              []tag             `json:"tags"`
}

// reference is a child of an index, with its platform.
type reference struct {
	ParentID    int64     `json:"parent_id"`
	ChildID     int64     `json:"child_id"`
	ChildDigest string    `json:"child_digest"`
	Platform    *platform `json:"platform,omitempty"`
}

type platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
}

// stableID is the id the API shows for a repository or an artifact: cove keeps none, so it is a
// hash of the name (53 bits, exact in JSON numbers), the same on every node and across restarts.
func stableID(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return int64(h.Sum64() >> 11)
}

func toRepository(projectID int64, r cache.RepoSummary) repository {
	return repository{ID: stableID(r.Name), ProjectID: projectID, Name: r.Name, Description: r.Description,
		ArtifactCount: r.Artifacts, PullCount: r.Pulls, CreationTime: r.Created, UpdateTime: r.Updated,
		PullTime: r.Pulled, Size: r.Size}
}

func toArtifact(projectID int64, repo string, a cache.Artifact, withTags bool) artifact {
	id := stableID(repo + "@" + a.Digest.String())
	out := artifact{ID: id, Type: artifactType(a.Manifest), MediaType: a.MediaType, ManifestMediaType: a.MediaType,
		ProjectID: projectID, RepositoryID: stableID(repo), Digest: a.Digest.String(), Size: a.ContentSize,
		PushTime: a.Created, PullTime: a.Pulled, Annotations: a.Annotations, Tags: []tag{}}
	if out.Size == 0 {
		out.Size = a.Size
	}
	if a.ArtifactType != "" {
		out.MediaType = a.ArtifactType // Harbor's media_type is the config's, or the artifact type
	}
	if withTags {
		for _, t := range a.Tags {
			out.Tags = append(out.Tags, tag{ID: stableID(repo + ":" + t), RepositoryID: out.RepositoryID, ArtifactID: id,
				Name: t, PushTime: a.Created, PullTime: a.Pulled})
		}
	}
	return out
}

// artifactType is Harbor's type of an artifact: IMAGE for images and their indexes, UNKNOWN for
// other artifacts (signatures, SBOMs, charts pushed as OCI artifacts).
func artifactType(m cache.Manifest) string {
	switch m.ArtifactType {
	case "", ocispec.MediaTypeImageConfig, "application/vnd.docker.container.image.v1+json":
	default:
		return "UNKNOWN"
	}
	switch m.MediaType {
	case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json":
		return "IMAGE"
	}
	return "UNKNOWN"
}

// repoPath is the project and repository a request names, once who may do action there.
func (s *Server) repoPath(r *http.Request, who auth.Principal, action auth.Action) (auth.Project, string, error) {
	p, err := s.visible(r.Context(), who, r.PathValue("name"), r.Header.Get("X-Is-Resource-Name") == "true")
	if err != nil {
		return p, "", err
	}
	rest, err := url.PathUnescape(r.PathValue("repo"))
	if err != nil || !repoName.MatchString(rest) {
		return p, "", &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST",
			Message: fmt.Sprintf("%q is not a repository name (lower-case path components of letters and digits, joined by . _ __ -; encode it twice: a%%252Fb for a/b)", rest)}
	}
	if action != auth.ActionPull {
		if err := s.auth.Policy.AuthorizeProject(r.Context(), who, p.Name, action); err != nil {
			return p, "", err
		}
	}
	return p, p.Name + "/" + rest, nil
}

// artifactOf is the repository and artifact (digest or tag) a request names, once who may do
// action in its project.
func (s *Server) artifactOf(r *http.Request, who auth.Principal, action auth.Action) (auth.Project, string, cache.Artifact, error) {
	if s.content == nil {
		return auth.Project{}, "", cache.Artifact{}, errNoContent
	}
	p, repo, err := s.repoPath(r, who, action)
	if err != nil {
		return p, repo, cache.Artifact{}, err
	}
	ref := r.PathValue("reference")
	a, err := s.content.Artifact(r.Context(), repo, ref)
	return p, repo, a, storeError(err, repo, ref)
}

func (s *Server) repository(ctx context.Context, p auth.Project, repo string) (repository, error) {
	sums, err := s.browse.RepositorySummaries(ctx, repo)
	if err != nil {
		return repository{}, err
	}
	for _, sum := range sums {
		if sum.Name == repo {
			return toRepository(p.ID, sum), nil
		}
	}
	return repository{}, notFound("repository %s not found", repo)
}

// errNoContent answers the repository endpoints of a server built without the store's content.
var errNoContent = &apiError{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "repositories are not available on this server"}

func notFound(format string, a ...any) error {
	return &apiError{Status: http.StatusNotFound, Code: "NOT_FOUND", Message: fmt.Sprintf(format, a...)}
}

// storeError names what was not found in a 404 of the store.
func storeError(err error, repo, ref string) error {
	switch {
	case errors.Is(err, cache.ErrNameUnknown):
		return notFound("repository %s not found", repo)
	case errors.Is(err, cache.ErrManifestUnknown):
		return notFound("artifact %s not found in %s", ref, repo)
	case errors.Is(err, cache.ErrTagImmutable):
		return &apiError{Status: http.StatusPreconditionFailed, Code: "PRECONDITION", Message: err.Error()}
	case errors.Is(err, cache.ErrTagExists):
		return &apiError{Status: http.StatusConflict, Code: "CONFLICT", Message: err.Error() + " already"}
	}
	return err
}

func (s *Server) handleListRepositories(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, err := s.visible(r.Context(), who, r.PathValue("name"), r.Header.Get("X-Is-Resource-Name") == "true")
	if err != nil {
		return err
	}
	sums, err := s.browse.RepositorySummaries(r.Context(), p.Name+"/")
	if err != nil {
		return err
	}
	out := []repository{}
	for _, sum := range sums {
		out = append(out, toRepository(p.ID, sum))
	}
	return s.writeRepositories(w, r, out)
}

// handleListAllRepositories lists the repositories of every project the caller may see.
func (s *Server) handleListAllRepositories(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	projects, err := s.auth.Policy.Projects(r.Context(), who, func(auth.Project) bool { return true })
	if err != nil {
		return err
	}
	out := []repository{}
	for _, p := range projects {
		sums, err := s.browse.RepositorySummaries(r.Context(), p.Name+"/")
		if err != nil {
			return err
		}
		for _, sum := range sums {
			out = append(out, toRepository(p.ID, sum))
		}
	}
	return s.writeRepositories(w, r, out)
}

// writeRepositories filters (q=name=~x or name=x), sorts (sort=name, -update_time, …) and pages a
// list of repositories.
func (s *Server) writeRepositories(w http.ResponseWriter, r *http.Request, all []repository) error {
	q := r.URL.Query()
	filter, err := parseListQuery(q.Get("q"))
	if err != nil {
		return err
	}
	var out []repository
	for _, repo := range all {
		if filter.match("name", repo.Name) {
			out = append(out, repo)
		}
	}
	by := map[string]func(a, b repository) int{
		"name":          func(a, b repository) int { return cmp.Compare(a.Name, b.Name) },
		"creation_time": func(a, b repository) int { return a.CreationTime.Compare(b.CreationTime) },
		"update_time":   func(a, b repository) int { return a.UpdateTime.Compare(b.UpdateTime) },
		"pull_count":    func(a, b repository) int { return cmp.Compare(a.PullCount, b.PullCount) },
		"artifact_count": func(a, b repository) int {
			return cmp.Compare(a.ArtifactCount, b.ArtifactCount)
		},
	}
	if err := sortBy(out, q.Get("sort"), by); err != nil {
		return err
	}
	return writePage(w, r, out)
}

func (s *Server) handleGetRepository(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, repo, err := s.repoPath(r, who, auth.ActionPull)
	if err != nil {
		return err
	}
	out, err := s.repository(r.Context(), p, repo)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// handleUpdateRepository sets a repository's description, the one field Harbor lets one change.
func (s *Server) handleUpdateRepository(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if s.content == nil {
		return errNoContent
	}
	_, repo, err := s.repoPath(r, who, auth.ActionPush)
	if err != nil {
		return err
	}
	var req descriptionReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if len(req.Description) > 1024 {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: "the description is longer than 1024 bytes"}
	}
	if err := s.content.SetDescription(r.Context(), repo, req.Description); err != nil {
		return storeError(err, repo, "")
	}
	s.record(r, who, "update", "repository", repo, "description")
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleDeleteRepository deletes a repository with every artifact and tag in it (maintainers and
// up, as Harbor); its blobs go at the next garbage collection.
func (s *Server) handleDeleteRepository(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if s.content == nil {
		return errNoContent
	}
	_, repo, err := s.repoPath(r, who, auth.ActionDelete)
	if err != nil {
		return err
	}
	var gone []cache.Artifact // for the webhooks: a DELETE_ARTIFACT each, as Harbor
	if s.events != nil {
		gone, _ = s.browse.Artifacts(r.Context(), repo)
	}
	if err := s.content.DeleteRepository(r.Context(), repo); err != nil {
		return storeError(err, repo, "")
	}
	s.record(r, who, "delete", "repository", repo, "")
	for _, a := range gone {
		s.event(r, who, webhook.DeleteArtifact, repo, a.Digest.String(), firstTag(a.Tags))
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleListArtifacts lists a repository's artifacts: with_tag (default true), q (tags=*,
// tags=nil, digest=..., media_type=...), sort (push_time, -push_time, ...), page and page_size.
func (s *Server) handleListArtifacts(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, repo, err := s.repoPath(r, who, auth.ActionPull)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	filter, err := parseListQuery(q.Get("q"))
	if err != nil {
		return err
	}
	arts, err := s.browse.Artifacts(r.Context(), repo)
	if err != nil {
		return err
	}
	withTag := q.Get("with_tag") != "false"
	out := []artifact{}
	for _, a := range arts {
		if !filter.match("digest", a.Digest.String()) || !filter.match("media_type", a.MediaType) || !filter.matchTags(a.Tags) {
			continue
		}
		out = append(out, toArtifact(p.ID, repo, a, withTag))
	}
	by := map[string]func(a, b artifact) int{
		"push_time": func(a, b artifact) int { return a.PushTime.Compare(b.PushTime) },
		"pull_time": func(a, b artifact) int { return a.PullTime.Compare(b.PullTime) },
		"size":      func(a, b artifact) int { return cmp.Compare(a.Size, b.Size) },
		"digest":    func(a, b artifact) int { return cmp.Compare(a.Digest, b.Digest) },
	}
	if err := sortBy(out, q.Get("sort"), by); err != nil {
		return err
	}
	for i := range out {
		if err := s.markImmutable(r.Context(), repo, out[i].Tags); err != nil {
			return err
		}
	}
	return writePage(w, r, out)
}

// markImmutable sets the immutable flag of tags, which are repo's, by its project's rules.
func (s *Server) markImmutable(ctx context.Context, repo string, tags []tag) error {
	names := make([]string, len(tags))
	for i, t := range tags {
		names[i] = t.Name
	}
	if s.content == nil {
		return nil
	}
	imm, err := s.content.Immutable(ctx, repo, names)
	for i := range tags {
		tags[i].Immutable = imm[tags[i].Name]
	}
	return err
}

// maxConfig bounds the image config the API reads for extra_attrs.
const maxConfig = 1 << 20

// handleGetArtifact returns one artifact by digest or tag, with its references (an index's
// children and their platforms) and extra_attrs (an image config's os, architecture, created,
// author and config).
func (s *Server) handleGetArtifact(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, repo, a, err := s.artifactOf(r, who, auth.ActionPull)
	if err != nil {
		return err
	}
	ref := r.PathValue("reference")
	out := toArtifact(p.ID, repo, a, r.URL.Query().Get("with_tag") != "false")
	if err := s.markImmutable(r.Context(), repo, out.Tags); err != nil {
		return err
	}
	_, body, err := s.content.Read(r.Context(), repo, a.Digest.String())
	if err != nil {
		return storeError(err, repo, ref)
	}
	var m struct {
		Config    ocispec.Descriptor   `json:"config"`
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	if json.Unmarshal(body, &m) == nil {
		for _, c := range m.Manifests {
			ref := reference{ParentID: out.ID, ChildID: stableID(repo + "@" + c.Digest.String()), ChildDigest: c.Digest.String()}
			if c.Platform != nil {
				ref.Platform = &platform{Architecture: c.Platform.Architecture, OS: c.Platform.OS, OSVersion: c.Platform.OSVersion,
					OSFeatures: c.Platform.OSFeatures, Variant: c.Platform.Variant}
			}
			out.References = append(out.References, ref)
		}
		if m.Config.Digest != "" && s.blobs != nil {
			if cfg, err := s.blobs.ReadBlob(r.Context(), repo, m.Config.Digest, maxConfig); err == nil {
				out.ExtraAttrs = extraAttrs(cfg)
			}
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// extraAttrs is what Harbor shows of an image's config; nil for a config that is not an image's.
func extraAttrs(cfg []byte) map[string]any {
	var c struct {
		Architecture string          `json:"architecture"`
		OS           string          `json:"os"`
		Created      *time.Time      `json:"created"`
		Author       string          `json:"author"`
		Config       json.RawMessage `json:"config"`
	}
	if json.Unmarshal(cfg, &c) != nil || (c.OS == "" && c.Architecture == "") {
		return nil
	}
	out := map[string]any{"architecture": c.Architecture, "os": c.OS, "author": c.Author}
	if c.Created != nil && !c.Created.IsZero() {
		out["created"] = c.Created
	}
	if len(c.Config) > 0 {
		out["config"] = c.Config
	}
	return out
}

// handleDeleteArtifact deletes an artifact, by digest or by one of its tags, with all its tags and,
// for an index, its untagged children (maintainers and up, as Harbor).
func (s *Server) handleDeleteArtifact(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	_, repo, a, err := s.artifactOf(r, who, auth.ActionDelete)
	if err != nil {
		return err
	}
	ref := r.PathValue("reference")
	if err := s.content.DeleteArtifact(r.Context(), repo, a.Digest); err != nil {
		return storeError(err, repo, ref)
	}
	s.record(r, who, "delete", "artifact", repo+"@"+a.Digest.String(), strings.Join(a.Tags, ","))
	s.event(r, who, webhook.DeleteArtifact, repo, a.Digest.String(), firstTag(a.Tags))
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleCopyArtifact copies an artifact into this repository: from=project/repository:tag or
// project/repository@digest, with the source artifact's tags (pull on the source, push here).
func (s *Server) handleCopyArtifact(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if s.content == nil {
		return errNoContent
	}
	_, repo, err := s.repoPath(r, who, auth.ActionPush)
	if err != nil {
		return err
	}
	from := r.URL.Query().Get("from")
	srcRepo, ref, ok := strings.Cut(from, "@")
	if !ok {
		i := strings.LastIndex(from, ":")
		if i < 0 || strings.Contains(from[i:], "/") {
			return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: fmt.Sprintf("from=%q: want project/repository:tag or project/repository@digest", from)}
		}
		srcRepo, ref = from[:i], from[i+1:]
	}
	srcProject, _, ok := strings.Cut(srcRepo, "/")
	if !ok {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: fmt.Sprintf("from=%q: want project/repository:tag or project/repository@digest", from)}
	}
	if _, err := s.visible(r.Context(), who, srcProject, true); err != nil {
		return err
	}
	a, err := s.content.Artifact(r.Context(), srcRepo, ref)
	if err != nil {
		return storeError(err, srcRepo, ref)
	}
	dgst, err := s.content.Copy(r.Context(), srcRepo, a.Digest.String(), repo, a.Tags)
	var missing *cache.MissingError
	switch {
	case errors.As(err, &missing):
		return &apiError{Status: http.StatusNotFound, Code: "NOT_FOUND", Message: fmt.Sprintf("the blob %s of %s is not stored (a mirrored image is copied once it has been pulled whole)", missing.Digest, from)}
	case err != nil:
		return storeError(err, srcRepo, ref)
	}
	s.record(r, who, "create", "artifact", repo+"@"+dgst.String(), "copied from "+from)
	w.Header().Set("Location", r.URL.Path+"/"+dgst.String())
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (s *Server) handleListTags(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	p, repo, a, err := s.artifactOf(r, who, auth.ActionPull)
	if err != nil {
		return err
	}
	tags := toArtifact(p.ID, repo, a, true).Tags
	if err := s.markImmutable(r.Context(), repo, tags); err != nil {
		return err
	}
	filter, err := parseListQuery(r.URL.Query().Get("q"))
	if err != nil {
		return err
	}
	out := []tag{}
	for _, t := range tags {
		if filter.match("name", t.Name) {
			out = append(out, t)
		}
	}
	by := map[string]func(a, b tag) int{
		"name":      func(a, b tag) int { return cmp.Compare(a.Name, b.Name) },
		"push_time": func(a, b tag) int { return a.PushTime.Compare(b.PushTime) },
	}
	if err := sortBy(out, r.URL.Query().Get("sort"), by); err != nil {
		return err
	}
	return writePage(w, r, out)
}

// repoName is the grammar of a repository name within its project (OCI distribution spec): a
// copy into a name such as "../p1/x" or one holding NUL must not make such a repository.
var repoName = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// tagName is the grammar of a tag (OCI distribution spec).
var tagName = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

// handleAddTag adds a tag to an artifact (developers and up); a tag that exists is a conflict.
func (s *Server) handleAddTag(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	if s.content == nil {
		return errNoContent
	}
	_, repo, err := s.repoPath(r, who, auth.ActionPush)
	if err != nil {
		return err
	}
	var req tagReq
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if !tagName.MatchString(req.Name) {
		return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: fmt.Sprintf("%q is not a tag: letters, digits, _ . - up to 128, not starting with . or -", req.Name)}
	}
	ref := r.PathValue("reference")
	if err := s.content.AddTag(r.Context(), repo, ref, req.Name); err != nil {
		return storeError(err, repo, ref)
	}
	s.record(r, who, "create", "tag", repo+":"+req.Name, ref)
	w.Header().Set("Location", r.URL.Path+"/"+req.Name)
	w.WriteHeader(http.StatusCreated)
	return nil
}

// handleDeleteTag removes a tag of an artifact (maintainers and up); the artifact stays.
func (s *Server) handleDeleteTag(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	_, repo, a, err := s.artifactOf(r, who, auth.ActionDelete)
	if err != nil {
		return err
	}
	ref, name := r.PathValue("reference"), r.PathValue("tag")
	if !slices.Contains(a.Tags, name) {
		return notFound("tag %s not found on %s@%s", name, repo, a.Digest)
	}
	if err := s.content.DeleteTag(r.Context(), repo, name); err != nil {
		return storeError(err, repo, ref)
	}
	s.record(r, who, "delete", "tag", repo+":"+name, a.Digest.String())
	w.WriteHeader(http.StatusOK)
	return nil
}

// firstTag is the first of tags, "" when there are none.
func firstTag(tags []string) string {
	if len(tags) == 0 {
		return ""
	}
	return tags[0]
}
