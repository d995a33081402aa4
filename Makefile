GO ?= go
PKGS := ./...
# Packages that hold concurrency run under the race detector.
RACE_PKGS := ./kvstore/... ./ranges/... ./coprocessors/... ./balancer/... ./mqtt/... ./cmd/mqttbench/... ./cmd/kvbench/... ./ui/...
BIN := bin/bifrost

.PHONY: all build static image test test-deps test-unit lint generate docs bench bench-mqtt bench-cluster bench-kv bench-ranges clean jepsen jepsen-ci jepsen-bugzoo jepsen-deps

all: build

build:
	$(GO) build -o $(BIN) ./cmd/bifrost

# The Dockerfile's build step run natively: the same command line, then a check
# that the binary is static (the image's base, scratch, has no libc).
STATIC_BIN := bin/bifrost-static
static:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(STATIC_BIN) ./cmd/bifrost
	@file $(STATIC_BIN) | grep -q 'statically linked' || { file $(STATIC_BIN); echo "$(STATIC_BIN) is not static"; exit 1; }
	@! ldd $(STATIC_BIN) >/dev/null 2>&1 || { ldd $(STATIC_BIN); echo "$(STATIC_BIN) has dynamic dependencies"; exit 1; }
	@echo "$(STATIC_BIN): static"

# The container image (Dockerfile) with docker or podman, whichever can
# build here. IMAGE names it; GO_IMAGE is the builder stage's base (default
# golang:1.26-bookworm; deploy/builder-from-host.sh makes one from this
# machine's Go where no registry is reachable). Podman builds with chroot
# isolation and the host's network, which also work inside a VM without
# cgroup v2.
IMAGE ?= bifrost:latest
GO_IMAGE ?=
image:
	@if docker info >/dev/null 2>&1; then engine=docker; flags=; \
	elif podman info >/dev/null 2>&1; then engine=podman; flags="--isolation chroot --network host"; \
	else echo "make image: no container engine works here: docker has no reachable daemon and podman is missing or broken (apt-get install -y podman)"; exit 1; fi; \
	set -x; $$engine build $$flags $(if $(GO_IMAGE),--build-arg GO_IMAGE=$(GO_IMAGE)) -t $(IMAGE) .

# The architecture picture, rendered from its Graphviz source.
docs:
	@command -v dot >/dev/null || (apt-get update && apt-get install -y graphviz)
	dot -Tsvg -o docs/architecture.svg docs/architecture.dot

# mqtt's TestMosquittoClients runs Debian's mosquitto_sub and mosquitto_pub;
# ui's TestStatusPageInChromium runs Debian's chromium headless.
test-deps:
	@command -v mosquitto_sub >/dev/null || (apt-get update && apt-get install -y mosquitto-clients)
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# Unit and integration tests (race detector on the packages that hold
# concurrency), then the consistency harness's short profile and its bug
# zoo (each deliberate fault caught by its checker). Tests keep what a
# reader looks at afterwards (the status page's screenshot) in
# $(TEST_ARTIFACTS).
TEST_ARTIFACTS ?= bin/test-artifacts
test: lint test-deps jepsen-deps
	BIFROST_ARTIFACTS=$(abspath $(TEST_ARTIFACTS)) $(GO) test -race -count=1 -timeout 15m $(RACE_PKGS)
	$(GO) test -count=1 -timeout 10m $$($(GO) list ./... | grep -v -E 'bifrost/(kvstore|ranges|coprocessors|balancer|mqtt|cmd/mqttbench|cmd/kvbench|ui)(/|$$)')
	$(MAKE) jepsen-ci
	$(MAKE) jepsen-bugzoo

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@command -v staticcheck >/dev/null 2>&1 || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	$$($(GO) env GOPATH)/bin/staticcheck ./...

generate:
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler"; exit 1; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I . --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		kvstore/kvpb/kv.proto ranges/rangespb/ranges.proto coprocessors/dist/distpb/dist.proto coprocessors/retain/retainpb/retain.proto coprocessors/inbox/inboxpb/inbox.proto balancer/balancerpb/balancer.proto mqtt/mqttpb/frontend.proto

