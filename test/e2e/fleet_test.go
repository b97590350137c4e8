package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cove/internal/cluster"
	"cove/internal/pgtest"
	"cove/internal/s3test"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
)

// fleetSecret is the test fleet's cluster.secret.
const fleetSecret = "0123456789abcdef0123456789abcdef"

// fleetConfig is the configuration of a fleet node: metadata in pg, blobs in the bucket; s3extra
// goes into storage.blobs.s3, extra at the top level.
func fleetConfig(pg *pgtest.Server, s3 *s3test.Server, s3extra, extra string) string {
	return fmt.Sprintf(`storage:
  metadata:
    kind: postgres
    postgres:
      dsn: %q
  blobs:
    kind: s3
    s3:
      endpoint: %s
      bucket: %s
      access_key: %s
      secret_key: %s
      prefix: fleet/
%s%s`, pg.DSN, s3.Endpoint, s3.Bucket, s3.AccessKey, s3.SecretKey, s3extra, extra)
}

// fleetNode is a node of a test fleet: its name and port stay the same across restarts.
type fleetNode struct {
	*server
	name, conf, dir string
	port            int
}

// startFleet starts n nodes (a, b, c, ...) with conf, each on a port of its own.
func startFleet(t *testing.T, n int, conf string) []*fleetNode {
	t.Helper()
	var nodes []*fleetNode
	for i := range n {
		fn := &fleetNode{name: string(rune('a' + i)), conf: conf, dir: t.TempDir(), port: freePort(t)}
		fn.start(t)
		nodes = append(nodes, fn)
	}
	return nodes
}

func (fn *fleetNode) start(t *testing.T) {
	t.Helper()
	conf := fn.conf + fmt.Sprintf("cluster:\n  node_name: %s\n  advertise: http://127.0.0.1:%d\n  secret: %s\n", fn.name, fn.port, fleetSecret)
	path := filepath.Join(t.TempDir(), "cove.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	fn.server = startCoveArgs(t, fn.dir, []string{"--listen", fmt.Sprintf("127.0.0.1:%d", fn.port)}, "COVE_CONFIG="+path)
}

// waitLive waits until each of nodes counts want live nodes in the fleet (its own view, as it
// chooses owners by).
func waitLive(t *testing.T, nodes []*fleetNode, want int) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, 20*time.Second, fmt.Sprintf("node %s to count %d live", n.name, want), func() bool {
			resp, b := n.doAs("GET", "/api/v2.0/cluster/nodes", nil, "admin", adminPassword)
			return resp.StatusCode == 200 && strings.Count(string(b), `"live":true`) == want
		})
	}
}

