//go:build ignore

// SPDX-License-Identifier: GPL-2.0
//
// Live-object tracking for the kernel allocators. Every allocation inserts
// its address into `live`, every free deletes it; user space scans `live` for
// objects older than a threshold. The same bodies are compiled for three
// attach modes (tp_btf, raw_tp, classic tracepoint) because which of them a
// kernel accepts varies; user space loads only the mode it picked.

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

enum allocator {
	ALLOCATOR_SLAB = 0,
	ALLOCATOR_KMALLOC = 1,
	ALLOCATOR_COUNT = 2,
};

// gfp bits that pick the kmalloc cache family (kmalloc-rcl-*, kmalloc-cg-*,
// dma-kmalloc-*). Their values have been the same from Linux 5.x to 6.18; the
// bits live in an anonymous enum, which CO-RE cannot name.
#define GFP_DMA_BIT_MASK 0x01u
#define GFP_RECLAIMABLE_MASK 0x10u
#define GFP_ACCOUNT_MASK 0x400000u
#define KMALLOC_FAMILY_MASK (GFP_DMA_BIT_MASK | GFP_RECLAIMABLE_MASK | GFP_ACCOUNT_MASK)

#define CACHE_NAME_LEN 32

enum stack_mode {
	STACKS_OFF = 0,
	STACKS_ADAPTIVE = 1, // for call sites in stack_sites, and 1 in stack_sample_rate
	STACKS_ALWAYS = 2,
};

// Set by the loader. Read-only, so the verifier drops the branches they turn
// off: stacks off costs nothing.
const volatile __u32 stack_mode = STACKS_OFF;
const volatile __u32 stack_sample_rate = 0; // 0: no sampling
const volatile __u32 min_size = 0;
const volatile __u32 max_size = 0xffffffff;

struct object {
	__u64 alloc_ns;
	__u64 call_site;
	// slab: the kmem_cache pointer (tp_btf, raw_tp) or a hash of the cache
	// name (classic tracepoint, which has no pointer); in both cases a key of
	// caches. kmalloc: the gfp bits that pick the cache family.
	__u64 cache;
	__u32 bytes;
	__s32 stack_id; // in stacks, or -1
	__u16 allocator;
	// The stack was taken without its innermost frame (see capture_stack):
	// that frame is call_site.
	__u16 stack_skipped;
};

// One per slab cache the probes have seen. skip is set by user space for a
// cache whose frees bypass the tracepoints, or that the configuration
// filters out: its allocations are not tracked, at no extra cost, since
// every allocation reads this entry anyway.
// freed is set by the first kmem_cache_free event of the cache: a cache
// that allocates and never shows a free is one whose frees go unseen, or
// one whose every object is still in use, which the kernel's count tells.
struct cache_info {
	char name[CACHE_NAME_LEN];
	__u32 skip;
	__u32 freed;
};

struct counters {
	__u64 allocs;
	__u64 frees;
	__u64 untracked_frees;
	__u64 dropped;
	__u64 stack_errors;
	__u64 recovered_frees; // frees the backup free program handled for the primary
};

// Sized by the loader from max_tracked_objects. Preallocated: inserts never
// allocate, so they are safe in any context the allocator runs in.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u64);
	__type(value, struct object);
} live SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct cache_info);
} caches SEC(".maps");

// Kernel stacks of allocations, sized by the loader (entries from
// max_tracked_objects, depth from stack_depth). Without BPF_F_REUSE_STACKID:
// a hash collision fails the capture (counted) instead of handing out the id
// of a stack that live objects still point to.
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__uint(value_size, 32 * sizeof(__u64));
} stacks SEC(".maps");

// The call sites user space found suspect: in adaptive mode, allocations
// from them get a stack.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} stack_sites SEC(".maps");

// The kmalloc caches not to track (as skip in cache_info), indexed by
// kmalloc_slot(): an array, so the check is one inlined load.
#define KMALLOC_MAX_CACHE_SIZE 8192
#define KMALLOC_SLOTS_PER_FAMILY (KMALLOC_MAX_CACHE_SIZE / 8 + 1)
#define KMALLOC_FAMILIES 4
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KMALLOC_FAMILIES * KMALLOC_SLOTS_PER_FAMILY);
	__type(key, __u32);
	__type(value, __u32);
} kmalloc_skip SEC(".maps");

