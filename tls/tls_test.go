package tls

import (
	"context"
	"errors"
	"net"
	"testing"
)

func TestListenPlain(t *testing.T) {
	ln, err := Listen(context.Background(), Config{Mode: ModeOff, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial the plain listener: %v", err)
	}
	c.Close()
}

func TestListenRefusesModesNotBuilt(t *testing.T) {
	for _, m := range []Mode{ModeFiles, ModeSelfSigned, ModeACME, "bogus"} {
		if _, err := Listen(context.Background(), Config{Mode: m, Listen: "127.0.0.1:0"}); !errors.Is(err, ErrModeUnavailable) {
			t.Errorf("Listen(%s) = %v, want ErrModeUnavailable", m, err)
		}
	}
	if _, err := Listen(context.Background(), Config{Mode: ModeOff, Listen: "not-an-address"}); err == nil {
		t.Error("Listen on a bad address succeeded")
	}
}