# The consistency harness (jepsen/) runs bifrost processes in network
# namespaces and cuts them apart with iptables: it needs root, iproute2 and
# iptables. Each run leaves its directory (config, history, results.json,
# plots, porcupine's HTML, the nodes' logs) under $(JEPSEN_OUT).
JEPSEN_OUT ?= jepsen-results
JEPSEN_BIN := bin/jepsen

jepsen-deps:
	@command -v ip >/dev/null && command -v iptables >/dev/null || (apt-get update && apt-get install -y iproute2 iptables)

$(JEPSEN_BIN): FORCE
	$(GO) build -o $(JEPSEN_BIN) ./jepsen/cmd/jepsen

# The short profile: every workload, every kind of fault, a few minutes in
# all; exits non-zero when any run is invalid or undecided.
jepsen-ci: jepsen-deps build $(JEPSEN_BIN)
	$(JEPSEN_BIN) -bin $(BIN) -suite ci -out $(JEPSEN_OUT)

# The bug zoo: bifrost built with each deliberate fault (kvstore/bugzoo, mqtt/bugzoo),
# each run required to be found invalid by the checker meant for it; about
# six minutes. In make test, so a change that hides a fault from the
# harness (as AddReplica's compaction once hid bugzoo_skip_compaction) fails
# the build.
jepsen-bugzoo: jepsen-deps build
	BIFROST_JEPSEN=1 JEPSEN_BIFROST=$(CURDIR)/$(BIN) $(GO) test -p 1 -count=1 -timeout 20m -run '^TestBugzoo' -v ./jepsen/suite/

# The harness's own tests on real clusters (the bug zoo caught, each fault
# by its checker; the short profile valid), then the full suite: every
# workload against every fault, a minute or more each.
# Both parts run; the target fails if either does.
jepsen: jepsen-deps build $(JEPSEN_BIN)
	@status=0; \
	BIFROST_JEPSEN=1 JEPSEN_BIFROST=$(CURDIR)/$(BIN) $(GO) test -p 1 -count=1 -timeout 40m -v ./jepsen/... || status=1; \
	$(JEPSEN_BIN) -bin $(BIN) -suite full -out $(JEPSEN_OUT) || status=1; \
	exit $$status

FORCE:

bench:
	$(GO) test -run '^$$' -bench BenchmarkIdleConnection -benchtime 1x ./mqtt/
	$(GO) test -run '^$$' -bench . -benchtime 5s ./kvstore/... ./ranges/...
	$(GO) test -run '^$$' -bench . ./mqtt/packet/

# MQTT load: mosquitto 2 (apt-get install -y mosquitto) vs bifrost standalone, then bifrost/mosquitto.
bench-mqtt:
	GO=$(GO) ./cmd/mqttbench/run.sh

# MQTT load on a cluster on loopback: 3 bifrost stores and 1 bifrost frontend (qos1, persistent,
# fanin, offline).
bench-cluster:
	GO=$(GO) ./cmd/mqttbench/cluster.sh

# KV load: a 3-member etcd (Debian's etcd-server, installed when missing) vs 3 bifrost stores, one
# after the other on this box, then bifrost/etcd; JSON results in bin/bench-kv. KVBENCH_ARGS go to
# both kvbench runs (e.g. KVBENCH_ARGS="--duration 5s --clients 16").
bench-kv:
	@command -v etcd >/dev/null || (apt-get update && apt-get install -y etcd-server)
	GO=$(GO) ./cmd/kvbench/run.sh $(KVBENCH_ARGS)

# Three in-process stores with RANGES idle ranges each (kvstore's
# BenchmarkIdleRanges): a store's idle CPU, the heap per idle range and the
# restart time of a store; RECEIVE_QUEUE sets BIFROST_RAFT_RECEIVE_QUEUE.
RANGES ?= 1000
RECEIVE_QUEUE ?= 256
bench-ranges:
	BIFROST_RAFT_RECEIVE_QUEUE=$(RECEIVE_QUEUE) $(GO) test -run '^$$' -bench '^BenchmarkIdleRanges$$' -benchtime 1x -timeout 60m ./kvstore/ -args -bench.ranges $(RANGES)

clean:
	rm -rf bin
