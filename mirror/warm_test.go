package mirror_test

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"cove/cache"
	"cove/mirror"
)

func TestResolveImage(t *testing.T) {
	ups := []string{"docker.io", "ghcr.io", "localhost:5000"}
	const dgst = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cases := []struct {
		image string
		want  mirror.ImageRef
		err   string // a part of the error; empty: none
	}{
		{"alpine:3.20", mirror.ImageRef{Upstream: "docker.io", Repo: "library/alpine", Ref: "3.20"}, ""},
		{"alpine", mirror.ImageRef{Upstream: "docker.io", Repo: "library/alpine", Ref: "latest"}, ""},
		{"bitnami/redis:7", mirror.ImageRef{Upstream: "docker.io", Repo: "bitnami/redis", Ref: "7"}, ""},
		{"docker.io/alpine:3", mirror.ImageRef{Upstream: "docker.io", Repo: "library/alpine", Ref: "3"}, ""},
		{"docker.io/library/alpine:3", mirror.ImageRef{Upstream: "docker.io", Repo: "library/alpine", Ref: "3"}, ""},
		{"ghcr.io/o/i:tag", mirror.ImageRef{Upstream: "ghcr.io", Repo: "o/i", Ref: "tag"}, ""},
		{"ghcr.io/o/i@" + dgst, mirror.ImageRef{Upstream: "ghcr.io", Repo: "o/i", Ref: dgst}, ""},
		{"alpine:3.20@" + dgst, mirror.ImageRef{Upstream: "docker.io", Repo: "library/alpine", Ref: dgst}, ""},
		{"localhost:5000/team/app:1", mirror.ImageRef{Upstream: "localhost:5000", Repo: "team/app", Ref: "1"}, ""},
		{"quay.io/o/i:1", mirror.ImageRef{}, `mirror.upstreams."quay.io".url`},
		{"localhost/o/i", mirror.ImageRef{}, `mirror.upstreams."localhost".url`},
		{"registry:5001/o/i", mirror.ImageRef{}, `mirror.upstreams."registry:5001".url`},
		{"", mirror.ImageRef{}, "want a reference"},
		{"Alpine:3", mirror.ImageRef{}, "invalid repository name"},
		{"alpine:", mirror.ImageRef{}, "invalid tag"},
		{"alpine:bad tag", mirror.ImageRef{}, "want a reference"},
		{"alpine@sha256:short", mirror.ImageRef{}, "invalid digest"},
		{"a//b:1", mirror.ImageRef{}, "invalid repository name"},
	}
	for _, tc := range cases {
		t.Run(tc.image, func(t *testing.T) {
			got, err := mirror.ResolveImage(tc.image, ups, "docker.io")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, cache.ErrWarmInvalid) {
					t.Fatalf("ResolveImage(%q) = %+v, %v; want an ErrWarmInvalid naming %q", tc.image, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ResolveImage(%q) = %+v, %v; want %+v", tc.image, got, err, tc.want)
			}
		})
	}
}

func TestParsePlatform(t *testing.T) {
	cases := []struct {
		in   string
		want mirror.Platform
		ok   bool
	}{
		{"linux/amd64", mirror.Platform{OS: "linux", Arch: "amd64"}, true},
		{"linux/arm64/v8", mirror.Platform{OS: "linux", Arch: "arm64", Variant: "v8"}, true},
		{"windows/amd64", mirror.Platform{OS: "windows", Arch: "amd64"}, true},
		{"linux", mirror.Platform{}, false},
		{"linux/", mirror.Platform{}, false},
		{"Linux/AMD64", mirror.Platform{}, false},
		{"linux/arm/v7/extra", mirror.Platform{}, false},
		{"linux/amd 64", mirror.Platform{}, false},
	}
	for _, tc := range cases {
		got, err := mirror.ParsePlatform(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParsePlatform(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, cache.ErrWarmInvalid) {
			t.Errorf("ParsePlatform(%q) error %v is not ErrWarmInvalid", tc.in, err)
		}
	}
}

// twoPlatforms is an index of an amd64 and an arm64 image.
func twoPlatforms(t *testing.T) (idx v1.ImageIndex, amd64, arm64 v1.Image) {
	t.Helper()
	amd64, arm64 = must(random.Image(30_000, 2)), must(random.Image(30_000, 3))
	idx = mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
	)
	return idx, amd64, arm64
}

