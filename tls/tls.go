// Package tls provides the listeners cove serves on. For now there is the plain TCP listener; the
// files, self-signed and ACME modes of DESIGN.md's configuration contract come with certmagic.
// It starts no servers: the caller serves on what it returns.
package tls

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// Mode is how the listener is secured.
type Mode string

// The modes of the tls.mode key.
const (
	ModeOff        Mode = "off"
	ModeFiles      Mode = "files"
	ModeSelfSigned Mode = "self-signed"
	ModeACME       Mode = "acme"
)

// ErrModeUnavailable means the mode is part of the configuration contract but not built yet.
var ErrModeUnavailable = errors.New("TLS mode not available yet")

// Config configures the listener.
type Config struct {
	Mode   Mode
	Listen string // host:port
}

// Listen opens the listener that cfg describes.
func Listen(ctx context.Context, cfg Config) (net.Listener, error) {
	switch cfg.Mode {
	case ModeOff, "":
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
		}
		return ln, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrModeUnavailable, cfg.Mode)
}
