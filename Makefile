# Build the otelcol-kmemleak collector with ocb, run it, test everything.
# Loading eBPF programs needs root: run `make run` and `make test` as root.

SHELL    := /bin/bash
GO       ?= go
OCB      := $(GO) run go.opentelemetry.io/collector/cmd/builder@v0.165.0
DIST     := _build/otelcol-kmemleak
CONFIG   ?= examples/config.yaml
TRACEFS  := /sys/kernel/tracing
# The architecture of the collector `make build` makes: `make build
# GOARCH=arm64` makes _build/linux-arm64/otelcol-kmemleak. Every other go
# command here builds for this machine, so it is not passed on.
HOSTARCH := $(shell env -u GOARCH $(GO) env GOARCH)
GOARCH   ?= $(HOSTARCH)
unexport GOARCH

.PHONY: build run test lint platforms unit-test fuzz collector-test examples-test e2e test-kernels verdict-suite verdict-suite-short bench tracefs generate vmlinux-arm64 clean

# ocb regenerates the distribution's sources and rebuilds it when anything
# the receiver is made of changes.
$(DIST): builder-config.yaml go.mod go.sum $(shell find . -path ./_build -prune -o -name '*.go' -print -o -name '*.o' -print)
	$(OCB) --config builder-config.yaml

# The same distribution for another Linux architecture, from the sources ocb
# generated, compiled as ocb compiles (static, trimmed, stripped).
_build/linux-%/otelcol-kmemleak: $(DIST)
	cd _build && CGO_ENABLED=0 GOOS=linux GOARCH=$* $(GO) build -trimpath -ldflags='-s -w' -o linux-$*/otelcol-kmemleak .

ifeq ($(GOARCH),$(HOSTARCH))
build: $(DIST)
else
build: _build/linux-$(GOARCH)/otelcol-kmemleak
endif

run: $(DIST)
	$(DIST) --config $(CONFIG)

test: lint platforms tracefs unit-test fuzz collector-test examples-test e2e test-kernels verdict-suite-short

# golangci-lint, at a pinned version: `go run` fetches it through the
# module proxy and builds it the first time (a few minutes), from the build
# cache after that; it stays out of go.mod. .golangci.yml says which linters
# run and why each exclusion is there.
GOLANGCI_LINT := $(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e
	cd examples/kubernetes/validate && $(GO) vet ./...
	$(GOLANGCI_LINT) run --build-tags e2e ./...
	cd examples/kubernetes/validate && $(GOLANGCI_LINT) run ./...

# linux/arm64 builds in full (its probes are in bpf/), and its tests that
# need no kernel pass under qemu-user. Elsewhere the component still builds,
# its tests compile, and creating it says where it runs (run for
# linux/riscv64 under qemu-user); 386 checks that it compiles for 32 bits.
platforms:
	GOOS=darwin $(GO) build ./...
	GOOS=windows $(GO) build ./...
	GOOS=darwin $(GO) vet ./...
	GOARCH=arm64 $(GO) build ./...
	GOARCH=arm64 $(GO) vet ./...
	GOARCH=386 $(GO) vet ./...
	@command -v qemu-aarch64-static >/dev/null && command -v qemu-riscv64-static >/dev/null || { apt-get update -qq && apt-get install -y -qq qemu-user-static; }
	# The verdicts' synthetic suite (40 simulated minutes per scenario) is
	# pure Go and runs natively in unit-test; emulated it took two minutes.
	GOARCH=arm64 $(GO) test -count=1 -exec qemu-aarch64-static -skip 'Integration|TestLeaksAreFoundInTime|TestNoLeakIsFoundWhereNoneIs' ./...
	mkdir -p _build
	GOARCH=riscv64 $(GO) test -c -o _build/receiver-riscv64.test .
	qemu-riscv64-static _build/receiver-riscv64.test -test.run '^TestUnsupportedPlatform' -test.v

# The classic-tracepoint attach mode, and its test, need tracefs.
tracefs:
	@mountpoint -q $(TRACEFS) || mount -t tracefs tracefs $(TRACEFS) || echo "warning: cannot mount tracefs at $(TRACEFS): the tracepoint-mode tests will fail"

# -p 1: one package at a time, so that no compiler or linker writes files
# while the accuracy test counts what outlives its own load.
unit-test:
	$(GO) test -p 1 -count=1 -v ./... 2>&1 | grep -v "^=== \(RUN\|PAUSE\|CONT\)"; exit $${PIPESTATUS[0]}

# Each fuzz target for a bounded number of runs (about 10 s each here); the
# seeds are in the tests. A count, not a duration: with -fuzztime 10s Go's
# coordinator can fail a clean run with "context deadline exceeded" when its
# deadline fires while a worker is busy (golang/go#75804, fixed in Go 1.27).
FUZZ_RUNS ?= 200000
FUZZ_CONFIG_RUNS ?= 60000
FUZZ_FLAGS = -run '^$$' -fuzzminimizetime 200x
fuzz:
	$(GO) test $(FUZZ_FLAGS) -fuzz '^FuzzParse$$' -fuzztime $(FUZZ_RUNS)x ./internal/ksym
	$(GO) test $(FUZZ_FLAGS) -fuzz '^FuzzParse$$' -fuzztime $(FUZZ_RUNS)x ./internal/slabinfo
	$(GO) test $(FUZZ_FLAGS) -fuzz '^FuzzConfigUnmarshal$$' -fuzztime $(FUZZ_CONFIG_RUNS)x .
	$(GO) test $(FUZZ_FLAGS) -fuzz '^FuzzRestore$$' -fuzztime $(FUZZ_RUNS)x ./internal/verdict

# The built collector accepts the example and refuses a bad config, naming the fields.
collector-test: $(DIST)
	$(DIST) validate --config $(CONFIG)
	@if $(DIST) validate --config testdata/invalid-config.yaml 2>_build/invalid.err; then \
		echo "validate accepted testdata/invalid-config.yaml"; exit 1; fi
	grep -q 'min_age must be positive' _build/invalid.err
	grep -q 'allocators: unknown allocator "pages"' _build/invalid.err
	@echo "collector validate: bad config refused with the fields named"

# Every example config passes the built collector's validate; the alerting
# rules pass promtool's check and their unit tests; the Kubernetes manifests
# and Helm values decode strictly into the Kubernetes API types.
examples-test: $(DIST)
	OTLP_ENDPOINT=backend.example:4317 OTLP_API_KEY=example $(DIST) validate --config examples/otlp-backend.yaml
	$(DIST) validate --config examples/profiles.yaml --feature-gates=service.profilesSupport
	$(DIST) validate --config examples/prometheus.yaml
	@command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus; }
	promtool check rules examples/prometheus/alerts.yaml
	cd examples/prometheus && promtool test rules alerts_test.yaml
	cd examples/kubernetes/validate && KMEMLEAK_COLLECTOR=$(CURDIR)/$(DIST) $(GO) test -count=1 -v ./...

