package mirror

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"cove/auth"
	"cove/cache"
)

func TestToError(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   Code
	}{
		{cache.ErrBlobUnknown, 404, CodeBlobUnknown},
		{fmt.Errorf("wrapped: %w", cache.ErrManifestUnknown), 404, CodeManifestUnknown},
		{cache.ErrNameUnknown, 404, CodeNameUnknown},
		{cache.ErrUploadUnknown, 404, CodeBlobUploadUnknown},
		{cache.ErrDigestMismatch, 400, CodeDigestInvalid},
		{cache.ErrDigestUnsupported, 400, CodeDigestInvalid},
		{cache.ErrRangeInvalid, 416, CodeBlobUploadInvalid},
		{cache.ErrSizeInvalid, 400, CodeSizeInvalid},
		{&cache.MissingError{Digest: digest.FromString("x")}, 400, CodeManifestBlobUnknown},
		{auth.ErrBadCredentials, 401, CodeUnauthorized},
		{auth.ErrUnauthenticated, 401, CodeUnauthorized},
		{auth.ErrDenied, 403, CodeDenied},
		{auth.ErrProjectUnknown, 404, CodeNameUnknown},
		{newError(429, CodeTooManyRequests, "slow down"), 429, CodeTooManyRequests},
		{errors.New("disk on fire at /data/blobs"), 500, "UNKNOWN"},
		{fmt.Errorf("write /data/tmp/x: %w", syscall.ENOSPC), 507, "UNKNOWN"},
		{&BodyError{Err: io.ErrUnexpectedEOF}, 400, CodeBlobUploadInvalid},
		{cache.ErrTooManyUploads, 429, CodeTooManyRequests},
		{cache.ErrMediaTypeConflict, 400, CodeManifestInvalid},
		{&cache.ImmutableError{Repo: "app", Tag: "v1"}, 412, CodeDenied},
		{&cache.InUseError{Digest: "sha256:a", By: "sha256:b"}, 412, CodeDenied},
		{&cache.QuotaError{Project: "p", Adding: 10, Used: 5, Hard: 10}, 403, CodeDenied},
		{auth.ErrNoProject, 404, CodeNameUnknown},
		{auth.ErrTooManyAttempts, 429, CodeTooManyRequests},
		{auth.ErrDirectoryUnavailable, 503, CodeUnavailable},
	}
	for _, tt := range tests {
		e := toError(tt.err)
		if e.Status != tt.status || e.Code != tt.code {
			t.Errorf("toError(%v) = %d %s, want %d %s", tt.err, e.Status, e.Code, tt.status, tt.code)
		}
	}
	if e := toError(errors.New("disk on fire at /data/blobs")); e.Message != "internal server error" {
		t.Errorf("internal error message %q leaks detail", e.Message)
	}
}

func TestWriteErrorHeadHasNoBody(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		w := httptest.NewRecorder()
		writeError(w, httptest.NewRequest(method, "/v2/x/manifests/y", nil), newError(404, CodeManifestUnknown, "manifest unknown"))
		wantBody := `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`
		if method == http.MethodHead {
			wantBody = ""
		}
		if w.Code != 404 || w.Body.String() != wantBody {
			t.Errorf("%s: writeError = %d %q, want 404 %q", method, w.Code, w.Body.String(), wantBody)
		}
	}
}
