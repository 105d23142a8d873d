# Build the otelcol-kmemleak collector with ocb, run it, test everything.
# Loading eBPF programs needs root: run `make run` and `make test` as root.

SHELL    := /bin/bash
GO       ?= go
OCB      := $(GO) run go.opentelemetry.io/collector/cmd/builder@v0.165.0
DIST     := _build/otelcol-kmemleak
CONFIG   ?= examples/config.yaml
TRACEFS  := /sys/kernel/tracing

.PHONY: build run test lint platforms unit-test fuzz collector-test examples-test e2e test-kernels bench tracefs generate clean

# ocb regenerates the distribution's sources and rebuilds it when anything
# the receiver is made of changes.
$(DIST): builder-config.yaml go.mod go.sum $(shell find . -path ./_build -prune -o -name '*.go' -print -o -name '*.o' -print)
	$(OCB) --config builder-config.yaml

build: $(DIST)

run: $(DIST)
	$(DIST) --config $(CONFIG)

test: lint platforms tracefs unit-test fuzz collector-test examples-test e2e test-kernels

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e
	cd examples/kubernetes/validate && $(GO) vet ./...

# Off linux/amd64 the component still builds, its tests compile, and
# creating it says where it runs (run for linux/arm64 under qemu-user).
platforms:
	GOOS=darwin $(GO) build ./...
	GOOS=windows $(GO) build ./...
	GOOS=darwin $(GO) vet ./...
	GOARCH=arm64 $(GO) vet ./...
	@command -v qemu-aarch64-static >/dev/null || { apt-get update -qq && apt-get install -y -qq qemu-user-static; }
	mkdir -p _build
	GOARCH=arm64 $(GO) test -c -o _build/receiver-arm64.test .
	qemu-aarch64-static _build/receiver-arm64.test -test.run '^TestOffLinux' -test.v

# The classic-tracepoint attach mode, and its test, need tracefs.
tracefs:
	@mountpoint -q $(TRACEFS) || mount -t tracefs tracefs $(TRACEFS) || echo "warning: cannot mount tracefs at $(TRACEFS): the tracepoint-mode tests will fail"

# -p 1: one package at a time, so that no compiler or linker writes files
# while the accuracy test counts what outlives its own load.
unit-test:
	$(GO) test -p 1 -count=1 -v ./... 2>&1 | grep -v "^=== \(RUN\|PAUSE\|CONT\)"; exit $${PIPESTATUS[0]}

# Each fuzz target for a bounded time; the seeds are in the tests.
FUZZTIME ?= 10s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/ksym
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/slabinfo
	$(GO) test -run '^$$' -fuzz '^FuzzConfigUnmarshal$$' -fuzztime $(FUZZTIME) .

# The built collector accepts the example and refuses a bad config, naming the fields.
collector-test: $(DIST)
	$(DIST) validate --config $(CONFIG)
	@if $(DIST) validate --config testdata/invalid-config.yaml 2>_build/invalid.err; then \
		echo "validate accepted testdata/invalid-config.yaml"; exit 1; fi
	grep -q 'min_age must be positive' _build/invalid.err
	grep -q 'allocators: unknown allocator "pages"' _build/invalid.err
	@echo "collector validate: bad config refused with the fields named"

# Every example config passes the built collector's validate; the Kubernetes
# manifests and Helm values decode strictly into the Kubernetes API types.
examples-test: $(DIST)
	OTLP_ENDPOINT=backend.example:4317 OTLP_API_KEY=example $(DIST) validate --config examples/otlp-backend.yaml
	cd examples/kubernetes/validate && KMEMLEAK_COLLECTOR=$(CURDIR)/$(DIST) $(GO) test -count=1 -v ./...

# The built collector, exporting over OTLP/gRPC and OTLP/HTTP to a server in
# the test; also its components and validate subcommands.
e2e: $(DIST)
	KMEMLEAK_COLLECTOR=$(CURDIR)/$(DIST) $(GO) test -tags e2e -count=1 -v ./e2e

# The leak tests on other kernels under qemu: Debian's Linux 6.1 (kprobes,
# pre-6.10 allocator names, older tracepoint layouts) and 6.12 (kprobes, the
# _noprof names): every allocator in every attach mode, and the
# kmem_cache_free_bulk hook.
KERNELS ?= linux-image-6.1.0-56-amd64 linux-image-6.12.107+deb12-amd64-unsigned
KERNEL_TESTS ?= Integration(HeldPipes|EveryAllocator|AllocatorTheKernelRefuses|SampledTracking|BulkFree|ShutdownReleases|SecondReceiver|AttachDetach)
test-kernels:
	@command -v qemu-system-x86_64 >/dev/null && command -v busybox >/dev/null && command -v cpio >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq qemu-system-x86 busybox-static cpio; }
	for k in $(KERNELS); do kernels/vm.sh $$k '$(KERNEL_TESTS)' || exit $$?; done

# The measurements of BENCHMARKS.md, as root; bpftrace, which some rows
# compare against, is installed if missing. Flags go in BENCH_FLAGS, e.g.
# BENCH_FLAGS='-sections scan -runs 7'. (Lost in a merge before; restored.)
BENCH_FLAGS ?=
bench: tracefs
	command -v bpftrace >/dev/null || { apt-get update -qq && apt-get install -y -qq bpftrace; } || echo "warning: cannot install bpftrace: the bench skips its rows"
	$(GO) run ./cmd/kmemleak-bench $(BENCH_FLAGS)

# Regenerate the committed bpf2go and mdatagen outputs (needs clang-19,
# llvm-19, libbpf-dev and bpftool for the BPF half).
generate:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h
	$(GO) generate ./...

clean:
	rm -rf _build