// The address the primary free program of each allocator handled last on
// this CPU; see free_backup().
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ALLOCATOR_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} last_free SEC(".maps");

// Per-CPU so the hot path never contends on a cache line; user space sums.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ALLOCATOR_COUNT);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

// NULL and ZERO_SIZE_PTR (16) are not objects: kfree(NULL) fires the
// tracepoint, and failed allocations report NULL.
static __always_inline bool is_object(const void *ptr)
{
	return (unsigned long)ptr > 16;
}

#define EEXIST 17

// bpf_get_stackid costs ten times the map update, so by default only
// allocations from suspect call sites, and a sample, pay for it. A stack
// whose hash bucket holds another stack fails with EEXIST every time it is
// taken (no BPF_F_REUSE_STACKID: that would repoint ids that live objects
// hold); taken again without its innermost frame, it hashes elsewhere. The
// frame it loses is the allocator's caller, which is call_site.
static __always_inline void capture_stack(void *ctx, struct object *obj, struct counters *c)
{
	obj->stack_id = -1;
	if (stack_mode == STACKS_OFF)
		return;
	if (stack_mode == STACKS_ADAPTIVE && !bpf_map_lookup_elem(&stack_sites, &obj->call_site) &&
	    !(stack_sample_rate && bpf_get_prandom_u32() % stack_sample_rate == 0))
		return;
	long id = bpf_get_stackid(ctx, &stacks, 0);
	if (id == -EEXIST) {
		id = bpf_get_stackid(ctx, &stacks, 1);
		obj->stack_skipped = 1;
	}
	if (id < 0) {
		c->stack_errors++;
		return;
	}
	obj->stack_id = id;
}

static __always_inline void track_alloc(void *ctx, const void *ptr, __u64 call_site, __u64 cache,
					__u32 bytes, __u32 allocator)
{
	if (!is_object(ptr))
		return;
	struct counters *c = bpf_map_lookup_elem(&stats, &allocator);
	if (!c)
		return;
	c->allocs++;
	if (bytes < min_size || bytes > max_size)
		return;

	__u64 key = (__u64)ptr;
	struct object obj = {
		.alloc_ns = bpf_ktime_get_ns(),
		.call_site = call_site,
		.cache = cache,
		.bytes = bytes,
		.allocator = allocator,
	};
	capture_stack(ctx, &obj, c);
	// BPF_ANY: an address that comes back after a free we missed replaces
	// the stale entry instead of keeping it as a phantom leak.
	if (bpf_map_update_elem(&live, &key, &obj, BPF_ANY))
		c->dropped++;
}

static __always_inline void track_free(const void *ptr, __u32 allocator)
{
	if (!is_object(ptr))
		return;
	struct counters *c = bpf_map_lookup_elem(&stats, &allocator);
	if (!c)
		return;
	c->frees++;

	__u64 key = (__u64)ptr;
	if (bpf_map_delete_elem(&live, &key))
		c->untracked_frees++;
}

// Cache names are copied once per cache, not per allocation: the lookup on
// the 8-byte key is what every slab allocation pays, and it also says
// whether the cache is tracked at all.
static __always_inline bool cache_skipped(__u64 key, const char *name)
{
	struct cache_info *ci = bpf_map_lookup_elem(&caches, &key);
	if (ci)
		return ci->skip;
	struct cache_info n = {};
	bpf_probe_read_kernel_str(n.name, sizeof(n.name), name);
	bpf_map_update_elem(&caches, &key, &n, BPF_NOEXIST);
	return false;
}

static __always_inline void slab_alloc(void *ctx, __u64 call_site, const void *ptr, struct kmem_cache *s)
{
	if (!is_object(ptr))
		return;
	__u64 cache = (__u64)s;
	if (cache_skipped(cache, BPF_CORE_READ(s, name)))
		return;
	track_alloc(ctx, ptr, call_site, cache, BPF_CORE_READ(s, size), ALLOCATOR_SLAB);
}

