// Command image assembles cove's container image without a Docker daemon and without a base image:
// one layer of the files a static binary needs (a non-root user in /etc/passwd and /etc/group, CA
// certificates, /data owned by that user, /tmp) and one layer with the binary at /cove, for each
// platform given. It writes an OCI image layout holding an index of every platform, and one
// docker-archive per platform that `docker load` and `podman load` read.
//
// The labels are read from each binary's own build information (its Go version and the -X
// main.version / main.commit of make's -ldflags), so they say exactly what `cove version` of that
// binary prints; every file's time and the image's creation time are the commit's time, so the
// same commit gives the same image digests.
//
//	go run ./deploy/image --created 2026-01-02T03:04:05Z --out bin \
//	    --binary linux/amd64=bin/linux-amd64/cove --binary linux/arm64=bin/linux-arm64/cove
package main

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's user, data directory and port: fixed, since the README and the compose files name them.
const (
	uid      = 65532
	gid      = 65532
	dataDir  = "/data"
	port     = "5000/tcp"
	binPath  = "/cove"
	userName = "cove"
)

// The OCI annotation keys used as labels (image-spec annotations.md).
const (
	labelVersion  = "org.opencontainers.image.version"
	labelRevision = "org.opencontainers.image.revision"
	labelSource   = "org.opencontainers.image.source"
	labelCreated  = "org.opencontainers.image.created"
	labelTitle    = "org.opencontainers.image.title"
	labelDesc     = "org.opencontainers.image.description"
	labelLicenses = "org.opencontainers.image.licenses"
	labelRefName  = "org.opencontainers.image.ref.name"
	// labelGoVersion carries the third thing `cove version` prints; OCI has no key for it.
	labelGoVersion = "dev.cove.go.version"
)

// binaryFlag collects --binary os/arch=path.
type binaryFlag []platformBinary

type platformBinary struct {
	platform v1.Platform
	path     string
}

func (b *binaryFlag) String() string { return fmt.Sprint(*b) }

func (b *binaryFlag) Set(s string) error {
	plat, path, ok := strings.Cut(s, "=")
	if !ok || path == "" {
		return fmt.Errorf("%q: want os/arch=path, e.g. linux/amd64=bin/linux-amd64/cove", s)
	}
	p, err := v1.ParsePlatform(plat)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return fmt.Errorf("%q: the platform %q is not os/arch (e.g. linux/arm64)", s, plat)
	}
	*b = append(*b, platformBinary{platform: *p, path: path})
	return nil
}

// options is what the command line says.
type options struct {
	binaries binaryFlag
	created  time.Time
	source   string
	licenses string
	certs    string
	out      string
	repo     string
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.Var(&o.binaries, "binary", "os/arch=path of a static cove binary (repeat for each platform)")
	created := fs.String("created", "", "the image's creation time, RFC 3339 (make image: the commit's time)")
	fs.StringVar(&o.source, "source", "", "org.opencontainers.image.source: the URL of the source (left out when empty)")
	fs.StringVar(&o.licenses, "licenses", "", "org.opencontainers.image.licenses, an SPDX expression (left out when empty)")
	fs.StringVar(&o.certs, "ca-certs", "/etc/ssl/certs/ca-certificates.crt", "CA bundle copied to /etc/ssl/certs/ca-certificates.crt")
	fs.StringVar(&o.out, "out", "bin", "directory for cove-image/ (OCI layout) and cove-image-<arch>.tar (docker-archive)")
	fs.StringVar(&o.repo, "repo", "cove", "repository name of the docker-archives' tags (<repo>:<version> and <repo>:latest)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if len(o.binaries) == 0 {
		return errors.New("no --binary given: name at least one os/arch=path")
	}
	t, err := time.Parse(time.RFC3339, *created)
	if err != nil {
		return fmt.Errorf("--created %q: want an RFC 3339 time such as `git log -1 --format=%%cI`: %w", *created, err)
	}
	o.created = t.UTC()
	res, err := build(o)
	if err != nil {
		return err
	}
	for _, line := range res {
		fmt.Fprintln(stdout, line)
	}
	return nil
}

