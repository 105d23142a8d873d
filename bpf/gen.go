// Package bpf holds the kernel half of the receiver: the eBPF programs that
// track live allocations, and their bpf2go bindings. The generated object is
// committed, one per architecture (x86-64 and arm64), so that building needs
// no clang; `go generate ./bpf` rebuilds them (clang-19, llvm-19 and
// libbpf-dev; the kernel types come from vmlinux_x86.h and vmlinux_arm64.h,
// see vmlinux.h).
package bpf

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target amd64,arm64 -tags linux -type object -type live_bucket -type table_layout -type table_key -type table_hash -type young_key -type young_slot -type counters -type clock_pair -type percpu_check -type cache_info -type kmalloc_skip_table -type allocator -type kmalloc_family -type kprobe_cookie -type run_context -type exited Kmemleak kmemleak.bpf.c
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target amd64,arm64 -tags linux -type held -type held_process -type held_kind Holders holders.bpf.c
