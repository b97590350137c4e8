package cache

import (
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestFileSet(t *testing.T) {
	a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
	long := digest.SHA512.FromString("d")
	f := newFileSet()
	for _, d := range []digest.Digest{c, long, a} {
		f.add(d)
	}
	for _, tc := range []struct {
		d    digest.Digest
		want bool
	}{{a, true}, {b, false}, {c, true}, {long, true}, {digest.SHA512.FromString("e"), false}} {
		if got := f.has(tc.d); got != tc.want {
			t.Errorf("has(%s) = %v, want %v", tc.d, got, tc.want)
		}
	}
	if !f.remove(a) || f.remove(a) || f.has(a) || f.remove(b) || !f.remove(long) || f.len() != 1 {
		t.Errorf("after removing a and the sha512 digest: has(a) = %v, len = %d; want false, 1", f.has(a), f.len())
	}
	if got := f.all(); !slices.Equal(got, []digest.Digest{c}) {
		t.Errorf("all() = %v, want [%s]", got, c)
	}
	f.add(b) // an add after a look sorts again
	got := f.all()
	slices.SortFunc(got, func(x, y digest.Digest) int { return strings.Compare(string(x), string(y)) })
	want := []digest.Digest{b, c}
	slices.SortFunc(want, func(x, y digest.Digest) int { return strings.Compare(string(x), string(y)) })
	if !slices.Equal(got, want) || !f.has(b) || !f.has(c) {
		t.Errorf("after adding b: all() = %v, want %v", got, want)
	}
}
