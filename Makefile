# hbf — build, test and regenerate. `make help` lists the targets.

GO            ?= go
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
MULTIARCH     := $(shell gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
# Compiler flags for the XDP program; -I for <asm/types.h> of linux-libc-dev.
BPF2GO_CFLAGS := -O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/$(MULTIARCH)
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BENCHTIME     ?= 1000000x
FUZZTIME      ?= 10m
# The container engine: docker when it reaches an engine, else podman (run
# with runc and cgroupfs, which work where systemd does not manage cgroups).
CONTAINER_ENGINE ?= $(shell if docker info >/dev/null 2>&1; then echo docker; \
	elif command -v podman >/dev/null 2>&1; then echo "podman --runtime runc --cgroup-manager=cgroupfs"; \
	else echo docker; fi)
IMAGE         ?= hbf
DIST_ARCHES   := amd64 arm64
DIST          ?= dist
LDFLAGS       := -s -w -X main.version=$(VERSION)

# Debian packages: to run the tests (iproute2, nsenter from util-linux, and
# the real clients), and to regenerate the BPF objects.
TEST_DEBS     := iproute2 util-linux nmap curl hping3 masscan nftables iptables ipset ethtool xdp-tools git podman runc prometheus etcd-server etcd-client fail2ban openssh-server hydra crowdsec crowdsec-firewall-bouncer tmux
GENERATE_DEBS := clang llvm libbpf-dev linux-libc-dev

export BPF2GO_CFLAGS

.PHONY: help build test test-race test-unprivileged fuzz bench generate check-generated lint deps deps-generate demo clean image dist

help:
	@echo "make build            build ./hbf (no clang needed: the BPF objects are committed)"
	@echo "make test             run every test (root runs the kernel and network tests)"
	@echo "make test-race        the package tests under the race detector (all but the end-to-end ones)"
	@echo "make test-unprivileged the decision engine and the daemon as an ordinary user (nobody when root), none skipped"
	@echo "make fuzz             fuzz the XDP parser against its oracle for FUZZTIME (default 10m; root)"
	@echo "make bench            every benchmark beside its baselines; writes docs/performance.md (root)"
	@echo "make demo             build and run 'hbf demo' (root)"
	@echo "make generate         recompile bpf/*.c into internal/dataplane (needs clang)"
	@echo "make check-generated  fail when the committed BPF objects differ from a rebuild"
	@echo "make lint             gofmt, go vet, staticcheck"
	@echo "make image            container image $(IMAGE):<version> and $(IMAGE):latest (CONTAINER_ENGINE)"
	@echo "make dist             static binaries for $(DIST_ARCHES), .deb packages and SHA256SUMS, in $(DIST)/"

build:
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.version=$(VERSION)" -o hbf ./cmd/hbf

# The image copies a binary built here: FROM scratch needs no registry.
image:
	mkdir -p build/image
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o build/image/hbf ./cmd/hbf
	cp /etc/ssl/certs/ca-certificates.crt build/image/
	$(CONTAINER_ENGINE) build --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) -t $(IMAGE):latest -f Dockerfile .

dist:
	rm -rf $(DIST) && mkdir -p $(DIST)
	for arch in $(DIST_ARCHES); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" \
			-o $(DIST)/hbf-$(VERSION)-linux-$$arch ./cmd/hbf || exit 1; \
		deploy/deb/build.sh $(DIST)/hbf-$(VERSION)-linux-$$arch $(VERSION) $$arch $(DIST) || exit 1; \
	done
	cd $(DIST) && sha256sum hbf-* hbf_*.deb > SHA256SUMS

# install-missing installs the Debian packages of $(1) that are not installed.
define install-missing
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" -ne 0 ]; then echo "run as root to install$$missing"; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

# crowdsec's package registers with CrowdSec's central API at install unless
# this file exists first; a comment alone keeps it off (README.Debian).
deps:
	@test -e /etc/crowdsec/online_api_credentials.yaml || dpkg -s crowdsec >/dev/null 2>&1 || \
		{ mkdir -p /etc/crowdsec && echo "# no central API: hbf's tests run a LAPI of their own" > /etc/crowdsec/online_api_credentials.yaml; }
	$(call install-missing,$(TEST_DEBS))

deps-generate:
	$(call install-missing,$(GENERATE_DEBS))

test: deps
	$(GO) test -count=1 -timeout 20m ./...

# The daemon runs many goroutines over shared state (followers, the fleet,
# the API); the end-to-end tests run the binary, which the detector would
# only slow down.
test-race: deps
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/test/')

# The decision engine, the protected set and the daemon's wiring need no
# root: they run against the in-memory data plane (internal/kerneltest). As
# root, the test binaries run as nobody to show it; any skipped or failed
# test fails.
UNPRIVILEGED_PKGS := decision protect daemon
test-unprivileged:
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && chmod 755 "$$dir" && \
	if [ "$$(id -u)" -eq 0 ]; then as="setpriv --reuid=nobody --regid=nogroup --clear-groups"; else as=""; fi && \
	for pkg in $(UNPRIVILEGED_PKGS); do \
		$(GO) test -c -o "$$dir/$$pkg.test" ./internal/$$pkg || exit 1; \
		(cd "$$dir" && $$as env -i PATH=/usr/bin:/bin HOME="$$dir" TMPDIR=/tmp ./$$pkg.test -test.count=1 -test.v) > "$$dir/out" 2>&1; \
		rc=$$?; grep -E '^(--- (FAIL|SKIP)|FAIL|panic)' "$$dir/out"; \
		passed=$$(grep -c '^--- PASS' "$$dir/out"); \
		if [ $$rc -ne 0 ] || grep -q '^--- SKIP' "$$dir/out"; then tail -50 "$$dir/out"; exit 1; fi; \
		echo "internal/$$pkg as $$(if [ -n "$$as" ]; then echo nobody; else id -un; fi): $$passed tests passed, none skipped"; \
	done

# Failing inputs land in internal/dataplane/testdata/fuzz/FuzzXDP: commit
# them once fixed, and every `make test` replays them.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzXDP$$' -fuzztime $(FUZZTIME) ./internal/dataplane/

# The run's output stays in build/bench.txt; docs/performance.md and its
# charts are written from it, goals judged, nothing typed by hand.
bench: SHELL := /bin/bash
bench: deps
	@mkdir -p build
	set -o pipefail; { $(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) ./internal/dataplane/ && \
		$(GO) test -run '^$$' -bench . -benchtime 1x ./internal/sources/ ./test/e2e/ && \
		$(GO) test -run '^$$' -bench FleetChange -benchtime 2000x ./internal/decision/ && \
		$(GO) test -run '^$$' -bench FleetScale -benchtime 1x -timeout 60m ./internal/fleet/; } | tee build/bench.txt
	$(GO) run ./internal/cmd/perfreport -docs docs -commit $(VERSION) build/bench.txt
	@echo "wrote docs/performance.md"

generate: deps-generate
	$(GO) generate ./internal/dataplane/ ./test/e2e/

check-generated: generate
	@git diff --exit-code --stat -- internal/dataplane/ test/e2e/ || \
		{ echo "the committed BPF objects differ from a rebuild of bpf/: run make generate and commit"; exit 1; }

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

demo: build
	./hbf demo

clean:
	rm -rf hbf build dist