// binaryInfo is what `cove version` of a binary prints, read from its build information.
type binaryInfo struct {
	version, commit, goVersion string
}

// ldflagX matches one -X main.name=value of the -ldflags a binary was built with.
var ldflagX = regexp.MustCompile(`-X[= ]main\.(version|commit)=(\S+)`)

// readBinaryInfo reads the version and commit that make build sets with -ldflags -X (recorded in
// the binary's build information) and its Go version. A binary built without them is refused:
// its labels could not say what it is.
func readBinaryInfo(path string) (binaryInfo, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return binaryInfo{}, fmt.Errorf("%s: not a Go binary with build information: %w", path, err)
	}
	info := binaryInfo{goVersion: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "-ldflags":
			for _, m := range ldflagX.FindAllStringSubmatch(s.Value, -1) {
				if m[1] == "version" {
					info.version = m[2]
				} else {
					info.commit = m[2]
				}
			}
		case "CGO_ENABLED":
			if s.Value != "0" {
				return binaryInfo{}, fmt.Errorf("%s: built with CGO_ENABLED=%s; the image has no C library: build with CGO_ENABLED=0", path, s.Value)
			}
		}
	}
	if info.version == "" || info.commit == "" {
		return binaryInfo{}, fmt.Errorf("%s: built without -ldflags \"-X main.version=… -X main.commit=…\" (build it as make image does)", path)
	}
	return info, nil
}

// build writes the OCI layout and the docker-archives; it returns a line per output.
func build(o options) ([]string, error) {
	certs, err := os.ReadFile(o.certs)
	if err != nil {
		return nil, fmt.Errorf("CA certificates (--ca-certs): %w; a mirror needs them to reach its upstreams over TLS", err)
	}
	base, err := baseLayer(certs, o.created)
	if err != nil {
		return nil, err
	}
	var (
		info   binaryInfo
		idx    = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		images = map[string]v1.Image{}
		lines  []string
	)
	for i, b := range o.binaries {
		bi, err := readBinaryInfo(b.path)
		if err != nil {
			return nil, err
		}
		if i > 0 && bi != info {
			return nil, fmt.Errorf("%s says %+v but %s says %+v: build every platform from the same commit with the same flags", b.path, bi, o.binaries[0].path, info)
		}
		info = bi
		img, err := platformImage(b, base, bi, o)
		if err != nil {
			return nil, err
		}
		p := b.platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
		arch := p.Architecture
		if p.Variant != "" {
			arch += p.Variant
		}
		images[arch] = img
	}
	if _, err := name.NewTag(o.repo + ":" + info.version); err != nil {
		return nil, fmt.Errorf("the version %q is not a valid tag for %s: %w", info.version, o.repo, err)
	}

	// The OCI layout: index.json names the multi-platform index twice, as <version> and latest.
	dir := filepath.Join(o.out, "cove-image")
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	for _, ref := range []string{info.version, "latest"} {
		if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{labelRefName: ref})); err != nil {
			return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
		}
	}
	d, err := idx.Digest()
	if err != nil {
		return nil, err
	}
	lines = append(lines, fmt.Sprintf("%s: OCI layout, index %s (%s and latest)", dir, d, info.version))

	// A docker-archive per platform: docker load reads one image per tag.
	for _, b := range o.binaries {
		arch := b.platform.Architecture + b.platform.Variant
		path := filepath.Join(o.out, "cove-image-"+arch+".tar")
		refs := map[name.Reference]v1.Image{}
		for _, tag := range []string{info.version, "latest"} {
			t, err := name.NewTag(o.repo + ":" + tag)
			if err != nil {
				return nil, err
			}
			refs[t] = images[arch]
		}
		if err := tarball.MultiRefWriteToFile(path, refs); err != nil {
			return nil, fmt.Errorf("docker-archive %s: %w", path, err)
		}
		d, err := images[arch].Digest()
		if err != nil {
			return nil, err
		}
		lines = append(lines, fmt.Sprintf("%s: docker-archive of %s, %s:%s and %s:latest, manifest %s", path, b.platform, o.repo, info.version, o.repo, d))
	}
	return lines, nil
}

