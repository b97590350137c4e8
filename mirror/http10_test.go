package mirror_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"cove/mirror"
)

// http10Get has the upstream answer GETs of an image's layer with body and no size (chunked), and
// asks cove for the layer over HTTP/1.0. It returns the answer, or an error when cove refused
// before any byte, and the layer's size.
func http10Get(t *testing.T, body func(size int64, right []byte) []byte) (*http.Response, []byte, int64, error) {
	t.Helper()
	up := newFakeUpstream(t)
	img := must(random.Image(300_000, 1))
	up.seed(t, "library/app:latest", img)
	layer := must(img.Layers())[0]
	ld, _ := layer.Digest()
	size, _ := layer.Size()
	rc := must(layer.Compressed())
	right, _ := io.ReadAll(rc)
	rc.Close()
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == "GET" && strings.Contains(r.URL.Path, "/blobs/"+ld.String()) {
			w.WriteHeader(200) // no Content-Length: chunked
			w.Write(body(size, right))
			return true
		}
		return false
	})
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	conn, err := net.Dial("tcp", me.host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "GET /v2/library/app/blobs/%s HTTP/1.0\r\nHost: x\r\n\r\n", ld)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "GET"})
	if err != nil {
		return nil, right, size, err
	}
	return resp, right, size, nil
}

// TestACutBlobNeverLooksCompleteToAnHTTP10Client: an upstream that announces no size (chunked)
// and sends a wrong blob. An HTTP/1.1 client sees a cut chunked answer; an HTTP/1.0 client gets
// neither chunks nor a Content-Length, so the close that cuts the answer would be, to it, the end
// of a complete 200 of all but the held-back tail (docs/SECURITY.md 1: a wrong or cut blob never
// reaches a client complete).
func TestACutBlobNeverLooksCompleteToAnHTTP10Client(t *testing.T) {
	resp, _, size, err := http10Get(t, func(size int64, _ []byte) []byte { return make([]byte, size) })
	if err != nil {
		return // refused before any byte: fine
	}
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 && err == nil && resp.ContentLength < 0 && int64(len(body)) != size {
		t.Errorf("an HTTP/1.0 client got a 200 whose body ended cleanly after %d of the blob's %d bytes (wrong bytes, cut): it cannot tell the answer was cut", len(body), size)
	}
}

// The same client with a right blob of unknown size gets it whole, with its length.
func TestHTTP10ClientGetsAWholeBlobOfUnknownSize(t *testing.T) {
	resp, want, _, err := http10Get(t, func(_ int64, right []byte) []byte { return right })
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || err != nil || resp.ContentLength != int64(len(want)) || string(body) != string(want) {
		t.Errorf("HTTP/1.0 GET of a right blob of unknown size = %d, length %d, %d bytes (right: %v), %v", resp.StatusCode, resp.ContentLength, len(body), string(body) == string(want), err)
	}
}
