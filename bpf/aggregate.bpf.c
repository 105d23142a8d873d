//go:build ignore

// SPDX-License-Identifier: GPL-2.0
//
// In-kernel aggregation of the live-object map: a BPF map iterator walks
// `live` and sums its objects per group into `groups`, so that a scan copies
// a few thousand groups out of the kernel instead of every object. A
// separate object from kmemleak.bpf.c: it is loaded only by a scan that
// uses it, and attached to the live map the tracker created.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

// struct object of kmemleak.bpf.c, which fills the map iterated: keep the
// two the same.
struct object {
	__u64 alloc_ns;
	__u64 call_site;
	__u64 cache;
	__u32 bytes;
	__s32 stack_id;
	__u16 allocator;
	__u16 stack_skipped;
};

// What the report groups by, and the truth check by cache. bytes is part
// of the key because a kmalloc object's cache depends on its size.
struct group_key {
	__u64 call_site;
	__u64 cache;
	__u32 bytes;
	__s32 stack_id;
	__u16 allocator;
	__u16 stack_skipped;
	__u32 pad;
};

struct group {
	__u64 objects;       // all live objects
	__u64 before_cutoff; // allocated before cutoff: the truth check's count
	__u64 aged;          // allocated before aged_before: leak suspects
	__u64 aged_bytes;
	__u64 oldest_ns; // the earliest alloc_ns
};

// Set by user space before each pass.
__u64 cutoff;
__u64 aged_before;
// Objects left out of a pass because groups was full.
__u64 overflow;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, struct group_key);
	__type(value, struct group);
} groups SEC(".maps");

// The kernel ends a read() of an iterator that has walked a million
// elements without output with EAGAIN: a byte now and then keeps a pass in
// one read.
#define MARK_EVERY 65536

SEC("iter/bpf_map_elem")
int aggregate(struct bpf_iter__bpf_map_elem *ctx)
{
	struct object *obj = ctx->value;
	if (!obj)
		return 0;
	if (ctx->meta->seq_num % MARK_EVERY == 0) {
		char mark = 0;
		bpf_seq_write(ctx->meta->seq, &mark, 1);
	}
	struct group_key key = {
		.call_site = obj->call_site,
		.cache = obj->cache,
		.bytes = obj->bytes,
		.stack_id = obj->stack_id,
		.allocator = obj->allocator,
		.stack_skipped = obj->stack_skipped,
	};
	struct group *g = bpf_map_lookup_elem(&groups, &key);
	if (!g) {
		struct group fresh = {.oldest_ns = ~0ULL};
		bpf_map_update_elem(&groups, &key, &fresh, BPF_NOEXIST);
		g = bpf_map_lookup_elem(&groups, &key);
		if (!g) {
			overflow++;
			return 0;
		}
	}
	// One iterator runs at a time and nothing else writes groups: plain
	// increments.
	g->objects++;
	if (obj->alloc_ns < cutoff)
		g->before_cutoff++;
	if (obj->alloc_ns < aged_before) {
		g->aged++;
		g->aged_bytes += obj->bytes;
	}
	if (obj->alloc_ns < g->oldest_ns)
		g->oldest_ns = obj->alloc_ns;
	return 0;
}