# The built collector, exporting over OTLP/gRPC and OTLP/HTTP to a server in
# the test, profiles too (converted by cmd/kmemleak-pprof, read by
# `go tool pprof`, their flame graph rendered by headless Chromium), and
# with examples/prometheus.yaml to a real Prometheus that evaluates
# examples/prometheus/alerts.yaml and answers the queries of
# docs/prometheus.md; also its components and validate subcommands.
e2e: $(DIST)
	@command -v prometheus >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus; }
	KMEMLEAK_COLLECTOR=$(CURDIR)/$(DIST) $(GO) test -tags e2e -count=1 -v ./e2e

# The leak tests on other kernels under qemu: Debian's Linux 6.1 (kprobes,
# pre-6.10 allocator names, older tracepoint layouts) and 6.12 (kprobes, the
# _noprof names), x86-64 and arm64: every allocator in every attach mode,
# the kmem_cache_free_bulk hook, attach and detach under load, the kmalloc
# caches the probes name, a missed free counted; attribution (processes in
# cgroups the test makes, one that exited, softirqs); a module of our own
# (kernels/kmltest, built against Debian's headers for each kernel by
# kernels/kmod.sh) leaking, keeping long-lived objects that do not leak,
# and reloaded; and the built collector, for the kernel's architecture,
# starts, scans and stops; a restart adopts the pinned tables (Restart,
# Pinned, PinDirectory). Then each kernel of ORACLE_KERNELS boots again
# with slub_debug=U, which records the allocating caller of every live slab
# and kmalloc object, for the oracle: every call site's count against the
# kernel's own (ORACLE_TESTS). slub_debug also keeps caches from merging, so
# TestIntegrationMergedCacheNames sees tcp_bind_bucket on its own there. The
# oracle passes on all four kernels (2026-12-07, 90 to 120 s a kernel); `make
# test` boots the x86-64 ones for it, to keep CI under 45 minutes, and
# ORACLE_KERNELS='$(KERNELS)' boots the arm64 ones too; ORACLE_TESTS= none.
KERNELS ?= linux-image-6.1.0-56-amd64 linux-image-6.12.107+deb12-amd64-unsigned \
	linux-image-6.1.0-56-arm64 linux-image-6.12.107+deb12-arm64-unsigned
