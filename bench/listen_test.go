package bench

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestParsePorts(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Ports
		wantErr bool
	}{
		{"15000-15010", Ports{15000, 15010}, false},
		{" 15000 - 15003 ", Ports{15000, 15003}, false},
		{"15000-15000", Ports{15000, 15000}, false},
		{"15000", Ports{}, true},
		{"15010-15000", Ports{}, true},
		{"0-10", Ports{}, true},
		{"65530-65536", Ports{}, true},
		{"a-b", Ports{}, true},
		{"1-2-3", Ports{}, true},
	} {
		got, err := ParsePorts(tc.in)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("ParsePorts(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// held listens on a free loopback port for the test's duration and returns its address and port.
func held(t *testing.T) (string, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), ln.Addr().(*net.TCPAddr).Port
}

// freeAddr is a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("SplitHostPort(%q): %v", addr, err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// TestBindRange: the servers take free ports of the range, each its own, skipping one in use.
func TestBindRange(t *testing.T) {
	_, busy := held(t)
	b, err := bind(Config{Peer: true, Ports: Ports{busy, busy + 20}})
	if err != nil {
		t.Fatalf("bind: %v", err)
	}
	defer b.close()
	seen := map[int]string{}
	for _, role := range []string{roleUpstream, roleCove, rolePeer, roleLimit} {
		p := portOf(t, b.addr[role])
		if p == busy || p < busy || p > busy+20 {
			t.Errorf("%s on %s: want a free port of %d-%d other than %d", role, b.addr[role], busy, busy+20, busy)
		}
		if other, ok := seen[p]; ok {
			t.Errorf("%s and %s both on port %d", role, other, p)
		}
		seen[p] = role
	}
	// cove binds its own: its reservation is released for it; the upstream's is the harness's.
	addr := b.release(roleCove)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("cove's released address %s: %v", addr, err)
	}
	ln.Close()
	if ln := b.take(roleUpstream); ln == nil || ln.Addr().String() != b.addr[roleUpstream] {
		t.Errorf("take(upstream) = %v, want the listener on %s", ln, b.addr[roleUpstream])
	} else {
		ln.Close()
	}
}

// TestBindInUse: an address in use is a *ListenError naming the server, at once.
func TestBindInUse(t *testing.T) {
	addr, busy := held(t)
	free := freeAddr(t)
	for _, tc := range []struct {
		name     string
		cfg      Config
		wantRole string
		inUse    bool
	}{
		{"upstream", Config{Listen: Listen{Upstream: addr}}, roleUpstream, true},
		{"cove", Config{Listen: Listen{Cove: addr}}, roleCove, true},
		{"peer", Config{Peer: true, Listen: Listen{Peer: addr}}, rolePeer, true},
		{"limit", Config{Listen: Listen{Limit: addr}}, roleLimit, true},
		{"two servers on one port", Config{Listen: Listen{Cove: free, Limit: free}}, roleLimit, true},
		{"range of one port in use", Config{Ports: Ports{busy, busy}}, roleUpstream, false},
		{"no port", Config{Listen: Listen{Cove: "localhost"}}, roleCove, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := bind(tc.cfg)
			if err == nil {
				b.close()
				t.Fatalf("bind(%+v) = nil error, want the %s's address refused", tc.cfg, tc.wantRole)
			}
			var le *ListenError
			if !errors.As(err, &le) || le.Role != tc.wantRole {
				t.Fatalf("bind: %v, want a *ListenError of the %s", err, tc.wantRole)
			}
			if tc.inUse && !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("bind: %v, want EADDRINUSE", err)
			}
			if !strings.Contains(err.Error(), "the "+tc.wantRole+" cannot listen on") {
				t.Errorf("error %q does not say which server", err)
			}
		})
	}
	// Run refuses before it starts or generates anything: no cove binary is needed to see it.
	_, err := Run(context.Background(), Config{CoveBin: "/nonexistent", Listen: Listen{Cove: addr}})
	var le *ListenError
	if !errors.As(err, &le) || le.Role != roleCove {
		t.Errorf("Run with cove's address in use: %v, want a *ListenError of cove", err)
	}
}

// TestBindDefault: with no addresses and no range, the kernel picks the ports, and cove picks
// its own (port 0 is passed to it).
func TestBindDefault(t *testing.T) {
	b, err := bind(Config{Peer: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	if b.addr[roleCove] != "127.0.0.1:0" {
		t.Errorf("cove's address %q, want 127.0.0.1:0", b.addr[roleCove])
	}
	for _, role := range []string{roleUpstream, rolePeer, roleLimit} {
		if p := portOf(t, b.addr[role]); p == 0 {
			t.Errorf("%s: no port reserved (%s)", role, b.addr[role])
		}
	}
}

func TestBaseURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5000":  "http://127.0.0.1:5000",
		":5000":           "http://127.0.0.1:5000",
		"0.0.0.0:5000":    "http://127.0.0.1:5000",
		"[::]:5000":       "http://[::1]:5000",
		"[::1]:5000":      "http://[::1]:5000",
		"localhost:15000": "http://localhost:15000",
	} {
		if got := baseURL(in); got != want {
			t.Errorf("baseURL(%q) = %q, want %q", in, got, want)
		}
	}
}
