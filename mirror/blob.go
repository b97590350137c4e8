package mirror

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"cove/auth"
	"cove/cache"
)

// parseDigest reads a digest from a path or query, answering DIGEST_INVALID when it is malformed.
func parseDigest(s string) (digest.Digest, error) {
	dgst, err := digest.Parse(s)
	if err != nil {
		return "", newError(http.StatusBadRequest, CodeDigestInvalid, "invalid digest %q", s)
	}
	return dgst, nil
}

// redirectBlob answers a GET of the blob dgst, which repo may read, with a 307 to a presigned URL
// of the shared blob store, when BlobRedirect is set; it reports whether it answered.
func (s *Server) redirectBlob(w http.ResponseWriter, r *http.Request, repo string, dgst digest.Digest) (bool, error) {
	if s.redirect <= 0 || r.Method != http.MethodGet {
		return false, nil
	}
	if _, err := s.store.StatBlob(r.Context(), repo, dgst); err != nil {
		return false, nil // the caller's OpenBlob says why
	}
	u, ok, err := s.store.BlobURL(r.Context(), dgst, s.redirect)
	if !ok || err != nil {
		return false, err
	}
	w.Header().Set("Docker-Content-Digest", dgst.String())
	http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
	return true, nil
}

func (s *Server) handleGetBlob(w http.ResponseWriter, r *http.Request, req request) error {
	dgst, err := parseDigest(req.ref)
	if err != nil {
		return err
	}
	if done, err := s.redirectBlob(w, r, req.repo, dgst); done || err != nil {
		return err
	}
	f, err := s.store.OpenBlob(r.Context(), req.repo, dgst)
	if errors.Is(err, cache.ErrNotLocal) {
		return s.serveShared(w, r, req.repo, dgst)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	h := w.Header()
	// Blobs are never active content: a fixed type, and nosniff.
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Docker-Content-Digest", dgst.String())
	h.Set("Etag", `"`+dgst.String()+`"`)
	h.Set("Cache-Control", "max-age=31536000, immutable")
	serveFile(w, r, f.File)
	return nil
}

// serveFile answers a blob from its file: http.ServeContent answers Range and HEAD and, handed
// the *os.File itself, copies with sendfile. sendfile stays because it measured fastest here
// (#16, point 7; BenchmarkWarmBlob, and bench's BenchmarkLimit): in its place, a copy through
// user space with a 256 KiB buffer made 0.78 to 1.07 × sendfile's throughput with one client and
// 0.53 to 0.85 × with 16, with more memory; splice, its only rival, is no path net/http offers
// without taking the connection over; and a small fixed socket send buffer, which helps on
// loopback, would cap every client across a WAN.
//
// A suffix range of zero bytes ("bytes=-0") is unsatisfiable (RFC 9110 14.1.1), where
// ServeContent would answer an empty 206: it is dropped from the range set, and a set of
// nothing else is a 416.
func serveFile(w http.ResponseWriter, r *http.Request, f *os.File) {
	if rng := r.Header.Get("Range"); rng != "" {
		if rest, dropped := dropZeroSuffixRanges(rng); dropped {
			if rest == "" {
				size := int64(-1)
				if fi, err := f.Stat(); err == nil {
					size = fi.Size()
				}
				w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
				w.Header().Del("Content-Type")
				w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
				return
			}
			r = r.Clone(r.Context())
			r.Header.Set("Range", "bytes="+rest)
		}
	}
	http.ServeContent(w, r, "", time.Time{}, f)
}

// dropZeroSuffixRanges removes the suffix ranges of zero bytes ("-0") from a Range header's
// byte-range set: it returns the other ranges, and whether any was removed.
func dropZeroSuffixRanges(v string) (rest string, dropped bool) {
	spec, ok := strings.CutPrefix(strings.TrimSpace(v), "bytes=")
	if !ok {
		return v, false
	}
	var keep []string
	for _, part := range strings.Split(spec, ",") {
		if n, ok := strings.CutPrefix(strings.TrimSpace(part), "-"); ok && strings.Trim(n, "0") == "" && n != "" {
			dropped = true
			continue
		}
		keep = append(keep, strings.TrimSpace(part))
	}
	return strings.Join(keep, ","), dropped
}

func (s *Server) handleDeleteBlob(w http.ResponseWriter, r *http.Request, req request) error {
	dgst, err := parseDigest(req.ref)
	if err != nil {
		return err
	}
	if err := s.store.UnlinkBlob(r.Context(), req.repo, dgst); err != nil {
		return err
	}
	s.record(r, req, "delete", req.repo+"@"+dgst.String())
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (s *Server) handleStartUpload(w http.ResponseWriter, r *http.Request, req request) error {
	q := r.URL.Query()
	if mount := q.Get("mount"); mount != "" {
		created, err := s.mount(w, r, req, mount, q.Get("from"))
		if created || err != nil {
			return err
		}
		// Not mountable: fall back to an ordinary upload session, as the spec asks.
	}
	if d := q.Get("digest"); d != "" {
		dgst, err := parseDigest(d)
		if err != nil {
			return err
		}
		info, err := s.store.PutBlob(r.Context(), req.repo, dgst, r.Body, r.ContentLength)
		if err != nil {
			return err
		}
		blobCreated(w, req.repo, info.Digest)
		return nil
	}
	id, err := s.store.Uploads.New(r.Context(), req.repo, uploadOwner(r, req.who))
	if err != nil {
		return err
	}
	uploadStatus(w, req.repo, id, 0, http.StatusAccepted)
	return nil
}

// mount links a blob of another repository into req.repo when the caller may read it there. It
// reports whether it did; when it did not, nothing is revealed about the source.
func (s *Server) mount(w http.ResponseWriter, r *http.Request, req request, mount, from string) (bool, error) {
	dgst, err := digest.Parse(mount)
	if err != nil || from == "" || !validName(from) {
		return false, nil // a digest alone is not a capability: no anonymous mounts
	}
	if err := s.policy.Authorize(r.Context(), req.who, from, auth.ActionPull); err != nil {
		// A token that never asked about the source: send the client for one that does, as
		// Distribution does; a client refused pull there falls back to an upload below.
		if req.who.Token && !req.who.Asked("repository", from) {
			return false, &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: "authentication required",
				challenge: s.auth.Challenge(r, auth.RepositoryScope(req.repo, auth.ActionPull, auth.ActionPush), auth.RepositoryScope(from, auth.ActionPull))}
		}
		return false, nil
	}
	if _, err := s.store.StatBlob(r.Context(), from, dgst); err != nil {
		return false, nil
	}
	if _, err := s.store.LinkBlob(r.Context(), req.repo, dgst); err != nil {
		return false, err
	}
	blobCreated(w, req.repo, dgst)
	return true, nil
}

// uploadOwner is who an upload session counts against: the account, or for a token without one
// (an anonymous push to... nothing: anonymous callers cannot push) the address.
func uploadOwner(r *http.Request, who auth.Principal) string {
	if who.Name != "" {
		return who.Name
	}
	return "address " + auth.RemoteHost(r)
}

func blobCreated(w http.ResponseWriter, repo string, dgst digest.Digest) {
	h := w.Header()
	h.Set("Location", fmt.Sprintf("/v2/%s/blobs/%s", repo, dgst))
	h.Set("Docker-Content-Digest", dgst.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// uploadStatus writes where an upload session is and how much it holds. The Range header is
// inclusive, "0-0" for an empty upload as Distribution has it.
func uploadStatus(w http.ResponseWriter, repo, id string, size int64, status int) {
	end := size - 1
	if end < 0 {
		end = 0
	}
	h := w.Header()
	h.Set("Location", fmt.Sprintf("/v2/%s/blobs/uploads/%s", repo, id))
	h.Set("Range", fmt.Sprintf("0-%d", end))
	h.Set("Docker-Upload-UUID", id)
	h.Set("Content-Length", "0")
	w.WriteHeader(status)
}

func (s *Server) handleGetUpload(w http.ResponseWriter, r *http.Request, req request) error {
	size, err := s.store.Uploads.Size(r.Context(), req.repo, req.ref)
	if err != nil {
		return err
	}
	uploadStatus(w, req.repo, req.ref, size, http.StatusNoContent)
	return nil
}

// contentRangeRE is the chunk range of a PATCH: inclusive start and end, without a unit.
var contentRangeRE = regexp.MustCompile(`^(?:bytes[ =])?([0-9]{1,18})-([0-9]{1,18})$`)

// parseContentRange reads the Content-Range of a chunk: "<start>-<end>", inclusive, optionally
// with a "bytes " or "bytes=" unit as some clients send it.
func parseContentRange(v string) (start, end int64, err error) {
	m := contentRangeRE.FindStringSubmatch(v)
	if m == nil {
		return 0, 0, newError(http.StatusBadRequest, CodeBlobUploadInvalid, "invalid Content-Range %q: want <start>-<end>", v)
	}
	start, _ = strconv.ParseInt(m[1], 10, 64)
	end, _ = strconv.ParseInt(m[2], 10, 64)
	if end < start {
		return 0, 0, newError(http.StatusRequestedRangeNotSatisfiable, CodeBlobUploadInvalid, "invalid Content-Range %q: end before start", v)
	}
	return start, end, nil
}

// chunk returns the body of a PATCH or PUT with the offset it claims (-1 when it claims none),
// read exactly to the announced length.
func chunk(r *http.Request) (start int64, body io.Reader, err error) {
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		return -1, r.Body, nil
	}
	start, end, err := parseContentRange(cr)
	if err != nil {
		return 0, nil, err
	}
	n := end - start + 1
	if r.ContentLength >= 0 && r.ContentLength != n {
		return 0, nil, newError(http.StatusBadRequest, CodeBlobUploadInvalid, "Content-Length %d does not match Content-Range %q", r.ContentLength, cr)
	}
	return start, &exactReader{r: io.LimitReader(r.Body, n), left: n}, nil
}

// exactReader fails with io.ErrUnexpectedEOF when its source ends before left bytes.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		return n, &BodyError{Err: io.ErrUnexpectedEOF}
	}
	return n, err
}