// blobFiles counts the blob files of a node's data directory (its hot tier).
func blobFiles(t *testing.T, data string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(filepath.Join(data, "blobs"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// TestFleetOnS3: nodes on one PostgreSQL and one S3 bucket (versitygw) share their blobs: an
// image pushed on A pulls byte-exact on B and C, which read it from the bucket into their hot
// tier; with storage.blobs.s3.redirect a node answers blob GETs with a presigned URL; the bucket
// unreachable makes /readyz fail and uncached blobs answer 503 saying why, and serving resumes
// when it is back; a bucket that does not exist fails the start naming the key.
func TestFleetOnS3(t *testing.T) {
	pg := pgtest.Start(t)
	s3 := s3test.Start(t)
	conf := fleetConfig(pg, s3, "", "")
	nodes := startFleet(t, 2, conf)
	a, b := nodes[0], nodes[1]
	if !strings.Contains(a.log(), `"msg":"blobs in S3"`) {
		t.Fatalf("node A did not say it keeps its blobs in S3:\n%s", a.tail(10))
	}
	c := &fleetNode{name: "c", conf: fleetConfig(pg, s3, "      redirect: true\n", ""), dir: t.TempDir(), port: freePort(t)}
	c.start(t)
	a.createProject("team", false)
	img := testImage(t)
	if err := remoteWrite(a.server, t, "team/app:v1", img); err != nil {
		t.Fatal(err)
	}
	objects := 0
	filepath.WalkDir(filepath.Join(s3.Root, s3.Bucket, "fleet", "blobs"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			objects++
		}
		return nil
	})
	if objects < 3 { // config, layer(s), manifest
		t.Errorf("the bucket holds %d objects under the prefix after a push", objects)
	}
	if n := blobFiles(t, b.dir); n != 0 {
		t.Fatalf("node B has %d blob files before any pull", n)
	}
	checkImage(t, b.ref(t, "team/app:v1"), img, adminAuth)
	if n := blobFiles(t, b.dir); n < 3 {
		t.Errorf("node B's hot tier holds %d blobs after the pull, want the image's", n)
	}

	// Node C redirects blob GETs to the bucket; the client follows and gets the bytes.
	layer := must(must(img.Layers())[0].Digest()).String()
	req, _ := http.NewRequest("GET", c.url+"/v2/team/app/blobs/"+layer, nil)
	req.SetBasicAuth("admin", adminPassword)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, s3.Endpoint+"/") {
		t.Errorf("GET a blob on the redirecting node = %d Location %q, want 307 to the bucket", resp.StatusCode, loc)
	}
	checkImage(t, c.ref(t, "team/app:v1"), img, adminAuth)

	// The bucket unreachable: not ready, and a blob a node never had answers 503 saying why.
	d := &fleetNode{name: "d", conf: conf, dir: t.TempDir(), port: freePort(t)}
	d.start(t)
	s3.Stop()
	waitFor(t, 20*time.Second, "/readyz to fail without the bucket", func() bool {
		resp, _ := a.do("GET", "/readyz", nil, false)
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	resp, body := d.do("GET", "/v2/team/app/blobs/"+layer, nil, true)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "storage.blobs") {
		t.Errorf("a blob with the bucket down = %d %s, want 503 naming storage.blobs", resp.StatusCode, body)
	}
	// The access-log line is written once the answer is out: waited for, not expected at once.
	waitFor(t, 10*time.Second, "the 503's line at ERROR", func() bool { return strings.Contains(d.log(), `"level":"ERROR"`) })
	s3.Restart(t)
	waitFor(t, 30*time.Second, "/readyz once the bucket is back", func() bool {
		resp, _ := a.do("GET", "/readyz", nil, false)
		return resp.StatusCode == 200
	})
	checkImage(t, d.ref(t, "team/app:v1"), img, adminAuth)

	// PostgreSQL stopped: every node reports not ready; started again: ready, nothing lost.
	tok := b.token(t, "admin", adminPassword, "repository:team/app:pull")
	pg.Stop()
	for _, n := range []*fleetNode{a, b} {
		waitFor(t, 20*time.Second, "node "+n.name+"'s /readyz to fail without PostgreSQL", func() bool {
			resp, _ := n.do("GET", "/readyz", nil, false)
			return resp.StatusCode == http.StatusServiceUnavailable
		})
	}
	// Meanwhile a request that needs the metadata answers 503 naming it, never 500, and a right
	// password is never called wrong.
	for _, path := range []string{"/v2/team/app/tags/list", "/api/v2.0/projects"} {
		resp, body := b.doAs("GET", path, nil, "admin", adminPassword)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "storage.metadata") {
			t.Errorf("GET %s without PostgreSQL = %d %.300s, want 503 naming storage.metadata", path, resp.StatusCode, body)
		}
	}
	// A token issued before is not called wrong either (docker printed "invalid credentials").
	if resp, body := b.doBearer("GET", "/v2/team/app/tags/list", tok); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a bearer token without PostgreSQL = %d %.300s, want 503", resp.StatusCode, body)
	}
	pg.Restart(t)
	for _, n := range []*fleetNode{a, b} {
		waitFor(t, 30*time.Second, "node "+n.name+"'s /readyz once PostgreSQL is back", func() bool {
			resp, _ := n.do("GET", "/readyz", nil, false)
			return resp.StatusCode == 200
		})
	}
	checkImage(t, b.ref(t, "team/app:v1"), img, adminAuth)
	if err := remoteWrite(b.server, t, "team/app:v2", img); err != nil {
		t.Errorf("a push once PostgreSQL is back: %v", err)
	}

	// A bucket that does not exist fails the start, naming the key.
	path := filepath.Join(t.TempDir(), "cove.yaml")
	os.WriteFile(path, []byte(strings.Replace(conf, "bucket: "+s3.Bucket, "bucket: absent", 1)+
		"cluster:\n  node_name: e\n  advertise: http://127.0.0.1:1\n  secret: "+fleetSecret+"\n"), 0o600)
	cmd := execCove("serve", "--config", path, "--listen", "127.0.0.1:0", "--data", t.TempDir())
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() == 0 || !strings.Contains(string(out), "storage.blobs.s3.bucket") {
		t.Errorf("a missing bucket: exit %d, want a failed start naming storage.blobs.s3.bucket:\n%s", cmd.ProcessState.ExitCode(), out)
	}
}

