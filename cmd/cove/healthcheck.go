package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"time"
)

const healthcheckUsage = `usage: cove healthcheck [--url URL | --config FILE] [--timeout D]

GETs cove's /healthz and exits 0 if it answers 200, 1 otherwise: a container healthcheck for an
image with no shell and no curl. By default the URL is this node's own listen address (from the
configuration: COVE_CONFIG, COVE_LISTEN, COVE_TLS_MODE…) on 127.0.0.1, over https when tls.mode
is not off (the certificate is not checked: the probe asks whether the process answers, not who it is).

flags:
`

// healthcheckCmd is cove healthcheck: 0 when /healthz answers 200 in time, 1 when not, 2 for usage errors.
func healthcheckCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	url := fs.String("url", "", "the URL to GET (default: http(s)://127.0.0.1:<port of listen>/healthz)")
	configPath := fs.String("config", envValue(environ, "COVE_CONFIG"), "YAML configuration file whose listen and tls.mode give the URL (env COVE_CONFIG)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long the answer may take")
	if code := parseFlags(fs, "healthcheck", healthcheckUsage, args, stdout, stderr); code >= 0 {
		return code
	}
	if *url == "" {
		cfg, err := loadConfig(*configPath, environ, nil)
		if err != nil {
			fmt.Fprintf(stderr, "cove healthcheck: %v (or give --url)\n", err)
			return 2
		}
		*url, err = healthURL(cfg)
		if err != nil {
			fmt.Fprintf(stderr, "cove healthcheck: %v (or give --url)\n", err)
			return 2
		}
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "cove healthcheck: --timeout %s: give a duration above 0, such as 5s\n", *timeout)
		return 2
	}
	if u, err := neturl.Parse(*url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "cove healthcheck: --url %q: give an http:// or https:// URL with a host, such as http://127.0.0.1:5000/healthz\n", *url)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		fmt.Fprintf(stderr, "cove healthcheck: --url %q: %v\n", *url, err)
		return 2
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a liveness probe of this host's own process
	}}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "cove healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "cove healthcheck: GET %s: %s\n", *url, resp.Status)
		return 1
	}
	fmt.Fprintf(stdout, "ok: GET %s: %s\n", *url, resp.Status)
	return 0
}

// healthURL is cfg's own /healthz as seen from this host: the listen address with an unspecified
// host replaced by the loopback.
func healthURL(cfg Config) (string, error) {
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return "", fmt.Errorf("listen %q: %w", cfg.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	scheme := "http"
	if cfg.TLS.Mode != "" && cfg.TLS.Mode != "off" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/healthz", nil
}
