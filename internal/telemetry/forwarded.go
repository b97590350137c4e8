package telemetry

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ParseProxies parses trusted_proxies: addresses (10.0.0.7) or networks (10.0.0.0/8).
func ParseProxies(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, &net.ParseError{Type: "address or network (CIDR)", Text: s}
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// hopAddr reads one hop of X-Forwarded-For: an address, with or without a port (1.2.3.4:5678,
// [2001:db8::1]:443).
func hopAddr(h string) (netip.Addr, bool) {
	h = strings.TrimSpace(h)
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// ForwardedFor makes r.RemoteAddr the client's address when the request comes through a trusted
// reverse proxy: the right-most address of X-Forwarded-For that is not itself a trusted proxy (a
// client can write any X-Forwarded-For it likes; only what the trusted proxies appended is
// believed). Requests from other peers keep their own address, whatever they send. With no
// trusted proxies, h is returned as it is.
//
// List the proxies themselves, never a network that holds clients too: a client inside a trusted
// network can write the hops it likes. Failed-login limits, the audit log and the access log all
// take the address from r.RemoteAddr, so behind a proxy every client is no longer one address
// (docs/SECURITY.md 17).
func ForwardedFor(trusted []netip.Prefix, h http.Handler) http.Handler {
	if len(trusted) == 0 {
		return h
	}
	isTrusted := func(a netip.Addr) bool {
		a = a.Unmap()
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil || !isTrusted(peer.Addr()) {
			h.ServeHTTP(w, r)
			return
		}
		hops := r.Header.Values("X-Forwarded-For")
		client := netip.Addr{}
		var leftmost netip.Addr // the first hop, when every hop is a trusted proxy
	walk:
		for i := len(hops) - 1; i >= 0; i-- {
			parts := strings.Split(hops[i], ",")
			for j := len(parts) - 1; j >= 0; j-- {
				a, ok := hopAddr(parts[j])
				if !ok {
					// A hop that is no address ends what can be believed: the hop before it
					// was written by someone the proxies did not check.
					break walk
				}
				if !isTrusted(a) {
					client = a
					break walk
				}
				leftmost = a
			}
		}
		if !client.IsValid() {
			client = leftmost // a client inside a trusted network, as nginx's realip takes it
		}
		if client.IsValid() {
			r2 := *r
			r2.RemoteAddr = netip.AddrPortFrom(client, 0).String()
			r = &r2
		}
		h.ServeHTTP(w, r)
	})
}