// blobDigest GETs a blob through s and hashes it as it streams: the digest and size of what came.
func blobDigest(s *server, repo, dgst string, limit time.Duration) (digest.Digest, int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", s.url+"/v2/"+repo+"/blobs/"+dgst, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return "", 0, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	d := digest.Canonical.Digester()
	n, err := io.Copy(d.Hash(), resp.Body)
	return d.Digest(), n, err
}

// ranked is the fleet's nodes in rendezvous order for dgst: the owner first.
func ranked(nodes []*fleetNode, dgst string) []*fleetNode {
	var cn []cluster.Node
	byName := map[string]*fleetNode{}
	for _, n := range nodes {
		cn = append(cn, cluster.Node{Name: n.name})
		byName[n.name] = n
	}
	var out []*fleetNode
	for _, n := range cluster.Rank(cn, dgst) {
		out = append(out, byName[n.Name])
	}
	return out
}

// TestFleetHerd: three nodes mirror Docker Hub (here docker-registry). 24 clients spread over the
// three ask at once for an uncached 100 MiB blob: the fleet downloads it once, every client gets
// the right bytes. Then the owner of another blob is killed (kill -9) during its fill: the
// clients of the other nodes complete after a retry, with at most two downloads in all, and the
// killed node restarted rejoins the fleet.
func TestFleetHerd(t *testing.T) {
	reg := startRegistry(t, "", nil)
	var layers []string
	var sizes []int64
	for i := range 2 {
		img, err := random.Image(100<<20, 1)
		if err != nil {
			t.Fatal(err)
		}
		reg.seed(t, fmt.Sprintf("library/herd%d:1", i), img)
		l := must(img.Layers())[0]
		layers, sizes = append(layers, must(l.Digest()).String()), append(sizes, must(l.Size()))
	}
	proxy := newFaultProxy(t, reg.url)
	pg := pgtest.Start(t)
	s3 := s3test.Start(t)
	nodes := startFleet(t, 3, fleetConfig(pg, s3, "", mirrorConfig(proxy.srv.URL, "")))
	waitLive(t, nodes, 3)

	// The herd: 24 clients over three nodes, one download.
	var wg sync.WaitGroup
	errs := make(chan error, 24)
	for i := range 24 {
		wg.Go(func() {
			d, n, err := blobDigest(nodes[i%3].server, "library/herd0", layers[0], 3*time.Minute)
			if err == nil && (d.String() != layers[0] || n != sizes[0]) {
				err = fmt.Errorf("got %d bytes hashing to %s", n, d)
			}
			if err != nil {
				errs <- fmt.Errorf("client %d on node %s: %w", i, nodes[i%3].name, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := proxy.count("GET", "/blobs/"+layers[0]); n != 1 {
		t.Errorf("the herd of 24 over 3 nodes made %d upstream downloads, want 1", n)
	}

	// The owner of the second blob dies during its fill.
	order := ranked(nodes, layers[1])
	owner, others := order[0], order[1:]
	started := make(chan struct{}) // closed once the first download has sent 20 MiB: mid-fill
	var once sync.Once
	var sent atomic.Int64
	proxy.setFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method != "GET" || !strings.HasSuffix(r.URL.Path, "/blobs/"+layers[1]) {
			return false
		}
		next.ServeHTTP(&throttled{ResponseWriter: w, perWrite: time.Millisecond, sent: func(n int) {
			if sent.Add(int64(n)) >= 20<<20 {
				once.Do(func() { close(started) })
			}
		}}, r) // about 30 MiB/s
		return true
	})
	errs = make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			n := others[i%2]
			var err error
			for try := range 3 { // a client retries, as docker and containerd do
				var d digest.Digest
				var size int64
				d, size, err = blobDigest(n.server, "library/herd1", layers[1], 3*time.Minute)
				if err == nil && (d.String() != layers[1] || size != sizes[1]) {
					err = fmt.Errorf("got %d bytes hashing to %s", size, d)
				}
				if err == nil {
					return
				}
				t.Logf("client %d on node %s, try %d: %v", i, n.name, try+1, err)
			}
			errs <- fmt.Errorf("client %d on node %s: %w", i, n.name, err)
		})
	}
	select {
	case <-started:
	case <-time.After(time.Minute):
		t.Fatal("no upstream download of the second blob started")
	}
	owner.kill()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := proxy.count("GET", "/blobs/"+layers[1]); n < 1 || n > 2 {
		t.Errorf("the fill whose owner died made %d upstream downloads, want at most 2", n)
	}
	owner.start(t)
	waitLive(t, others[:1], 3)
	if d, n, err := blobDigest(owner.server, "library/herd1", layers[1], time.Minute); err != nil || d.String() != layers[1] || n != sizes[1] {
		t.Errorf("the restarted owner serves %d bytes hashing to %s, %v", n, d, err)
	}
}

