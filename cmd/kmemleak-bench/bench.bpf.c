//go:build ignore

// SPDX-License-Identifier: GPL-2.0
//
// The programs the probe-overhead bench compares ours against, on the same
// kmem tracepoints: an empty program (the cost of the hook alone), the bare
// map insert/delete pair (the floor any tracker keyed by address pays), the
// same pair on our live table, and the kernel's samples/bpf/tracex4 (its
// map and value; it used kprobes on kmem_cache_alloc_node/kmem_cache_free,
// which this bench attaches as classic tracepoints because kernels without
// CONFIG_KPROBES refuse them).

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "kmemleak.h"
#include "livetable.bpf.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/kmem_cache_alloc")
int empty_btf_slab_alloc(void *ctx) { return 0; }
SEC("tp_btf/kmem_cache_free")
int empty_btf_slab_free(void *ctx) { return 0; }
SEC("tp_btf/kmalloc")
int empty_btf_kmalloc(void *ctx) { return 0; }
SEC("tp_btf/kfree")
int empty_btf_kfree(void *ctx) { return 0; }

// raw_tp and classic tracepoint programs name their event at attach time:
// one program serves all four.
SEC("raw_tp")
int empty_raw(void *ctx) { return 0; }
SEC("tracepoint")
int empty_tp(void *ctx) { return 0; }

// The value is ours, so that the floor copies as many bytes per insert.

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1000000);
	__type(key, __u64);
	__type(value, struct object);
} floor_map SEC(".maps");

static __always_inline void floor_insert(__u64 ptr)
{
	struct object v = {};
	bpf_map_update_elem(&floor_map, &ptr, &v, BPF_ANY);
}

static __always_inline void floor_delete(__u64 ptr)
{
	bpf_map_delete_elem(&floor_map, &ptr);
}

SEC("tp_btf/kmem_cache_alloc")
int BPF_PROG(floor_slab_alloc, unsigned long call_site, const void *ptr)
{
	floor_insert((__u64)ptr);
	return 0;
}

SEC("tp_btf/kmem_cache_free")
int BPF_PROG(floor_slab_free, unsigned long call_site, const void *ptr)
{
	floor_delete((__u64)ptr);
	return 0;
}

SEC("tp_btf/kmalloc")
int BPF_PROG(floor_kmalloc, unsigned long call_site, const void *ptr)
{
	floor_insert((__u64)ptr);
	return 0;
}

SEC("tp_btf/kfree")
int BPF_PROG(floor_kfree, unsigned long call_site, const void *ptr)
{
	floor_delete((__u64)ptr);
	return 0;
}

// The same pair on our live table, sized by the bench as the probes size
// theirs: what the table itself costs, without the rest of the probes.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct live_bucket);
} floor_table SEC(".maps");

const volatile __u32 floor_table_buckets = 1;

static __always_inline void floor_table_insert(__u64 ptr)
{
	struct object v = {};
	table_insert((struct table){&floor_table, floor_table_buckets}, ptr, &v);
}

static __always_inline void floor_table_delete(__u64 ptr)
{
	table_delete((struct table){&floor_table, floor_table_buckets}, ptr);
}

SEC("tp_btf/kmem_cache_alloc")
int BPF_PROG(table_slab_alloc, unsigned long call_site, const void *ptr)
{
	floor_table_insert((__u64)ptr);
	return 0;
}

SEC("tp_btf/kmem_cache_free")
int BPF_PROG(table_slab_free, unsigned long call_site, const void *ptr)
{
	floor_table_delete((__u64)ptr);
	return 0;
}

SEC("tp_btf/kmalloc")
int BPF_PROG(table_kmalloc, unsigned long call_site, const void *ptr)
{
	floor_table_insert((__u64)ptr);
	return 0;
}

SEC("tp_btf/kfree")
int BPF_PROG(table_kfree, unsigned long call_site, const void *ptr)
{
	floor_table_delete((__u64)ptr);
	return 0;
}

// tracex4: struct pair and my_map as in samples/bpf/tracex4.bpf.c.
struct pair {
	__u64 val;
	__u64 ip;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, long);
	__type(value, struct pair);
	__uint(max_entries, 1000000);
} my_map SEC(".maps");

SEC("tracepoint/kmem/kmem_cache_free")
int tracex4_free(struct trace_event_raw_kmem_cache_free *ctx)
{
	long ptr = (long)ctx->ptr;

	bpf_map_delete_elem(&my_map, &ptr);
	return 0;
}

SEC("tracepoint/kmem/kmem_cache_alloc")
int tracex4_alloc(struct trace_event_raw_kmem_cache_alloc *ctx)
{
	long ptr = (long)ctx->ptr;
	struct pair v = {
		.val = bpf_ktime_get_ns(),
		.ip = ctx->call_site,
	};

	bpf_map_update_elem(&my_map, &ptr, &v, BPF_ANY);
	return 0;
}

// The cheapest pass over a map in the kernel: an iterator that visits each
// element and does nothing with it, the floor of any in-kernel
// aggregation. The kernel ends a read() after a million elements without
// output with EAGAIN: a byte now and then keeps a pass in one read.
__u64 walked; // elements visited, reset by user space

SEC("iter/bpf_map_elem")
int walk(struct bpf_iter__bpf_map_elem *ctx)
{
	if (!ctx->value)
		return 0;
	walked++;
	if (ctx->meta->seq_num % 65536 == 0) {
		char mark = 0;
		bpf_seq_write(ctx->meta->seq, &mark, 1);
	}
	return 0;
}
