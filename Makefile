# cove — make run: cove on its embedded default; make test: install what the tests need, run them all.
SHELL := /bin/bash
GO        ?= go
BIN       := bin/cove
CONF_BIN  := bin/conformance.test
CRANE_BIN := bin/crane
# versitygw, the S3 server the fleet tests run (test/tools/versitygw pins it); cached by version.
VERSITYGW_VERSION := v1.8.0
VERSITYGW_BIN     := bin/versitygw-$(VERSITYGW_VERSION)
# cosign, which the signature test runs against cove (test/tools/cosign pins it); cached by version.
COSIGN_VERSION := v2.6.5
COSIGN_BIN     := bin/cosign-$(COSIGN_VERSION)
# helm, which lints and renders deploy/helm/cove in the tests (test/tools/helm pins it); cached by version.
HELM_VERSION := v3.22.0
HELM_BIN     := bin/helm-$(HELM_VERSION)
APT_PKGS  := skopeo docker-registry docker.io podman containerd slapd ldap-utils pebble chromium fonts-wqy-microhei postgresql python3-aiosmtpd systemd docker-compose
# The release before schema versions (the last commit of the stop that landed before issue 17;
# cove has no release tags yet): the upgrade test starts a data directory of this cove with the
# new one. Built from git once, cached under bin/ by commit.
PREV_RELEASE := 42ed4b231389fa73c064a478f5b925efc1620c1f
PREV_BIN     := bin/cove-$(PREV_RELEASE)
export GOFLAGS := -buildvcs=false
# cove version prints these (and the image's labels carry them).
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: build run image test test-unit test-e2e deps vet lint fuzz bench bench-go clean

# Static (no cgo), as in the image: the binary the tests run is the image's amd64 one, and make
# image finds it built already.
build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/cove

run: build
	./$(BIN) serve

# The container image (README "Container image"): cove cross-compiled static for each of
# IMAGE_ARCHS with make build's -ldflags, assembled by deploy/image without a daemon or a base
# image into bin/cove-image/ (OCI layout, one index of every platform) and bin/cove-image-<arch>.tar
# (docker-archives tagged cove:$(VERSION) and cove:latest). Created: the commit's time.
IMAGE_ARCHS  ?= amd64 arm64
IMAGE_SOURCE ?= $(shell git config --get remote.origin.url 2>/dev/null)
image:
	@for a in $(IMAGE_ARCHS); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -ldflags "$(LDFLAGS)" -o bin/linux-$$a/cove ./cmd/cove || exit 1; \
	done
	$(GO) run ./deploy/image --out bin --created "$$(git log -1 --format=%cI 2>/dev/null || echo 1970-01-01T00:00:00Z)" \
		--source "$(IMAGE_SOURCE)" $(foreach a,$(IMAGE_ARCHS),--binary linux/$(a)=bin/linux-$(a)/cove)

# deps installs the real clients and servers the end-to-end tests start (Debian packages). A
# temporary policy-rc.d keeps the packages from starting their services: the tests start their own.
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		status=$$?; rm -f /usr/sbin/policy-rc.d; [ $$status -eq 0 ] || exit $$status; \
	fi
	@# The browser test's driver: playwright-core only, which downloads no browser (Debian's chromium runs).
	@cd test/web && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --loglevel=error; }

# Test tools built from their own module (test/tools) at pinned versions: the official OCI
# conformance suite, and crane.
$(CONF_BIN): test/tools/go.mod test/tools/go.sum
	cd test/tools && $(GO) test -c -o ../../$(CONF_BIN) github.com/opencontainers/distribution-spec/conformance

$(CRANE_BIN): test/tools/go.mod test/tools/go.sum
	cd test/tools && $(GO) build -o ../../$(CRANE_BIN) github.com/google/go-containerregistry/cmd/crane

# versitygw takes about two minutes to build here: it is built once per version, under bin/.
$(VERSITYGW_BIN): test/tools/versitygw/go.mod test/tools/versitygw/go.sum
	cd test/tools/versitygw && $(GO) build -o ../../../$(VERSITYGW_BIN) github.com/versity/versitygw/cmd/versitygw

# cosign takes about two minutes to build here too: once per version, under bin/.
$(COSIGN_BIN): test/tools/cosign/go.mod test/tools/cosign/go.sum
	cd test/tools/cosign && $(GO) build -o ../../../$(COSIGN_BIN) github.com/sigstore/cosign/v2/cmd/cosign