// platformImage is the base layer plus the binary's layer, with the configuration and labels.
func platformImage(b platformBinary, base v1.Layer, bi binaryInfo, o options) (v1.Image, error) {
	bin, err := os.ReadFile(b.path)
	if err != nil {
		return nil, err
	}
	binLayer, err := layerOf([]tarEntry{{name: strings.TrimPrefix(binPath, "/"), mode: 0o755, body: bin}}, o.created)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), base, binLayer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	labels := map[string]string{
		labelVersion:   bi.version,
		labelRevision:  bi.commit,
		labelCreated:   o.created.Format(time.RFC3339),
		labelTitle:     "cove",
		labelDesc:      "cove: a pull-through mirror of Docker Hub and a private registry",
		labelGoVersion: bi.goVersion,
	}
	if o.source != "" {
		labels[labelSource] = o.source
	}
	if o.licenses != "" {
		labels[labelLicenses] = o.licenses
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = b.platform.OS, b.platform.Architecture, b.platform.Variant
	cf.Created = v1.Time{Time: o.created}
	cf.Author = ""
	cf.History = []v1.History{
		{Created: v1.Time{Time: o.created}, CreatedBy: "cove deploy/image: user, CA certificates, /data", Comment: "base"},
		{Created: v1.Time{Time: o.created}, CreatedBy: "cove deploy/image: /cove " + bi.version, Comment: "binary"},
	}
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", uid, gid),
		Entrypoint: []string{binPath},
		Cmd:        []string{"serve"},
		WorkingDir: dataDir,
		Env: []string{
			"PATH=/",
			"COVE_DATA=" + dataDir,
			"COVE_LISTEN=:5000",
			"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
		},
		ExposedPorts: map[string]struct{}{port: {}},
		Volumes:      map[string]struct{}{dataDir: {}},
		Labels:       labels,
		StopSignal:   "SIGTERM",
		// Docker runs it (podman too, with --format docker images); cove healthcheck GETs /healthz.
		Healthcheck: &v1.HealthConfig{
			Test:        []string{"CMD", binPath, "healthcheck"},
			Interval:    10 * time.Second,
			Timeout:     5 * time.Second,
			StartPeriod: 30 * time.Second,
			Retries:     3,
		},
	}
	return mutate.ConfigFile(img, cf)
}

// baseLayer holds what every platform shares: the user, the CA bundle, /data and /tmp.
func baseLayer(certs []byte, created time.Time) (v1.Layer, error) {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:cove:%s:/sbin/nologin\n", userName, uid, gid, dataDir)
	group := fmt.Sprintf("root:x:0:\n%s:x:%d:\n", userName, gid)
	return layerOf([]tarEntry{
		{name: "etc/", dir: true, mode: 0o755},
		{name: "etc/passwd", mode: 0o644, body: []byte(passwd)},
		{name: "etc/group", mode: 0o644, body: []byte(group)},
		{name: "etc/ssl/", dir: true, mode: 0o755},
		{name: "etc/ssl/certs/", dir: true, mode: 0o755},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: certs},
		{name: "data/", dir: true, mode: 0o750, uid: uid, gid: gid},
		{name: "tmp/", dir: true, mode: 0o1777},
	}, created)
}

// tarEntry is a file or directory of a layer; owner root unless uid/gid say otherwise.
type tarEntry struct {
	name     string
	dir      bool
	mode     int64
	uid, gid int
	body     []byte
}

// layerOf builds a gzip-compressed layer from entries in the given order, every time created, so
// the same inputs give the same digest.
func layerOf(entries []tarEntry, created time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:     e.name,
			Mode:     e.mode,
			Uid:      e.uid,
			Gid:      e.gid,
			ModTime:  created,
			Typeflag: tar.TypeReg,
			Size:     int64(len(e.body)),
			Format:   tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}