// kmalloc_slot mirrors kmalloc_type(): DMA wins over reclaimable over
// accounted. Mirrored in Go by tracker.KmallocSlot.
static __always_inline __u32 kmalloc_slot(size_t bytes_alloc, gfp_t gfp)
{
	__u32 family = 0;
	if (gfp & GFP_DMA_BIT_MASK)
		family = 1;
	else if (gfp & GFP_RECLAIMABLE_MASK)
		family = 2;
	else if (gfp & GFP_ACCOUNT_MASK)
		family = 3;
	return family * KMALLOC_SLOTS_PER_FAMILY + bytes_alloc / 8;
}

static __always_inline void kmalloc_alloc(void *ctx, __u64 call_site, const void *ptr,
					  size_t bytes_alloc, gfp_t gfp)
{
	if (!is_object(ptr))
		return;
	// kmalloc-large comes from the page allocator, whose frees are traced.
	if (bytes_alloc <= KMALLOC_MAX_CACHE_SIZE) {
		__u32 slot = kmalloc_slot(bytes_alloc, gfp);
		__u32 *skip = bpf_map_lookup_elem(&kmalloc_skip, &slot);
		if (skip && *skip)
			return;
	}
	track_alloc(ctx, ptr, call_site, gfp & KMALLOC_FAMILY_MASK, bytes_alloc, ALLOCATOR_KMALLOC);
}

// The kernel skips a tp_btf or raw_tp program when it is already running on
// the CPU: a free from an interrupt that lands while the free program runs
// is lost, and its object stays in `live` as a phantom leak. The guard is
// per program, so each free tracepoint gets two copies: the primary tracks
// every free it runs for and records the address; the backup, attached
// after it, tracks a free only when the primary did not record that
// address, that is when the primary was skipped.
// note_cache_free marks the cache of a slab free. Written once, then only
// read, so the cache line is not bounced between CPUs.
static __always_inline void note_cache_free(__u64 cache)
{
	struct cache_info *ci = bpf_map_lookup_elem(&caches, &cache);
	if (ci && !ci->freed)
		ci->freed = 1;
}

static __always_inline void free_primary(const void *ptr, __u32 allocator)
{
	track_free(ptr, allocator);
	__u64 *last = bpf_map_lookup_elem(&last_free, &allocator);
	if (last)
		*last = (__u64)ptr;
}

static __always_inline void free_backup(const void *ptr, __u32 allocator)
{
	__u64 *last = bpf_map_lookup_elem(&last_free, &allocator);
	if (!last)
		return;
	if (*last == (__u64)ptr) {
		*last = 0;
		return;
	}
	track_free(ptr, allocator);
	struct counters *c = bpf_map_lookup_elem(&stats, &allocator);
	if (c)
		c->recovered_frees++;
}

// tp_btf: typed arguments straight from the tracepoint call, the cheapest mode.

SEC("tp_btf/kmem_cache_alloc")
int BPF_PROG(btf_slab_alloc, unsigned long call_site, const void *ptr, struct kmem_cache *s)
{
	slab_alloc(ctx, call_site, ptr, s);
	return 0;
}

SEC("tp_btf/kmem_cache_free")
int BPF_PROG(btf_slab_free, unsigned long call_site, const void *ptr, struct kmem_cache *s)
{
	free_primary(ptr, ALLOCATOR_SLAB);
	note_cache_free((__u64)s);
	return 0;
}

SEC("tp_btf/kmem_cache_free")
int BPF_PROG(btf_slab_free_bk, unsigned long call_site, const void *ptr)
{
	free_backup(ptr, ALLOCATOR_SLAB);
	return 0;
}

SEC("tp_btf/kmalloc")
int BPF_PROG(btf_kmalloc, unsigned long call_site, const void *ptr, size_t bytes_req,
	     size_t bytes_alloc, gfp_t gfp)
{
	kmalloc_alloc(ctx, call_site, ptr, bytes_alloc, gfp);
	return 0;
}

SEC("tp_btf/kfree")
int BPF_PROG(btf_kfree, unsigned long call_site, const void *ptr)
{
	free_primary(ptr, ALLOCATOR_KMALLOC);
	return 0;
}

SEC("tp_btf/kfree")
int BPF_PROG(btf_kfree_bk, unsigned long call_site, const void *ptr)
{
	free_backup(ptr, ALLOCATOR_KMALLOC);
	return 0;
}