// throttled slows a response: each write waits perWrite first (a slow upstream), and says how
// much it wrote.
type throttled struct {
	http.ResponseWriter
	perWrite time.Duration
	sent     func(int)
}

func (t *throttled) Write(p []byte) (int, error) {
	time.Sleep(t.perWrite) // the pace of a slow upstream, not a synchronisation
	n, err := t.ResponseWriter.Write(p)
	t.sent(n)
	return n, err
}

func (t *throttled) Flush() {
	if f, ok := t.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// TestFleetConformance: the OCI conformance suite passes against node B of a three-node fleet;
// what is made on one node — a project, a user, a robot, a membership, a token — works on the
// others.
func TestFleetConformance(t *testing.T) {
	pg := pgtest.Start(t)
	s3 := s3test.Start(t)
	nodes := startFleet(t, 3, fleetConfig(pg, s3, "", ""))
	a, b, c := nodes[0], nodes[1], nodes[2]
	b.createProject("conformance", false)
	runConformance(t, b.server)

	// Made on B, used on C.
	api := func(s *fleetNode, method, path, body string) (int, string) {
		resp, out := s.doAs(method, path, strings.NewReader(body), "admin", adminPassword)
		return resp.StatusCode, string(out)
	}
	b.createProject("team", false)
	if code, out := api(b, "POST", "/api/v2.0/users", `{"username":"dave","email":"d@example.org","password":"DavePw1xyz"}`); code != 201 {
		t.Fatalf("create dave on B = %d %s", code, out)
	}
	if code, out := api(b, "POST", "/api/v2.0/projects/team/members", `{"role_id":2,"member_user":{"username":"dave"}}`); code != 201 {
		t.Fatalf("add dave to team on B = %d %s", code, out)
	}
	code, out := api(b, "POST", "/api/v2.0/robots", `{"name":"ci","level":"project","duration":-1,"permissions":[{"kind":"project","namespace":"team","access":[{"resource":"repository","action":"push"},{"resource":"repository","action":"pull"}]}]}`)
	if code != 201 {
		t.Fatalf("create a robot on B = %d %s", code, out)
	}
	var robot struct{ Name, Secret string }
	json.Unmarshal([]byte(out), &robot)
	img := testImage(t)
	daveAuth := remote.WithAuth(&authn.Basic{Username: "dave", Password: "DavePw1xyz"})
	if err := remote.Write(c.ref(t, "team/app:dave"), img, daveAuth); err != nil {
		t.Errorf("dave, a developer of team made on B, pushes on C: %v", err)
	}
	robotAuth := remote.WithAuth(&authn.Basic{Username: robot.Name, Password: robot.Secret})
	if err := remote.Write(c.ref(t, "team/app:robot"), img, robotAuth); err != nil {
		t.Errorf("the robot made on B pushes on C: %v", err)
	}
	checkImage(t, a.ref(t, "team/app:robot"), img, robotAuth)

	// A token from A is accepted by C.
	tok := a.token(t, "dave", "DavePw1xyz", "repository:team/app:pull")
	if resp, body := c.doBearer("GET", "/v2/team/app/tags/list", tok); resp.StatusCode != 200 || !strings.Contains(string(body), "robot") {
		t.Errorf("node C with node A's token = %d %s", resp.StatusCode, body)
	}
	// The audit log of the fleet is one: C lists the pushes made on C and the robot made on B.
	resp, body := a.doAs("GET", "/api/v2.0/audit-logs?page_size=100", nil, "admin", adminPassword)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "robot") || !strings.Contains(string(body), "dave") {
		t.Errorf("the fleet's audit log on A = %d %.500s", resp.StatusCode, body)
	}
}

