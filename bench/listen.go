package bench

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Listen is where the harness's servers listen, as host:port. An empty address is 127.0.0.1 on
// a port of Config.Ports, or on a port the kernel picks when Ports is the zero range.
type Listen struct {
	Upstream string // the generated upstream registry
	Cove     string // the cove under test
	Peer     string // Debian's docker-registry, the peer mirror (unused without the peer)
	Limit    string // the plain file server over the upstream's files, with each of its copiers
	Memory   string // the in-memory handler of one manifest, in a process of its own (memory.go)
}

// Ports is a range of TCP ports on 127.0.0.1 for the servers whose Listen address is empty:
// they take the first free ports of the range in the order upstream, cove, peer, limit, memory, skipping
// ports in use. The zero Ports leaves the choice to the kernel.
type Ports struct{ First, Last int }

// ParsePorts parses a range written FIRST-LAST, such as 15000-15010.
func ParsePorts(s string) (Ports, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return Ports{}, fmt.Errorf("ports %q: want a range FIRST-LAST, such as 15000-15010", s)
	}
	first, err1 := strconv.Atoi(strings.TrimSpace(a))
	last, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err := errors.Join(err1, err2); err != nil {
		return Ports{}, fmt.Errorf("ports %q: want a range FIRST-LAST, such as 15000-15010: %w", s, err)
	}
	if first < 1 || last > 65535 || first > last {
		return Ports{}, fmt.Errorf("ports %q: want 1 ≤ FIRST ≤ LAST ≤ 65535", s)
	}
	return Ports{First: first, Last: last}, nil
}

func (p Ports) String() string {
	if p == (Ports{}) {
		return ""
	}
	return fmt.Sprintf("%d-%d", p.First, p.Last)
}

// ListenError is a server of the harness that cannot listen on its address: the port is in use,
// the host is not this machine's, or no port of the range is free.
type ListenError struct {
	Role string // "upstream", "cove", "peer", "limit" or "memory": the field of Listen
	Addr string // the address, or the range it was to come from
	Err  error
}

func (e *ListenError) Error() string {
	return fmt.Sprintf("the %s cannot listen on %s: %v", e.Role, e.Addr, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

// Role names, in the order the servers take ports from a range.
const (
	roleUpstream = "upstream"
	roleCove     = "cove"
	rolePeer     = "peer"
	roleLimit    = "limit"
	roleMemory   = "memory"
)

// bound is every server's address, reserved before anything starts, so that a port in use is
// an error at once and names the server, instead of a daemon that does not come up after the
// data was generated. The harness serves the upstream's and the limit's listeners itself; cove
// and the peer bind their own, so theirs are closed just before each starts (cove's is not bound
// at all when its port is 0: cove then picks one and logs it).
type bound struct {
	ln   map[string]net.Listener // by role
	addr map[string]string       // by role: what the server is to listen on
}

// bind reserves the addresses of cfg: the explicit ones first, then ports of the range for the
// rest, then ports the kernel picks.
func bind(cfg Config) (*bound, error) {
	b := &bound{ln: map[string]net.Listener{}, addr: map[string]string{}}
	explicit := map[string]string{roleUpstream: cfg.Listen.Upstream, roleCove: cfg.Listen.Cove, roleLimit: cfg.Listen.Limit, roleMemory: cfg.Listen.Memory}
	roles := []string{roleUpstream, roleCove, roleLimit, roleMemory}
	if cfg.Peer {
		explicit[rolePeer] = cfg.Listen.Peer
		roles = []string{roleUpstream, roleCove, rolePeer, roleLimit, roleMemory}
	}
	for _, role := range roles {
		addr := explicit[role]
		if addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(addr); err != nil {
			b.close()
			return nil, &ListenError{Role: role, Addr: addr, Err: err}
		} else if port == "0" && role == roleCove {
			b.addr[role] = addr
			continue
		}
		if err := b.listen(role, addr); err != nil {
			b.close()
			return nil, err
		}
	}
	next := cfg.Ports.First
	for _, role := range roles {
		if _, ok := b.addr[role]; ok {
			continue
		}
		if cfg.Ports == (Ports{}) {
			if role == roleCove {
				b.addr[role] = "127.0.0.1:0"
				continue
			}
			if err := b.listen(role, "127.0.0.1:0"); err != nil {
				b.close()
				return nil, err
			}
			continue
		}
		var refused []string
		var firstErr error
		for ; next <= cfg.Ports.Last; next++ {
			err := b.listen(role, net.JoinHostPort("127.0.0.1", strconv.Itoa(next)))
			if err == nil {
				break
			}
			refused = append(refused, strconv.Itoa(next))
			if firstErr == nil {
				firstErr = errors.Unwrap(err)
			}
		}
		if next > cfg.Ports.Last {
			b.close()
			msg := fmt.Sprintf("no free port left in the range (%d servers need one each)", len(roles))
			if len(refused) > 0 {
				msg += fmt.Sprintf("; %s refused: %v", strings.Join(refused, ", "), firstErr)
			}
			return nil, &ListenError{Role: role, Addr: "127.0.0.1:" + cfg.Ports.String(), Err: errors.New(msg)}
		}
		next++
	}
	return b, nil
}

// listen binds addr for role and records the address it got.
func (b *bound) listen(role, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return &ListenError{Role: role, Addr: addr, Err: err}
	}
	b.ln[role], b.addr[role] = ln, ln.Addr().String()
	return nil
}

// release closes role's reserved listener, for its daemon to bind the address, and returns the
// address.
func (b *bound) release(role string) string {
	if ln, ok := b.ln[role]; ok {
		ln.Close()
		delete(b.ln, role)
	}
	return b.addr[role]
}

// take hands role's listener over to the caller, who serves and closes it.
func (b *bound) take(role string) net.Listener {
	ln := b.ln[role]
	delete(b.ln, role)
	return ln
}

// close releases whatever is still reserved.
func (b *bound) close() {
	for role := range b.ln {
		b.release(role)
	}
}

// baseURL is the http URL a client dials to reach a server listening on addr: an unspecified
// host (":5000", "0.0.0.0:5000", "[::]:5000") is reached on loopback.
func baseURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}
