package mirror

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"syscall"

	"cove/auth"
	"cove/cache"
)

// Code is an OCI distribution error code ("Error Codes" in the spec).
type Code string

// The error codes of the OCI distribution spec v1.1, spelled as the spec spells them.
const (
	CodeBlobUnknown         Code = "BLOB_UNKNOWN"
	CodeBlobUploadInvalid   Code = "BLOB_UPLOAD_INVALID"
	CodeBlobUploadUnknown   Code = "BLOB_UPLOAD_UNKNOWN"
	CodeDigestInvalid       Code = "DIGEST_INVALID"
	CodeManifestBlobUnknown Code = "MANIFEST_BLOB_UNKNOWN"
	CodeManifestInvalid     Code = "MANIFEST_INVALID"
	CodeManifestUnknown     Code = "MANIFEST_UNKNOWN"
	CodeNameInvalid         Code = "NAME_INVALID"
	CodeNameUnknown         Code = "NAME_UNKNOWN"
	CodeSizeInvalid         Code = "SIZE_INVALID"
	CodeUnauthorized        Code = "UNAUTHORIZED"
	CodeDenied              Code = "DENIED"
	CodeUnsupported         Code = "UNSUPPORTED"
	CodeTooManyRequests     Code = "TOOMANYREQUESTS"
	CodeTagInvalid          Code = "TAG_INVALID"
	// CodeUnknown is Distribution's code for a server-side failure the spec has no code for.
	CodeUnknown Code = "UNKNOWN"
	// CodeUnavailable is Distribution's code for a service that cannot answer now (an upstream).
	CodeUnavailable Code = "UNAVAILABLE"
)

// Error is a failed request as the client sees it: an OCI error code, the HTTP status that goes
// with it, and a message that says what was wrong. Err, when set, is the cause, logged and never
// shown to the client.
type Error struct {
	Status  int
	Code    Code
	Message string
	Detail  any
	Err     error
	// challenge, when set, is sent as WWW-Authenticate.
	challenge string
	// retryAfter, when set, is sent as Retry-After.
	retryAfter string
	// header holds more response headers.
	header http.Header
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

func newError(status int, code Code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// errInternal hides err from the client: 5xx responses never echo paths or internal detail.
func errInternal(err error) *Error {
	return &Error{Status: http.StatusInternalServerError, Code: CodeUnknown, Message: "internal server error", Err: err}
}

// toError maps a domain error to what the client sees. It is the one place where cache and auth
// errors become OCI codes; unknown errors are internal.
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var missing *cache.MissingError
	if ue, ok := errors.AsType[*UpstreamError](err); ok {
		return upstreamError(ue)
	}
	switch {
	case errors.Is(err, cache.ErrMetadataUnavailable):
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "the metadata database (storage.metadata) cannot be reached now; retry later", Err: err}
	case errors.As(err, new(*cache.RemoteError)):
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "the shared blob store (storage.blobs) cannot be used now; retry later", Err: err}
	case errors.Is(err, errUpstreamStalled):
		return &Error{Status: http.StatusGatewayTimeout, Code: CodeUnavailable, Message: "the upstream sent nothing for its time budget (mirror.upstreams.<name>.timeout); retry", Err: err}
	case errors.Is(err, errUpstreamCorrupt), errors.Is(err, cache.ErrUpstreamCut), errors.Is(err, cache.ErrUpstreamCorrupt):
		return &Error{Status: http.StatusBadGateway, Code: CodeUnavailable, Message: "the upstream sent corrupt or incomplete content; nothing was kept", Err: err}
	case errors.Is(err, errUpstreamUnusable):
		return &Error{Status: http.StatusBadGateway, Code: CodeUnsupported, Message: "the upstream's manifest is of a type cove does not serve", Err: err}
	case errors.As(err, &missing):
		return &Error{Status: http.StatusBadRequest, Code: CodeManifestBlobUnknown, Message: missing.Error(), Detail: map[string]string{"digest": missing.Digest.String()}}
	case errors.Is(err, cache.ErrBlobUnknown):
		return newError(http.StatusNotFound, CodeBlobUnknown, "blob unknown to repository")
	case errors.Is(err, cache.ErrManifestUnknown):
		return newError(http.StatusNotFound, CodeManifestUnknown, "manifest unknown")
	case errors.Is(err, cache.ErrNameUnknown):
		return newError(http.StatusNotFound, CodeNameUnknown, "repository name not known to registry")
	case errors.Is(err, cache.ErrUploadUnknown):
		return newError(http.StatusNotFound, CodeBlobUploadUnknown, "blob upload unknown to registry")
	case errors.Is(err, cache.ErrDigestMismatch):
		return &Error{Status: http.StatusBadRequest, Code: CodeDigestInvalid, Message: "provided digest did not match uploaded content", Err: err}
	case errors.Is(err, cache.ErrDigestUnsupported):
		return &Error{Status: http.StatusBadRequest, Code: CodeDigestInvalid, Message: "digest is malformed or its algorithm is not supported (sha256, sha512)", Err: err}
	case errors.Is(err, cache.ErrRangeInvalid):
		return &Error{Status: http.StatusRequestedRangeNotSatisfiable, Code: CodeBlobUploadInvalid, Message: "chunk out of order: " + err.Error()}
	case errors.Is(err, cache.ErrStorageFull), errors.Is(err, cache.ErrReadOnly):
		// Below the free-space floor, or read-only: the message says which, and what to do.
		return &Error{Status: http.StatusInsufficientStorage, Code: CodeUnknown, Message: err.Error(), Err: err}
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		// Not the client's fault, and worth saying plainly; the store stays consistent (docs/SECURITY.md 5).
		return &Error{Status: http.StatusInsufficientStorage, Code: CodeUnknown, Message: "the registry's storage is full", Err: err}
	case errors.Is(err, cache.ErrQuotaExceeded):
		// Harbor's answer: 403 DENIED, with the sizes and the limit.
		return &Error{Status: http.StatusForbidden, Code: CodeDenied, Message: err.Error()}
	case errors.Is(err, cache.ErrInUse):
		// A layer or an image that a manifest of the repository names: deleting it would break it.
		return &Error{Status: http.StatusPreconditionFailed, Code: CodeDenied, Message: err.Error()}
	case errors.Is(err, cache.ErrTagImmutable):
		// Harbor's answer: 412 with the tag named, so that docker push says why.
		return &Error{Status: http.StatusPreconditionFailed, Code: CodeDenied, Message: err.Error()}
	case errors.Is(err, cache.ErrMediaTypeConflict):
		return &Error{Status: http.StatusBadRequest, Code: CodeManifestInvalid, Message: err.Error()}
	case errors.Is(err, cache.ErrTooManyUploads):
		return &Error{Status: http.StatusTooManyRequests, Code: CodeTooManyRequests, Message: err.Error(), retryAfter: "10"}
	case errors.As(err, new(*BodyError)):
		return &Error{Status: http.StatusBadRequest, Code: CodeBlobUploadInvalid, Message: "the request body was cut short or stalled", Err: err}
	case errors.Is(err, auth.ErrNoProject):
		return newError(http.StatusNotFound, CodeNameUnknown, "repositories of local projects are named <project>/<repository>")
	case errors.Is(err, cache.ErrSizeInvalid):
		return &Error{Status: http.StatusBadRequest, Code: CodeSizeInvalid, Message: err.Error()}
	case errors.Is(err, auth.ErrTooManyAttempts):
		return &Error{Status: http.StatusTooManyRequests, Code: CodeTooManyRequests, Message: err.Error(), retryAfter: auth.RetryAfter(err)}
	case errors.Is(err, auth.ErrDirectoryUnavailable):
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "the user directory cannot be reached", Err: err}
	case errors.Is(err, auth.ErrBadCredentials), errors.Is(err, auth.ErrUnauthenticated):
		return newError(http.StatusUnauthorized, CodeUnauthorized, "authentication required")
	case errors.Is(err, auth.ErrDenied):
		return newError(http.StatusForbidden, CodeDenied, "requested access to the resource is denied")
	case errors.Is(err, auth.ErrProjectUnknown):
		return newError(http.StatusNotFound, CodeNameUnknown, "project does not exist: create it first (POST /api/v2.0/projects)")
	}
	return errInternal(err)
}

