package telemetry

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// Only what trusted proxies append to X-Forwarded-For is believed: the client is its right-most
// address that is not a trusted proxy; a peer that is no trusted proxy keeps its own address.
func TestForwardedFor(t *testing.T) {
	trusted, err := ParseProxies([]string{"10.0.0.0/8", "192.0.2.7"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"a direct client", "198.51.100.1:4000", nil, "198.51.100.1:4000"},
		{"a direct client claiming another address", "198.51.100.1:4000", []string{"203.0.113.9"}, "198.51.100.1:4000"},
		{"through the proxy", "10.1.2.3:4000", []string{"203.0.113.9"}, "203.0.113.9:0"},
		{"through two trusted proxies", "192.0.2.7:4000", []string{"203.0.113.9, 10.9.9.9"}, "203.0.113.9:0"},
		{"a forged hop before the client's", "10.1.2.3:4000", []string{"6.6.6.6, 203.0.113.9"}, "203.0.113.9:0"},
		{"in two header lines", "10.1.2.3:4000", []string{"6.6.6.6", "203.0.113.9"}, "203.0.113.9:0"},
		{"IPv6 client", "10.1.2.3:4000", []string{"2001:db8::1"}, "[2001:db8::1]:0"},
		{"garbage after the client", "10.1.2.3:4000", []string{"203.0.113.9, junk"}, "10.1.2.3:4000"},
		{"the proxy with no header", "10.1.2.3:4000", nil, "10.1.2.3:4000"},
		{"only trusted hops: the left-most", "10.1.2.3:4000", []string{"10.0.0.1, 10.0.0.2"}, "10.0.0.1:0"},
		{"a hop with a port", "10.1.2.3:4000", []string{"203.0.113.9:5678"}, "203.0.113.9:0"},
		{"an IPv6 hop with a port", "10.1.2.3:4000", []string{"[2001:db8::1]:443"}, "[2001:db8::1]:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			h := ForwardedFor(trusted, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.RemoteAddr }))
			r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
			r.RemoteAddr = tt.peer
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			if got != tt.want {
				t.Errorf("RemoteAddr = %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := ParseProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Error("ParseProxies accepted 10.0.0.0/33")
	}
}
