package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// A project admin chooses a policy's targets: they must not make cove call the machine's own
// ports or the cloud's metadata service. Link-local addresses (169.254.0.0/16, fe80::/10: the
// metadata services) and unspecified or multicast ones are always refused; loopback and private
// ranges only when webhooks.allow_private_targets is true. The rule is checked on the address
// given, and again on the address each connection is made to (a name that resolves elsewhere
// later is caught there).

var errPrivate = errors.New("a loopback or private address: only with webhooks.allow_private_targets: true")

// checkAddr applies the rule to one address.
func checkAddr(a netip.Addr, allowPrivate bool) error {
	a = a.Unmap()
	switch {
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		return errors.New("a link-local address (refused always)")
	case a.IsUnspecified(), a.IsMulticast(), a.IsInterfaceLocalMulticast():
		return errors.New("not an address to send to")
	case (a.IsLoopback() || a.IsPrivate() || cgnat.Contains(a)) && !allowPrivate:
		return errPrivate
	}
	return nil
}

// cgnat is the shared address space of carrier-grade NAT (RFC 6598): private in all but name.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// checkHost applies the rule to a target's host when it is an address, or "localhost"; a name is
// checked at each connection.
func checkHost(host string, allowPrivate bool) error {
	if a, err := netip.ParseAddr(host); err == nil {
		return checkAddr(a, allowPrivate)
	}
	if host == "localhost" || len(host) > len(".localhost") && host[len(host)-len(".localhost"):] == ".localhost" {
		return checkAddr(netip.MustParseAddr("127.0.0.1"), allowPrivate)
	}
	return nil
}

// newClient is the HTTP client of deliveries: each connection's address checked, no proxy, no
// redirect followed (a 3xx is a failed attempt), the attempt bounded by timeout.
func newClient(allowPrivate, skipVerify bool, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{
		Timeout: timeout,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			if err := checkAddr(ap.Addr(), allowPrivate); err != nil {
				return fmt.Errorf("webhook target %s refused: %w", ap.Addr(), err)
			}
			return nil
		},
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, addr)
			},
			TLSClientConfig:       &tls.Config{InsecureSkipVerify: skipVerify, MinVersion: tls.VersionTLS12}, // skip_cert_verify is the policy's choice
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       time.Minute,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