// imageBytes is what a pull of img reads: its manifest, config and layers, and their number.
func imageBytes(t *testing.T, img v1.Image) (bytes int64, blobs int) {
	t.Helper()
	m := must(img.Manifest())
	bytes = must(img.Size()) + m.Config.Size
	for _, l := range m.Layers {
		bytes += l.Size
	}
	return bytes, 1 + len(m.Layers)
}

func newWarmer(t *testing.T, me *mirrorEnv) *mirror.Warmer {
	t.Helper()
	w, err := mirror.NewWarmer(context.Background(), me.mirror, cache.NewWarmJobs(me.store), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

// waitWarm polls job id until it ends, for at most 20s.
func waitWarm(t *testing.T, w *mirror.Warmer, id int64) cache.WarmJob {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		job, err := w.Job(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if job.Ended() {
			return job
		}
		if time.Now().After(deadline) {
			t.Fatalf("warm job %d did not end within 20s: %+v", id, job)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A warmed image pulls with no upstream request at all; the platforms not asked for are not
// fetched; an image that fails does not stop the others.
func TestWarmThenPullAsksTheUpstreamNothing(t *testing.T) {
	up := newFakeUpstream(t)
	idx, amd64, _ := twoPlatforms(t)
	up.seed(t, "library/app:1", idx)
	ghcr := newFakeUpstream(t)
	plain := must(random.Image(20_000, 2))
	ghcr.seed(t, "owner/tool:v2", plain)
	audit := &auditLog{}
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}, {Name: "ghcr.io", URL: ghcr.srv.URL}},
		func(c *mirror.Config) { c.Audit = audit })
	w := newWarmer(t, me)

	job, err := w.Start(context.Background(), cache.WarmRequest{Kind: cache.WarmManual, Operator: "alice",
		Images: []string{"app:1", "ghcr.io/owner/tool:v2", "missing:1"}, Platforms: []string{"linux/amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	if job.Status != cache.WarmPending || job.ID != 1 {
		t.Errorf("Start = %+v, want job 1 Pending", job)
	}
	job = waitWarm(t, w, job.ID)
	if job.Status != cache.WarmError {
		t.Errorf("job status %s, want Error: one image is missing upstream", job.Status)
	}
	ib, iblobs := imageBytes(t, amd64)
	ib += must(idx.Size())
	pb, pblobs := imageBytes(t, plain)
	want := []cache.WarmImage{
		{Image: "app:1", Digest: must(idx.Digest()).String(), Platforms: []string{"linux/amd64"}, Manifests: 2, Blobs: iblobs, Bytes: ib, Done: true},
		{Image: "ghcr.io/owner/tool:v2", Digest: must(plain.Digest()).String(), Platforms: []string{}, Manifests: 1, Blobs: pblobs, Bytes: pb, Done: true},
	}
	for i, wi := range want {
		if got := job.Images[i]; got.Image != wi.Image || got.Digest != wi.Digest || !slices.Equal(got.Platforms, wi.Platforms) ||
			got.Manifests != wi.Manifests || got.Blobs != wi.Blobs || got.Bytes != wi.Bytes || !got.Done || got.Error != "" {
			t.Errorf("image %d = %+v\nwant %+v", i, got, wi)
		}
	}
	if got := job.Images[2]; !got.Done || !strings.Contains(got.Error, "not found at upstream docker.io") {
		t.Errorf("missing image = %+v, want done with an error saying the upstream has no such image", got)
	}
	// Only the amd64 image's blobs came down; each once.
	if n := up.count("GET blobs"); n != iblobs {
		t.Errorf("upstream blob GETs = %d, want %d (the amd64 image's, not the arm64 one's)", n, iblobs)
	}
	audit.mu.Lock()
	pulls := 0
	for _, e := range audit.events {
		if e.Operation == "pull" && e.Username == "alice" {
			pulls++
		}
	}
	audit.mu.Unlock()
	if pulls != 3 {
		t.Errorf("audited pulls by the operator = %d, want 3 (the index, its amd64 image, the plain image)", pulls)
	}
	// A warm is no client's pull: no pull count, no pull time (the listing writes the pulls
	// noted so far before it reads them).
	sums, err := me.store.Manifests.RepositorySummaries(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, sum := range sums {
		if sum.Pulls != 0 || !sum.Pulled.IsZero() {
			t.Errorf("after a warm, %s has %d pulls, last at %v; want none", sum.Name, sum.Pulls, sum.Pulled)
		}
	}

	// Now the clients: nothing goes upstream.
	before := up.count("GET manifests") + up.count("HEAD manifests") + up.count("GET blobs") + up.count("HEAD blobs") + up.count("GET ping")
	beforeG := ghcr.count("GET manifests") + ghcr.count("HEAD manifests") + ghcr.count("GET blobs") + ghcr.count("HEAD blobs") + ghcr.count("GET ping")
	if _, err := me.pull(t, "app:1", remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		t.Fatalf("pull the warmed image: %v", err)
	}
	if _, err := me.pull(t, "ghcr.io/owner/tool:v2"); err != nil {
		t.Fatalf("pull the warmed plain image: %v", err)
	}
	after := up.count("GET manifests") + up.count("HEAD manifests") + up.count("GET blobs") + up.count("HEAD blobs") + up.count("GET ping")
	afterG := ghcr.count("GET manifests") + ghcr.count("HEAD manifests") + ghcr.count("GET blobs") + ghcr.count("HEAD blobs") + ghcr.count("GET ping")
	if after != before || afterG != beforeG {
		t.Errorf("pulls of warmed images went upstream: %d and %d requests", after-before, afterG-beforeG)
	}

	pullsOf := func() map[string]int64 {
		sums, err := me.store.Manifests.RepositorySummaries(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, sum := range sums {
			out[sum.Name] = sum.Pulls
		}
		return out
	}
	clientPulls := pullsOf()

	// A second warm finds everything cached: it reads no blob again, and confirms the tags once
	// they are stale (a HEAD each), so the pulls after it again ask nothing.
	me.clock.Add(2 * time.Minute)
	job2, err := w.Start(context.Background(), cache.WarmRequest{Kind: cache.WarmSchedule, Operator: "system",
		Images: []string{"app:1"}, Platforms: []string{"linux/amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	job2 = waitWarm(t, w, job2.ID)
	if job2.Status != cache.WarmSuccess || job2.Images[0].CachedBlobs != iblobs || job2.Images[0].Bytes != ib {
		t.Errorf("second warm = %+v, want Success with every blob cached", job2)
	}
	if n := up.count("GET blobs"); n != iblobs {
		t.Errorf("the second warm fetched blobs again: %d GETs", n)
	}
	if n := up.count("HEAD manifests"); n != 1 {
		t.Errorf("upstream manifest HEADs = %d, want 1 (the stale tag confirmed)", n)
	}
	if got := pullsOf(); !maps.Equal(got, clientPulls) {
		t.Errorf("pulls after the second warm = %v, want the clients' only, %v", got, clientPulls)
	}
	list, err := w.Jobs(context.Background())
	if err != nil || len(list) != 2 || list[0].ID != job2.ID || list[0].Kind != cache.WarmSchedule {
		t.Errorf("Jobs = %+v, %v; want the two jobs, newest first", list, err)
	}
}

// A client that asks for a blob while the warm job fetches it joins the job's download: the
// upstream serves it once.
func TestWarmAndAClientShareOneDownload(t *testing.T) {
	up := newFakeUpstream(t)
	img := must(random.Image(1<<20, 1))
	up.seed(t, "library/big:1", img)
	ld := must(must(img.Layers())[0].Digest())
	gate := make(chan struct{})
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == "GET" && strings.Contains(r.URL.Path, ld.String()) {
			<-gate // hold the download until the client has joined it
		}
		return false
	})
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	w := newWarmer(t, me)
	job, err := w.Start(context.Background(), cache.WarmRequest{Kind: cache.WarmManual, Operator: "admin", Images: []string{"big:1"}})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return up.count("GET blobs") >= 2 }) // the config, then the held layer
	errc := make(chan error, 1)
	go func() {
		resp, err := http.Get(me.srv.URL + "/v2/big/blobs/" + ld.String())
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = errors.New(resp.Status)
			}
		}
		errc <- err
	}()
	waitUntil(t, func() bool { return testutil.ToFloat64(metric(t, me.reg, "cove_mirror_coalesced_total")) == 1 })
	close(gate)
	if err := <-errc; err != nil {
		t.Errorf("the client's GET: %v", err)
	}
	if job = waitWarm(t, w, job.ID); job.Status != cache.WarmSuccess {
		t.Errorf("job = %+v, want Success", job)
	}
	if n := up.count("GET blobs"); n != 2 {
		t.Errorf("upstream blob GETs = %d, want 2 (config and layer, each once)", n)
	}
}

func TestWarmRefusesBadRequests(t *testing.T) {
	up := newFakeUpstream(t)
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	w := newWarmer(t, me)
	many := make([]string, mirror.MaxWarmImages+1)
	for i := range many {
		many[i] = "img" + strings.Repeat("x", i%7) + ":" + string(rune('a'+i%26)) + strings.Repeat("1", i/26)
	}
	cases := []struct {
		name      string
		images    []string
		platforms []string
		want      string
	}{
		{"no images", nil, nil, "at least one image"},
		{"blank images", []string{" ", ""}, nil, "at least one image"},
		{"too many", many, nil, "at most 100"},
		{"bad reference", []string{"alpine:3", "Alpine"}, nil, `image "Alpine"`},
		{"unconfigured upstream", []string{"ghcr.io/o/i:1"}, nil, `mirror.upstreams."ghcr.io".url`},
		{"local project", []string{"priv/app:1"}, nil, "local project priv"},
		{"bad platform", []string{"alpine"}, []string{"linux"}, `platform "linux"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := w.Start(context.Background(), cache.WarmRequest{Kind: cache.WarmManual, Operator: "admin", Images: tc.images, Platforms: tc.platforms})
			if !errors.Is(err, cache.ErrWarmInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start = %v, want ErrWarmInvalid saying %q", err, tc.want)
			}
		})
	}
	if list, _ := w.Jobs(context.Background()); len(list) != 0 {
		t.Errorf("refused requests left %d jobs", len(list))
	}
	if n := up.count("GET manifests") + up.count("HEAD manifests"); n != 0 {
		t.Errorf("refused requests asked the upstream %d times", n)
	}
}

// A download cut in the middle, after the handler has sent its headers, ends the handler with
// http.ErrAbortHandler: the job records it as the image's error, keeps nothing, and a later warm
// fetches the blob afresh.
func TestWarmRecordsACutDownload(t *testing.T) {
	up := newFakeUpstream(t)
	img := must(random.Image(1<<20, 1))
	up.seed(t, "library/app:1", img)
	layer := must(img.Layers())[0]
	ld, size := must(layer.Digest()), must(layer.Size())
	gate := make(chan struct{})
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == "GET" && strings.Contains(r.URL.Path, "/blobs/"+ld.String()) {
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			w.Write(make([]byte, size/2))
			w.(http.Flusher).Flush()
			<-gate
			panic(http.ErrAbortHandler) // the connection cut half way
		}
		return false
	})
	me := newMirrorEnv(t, []mirror.Upstream{{Name: "docker.io", URL: up.srv.URL}})
	w := newWarmer(t, me)
	job := must(w.Start(context.Background(), cache.WarmRequest{Kind: cache.WarmManual, Operator: "admin", Images: []string{"app:1"}}))
	// Half the layer has reached cove: the job streams it by now.
	waitUntil(t, func() bool {
		return testutil.ToFloat64(metric(t, me.reg, "cove_mirror_bytes_total", "source", "upstream")) >= float64(size/2)
	})
	close(gate)
	job = waitWarm(t, w, job.ID)
	if im := job.Images[0]; job.Status != cache.WarmError || !im.Done || !strings.Contains(im.Error, "cut before its end") {
		t.Fatalf("job = %+v, want Error with the image's download cut", job)
	}
	up.setFault(nil)
	job = waitWarm(t, w, must(w.Start(context.Background(), cache.WarmRequest{Kind: cache.WarmManual, Operator: "admin", Images: []string{"app:1"}})).ID)
	if im := job.Images[0]; job.Status != cache.WarmSuccess || im.CachedBlobs != 1 || im.Blobs != 2 {
		t.Errorf("second job = %+v, want Success with the layer fetched again (only the config cached)", job)
	}
	if _, err := me.pull(t, "app:1"); err != nil {
		t.Errorf("pull after the second warm: %v", err)
	}
}