KERNEL_TESTS ?= Integration(HeldPipes|EveryAllocator|AllocatorTheKernelRefuses|SampledTracking|BulkFree|ShutdownReleases|SecondReceiver|AttachDetach|KmallocCaches|ReusedAddress|AllocationTimes|Attribution|Holders|KernelModule|MergedCacheNames|Restart|Pinned|PinDirectory)
ORACLE_TESTS ?= Integration(AllocTracesOracle|MergedCacheNames)
# The module tests take about 2.5 minutes a kernel: `make test` runs them on
# the x86-64 kernels, to keep CI under 30 minutes; MODULE_KERNELS='$(KERNELS)'
# runs them on arm64 too (they pass there as well).
MODULE_KERNELS ?= $(filter %-amd64 %-amd64-unsigned,$(KERNELS))
ORACLE_KERNELS ?= $(MODULE_KERNELS)
test-kernels: $(DIST) _build/linux-arm64/otelcol-kmemleak $(MODULE_KERNELS:linux-image-%=_build/kmod-%/kmltest.ko)
	@command -v qemu-system-x86_64 >/dev/null && command -v qemu-system-aarch64 >/dev/null && command -v busybox >/dev/null && command -v cpio >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq qemu-system-x86 qemu-system-arm busybox-static cpio; }
	for k in $(KERNELS); do \
		case $$k in *-arm64 | *-arm64-unsigned) c=_build/linux-arm64/otelcol-kmemleak ;; *) c=$(DIST) ;; esac; \
		tests='$(KERNEL_TESTS)' modules=; \
		case " $(MODULE_KERNELS) " in \
		*" $$k "*) modules=$(CURDIR)/_build/kmod-$${k#linux-image-} ;; \
		*) tests=$$(echo "$$tests" | sed 's/|KernelModule//') ;; \
		esac; \
		KMEMLEAK_MODULES=$$modules KMEMLEAK_COLLECTOR=$(CURDIR)/$$c kernels/vm.sh $$k "$$tests" || exit $$?; \
		case " $(ORACLE_KERNELS) " in *" $$k "*) [ -z '$(ORACLE_TESTS)' ] || \
			VM_APPEND=slub_debug=U kernels/vm.sh $$k '$(ORACLE_TESTS)' || exit $$?;; esac; \
	done

# kmltest.ko and kmlpad.ko for a kernel package (linux-image-$*).
_build/kmod-%/kmltest.ko: kernels/kmod.sh kernels/kmltest/Kbuild kernels/kmltest/kmltest.c kernels/kmltest/kmlpad.c
	@command -v modinfo >/dev/null && command -v gcc-12 >/dev/null && command -v aarch64-linux-gnu-gcc-12 >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq kmod gcc-12 gcc-12-aarch64-linux-gnu; }
	kernels/kmod.sh linux-image-$* _build/kmod-$*

# The organic labelled suite of the verdicts (cmd/kmemleak-verdicts): the
# receiver at its defaults beside real programs (file walks, a log, the
# page cache, builds, services starting, a batch, TIME_WAIT, tmpfs files)
# and planted leaks, for VERDICT_DURATION; it fails on any call site called
# leaking that is not a planted leak, and on a leak missed or found late.
# make test runs 4 minutes of it: the 20/min leak must be found, nothing
# else called leaking.
VERDICT_DURATION ?= 30m
verdict-suite:
	mkdir -p _build
	$(GO) run ./cmd/kmemleak-verdicts -duration $(VERDICT_DURATION) -log _build/verdict-suite.log

verdict-suite-short:
	$(MAKE) verdict-suite VERDICT_DURATION=4m

# The measurements of BENCHMARKS.md, as root; bpftrace, which some rows
# compare against, is installed if missing. Flags go in BENCH_FLAGS, e.g.
# BENCH_FLAGS='-sections scan -runs 7'. (Lost in a merge before; restored.)
BENCH_FLAGS ?=
bench: tracefs
	command -v bpftrace >/dev/null || { apt-get update -qq && apt-get install -y -qq bpftrace; } || echo "warning: cannot install bpftrace: the bench skips its rows"
	$(GO) run ./cmd/kmemleak-bench $(BENCH_FLAGS)

# Regenerate the committed bpf2go and mdatagen outputs (needs clang-19,
# llvm-19, libbpf-dev and bpftool for the BPF half). The kernel types of this
# machine's architecture come from its kernel; the other's stay as committed
# (make vmlinux-arm64 on x86-64).
VMLINUX_ARCH := $(if $(filter amd64,$(HOSTARCH)),x86,$(HOSTARCH))
generate:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux_$(VMLINUX_ARCH).h
	$(GO) generate ./...

# The arm64 kernel types, from Debian's arm64 Linux 6.12 (kernels/vmlinux.sh
# cuts the BTF out of its vmlinuz); then make generate.
VMLINUX_ARM64_KERNEL := linux-image-6.12.107+deb12-arm64-unsigned
vmlinux-arm64:
	kernels/vmlinux.sh $(VMLINUX_ARM64_KERNEL) bpf/vmlinux_arm64.h

clean:
	rm -rf _build