// upstreamError answers an upstream failure: 429 passed through with its Retry-After, a refusal
// as DENIED, anything else as a gateway error (502 bad answer, 503 unreachable, 504 too slow).
func upstreamError(ue *UpstreamError) *Error {
	switch {
	case ue.NotFound:
		return &Error{Status: http.StatusNotFound, Code: CodeNameUnknown, Message: "not found at upstream " + ue.Upstream, Err: ue}
	case ue.Status == http.StatusTooManyRequests && (ue.Down == downPullLimit || ue.Limit == downPullLimit):
		return &Error{Status: http.StatusTooManyRequests, Code: CodeTooManyRequests, Message: "upstream " + ue.Upstream + "'s pull limit is used up: cached images still pull; retry this one after Retry-After, or give cove an account with a higher limit (mirror.upstreams." + ue.Upstream + ".username)", Err: ue, retryAfter: ue.RetryAfter}
	case ue.Status == http.StatusTooManyRequests:
		return &Error{Status: http.StatusTooManyRequests, Code: CodeTooManyRequests, Message: "upstream " + ue.Upstream + " is limiting requests", Err: ue, retryAfter: ue.RetryAfter}
	case ue.Down != "":
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: fmt.Sprintf("upstream %s is marked down (%s): cove asks it again after Retry-After; cached images still pull", ue.Upstream, ue.Down), Err: ue, retryAfter: ue.RetryAfter}
	case ue.Status == http.StatusUnauthorized || ue.Status == http.StatusForbidden:
		return &Error{Status: http.StatusForbidden, Code: CodeDenied, Message: "upstream " + ue.Upstream + " refused access", Err: ue}
	case ue.Status != 0:
		return &Error{Status: http.StatusBadGateway, Code: CodeUnavailable, Message: fmt.Sprintf("upstream %s answered %d", ue.Upstream, ue.Status), Err: ue}
	case ue.Timeout:
		return &Error{Status: http.StatusGatewayTimeout, Code: CodeUnavailable, Message: "upstream " + ue.Upstream + " did not answer within its time budget (mirror.upstreams." + ue.Upstream + ".timeout, or mirror.timeout): it is marked down a few seconds; cached images still pull", Err: ue}
	}
	return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "upstream " + ue.Upstream + " is unreachable", Err: ue}
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// writeError writes e as the spec's {"errors":[…]} envelope; a HEAD response gets the status only.
func writeError(w http.ResponseWriter, r *http.Request, e *Error) {
	h := w.Header()
	if e.challenge != "" {
		h.Set("WWW-Authenticate", e.challenge)
	}
	if e.retryAfter != "" {
		h.Set("Retry-After", e.retryAfter)
	}
	for k, v := range e.header {
		h[k] = v
	}
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code, Message: e.Message, Detail: e.Detail}}})
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