// TestFleetUploadAcrossNodes: an upload started on node A is continued on B (a chunk) and
// finished on C, as behind a load balancer that spreads one push's requests.
func TestFleetUploadAcrossNodes(t *testing.T) {
	pg := pgtest.Start(t)
	s3 := s3test.Start(t)
	nodes := startFleet(t, 3, fleetConfig(pg, s3, "", ""))
	a, b, c := nodes[0], nodes[1], nodes[2]
	a.createProject("team", false)
	waitLive(t, nodes, 3)
	blob := []byte(strings.Repeat("0123456789abcdef", 4096)) // 64 KiB in two chunks
	dgst := digest.FromBytes(blob)
	resp, body := a.do("POST", "/v2/team/app/blobs/uploads/", nil, true)
	if resp.StatusCode != 202 {
		t.Fatalf("start the upload on A = %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	req, _ := http.NewRequest("PATCH", b.url+loc, strings.NewReader(string(blob[:32<<10])))
	req.SetBasicAuth("admin", adminPassword)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("0-%d", 32<<10-1))
	resp, body = doRequest(t, req)
	if resp.StatusCode != 202 || resp.Header.Get("Range") != fmt.Sprintf("0-%d", 32<<10-1) {
		t.Fatalf("the first chunk on B = %d Range %q %s", resp.StatusCode, resp.Header.Get("Range"), body)
	}
	loc = resp.Header.Get("Location")
	if resp, _ := c.do("GET", loc, nil, true); resp.StatusCode != 204 || resp.Header.Get("Range") != fmt.Sprintf("0-%d", 32<<10-1) {
		t.Errorf("the upload's status on C = %d Range %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ = http.NewRequest("PUT", c.url+loc+sep+"digest="+dgst.String(), strings.NewReader(string(blob[32<<10:])))
	req.SetBasicAuth("admin", adminPassword)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, body = doRequest(t, req)
	if resp.StatusCode != 201 || resp.Header.Get("Docker-Content-Digest") != dgst.String() {
		t.Fatalf("the last chunk on C = %d %s", resp.StatusCode, body)
	}
	for _, n := range nodes {
		if resp, got := n.do("GET", "/v2/team/app/blobs/"+dgst.String(), nil, true); resp.StatusCode != 200 || string(got) != string(blob) {
			t.Errorf("the blob on node %s = %d, %d bytes", n.name, resp.StatusCode, len(got))
		}
	}
	// Without the node's signature, a forged request for another node's session is refused.
	req, _ = http.NewRequest("GET", a.url+loc, nil)
	req.Header.Set("X-Cove-Node", "b 1 00")
	if resp, _ := doRequest(t, req); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a forged node signature = %d, want 401", resp.StatusCode)
	}
}

// TestMigrateIntoAFleet: a single node's projects, users, robots, images and mirrored content move
// into a fleet with cove migrate --to-config; a node of the fleet serves them all, and ids made
// there continue above the node's (no user or robot takes an id already given).
func TestMigrateIntoAFleet(t *testing.T) {
	reg := startRegistry(t, "", nil)
	mirrored, err := random.Image(1<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	reg.seed(t, "library/mirrored:1", mirrored)
	data := t.TempDir()
	single := startMirror(t, data, mirrorConfig(reg.url, ""))
	single.createProject("team", false)
	img := testImage(t)
	if err := remoteWrite(single, t, "team/app:v1", img); err != nil {
		t.Fatal(err)
	}
	if resp, b := single.doAs("POST", "/api/v2.0/users", strings.NewReader(`{"username":"dave","email":"d@example.org","password":"DavePw1xyz"}`), "admin", adminPassword); resp.StatusCode != 201 {
		t.Fatalf("create dave = %d %s", resp.StatusCode, b)
	}
	resp, b := single.doAs("POST", "/api/v2.0/robots", strings.NewReader(`{"name":"ci","level":"project","duration":-1,"permissions":[{"kind":"project","namespace":"team","access":[{"resource":"repository","action":"pull"}]}]}`), "admin", adminPassword)
	if resp.StatusCode != 201 {
		t.Fatalf("create a robot = %d %s", resp.StatusCode, b)
	}
	var robot struct{ Name, Secret string }
	json.Unmarshal(b, &robot)
	checkImage(t, single.ref(t, "library/mirrored:1"), mirrored) // cached on the node
	single.stop()

	pg := pgtest.Start(t)
	s3 := s3test.Start(t)
	conf := fleetConfig(pg, s3, "", mirrorConfig(reg.url, "")) +
		"cluster:\n  node_name: a\n  advertise: http://127.0.0.1:1\n  secret: " + fleetSecret + "\n"
	// The bucket's secret key from the environment, as the README suggests: it applies to the
	// target (it applied to the source, and the bucket refused the copy).
	path := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(conf, "secret_key: "+s3.SecretKey, `secret_key: ""`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	// A blob file deleted by hand while cove was stopped: the migration refuses before it copies,
	// naming what to do (a record copied without its blob would fail in the fleet for ever).
	layers, err := mirrored.Layers()
	if err != nil {
		t.Fatal(err)
	}
	layer, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	layerPath := filepath.Join(data, "blobs", "sha256", layer.Hex[:2], layer.Hex)
	if err := os.Rename(layerPath, layerPath+".aside"); err != nil {
		t.Fatal(err)
	}
	cmd := execCove("migrate", "--to-config", path, "--data", data)
	cmd.Env = append(os.Environ(), "COVE_STORAGE_BLOBS_S3_SECRET_KEY="+s3.SecretKey)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "have no file") || !strings.Contains(string(out), "start cove on this data directory once") {
		t.Fatalf("cove migrate with a blob file missing: %v\n%s", err, out)
	}
	if err := os.Rename(layerPath+".aside", layerPath); err != nil {
		t.Fatal(err)
	}
	cmd = execCove("migrate", "--to-config", path, "--data", data)
	cmd.Env = append(os.Environ(), "COVE_STORAGE_BLOBS_S3_SECRET_KEY="+s3.SecretKey)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "migrated") {
		t.Fatalf("cove migrate: %v\n%s", err, out)
	}
	// A second run refuses: the database is not empty.
	cmd = execCove("migrate", "--to-config", path, "--data", data)
	cmd.Env = append(os.Environ(), "COVE_STORAGE_BLOBS_S3_SECRET_KEY="+s3.SecretKey)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "empty") {
		t.Errorf("a second migrate into the same database: %v\n%s", err, out)
	}

	reg.stop() // the fleet serves the mirrored image from the bucket, without the upstream
	node := startFleet(t, 1, fleetConfig(pg, s3, "", mirrorConfig(reg.url, "")))[0]
	checkImage(t, node.ref(t, "team/app:v1"), img, adminAuth)
	checkImage(t, node.ref(t, "library/mirrored:1"), mirrored)
	if resp, _ := node.doAs("GET", "/api/v2.0/users/current", nil, "dave", "DavePw1xyz"); resp.StatusCode != 200 {
		t.Errorf("dave on the fleet = %d", resp.StatusCode)
	}
	checkImage(t, node.ref(t, "team/app:v1"), img, remote.WithAuth(&authn.Basic{Username: robot.Name, Password: robot.Secret}))
	resp, b = node.doAs("POST", "/api/v2.0/users", strings.NewReader(`{"username":"erin","email":"e@example.org","password":"ErinPw1xyz"}`), "admin", adminPassword)
	if resp.StatusCode != 201 {
		t.Fatalf("create erin on the fleet = %d %s", resp.StatusCode, b)
	}
	resp, b = node.doAs("GET", "/api/v2.0/users?page_size=100", nil, "admin", adminPassword)
	if resp.StatusCode != 200 {
		t.Fatalf("list users on the fleet = %d %s", resp.StatusCode, b)
	}
	var users []struct {
		UserID   int64  `json:"user_id"`
		Username string `json:"username"`
	}
	json.Unmarshal(b, &users)
	ids := map[int64]string{}
	for _, u := range users {
		if other, ok := ids[u.UserID]; ok {
			t.Errorf("users %s and %s share the id %d", other, u.Username, u.UserID)
		}
		ids[u.UserID] = u.Username
	}
	if len(users) < 3 {
		t.Errorf("the fleet lists %d users: %s", len(users), b)
	}
}

// TestFleetTagsAskedOnce: a tag is asked of the upstream by its owner for the whole fleet: 12
// clients over three nodes asking at once for an uncached tag make one upstream request, and
// once its tag_ttl has passed, 12 at once confirm it upstream once, not once per node (the
// shared metadata alone makes sequential pulls ask once; clients at once need the owner).
func TestFleetTagsAskedOnce(t *testing.T) {
	reg := startRegistry(t, "", nil)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	reg.seed(t, "library/tagged:1", img)
	proxy := newFaultProxy(t, reg.url)
	// A slow upstream for the tag: requests from the nodes overlap.
	proxy.setFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if strings.HasSuffix(r.URL.Path, "/manifests/1") {
			time.Sleep(500 * time.Millisecond) // the upstream's latency, not a synchronisation
		}
		return false
	})
	pg := pgtest.Start(t)
	s3 := s3test.Start(t)
	const ttl = 3 * time.Second
	nodes := startFleet(t, 3, fleetConfig(pg, s3, "", mirrorConfig(proxy.srv.URL, "")+fmt.Sprintf("  tag_ttl: %s\n", ttl)))
	waitLive(t, nodes, 3)
	asked := func() int { return proxy.count("GET", "/manifests/1") + proxy.count("HEAD", "/manifests/1") }
	want := must(img.Digest()).String()
	herd := func() {
		t.Helper()
		var wg sync.WaitGroup
		for i := range 12 {
			wg.Go(func() {
				resp, _ := nodes[i%3].do("GET", "/v2/library/tagged/manifests/1", nil, false, "Accept", "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json")
				if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != want {
					t.Errorf("client %d on node %s = %d %s", i, nodes[i%3].name, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
				}
			})
		}
		wg.Wait()
	}
	herd()
	if got := asked(); got != 1 {
		t.Errorf("12 clients over three nodes asked the upstream for an uncached tag %d times, want 1", got)
	}
	time.Sleep(ttl) // the tag's time to live passes: a wait for expiry, not for synchronisation
	herd()
	if got := asked() - 1; got != 1 {
		t.Errorf("after tag_ttl, 12 clients over three nodes asked the upstream %d times, want 1", got)
	}
}
