package admin

import (
	"errors"
	"fmt"
	"testing"

	"cove/auth"
	"cove/cache"
)

// Domain errors become Harbor's codes in one place; the unknown ones are a 500 that shows nothing.
func TestToAPIError(t *testing.T) {
	for _, tt := range []struct {
		err    error
		status int
		code   string
	}{
		{auth.ErrDenied, 403, "FORBIDDEN"},
		{auth.ErrProjectUnknown, 404, "NOT_FOUND"},
		{fmt.Errorf("copy: %w", &cache.QuotaError{Project: "p", Adding: 2, Used: 9, Hard: 10}), 403, "DENIED"},
		{&cache.ImmutableError{Repo: "app", Tag: "v1"}, 412, "PRECONDITION"},
		{&cache.InUseError{Digest: "sha256:a", By: "sha256:b"}, 412, "PRECONDITION"},
		{cache.ErrMetadataUnavailable, 503, "SERVICE_UNAVAILABLE"},
		{cache.ErrStorageFull, 507, "INSUFFICIENT_STORAGE"},
		{errors.New("disk on fire at /data"), 500, "INTERNAL_SERVER_ERROR"},
	} {
		e := toAPIError(tt.err)
		if e.Status != tt.status || e.Code != tt.code {
			t.Errorf("toAPIError(%v) = %d %s, want %d %s", tt.err, e.Status, e.Code, tt.status, tt.code)
		}
	}
	if e := toAPIError(errors.New("disk on fire at /data")); e.Message != "internal server error" {
		t.Errorf("a 500 shows %q", e.Message)
	}
}