func (s *Server) handlePatchUpload(w http.ResponseWriter, r *http.Request, req request) error {
	start, body, err := chunk(r)
	if err != nil {
		return err
	}
	size, err := s.store.Uploads.Append(r.Context(), req.repo, req.ref, start, body)
	if err != nil {
		return s.uploadError(w, req, size, err)
	}
	uploadStatus(w, req.repo, req.ref, size, http.StatusAccepted)
	return nil
}

// uploadError adds the session's location and range to a refused chunk, so the client can resume.
func (s *Server) uploadError(w http.ResponseWriter, req request, size int64, err error) error {
	e := toError(err)
	if e.Status == http.StatusRequestedRangeNotSatisfiable {
		end := max(size-1, 0)
		w.Header().Set("Location", fmt.Sprintf("/v2/%s/blobs/uploads/%s", req.repo, req.ref))
		w.Header().Set("Range", fmt.Sprintf("0-%d", end))
	}
	return e
}

func (s *Server) handlePutUpload(w http.ResponseWriter, r *http.Request, req request) error {
	d := r.URL.Query().Get("digest")
	if d == "" {
		return newError(http.StatusBadRequest, CodeDigestInvalid, "the digest query parameter is required to finish an upload")
	}
	dgst, err := parseDigest(d)
	if err != nil {
		return err
	}
	start, body, err := chunk(r)
	if err != nil {
		return err
	}
	if r.ContentLength == 0 {
		body = nil
	}
	info, err := s.store.Uploads.Commit(r.Context(), req.repo, req.ref, dgst, start, body)
	if err != nil {
		size, _ := s.store.Uploads.Size(r.Context(), req.repo, req.ref)
		return s.uploadError(w, req, size, err)
	}
	blobCreated(w, req.repo, info.Digest)
	return nil
}

func (s *Server) handleDeleteUpload(w http.ResponseWriter, r *http.Request, req request) error {
	if err := s.store.Uploads.Cancel(r.Context(), req.repo, req.ref); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
