package main

// What a start tells its operator: where the admin page is, the generated admin password (once),
// and how to trust a self-signed certificate.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"cove/auth"
)

// adminURL is where the admin page is: public_url when set, else the listener's address (a
// wildcard host shown as localhost).
func adminURL(cfg Config, ln net.Listener, tls bool) string {
	if cfg.PublicURL != "" {
		return strings.TrimSuffix(cfg.PublicURL, "/") + "/"
	}
	host, p, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, p) + "/"
}

// port is a listener's port, 0 for none.
func port(ln net.Listener) int {
	if ln == nil {
		return 0
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

const selfSignedHint = `cove: serving HTTPS with a self-signed certificate. Clients must trust its CA, %[1]s:
cove:   Docker:     /etc/docker/certs.d/<host>:<port>/ca.crt   (cove listens on %[2]s)
cove:   containerd: ca = "%[1]s" under the [host."https://<host>:<port>"] of hosts.toml
cove:   podman:     /etc/containers/certs.d/<host>:<port>/ca.crt
cove:   system:     cp %[1]s /usr/local/share/ca-certificates/cove.crt && update-ca-certificates
`

// adminPasswordFile is where a generated admin password goes when cove's output is the journal.
const adminPasswordFile = "admin-password"

// showAdminPassword shows the admin's generated password once: on stdout, or — when stdout is
// systemd's journal, which keeps it for every reader of the log — in a file of the data directory
// that only its owner (and root) may read, whose path goes to the log instead.
func showAdminPassword(stdout io.Writer, data, password, url string, journal bool) error {
	how := fmt.Sprintf("sign in at %s and change it, or set it offline with: cove admin reset-password %s", url, auth.AdminName)
	if !journal {
		_, err := fmt.Fprintf(stdout, "cove: generated the password of user %q: %s\n"+
			"cove: it is shown only this once and stored as a hash; %s\n", auth.AdminName, password, how)
		return err
	}
	path := filepath.Join(data, adminPasswordFile)
	_ = os.Remove(path) // a file left from an earlier first start
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return fmt.Errorf("write the admin's generated password: %w", err)
	}
	_, err = fmt.Fprintln(f, password)
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("write the admin's generated password: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "cove: generated the password of user %q and wrote it to %s (readable by root and cove's user only, "+
		"not to the journal); %s, then delete the file\n", auth.AdminName, path, how)
	return err
}
