//go:build !linux

package bench

// spliceCopier: splice(2) is Linux's.
func spliceCopier() (copier, bool) { return copier{}, false }