// raw_tp: the same arguments, untyped; for kernels that refuse tp_btf.

SEC("raw_tp/kmem_cache_alloc")
int BPF_PROG(raw_slab_alloc, unsigned long call_site, const void *ptr, struct kmem_cache *s)
{
	slab_alloc(ctx, call_site, ptr, s);
	return 0;
}

SEC("raw_tp/kmem_cache_free")
int BPF_PROG(raw_slab_free, unsigned long call_site, const void *ptr, struct kmem_cache *s)
{
	free_primary(ptr, ALLOCATOR_SLAB);
	note_cache_free((__u64)s);
	return 0;
}

SEC("raw_tp/kmem_cache_free")
int BPF_PROG(raw_slab_free_bk, unsigned long call_site, const void *ptr)
{
	free_backup(ptr, ALLOCATOR_SLAB);
	return 0;
}

SEC("raw_tp/kmalloc")
int BPF_PROG(raw_kmalloc, unsigned long call_site, const void *ptr, size_t bytes_req,
	     size_t bytes_alloc, gfp_t gfp)
{
	kmalloc_alloc(ctx, call_site, ptr, bytes_alloc, gfp);
	return 0;
}

SEC("raw_tp/kfree")
int BPF_PROG(raw_kfree, unsigned long call_site, const void *ptr)
{
	free_primary(ptr, ALLOCATOR_KMALLOC);
	return 0;
}

SEC("raw_tp/kfree")
int BPF_PROG(raw_kfree_bk, unsigned long call_site, const void *ptr)
{
	free_backup(ptr, ALLOCATOR_KMALLOC);
	return 0;
}

// Classic tracepoints: the record carries the cache name, not the cache
// pointer, so the name's FNV-1a hash stands in for the pointer. Their
// recursion guard is one per CPU for all BPF programs, so a backup free
// program would be skipped along with the primary: none here.

static __always_inline __u64 fnv1a(const char *s, int len)
{
	__u64 h = 0xcbf29ce484222325ULL;
	for (int i = 0; i < CACHE_NAME_LEN; i++) {
		if (i >= len || !s[i])
			break;
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

SEC("tracepoint/kmem/kmem_cache_alloc")
int tp_slab_alloc(struct trace_event_raw_kmem_cache_alloc *ctx)
{
	const void *ptr = ctx->ptr;
	if (!is_object(ptr))
		return 0;

	char name[CACHE_NAME_LEN] = {};
	int len;
	if (bpf_core_field_exists(ctx->__data_loc_name)) {
		__u32 loc = ctx->__data_loc_name;
		len = bpf_probe_read_kernel_str(name, sizeof(name), (void *)ctx + (loc & 0xffff));
	} else {
		// Before Linux 6.2 the record names no cache: the object size
		// stands in, as slab-<bytes>, which no real cache is called.
		__u64 size = ctx->bytes_alloc;
		len = BPF_SNPRINTF(name, sizeof(name), "slab-%llu", size);
	}
	__u64 cache = fnv1a(name, len);
	if (cache_skipped(cache, name))
		return 0;

	track_alloc(ctx, ptr, ctx->call_site, cache, ctx->bytes_alloc, ALLOCATOR_SLAB);
	return 0;
}

SEC("tracepoint/kmem/kmem_cache_free")
int tp_slab_free(struct trace_event_raw_kmem_cache_free *ctx)
{
	track_free(ctx->ptr, ALLOCATOR_SLAB);

	char name[CACHE_NAME_LEN] = {};
	__u32 loc = ctx->__data_loc_name;
	int len = bpf_probe_read_kernel_str(name, sizeof(name), (void *)ctx + (loc & 0xffff));
	note_cache_free(fnv1a(name, len));
	return 0;
}

SEC("tracepoint/kmem/kmalloc")
int tp_kmalloc(struct trace_event_raw_kmalloc *ctx)
{
	kmalloc_alloc(ctx, ctx->call_site, ctx->ptr, ctx->bytes_alloc, ctx->gfp_flags);
	return 0;
}

SEC("tracepoint/kmem/kfree")
int tp_kfree(struct trace_event_raw_kfree *ctx)
{
	track_free(ctx->ptr, ALLOCATOR_KMALLOC);
	return 0;
}
