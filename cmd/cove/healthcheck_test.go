package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHealthcheck(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	listen := "COVE_LISTEN=" + strings.TrimPrefix(srv.URL, "http://")
	config := filepath.Join(t.TempDir(), "cove.yaml")
	if err := os.WriteFile(config, []byte("listen: "+strings.TrimPrefix(srv.URL, "http://")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	for _, c := range []struct {
		name    string
		status  int
		args    []string
		environ []string
		want    int
	}{
		{"healthy, own listen address", 200, nil, []string{listen}, 0},
		{"healthy, --url", 200, []string{"--url", srv.URL + "/healthz"}, nil, 0},
		{"healthy, --config", 200, []string{"--config", config}, nil, 0},
		{"healthy, COVE_CONFIG", 200, nil, []string{"COVE_CONFIG=" + config}, 0},
		{"unhealthy", 503, nil, []string{listen}, 1},
		{"no such --config", 200, []string{"--config", config + ".missing"}, nil, 2},
		{"not listening", 200, []string{"--url", down.URL + "/healthz"}, nil, 1},
		{"bad configuration", 200, nil, []string{listen, "COVE_LISTEN_TYPO=1"}, 2},
		{"extra argument", 200, []string{"now"}, nil, 2},
		{"--url of another scheme", 200, []string{"--url", "ftp://127.0.0.1/healthz"}, nil, 2},
		{"--url without a host", 200, []string{"--url", "healthz"}, nil, 2},
		{"--timeout 0", 200, []string{"--timeout", "0", "--url", srv.URL + "/healthz"}, nil, 2},
		{"--timeout below 0", 200, []string{"--timeout", "-1s", "--url", srv.URL + "/healthz"}, nil, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			status = c.status
			var out, errOut strings.Builder
			got := run(context.Background(), append([]string{"healthcheck"}, c.args...), c.environ, nil, &out, &errOut)
			if got != c.want {
				t.Errorf("cove healthcheck %q = %d, want %d; stdout %q stderr %q", c.args, got, c.want, out.String(), errOut.String())
			}
		})
	}
}

func TestHealthURL(t *testing.T) {
	for _, c := range []struct {
		listen, tls, want string
	}{
		{":5000", "off", "http://127.0.0.1:5000/healthz"},
		{"0.0.0.0:5000", "off", "http://127.0.0.1:5000/healthz"},
		{"[::]:5000", "off", "http://127.0.0.1:5000/healthz"},
		{"10.0.0.1:443", "acme", "https://10.0.0.1:443/healthz"},
		{"[::1]:5000", "self-signed", "https://[::1]:5000/healthz"},
	} {
		cfg := DefaultConfig()
		cfg.Listen, cfg.TLS.Mode = c.listen, c.tls
		if got, err := healthURL(cfg); err != nil || got != c.want {
			t.Errorf("healthURL(listen %q, tls %s) = %q, %v; want %q", c.listen, c.tls, got, err, c.want)
		}
	}
	cfg := DefaultConfig()
	cfg.Listen = "5000"
	if _, err := healthURL(cfg); err == nil {
		t.Error("healthURL of listen 5000 (no colon) gave no error")
	}
}