# The previous release, from git (git archive of its commit, built with this Go).
$(PREV_BIN):
	rm -rf bin/prev-src && mkdir -p bin/prev-src
	git archive $(PREV_RELEASE) | tar -x -C bin/prev-src
	cd bin/prev-src && $(GO) build -ldflags "-X main.version=prev-$(PREV_RELEASE) -X main.commit=$(PREV_RELEASE)" -o ../../$(PREV_BIN) ./cmd/cove
	rm -rf bin/prev-src

# helm takes minutes to build here too: once per version, under bin/. Its ldflags are those of
# helm's own Makefile: its version, and the Kubernetes version of its client-go (v0.37: 1.37),
# which charts' kubeVersion is checked against (1.20 without them).
HELM_PKG := helm.sh/helm/v3
$(HELM_BIN): test/tools/helm/go.mod test/tools/helm/go.sum
	cd test/tools/helm && $(GO) build -ldflags "-X $(HELM_PKG)/internal/version.version=$(HELM_VERSION) \
		-X $(HELM_PKG)/pkg/lint/rules.k8sVersionMajor=1 -X $(HELM_PKG)/pkg/lint/rules.k8sVersionMinor=37 \
		-X $(HELM_PKG)/pkg/chartutil.k8sVersionMajor=1 -X $(HELM_PKG)/pkg/chartutil.k8sVersionMinor=37" \
		-o ../../../$(HELM_BIN) $(HELM_PKG)/cmd/helm

test: deps build image $(CONF_BIN) $(CRANE_BIN) $(VERSITYGW_BIN) $(COSIGN_BIN) $(HELM_BIN) $(PREV_BIN) vet test-unit test-e2e

# vet is the part of lint every test run does: gofmt and go vet.
vet:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet ./...

test-unit:
	E2E_VERSITYGW_BIN=$(CURDIR)/$(VERSITYGW_BIN) E2E_HELM_BIN=$(CURDIR)/$(HELM_BIN) $(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test/e2e)

test-e2e:
	E2E_VERSITYGW_BIN=$(CURDIR)/$(VERSITYGW_BIN) E2E_COVE_BIN=$(CURDIR)/$(BIN) E2E_CONFORMANCE_BIN=$(CURDIR)/$(CONF_BIN) E2E_CRANE_BIN=$(CURDIR)/$(CRANE_BIN) E2E_COSIGN_BIN=$(CURDIR)/$(COSIGN_BIN) E2E_PREV_COVE_BIN=$(CURDIR)/$(PREV_BIN) $(GO) test -count=1 -v -timeout 15m ./test/e2e 2>&1 | \
		grep -v -E '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

lint: vet
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# The standard set of cove bench: 1 GiB cold and warm blobs, a herd of 16 on 256 MiB, manifest and
# token loads at concurrency 16, 50 small layers; three repetitions each; Debian's docker-registry as
# the peer (installed if absent). Results in bench-results/.
bench: build
	@dpkg -s docker-registry >/dev/null 2>&1 || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null; s=$$?; rm -f /usr/sbin/policy-rc.d; exit $$s; }
	./$(BIN) bench --out bench-results

# Go benchmarks of the hot paths, with allocations per op: the warm blob path (cove beside a bare
# sendfile server, 1 and 16 clients) and the cold fan-out; and the ways of copying a file to a
# socket that cove bench's limit takes the fastest of (BenchmarkLimit: COVE_BENCH_LIMIT_FILE
# names a large page-cached file to serve; 64 MiB of its own otherwise); an eviction decision at
# 10,000 and 100,000 blob records (BenchmarkEvictDecision); the access log's cost (BenchmarkMiddleware).
bench-go:
	$(GO) test -run '^$$' -bench . -benchtime 3s -benchmem ./mirror
	$(GO) test -run '^$$' -bench Limit -benchtime 2x -benchmem ./bench
	$(GO) test -run '^$$' -bench EvictDecision -benchtime 300x -benchmem ./cache
	$(GO) test -run '^$$' -bench Middleware -benchmem ./internal/telemetry

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./mirror
	$(GO) test -run '^$$' -fuzz FuzzContentRange -fuzztime 30s ./mirror

clean:
	rm -rf bin
