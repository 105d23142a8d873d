//go:build ignore

// SPDX-License-Identifier: GPL-2.0
//
// Live-object tracking for the kernel allocators. Every allocation inserts
// its address into a live map, every free deletes it; user space scans the
// live maps for objects older than a threshold. The same bodies are compiled
// for several attach modes (tp_btf, raw_tp, classic tracepoint) because which
// of them a kernel accepts varies; user space loads only the mode it picked.

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "kmemleak.h"
#include "livetable.bpf.h"
#include "young.bpf.h"

char LICENSE[] SEC("license") = "GPL";

// 4 KiB pages: every x86-64 kernel, and the arm64 kernels of Debian and most
// distributions. The loader refuses a kernel with other pages (arm64 can
// have 16 or 64 KiB), where this and KMALLOC_MAX_CACHE_SIZE would be wrong.
#define PAGE_SIZE 4096

// gfp bits that pick the kmalloc cache family (kmalloc-rcl-*, kmalloc-cg-*,
// dma-kmalloc-*). Their values have been the same from Linux 5.x to 6.18; the
// bits live in an anonymous enum, which CO-RE cannot name.
#define GFP_DMA_BIT_MASK 0x01u
#define GFP_RECLAIMABLE_MASK 0x10u
#define GFP_ACCOUNT_MASK 0x400000u

// Set by the loader. Read-only, so the verifier drops the branches they turn
// off: stacks off costs nothing.
const volatile enum stack_mode stack_traces = STACKS_OFF;
const volatile __u32 stack_sample_rate = 0; // 0: no sampling
const volatile __u32 min_size = 0;
const volatile __u32 max_size = 0xffffffff;
// Track 1 in sample_rate objects, picked by a hash of the address, so the
// allocation and the free of one object agree without a lookup: an
// unsampled free costs no map operation at all. The loader sets
// sample_below to 2^32 / sample_rate: a comparison, where the rate itself
// would take a division on every event.
const volatile __u64 sample_below = 1ULL << 32;
// The receiver's own process: what it allocates (its maps, links and
// programs, the files it reads, its threads) is the cost of watching, not
// a leak to report. 0 ignores none. An interrupt taken while the receiver
// runs is charged to it too: a share of interrupt-context allocations as
// small as the CPU time the receiver uses goes untracked.
const volatile __u32 ignore_tgid = 0;
// Allocation times in jiffies (see struct object), where user space could
// map them onto CLOCK_MONOTONIC.
const volatile bool time_in_jiffies = false;
// Record who allocated each object (struct object's tgid, cgroup and
// context).
const volatile bool attribution = false;

// One key space per kind of address, each a live table (see struct live_bucket)
// sized by the loader: live holds slab and kmalloc objects by address
// (kfree frees slab objects too, and kmem_cache_free kmalloc ones);
// live_pages holds pages by their struct page (tp_btf, raw_tp) or PFN
// (classic tracepoint); live_percpu holds percpu objects by their __percpu
// pointer, which is an offset that can equal a PFN. A page-cache-heavy
// workload that fills live_pages leaves slab tracking untouched. An array
// is allocated whole up front: inserts never allocate, so they are safe in
// any context the allocator runs in.
struct live_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct live_bucket);
};
struct live_table live SEC(".maps");
struct live_table live_pages SEC(".maps");
struct live_table live_percpu SEC(".maps");

// The tables' sizes in buckets, set by the loader with max_entries.
const volatile __u32 live_buckets = 1;
const volatile __u32 live_pages_buckets = 1;
const volatile __u32 live_percpu_buckets = 1;

// The young area in front of live (struct young_slot), a slot an element,
// read by user space in place as the live tables are; sized by the loader.
// Pages and percpu objects go straight to their tables: their keys need
// not be aligned (a PFN, a percpu offset), and they are not what a busy
// server churns through.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct young_slot);
} young SEC(".maps");

const volatile __u32 young_slots = 1;

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

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kmalloc_skip_table);
} kmalloc_skip SEC(".maps");

// Per-CPU so the hot path never contends on a cache line; user space sums.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ALLOCATOR_COUNT);
	__type(key, enum allocator);
	__type(value, struct counters);
} stats SEC(".maps");

// The processes that ended since user space last read them (struct
// exited). LRU: a burst of exits between two scans evicts the oldest.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct exited);
} exits SEC(".maps");

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
// Page allocations always take one: the tracepoint has no call site, so
// the stack is the only way to say who allocated. Percpu ones too: the
// tracepoint's call site is the caller of pcpu_alloc, which before Linux
// 6.10 is the percpu allocator's own wrapper (__alloc_percpu_gfp) wherever
// the kernel is built with frame pointers, which turn off tail calls: every
// arm64 kernel. Percpu allocations are rare next to slab ones.
static __always_inline void capture_stack(void *ctx, struct object *obj, struct counters *c)
{
	obj->stack_id = -1;
	if (obj->allocator != ALLOCATOR_PAGE && obj->allocator != ALLOCATOR_PERCPU) {
		if (stack_traces == STACKS_OFF)
			return;
		if (stack_traces == STACKS_ADAPTIVE && !bpf_map_lookup_elem(&stack_sites, &obj->call_site) &&
		    !(stack_sample_rate && bpf_get_prandom_u32() % stack_sample_rate == 0))
			return;
	}
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

// What interrupt each CPU runs, as the kernel's preempt count says
// (include/linux/preempt.h, the same since 5.x): hard interrupts and NMIs,
// and softirqs served (not merely disabled), ksoftirqd's included. It is
// read at each allocation, with no program on the irq tracepoints: a
// server runs tens of thousands of softirqs a second, and two programs on
// each cost more than what the context is for, the objects made in them
// that survive.
#define SOFTIRQ_OFFSET 0x100
#define HARDIRQ_MASK 0x000f0000
#define NMI_MASK 0x00f00000

// x86-64 keeps the preempt count in a per-CPU variable (__preempt_count,
// pcpu_hot.preempt_count in 6.2 to 6.14), which a typed ksym would reach
// only where kallsyms has every symbol (CONFIG_KALLSYMS_ALL, which not
// every kernel has). The kernel's BTF gives its offset in the per-CPU
// section instead, and that of the run queues, another per-CPU variable,
// which the current task points to: a per-CPU variable's copy for this CPU
// is where the run queue's is, moved by the difference of their offsets
// (whether the section is linked at 0, as before 6.15, or not). The loader
// sets both offsets once read_percpu has checked them on the running
// kernel; 0 where it could not, and then the flags below tell the context.
const volatile __u64 preempt_count_offset = 0;
const volatile __u64 runqueues_offset = 0;

// this_cpu_var returns the address of this CPU's copy of the per-CPU
// variable at offset in the per-CPU section, given the run queues' offset.
// scratch turns the run queue's pointer into a number: a privileged program
// may store a pointer into a map value, and reads it back as one.
static __always_inline __u64 this_cpu_var(struct task_struct *task, __u64 offset, __u64 runqueues, __u64 *scratch)
{
	*(volatile __u64 *)scratch = (__u64)task->se.cfs_rq->rq;
	return *(volatile __u64 *)scratch - runqueues + offset;
}

// Run once by the loader on x86-64 (BPF_PROG_TEST_RUN), never attached:
// checks the offsets found in the kernel's BTF. This CPU's current_task
// must be the task that runs the program, and a program run from a system
// call is in no interrupt.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct percpu_check);
} percpu SEC(".maps");

SEC("raw_tp")
int read_percpu(void *ctx)
{
	__u32 zero = 0;
	struct percpu_check *p = bpf_map_lookup_elem(&percpu, &zero);
	if (!p)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 current_task = this_cpu_var(task, p->current_task_offset, p->runqueues_offset, &p->current_task);
	__u64 preempt_count = this_cpu_var(task, p->preempt_count_offset, p->runqueues_offset, &p->current_task);
	bpf_probe_read_kernel(&p->current_task, sizeof(p->current_task), (void *)current_task);
	bpf_probe_read_kernel(&p->preempt_count, sizeof(p->preempt_count), (void *)preempt_count);
	p->task = bpf_get_current_task();
	return 0;
}

// Where the preempt count cannot be read (x86-64 kernels whose BTF lacks
// what the offsets need), per-CPU flags set by four raw tracepoint
// programs on the softirq and interrupt handler tracepoints say the
// context. Softirqs and handlers do not nest in their own kind, so a flag
// each is enough. Not seen: interrupts without a handler tracepoint (the
// local timer, IPIs), which seldom allocate.
struct irq_state {
	__u32 softirq;
	__u32 hardirq;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct irq_state);
} irq_states SEC(".maps");

static __always_inline struct irq_state *this_cpu_irq_state(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&irq_states, &zero);
}

// Attached only without the preempt count, the exits before the entries:
// an entry seen without its exit would leave the flag set.
SEC("raw_tp/softirq_entry")
int softirq_entry(void *ctx)
{
	struct irq_state *c = this_cpu_irq_state();
	if (c)
		c->softirq = 1;
	return 0;
}

SEC("raw_tp/softirq_exit")
int softirq_exit(void *ctx)
{
	struct irq_state *c = this_cpu_irq_state();
	if (c)
		c->softirq = 0;
	return 0;
}

SEC("raw_tp/irq_handler_entry")
int hardirq_entry(void *ctx)
{
	struct irq_state *c = this_cpu_irq_state();
	if (c)
		c->hardirq = 1;
	return 0;
}

SEC("raw_tp/irq_handler_exit")
int hardirq_exit(void *ctx)
{
	struct irq_state *c = this_cpu_irq_state();
	if (c)
		c->hardirq = 0;
	return 0;
}

// read_preempt_count reads the current CPU's preempt count into count, or
// says it cannot.
static __always_inline bool read_preempt_count(struct task_struct *task, struct counters *c, __u32 *count)
{
#if defined(__TARGET_ARCH_arm64)
	// arm64 keeps it in the task's thread_info.
	*count = task->thread_info.preempt.count;
	return true;
#else
	if (!preempt_count_offset)
		return false;
	__u64 at = this_cpu_var(task, preempt_count_offset, runqueues_offset, &c->scratch);
	return bpf_probe_read_kernel(count, sizeof(*count), (void *)at) == 0;
#endif
}

// interrupt_context says whether an allocation runs in a hard interrupt (or
// NMI), a softirq, or neither (CONTEXT_TASK).
static __always_inline __u8 interrupt_context(struct task_struct *task, struct counters *c)
{
	__u32 count;
	if (read_preempt_count(task, c, &count)) {
		if (count & (HARDIRQ_MASK | NMI_MASK))
			return CONTEXT_IRQ;
		if (count & SOFTIRQ_OFFSET)
			return CONTEXT_SOFTIRQ;
		return CONTEXT_TASK;
	}
	struct irq_state *irq = this_cpu_irq_state();
	if (irq && irq->hardirq)
		return CONTEXT_IRQ;
	if (irq && irq->softirq)
		return CONTEXT_SOFTIRQ;
	return CONTEXT_TASK;
}

#define PF_KTHREAD 0x00200000 // include/linux/sched.h, the same since 2.6

// record_owner says who allocated obj: in interrupt context nobody, the
// interrupted task being a bystander; else the task's process and cgroup.
static __always_inline void record_owner(struct object *obj, struct counters *c)
{
	struct task_struct *task = bpf_get_current_task_btf();
	obj->context = interrupt_context(task, c);
	if (obj->context != CONTEXT_TASK)
		return;
	obj->tgid = task->tgid;
	obj->cgroup = task->cgroups->dfl_cgrp->kn->id;
	if (task->flags & PF_KTHREAD)
		obj->context = CONTEXT_KTHREAD;
}

// sampled reports whether the object at key is one of the 1 in
// sample_rate tracked: a multiplicative hash, since addresses are aligned
// and their low bits carry no entropy.
static __always_inline bool sampled(__u64 key)
{
	if (sample_below > 0xffffffffULL)
		return true;
	return ((key * 0x9e3779b97f4a7c15ULL) >> 32) < sample_below;
}

// counters_of looks up an allocator's counters through a copy of its
// number: the lookup takes the address of its key, and a number whose
// address escapes is reloaded from the stack, which keeps the compiler from
// folding table_of(allocator) into one table.
static __always_inline struct counters *counters_of(__u32 allocator)
{
	__u32 key = allocator;
	return bpf_map_lookup_elem(&stats, &key);
}

static __always_inline struct table table_of(__u32 allocator)
{
	if (allocator == ALLOCATOR_PAGE)
		return (struct table){&live_pages, live_pages_buckets};
	if (allocator == ALLOCATOR_PERCPU)
		return (struct table){&live_percpu, live_percpu_buckets};
	return (struct table){&live, live_buckets};
}

// in_young_area says whether an allocator's objects go through the young
// area: slab and kmalloc objects, whose table is live.
static __always_inline bool in_young_area(__u32 allocator)
{
	return allocator == ALLOCATOR_SLAB || allocator == ALLOCATOR_KMALLOC;
}

static __always_inline struct young young_area(void)
{
	return (struct young){&young, young_slots};
}

// The live table behind the young area (young.bpf.h), as global functions:
// the verifier checks each once per program rather than at every call, and
// the code is not copied into each caller (the programs that read the
// kfree_rcu batches call them in loops).
__noinline int live_insert(__u64 key, const struct object *obj)
{
	if (!obj)
		return INSERT_FULL;
	return table_insert(table_of(ALLOCATOR_SLAB), key, obj);
}

__noinline int live_delete(__u64 key)
{
	return table_delete(table_of(ALLOCATOR_SLAB), key);
}

// count_insertion counts what an insertion into a live table did.
static __always_inline void count_insertion(enum insertion r, struct counters *c)
{
	switch (r) {
	case INSERT_NEW:
		break;
	case INSERT_REPLACED:
		// No other counter sees the free that was missed.
		c->missed_frees++;
		break;
	case INSERT_FULL:
		c->dropped++;
		break;
	}
}

// count_promotion counts an object moved out of the young area, on its own
// allocator's counters.
static __always_inline void count_promotion(const struct promotion *p)
{
	if (!p->promoted)
		return;
	struct counters *pc = counters_of(p->allocator);
	if (!pc)
		return;
	pc->promoted++;
	count_insertion(p->inserted, pc);
}

// Every so many allocations into the young area (a power of two) look for
// a stale entry of the address in the live table, which the young area
// does not see: one left by an unseen free of an object moved there. The
// live table replaces such an entry at once; here it goes within about as
// many allocations at the address, at a thirty-second of the cost of
// looking every time.
#define STALE_CHECK_EVERY 32

static __always_inline void insert_object(__u32 allocator, __u64 key, struct object *obj, struct counters *c)
{
	obj->alloc_time = time_in_jiffies ? bpf_jiffies64() : bpf_ktime_get_ns();
	if (in_young_area(allocator)) {
		struct promotion p = {};
		switch (young_insert(young_area(), key, obj, &p)) {
		case YOUNG_NEW:
			count_promotion(&p);
			if (c->allocs % STALE_CHECK_EVERY == 0 && live_delete(key))
				c->missed_frees++;
			return;
		case YOUNG_REPLACED:
			c->missed_frees++;
			return;
		case YOUNG_RACED:
			c->raced++;
			if (p.missed)
				c->missed_frees++;
			return;
		case YOUNG_BUSY:
			count_insertion(live_insert(key, obj), c);
			return;
		}
	}
	count_insertion(table_insert(table_of(allocator), key, obj), c);
}

static __always_inline bool delete_object(__u32 allocator, __u64 key, struct counters *c)
{
	if (in_young_area(allocator))
		return young_delete(young_area(), key, &c->fence);
	return table_delete(table_of(allocator), key);
}

// find_object returns the record of a live slab or kmalloc object, or NULL.
static __always_inline struct object *find_object(__u64 key)
{
	struct object *obj = young_find(young_area(), key);
	return obj ? obj : table_find(table_of(ALLOCATOR_SLAB), key);
}

static __always_inline bool size_tracked(__u32 bytes)
{
	return bytes >= min_size && bytes <= max_size;
}

// track_alloc is what every tracked allocation does once its caller has
// decided it is one (sampled() first: an unsampled allocation touches no
// map).
static __always_inline void track_alloc(void *ctx, __u64 key, __u64 call_site, __u64 cache, __u32 bytes,
					__u32 allocator)
{
	if (!size_tracked(bytes))
		return;
	if (ignore_tgid && bpf_get_current_pid_tgid() >> 32 == ignore_tgid)
		return;
	struct counters *c = counters_of(allocator);
	if (!c)
		return;
	c->allocs++;

	struct object obj = {
		.call_site = call_site,
		.cache = cache,
		.bytes = bytes,
		.allocator = allocator,
	};
	if (attribution)
		record_owner(&obj, c);
	capture_stack(ctx, &obj, c);
	insert_object(allocator, key, &obj, c);
}

static __always_inline void track_free(__u64 key, __u32 allocator, struct counters *c)
{
	c->frees++;
	if (!delete_object(allocator, key, c))
		c->untracked_frees++;
}

// Cache names are copied once per cache, not per allocation: the lookup on
// the 8-byte key is what every slab allocation pays, and it also says
// whether the cache is tracked at all. A cache destroyed and another
// created at its address (a module unloaded and loaded again) would keep
// the old one's name and skip flag: the name pointer, read anyway, tells
// them apart, and the new cache's entry replaces the old.
static __always_inline bool cache_skipped(__u64 key, const char *name)
{
	struct cache_info *ci = bpf_map_lookup_elem(&caches, &key);
	if (ci && ci->name_ptr == (__u64)name)
		return ci->skip;
	struct cache_info n = {.name_ptr = (__u64)name};
	bpf_probe_read_kernel_str(n.name, sizeof(n.name), name);
	bpf_map_update_elem(&caches, &key, &n, BPF_ANY);
	return false;
}

static __always_inline void slab_alloc(void *ctx, __u64 call_site, const void *ptr, struct kmem_cache *s,
				       const char *name, __u32 size)
{
	if (!cache_skipped((__u64)s, name))
		track_alloc(ctx, (__u64)ptr, call_site, (__u64)s, size, ALLOCATOR_SLAB);
}

// kmalloc_family picks the cache family as kmalloc_type() does: DMA wins
// over reclaimable over accounted.
static __always_inline enum kmalloc_family kmalloc_family(size_t bytes_alloc, gfp_t gfp)
{
	if (bytes_alloc > KMALLOC_MAX_CACHE_SIZE)
		return KMALLOC_FAMILY_LARGE;
	if (gfp & GFP_DMA_BIT_MASK)
		return KMALLOC_FAMILY_DMA;
	if (gfp & GFP_RECLAIMABLE_MASK)
		return KMALLOC_FAMILY_RECLAIM;
	if (gfp & GFP_ACCOUNT_MASK)
		return KMALLOC_FAMILY_CGROUP;
	return KMALLOC_FAMILY_NORMAL;
}

static __always_inline bool kmalloc_skipped(enum kmalloc_family family, size_t bytes_alloc)
{
	// kmalloc-large comes from the page allocator, whose frees are traced.
	if (family >= KMALLOC_FAMILY_LARGE || bytes_alloc / 8 >= KMALLOC_SLOTS)
		return false;
	__u32 zero = 0;
	struct kmalloc_skip_table *ks = bpf_map_lookup_elem(&kmalloc_skip, &zero);
	if (!ks)
		return false;
	// One bound on the offset into the table: the verifiers of 6.1 and
	// 6.12 lose the bounds of the two indexes through the multiplication.
	// barrier_var keeps the compiler from dropping the check as implied by
	// the ones above.
	__u64 index = (__u64)family * KMALLOC_SLOTS + bytes_alloc / 8;
	barrier_var(index);
	if (index >= sizeof(ks->skip))
		return false;
	return ((__u8 *)ks->skip)[index];
}

static __always_inline void kmalloc_alloc(void *ctx, __u64 call_site, const void *ptr,
					  size_t bytes_alloc, gfp_t gfp)
{
	if (!is_object(ptr) || !sampled((__u64)ptr))
		return;
	enum kmalloc_family family = kmalloc_family(bytes_alloc, gfp);
	if (kmalloc_skipped(family, bytes_alloc))
		return;
	track_alloc(ctx, (__u64)ptr, call_site, family, bytes_alloc, ALLOCATOR_KMALLOC);
}

// A page is a NULL pointer or, in the classic tracepoint's PFN, -1 when the
// allocation failed.
static __always_inline bool is_page(__u64 key)
{
	return key && key != (__u64)-1;
}

static __always_inline void page_alloc(void *ctx, __u64 key, unsigned int order)
{
	if (is_page(key) && sampled(key))
		track_alloc(ctx, key, 0, order, PAGE_SIZE << order, ALLOCATOR_PAGE);
}

static __always_inline void percpu_alloc(void *ctx, __u64 call_site, const void *ptr, __u64 bytes_alloc)
{
	if (is_object(ptr) && sampled((__u64)ptr))
		track_alloc(ctx, (__u64)ptr, call_site, 0, bytes_alloc, ALLOCATOR_PERCPU);
}

// The kernel skips a tp_btf or raw_tp program when it is already running on
// the CPU: a free from an interrupt that lands while the free program runs
// is lost, and its object stays in `live` as a phantom leak. The guard is
// per program, so each free tracepoint where that can happen gets two
// copies: the primary tracks every free it runs for and records the
// address; the backup, attached after it, tracks a free only when the
// primary did not record that address, that is when the primary was
// skipped. It can happen wherever the tracepoint fires with interrupts on:
// kmem_cache_free and kfree (at the start of the free, in any context; the
// softirqs that run when an interrupt ends free skbuffs and RCU callbacks'
// objects) and mm_page_free. Not percpu_free_percpu, which free_percpu()
// fires with pcpu_lock held, interrupts off (and NMIs free no percpu
// memory): it has no backup, and its frees cost one program.

// note_cache_free marks the cache of a slab free. Written once, then only
// read, so the cache line is not bounced between CPUs. The CPU's counters,
// when given, remember the cache it noted last, so a run of frees from one
// cache looks it up once. (A cache destroyed and created again at the same
// address is marked at the CPU's next free from another cache.)
static __always_inline void note_cache_free(__u64 cache, struct counters *c)
{
	if (c) {
		if (c->noted_cache == cache)
			return;
		c->noted_cache = cache;
	}
	struct cache_info *ci = bpf_map_lookup_elem(&caches, &cache);
	if (ci && !ci->freed)
		ci->freed = 1;
}

// tracked_free says whether a free is one of a sampled object. Freeing
// NULL (kfree(NULL) fires the tracepoint) and ZERO_SIZE_PTR is not freeing
// an object; nor is a failed allocation's page.
static __always_inline bool tracked_free(__u64 key, __u32 allocator)
{
	if (allocator == ALLOCATOR_PAGE ? !is_page(key) : !is_object((const void *)key))
		return false;
	return sampled(key);
}

// note_object_cache_free marks the cache of the slab object at key freed,
// from the object's own entry: for frees whose event names no cache
// pointer, before it is deleted.
static __always_inline void note_object_cache_free(__u64 key)
{
	if (!tracked_free(key, ALLOCATOR_SLAB))
		return;
	struct object *obj = find_object(key);
	if (obj && obj->allocator == ALLOCATOR_SLAB)
		note_cache_free(obj->cache, counters_of(ALLOCATOR_SLAB));
}

// free_event tracks a free, and returns the CPU's counters when it was
// one of a tracked object.
static __always_inline struct counters *free_event(__u64 key, __u32 allocator)
{
	if (!tracked_free(key, allocator))
		return NULL;
	struct counters *c = counters_of(allocator);
	if (c)
		track_free(key, allocator, c);
	return c;
}

static __always_inline struct counters *free_primary(__u64 key, __u32 allocator)
{
	struct counters *c = free_event(key, allocator);
	if (c)
		c->last_free = key;
	return c;
}

static __always_inline void free_backup(__u64 key, __u32 allocator)
{
	if (!tracked_free(key, allocator))
		return;
	struct counters *c = counters_of(allocator);
	if (!c)
		return;
	if (c->last_free == key) {
		c->last_free = 0;
		return;
	}
	track_free(key, allocator, c);
	c->recovered_frees++;
}

// tp_btf: typed arguments straight from the tracepoint call, the cheapest mode.

// The cache's fields are read straight from the typed pointer: a load,
// where raw_tp needs a helper call per field.
SEC("tp_btf/kmem_cache_alloc")
int BPF_PROG(btf_slab_alloc, unsigned long call_site, const void *ptr, struct kmem_cache *s)
{
	if (is_object(ptr) && sampled((__u64)ptr))
		slab_alloc(ctx, call_site, ptr, s, s->name, s->size);
	return 0;
}

SEC("tp_btf/kmem_cache_free")
int BPF_PROG(btf_slab_free, unsigned long call_site, const void *ptr, struct kmem_cache *s)
{
	struct counters *c = free_primary((__u64)ptr, ALLOCATOR_SLAB);
	if (c)
		note_cache_free((__u64)s, c);
	return 0;
}

SEC("tp_btf/kmem_cache_free")
int BPF_PROG(btf_slab_free_bk, unsigned long call_site, const void *ptr)
{
	free_backup((__u64)ptr, ALLOCATOR_SLAB);
	return 0;
}

SEC("tp_btf/kmalloc")
int BPF_PROG(btf_kmalloc_alloc, unsigned long call_site, const void *ptr, size_t bytes_req,
	     size_t bytes_alloc, gfp_t gfp)
{
	kmalloc_alloc(ctx, call_site, ptr, bytes_alloc, gfp);
	return 0;
}

SEC("tp_btf/kfree")
int BPF_PROG(btf_kmalloc_free, unsigned long call_site, const void *ptr)
{
	free_primary((__u64)ptr, ALLOCATOR_KMALLOC);
	return 0;
}

SEC("tp_btf/kfree")
int BPF_PROG(btf_kmalloc_free_bk, unsigned long call_site, const void *ptr)
{
	free_backup((__u64)ptr, ALLOCATOR_KMALLOC);
	return 0;
}

// tp_btf types the struct page argument as a kernel pointer, which the
// verifier lets a program compare but not hash (see sampled()): it is read
// as the number it is instead.
static __always_inline __u64 page_key(unsigned long long *ctx)
{
	__u64 key = 0;
	bpf_probe_read_kernel(&key, sizeof(key), &ctx[0]);
	return key;
}

SEC("tp_btf/mm_page_alloc")
int BPF_PROG(btf_page_alloc, struct page *page, unsigned int order)
{
	page_alloc(ctx, page_key(ctx), order);
	return 0;
}

SEC("tp_btf/mm_page_free")
int BPF_PROG(btf_page_free)
{
	free_primary(page_key(ctx), ALLOCATOR_PAGE);
	return 0;
}

SEC("tp_btf/mm_page_free")
int BPF_PROG(btf_page_free_bk)
{
	free_backup(page_key(ctx), ALLOCATOR_PAGE);
	return 0;
}

// Before Linux 5.19 the event had no call site, and a different argument
// list: the programs fail to load there, and auto moves on to the classic
// tracepoint, which reads its fields by name.
SEC("tp_btf/percpu_alloc_percpu")
int BPF_PROG(btf_percpu_alloc, unsigned long call_site, bool reserved, bool is_atomic, size_t size,
	     size_t align, void *base_addr, int off, void *ptr, size_t bytes_alloc)
{
	percpu_alloc(ctx, call_site, ptr, bytes_alloc);
	return 0;
}

SEC("tp_btf/percpu_free_percpu")
int BPF_PROG(btf_percpu_free, void *base_addr, int off, void *ptr)
{
	free_event((__u64)ptr, ALLOCATOR_PERCPU);
	return 0;
}

// raw_tp: the same arguments, untyped; for kernels that refuse tp_btf.

SEC("raw_tp/kmem_cache_alloc")
int BPF_PROG(raw_slab_alloc, unsigned long call_site, const void *ptr, struct kmem_cache *s)
{
	if (is_object(ptr) && sampled((__u64)ptr))
		slab_alloc(ctx, call_site, ptr, s, BPF_CORE_READ(s, name), BPF_CORE_READ(s, size));
	return 0;
}

SEC("raw_tp/kmem_cache_free")
int BPF_PROG(raw_slab_free, unsigned long call_site, const void *ptr, struct kmem_cache *s)
{
	struct counters *c = free_primary((__u64)ptr, ALLOCATOR_SLAB);
	if (c)
		note_cache_free((__u64)s, c);
	return 0;
}

// The kprobe mode's slab free, for kernels whose kmem_cache_free event has
// no cache argument (before 5.12) or a name where 6.1 has the cache (5.12 -
// 6.0): the object's own entry names its cache.
SEC("raw_tp/kmem_cache_free")
int BPF_PROG(raw_slab_free_any, unsigned long call_site, const void *ptr)
{
	note_object_cache_free((__u64)ptr);
	free_primary((__u64)ptr, ALLOCATOR_SLAB);
	return 0;
}

SEC("raw_tp/kmem_cache_free")
int BPF_PROG(raw_slab_free_bk, unsigned long call_site, const void *ptr)
{
	free_backup((__u64)ptr, ALLOCATOR_SLAB);
	return 0;
}

SEC("raw_tp/kmalloc")
int BPF_PROG(raw_kmalloc_alloc, unsigned long call_site, const void *ptr, size_t bytes_req,
	     size_t bytes_alloc, gfp_t gfp)
{
	kmalloc_alloc(ctx, call_site, ptr, bytes_alloc, gfp);
	return 0;
}

SEC("raw_tp/kfree")
int BPF_PROG(raw_kmalloc_free, unsigned long call_site, const void *ptr)
{
	free_primary((__u64)ptr, ALLOCATOR_KMALLOC);
	return 0;
}

SEC("raw_tp/kfree")
int BPF_PROG(raw_kmalloc_free_bk, unsigned long call_site, const void *ptr)
{
	free_backup((__u64)ptr, ALLOCATOR_KMALLOC);
	return 0;
}

SEC("raw_tp/mm_page_alloc")
int BPF_PROG(raw_page_alloc, __u64 page, unsigned int order)
{
	page_alloc(ctx, page, order);
	return 0;
}

SEC("raw_tp/mm_page_free")
int BPF_PROG(raw_page_free, __u64 page)
{
	free_primary(page, ALLOCATOR_PAGE);
	return 0;
}

SEC("raw_tp/mm_page_free")
int BPF_PROG(raw_page_free_bk, __u64 page)
{
	free_backup(page, ALLOCATOR_PAGE);
	return 0;
}

// Before Linux 5.19 the event had fewer arguments: attaching fails there
// (the program reads past them), and auto moves on.
SEC("raw_tp/percpu_alloc_percpu")
int BPF_PROG(raw_percpu_alloc, unsigned long call_site, bool reserved, bool is_atomic, size_t size,
	     size_t align, void *base_addr, int off, void *ptr, size_t bytes_alloc)
{
	percpu_alloc(ctx, call_site, ptr, bytes_alloc);
	return 0;
}

SEC("raw_tp/percpu_free_percpu")
int BPF_PROG(raw_percpu_free, void *base_addr, int off, void *ptr)
{
	free_event((__u64)ptr, ALLOCATOR_PERCPU);
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

// The kmem_cache_alloc record of 6.1 and 6.12 names no cache (6.18's does):
// the object size stands in, as slab-<bytes>, which no real cache is
// called. Keyed by the size, so the name is formatted once per size, not
// per allocation: a long program is a wide window for the interrupts whose
// frees it makes the kernel skip.
#define SIZED_CACHE_KEY 0x736c61622d000000ULL // "slab-", and the size below

static __always_inline bool sized_cache_skipped(__u64 size, __u64 *key)
{
	*key = SIZED_CACHE_KEY | (size & 0xffffffff);
	struct cache_info *ci = bpf_map_lookup_elem(&caches, key);
	if (ci)
		return ci->skip;
	struct cache_info n = {};
	BPF_SNPRINTF(n.name, sizeof(n.name), "slab-%llu", size);
	bpf_map_update_elem(&caches, key, &n, BPF_NOEXIST);
	return false;
}

// The record's cache name, named here rather than taken from vmlinux.h: the
// kernel the types of an architecture were dumped from may predate it (the
// arm64 types come from 6.12, which has none), and CO-RE matches the field
// by name on the kernel that runs the program whatever the header says.
struct trace_event_raw_kmem_cache_alloc___named {
	__u32 __data_loc_name;
} __attribute__((preserve_access_index));

SEC("tracepoint/kmem/kmem_cache_alloc")
int tp_slab_alloc(struct trace_event_raw_kmem_cache_alloc *ctx)
{
	const void *ptr = ctx->ptr;
	if (!is_object(ptr) || !sampled((__u64)ptr))
		return 0;

	__u64 cache;
	struct trace_event_raw_kmem_cache_alloc___named *named = (void *)ctx;
	if (bpf_core_field_exists(named->__data_loc_name)) {
		char name[CACHE_NAME_LEN] = {};
		__u32 loc = named->__data_loc_name;
		int len = bpf_probe_read_kernel_str(name, sizeof(name), (void *)ctx + (loc & 0xffff));
		cache = fnv1a(name, len);
		if (cache_skipped(cache, name))
			return 0;
	} else if (sized_cache_skipped(ctx->bytes_alloc, &cache)) {
		return 0;
	}

	track_alloc(ctx, (__u64)ptr, ctx->call_site, cache, ctx->bytes_alloc, ALLOCATOR_SLAB);
	return 0;
}

// The object's own entry names its cache: cheaper than hashing the name in
// the record, and right where the alloc record named none (6.12 and before).
SEC("tracepoint/kmem/kmem_cache_free")
int tp_slab_free(struct trace_event_raw_kmem_cache_free *ctx)
{
	note_object_cache_free((__u64)ctx->ptr);
	free_event((__u64)ctx->ptr, ALLOCATOR_SLAB);
	return 0;
}

SEC("tracepoint/kmem/kmalloc")
int tp_kmalloc_alloc(struct trace_event_raw_kmalloc *ctx)
{
	kmalloc_alloc(ctx, ctx->call_site, ctx->ptr, ctx->bytes_alloc, ctx->gfp_flags);
	return 0;
}

SEC("tracepoint/kmem/kfree")
int tp_kmalloc_free(struct trace_event_raw_kfree *ctx)
{
	free_event((__u64)ctx->ptr, ALLOCATOR_KMALLOC);
	return 0;
}

SEC("tracepoint/kmem/mm_page_alloc")
int tp_page_alloc(struct trace_event_raw_mm_page_alloc *ctx)
{
	page_alloc(ctx, ctx->pfn, ctx->order);
	return 0;
}

SEC("tracepoint/kmem/mm_page_free")
int tp_page_free(struct trace_event_raw_mm_page_free *ctx)
{
	free_event(ctx->pfn, ALLOCATOR_PAGE);
	return 0;
}

SEC("tracepoint/percpu/percpu_alloc_percpu")
int tp_percpu_alloc(struct trace_event_raw_percpu_alloc_percpu *ctx)
{
	// Before Linux 5.19 the record had no call site and no bytes_alloc.
	__u64 call_site = 0, bytes = ctx->size;
	if (bpf_core_field_exists(ctx->call_site)) {
		call_site = BPF_CORE_READ(ctx, call_site);
		bytes = BPF_CORE_READ(ctx, bytes_alloc);
	}
	percpu_alloc(ctx, call_site, ctx->ptr, bytes);
	return 0;
}

SEC("tracepoint/percpu/percpu_free_percpu")
int tp_percpu_free(struct trace_event_raw_percpu_free_percpu *ctx)
{
	free_event((__u64)ctx->ptr, ALLOCATOR_PERCPU);
	return 0;
}

// kprobes, the way samples/bpf/tracex4 tracked slab objects, for kernels
// whose tracepoints cannot be used. An allocation function is hooked twice:
// at entry, where its arguments are, and at return, where the object is.
// The entry stores what it learned under its stack pointer, which the
// return finds from its own (entry_sp). A nested allocation (an interrupt)
// runs deeper in the stack, or on another, so it never takes its caller's
// entry.

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH); // a return the kernel missed leaves an entry behind
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct object);
} pending SEC(".maps");

#if defined(__TARGET_ARCH_arm64)
// A call leaves the return address in the link register: the function
// returns with the stack pointer it was entered with.
#define entry_sp(ctx) PT_REGS_SP(ctx)
// At entry the frame-pointer chain does not yet hold the caller (the
// unwinder starts from the caller's frame record, which names the caller's
// caller), and the link register is the kretprobe trampoline when the
// return probe ran first. At return the kernel has put the real return
// address in pc, with the caller's frame pointer restored: the call site
// and the stack are taken there.
#define CALLER_AT_RETURN 1
#else
// x86-64: ret popped the return address the call pushed.
#define entry_sp(ctx) (PT_REGS_SP(ctx) - sizeof(__u64))
#define CALLER_AT_RETURN 0
#endif

// The attach cookie says where the function's arguments are (enum
// kprobe_cookie, filled in by the loader).
#define COOKIE_FIELD(c, shift) (((c) >> (shift)) & ((1 << COOKIE_FIELD_BITS) - 1))
#define COOKIE_CACHE(c) COOKIE_FIELD(c, COOKIE_CACHE_SHIFT)
#define COOKIE_SIZE(c) COOKIE_FIELD(c, COOKIE_SIZE_SHIFT)
#define COOKIE_GFP(c) COOKIE_FIELD(c, COOKIE_GFP_SHIFT)
#define COOKIE_ALLOCATOR(c) COOKIE_FIELD(c, COOKIE_ALLOCATOR_SHIFT)

static __always_inline __u64 kprobe_arg(struct pt_regs *ctx, __u32 n)
{
	// Loaded at fixed offsets first: the verifier refuses a load from the
	// context at an offset computed at run time.
	__u64 args[8] = {0, PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx), PT_REGS_PARM4(ctx),
			 PT_REGS_PARM5(ctx)};
	return args[n & 7];
}

// The size of the kernel's smallest kmalloc cache, set by the loader: 8,
// but 128 where kmalloc is aligned for DMA (arm64 before Linux 6.5). The
// kernel makes kmalloc-96 only when it is at most 32, and kmalloc-192 only
// when it is at most 64.
const volatile __u32 kmalloc_min_size = 8;

// kmalloc_size is the size of the kmalloc cache a request of size bytes
// comes from (SLUB, 4 KiB pages), or the pages of a larger one: what the
// kmalloc tracepoint reports as bytes_alloc.
static __always_inline __u32 kmalloc_size(__u64 size)
{
	__u32 smallest = kmalloc_min_size;
	if (size <= smallest)
		return smallest;
	if (smallest <= 32 && size > 64 && size <= 96)
		return 96;
	if (smallest <= 64 && size > 128 && size <= 192)
		return 192;
	__u32 bytes = 16;
	for (int i = 0; i < 24 && bytes < size; i++)
		bytes <<= 1;
	return bytes;
}

SEC("kprobe")
int kp_alloc_entry(struct pt_regs *ctx)
{
	__u64 cookie = bpf_get_attach_cookie(ctx);
	struct kmem_cache *s = (void *)kprobe_arg(ctx, COOKIE_CACHE(cookie));
	struct object obj = {.allocator = COOKIE_ALLOCATOR(cookie), .stack_id = -1};
	if (obj.allocator == ALLOCATOR_SLAB) {
		if (!s || cache_skipped((__u64)s, BPF_CORE_READ(s, name)))
			return 0;
		obj.cache = (__u64)s;
		obj.bytes = BPF_CORE_READ(s, size);
	} else {
		gfp_t gfp = kprobe_arg(ctx, COOKIE_GFP(cookie));
		obj.bytes = s ? BPF_CORE_READ(s, size) : kmalloc_size(kprobe_arg(ctx, COOKIE_SIZE(cookie)));
		enum kmalloc_family family = kmalloc_family(obj.bytes, gfp);
		if (kmalloc_skipped(family, obj.bytes))
			return 0;
		obj.cache = family;
	}
	if (!CALLER_AT_RETURN) {
		// The caller, from the unwinder rather than from the return
		// address on the stack: when the function's return probe ran
		// first, that address is already the kretprobe trampoline, which
		// the unwinder sees through.
		if (bpf_get_stack(ctx, &obj.call_site, sizeof(obj.call_site), 1) < (long)sizeof(obj.call_site))
			obj.call_site = 0;
		if (size_tracked(obj.bytes)) {
			__u32 allocator = obj.allocator;
			struct counters *c = counters_of(allocator);
			if (c)
				capture_stack(ctx, &obj, c);
		}
	}
	__u64 sp = PT_REGS_SP(ctx);
	bpf_map_update_elem(&pending, &sp, &obj, BPF_ANY);
	return 0;
}

SEC("kretprobe")
int kp_alloc_return(struct pt_regs *ctx)
{
	__u64 sp = entry_sp(ctx);
	struct object *p = bpf_map_lookup_elem(&pending, &sp);
	if (!p)
		return 0;
	struct object obj = *p;
	bpf_map_delete_elem(&pending, &sp);
	__u64 key = PT_REGS_RC(ctx);
	if (!is_object((void *)key) || !sampled(key) || !size_tracked(obj.bytes))
		return 0;
	__u32 allocator = obj.allocator;
	struct counters *c = counters_of(allocator);
	if (!c)
		return 0;
	c->allocs++;
	if (CALLER_AT_RETURN) {
		obj.call_site = PT_REGS_IP(ctx);
		capture_stack(ctx, &obj, c);
	}
	insert_object(allocator, key, &obj, c);
	return 0;
}

SEC("kprobe")
int BPF_KPROBE(kp_slab_free, struct kmem_cache *s, void *x)
{
	struct counters *c = free_event((__u64)x, ALLOCATOR_SLAB);
	if (c)
		note_cache_free((__u64)s, c);
	return 0;
}

SEC("kprobe")
int BPF_KPROBE(kp_kmalloc_free, void *x)
{
	free_event((__u64)x, ALLOCATOR_KMALLOC);
	return 0;
}

// Bulk frees (kmem_cache_free_bulk, and kfree_bulk, which kfree_rcu batches
// end in, as kmem_cache_free_bulk(NULL, ...)) fire no free tracepoint:
// without this hook, every object freed that way stays a phantom until the
// truth check gives up on its cache. Attached in every mode, where the
// kernel has kprobes.
struct bulk_free {
	void **objects;
	__u32 allocator;
};

static long free_one(__u64 i, struct bulk_free *b)
{
	__u64 key = 0;
	bpf_probe_read_kernel(&key, sizeof(key), &b->objects[i]);
	free_event(key, b->allocator);
	return 0;
}

// The kernel frees at most a page of pointers at a time.
#define MAX_BULK_FREE 1024

SEC("kprobe")
int BPF_KPROBE(kp_free_bulk, struct kmem_cache *s, size_t size, void **p)
{
	struct bulk_free b = {.objects = p, .allocator = s ? ALLOCATOR_SLAB : ALLOCATOR_KMALLOC};
	bpf_loop(size < MAX_BULK_FREE ? size : MAX_BULK_FREE, free_one, &b, 0);
	if (s)
		note_cache_free((__u64)s, NULL);
	return 0;
}

// kfree_rcu batches end in kfree_bulk, which no tracepoint shows; where
// the kernel has no kprobes either (kp_free_bulk), the batches are read
// where they wait instead: when the workqueue runs the two functions that
// free them, every object of the slab channel of the lists they free from
// is as good as freed. kvfree_call_rcu committed it to the free, so its
// address cannot come back before it is freed: forgetting it now, however
// early, never forgets a live object. (A node recycled while it is read
// can show an old object's address: the one race, and its cost is one
// object no longer counted.) The loader sets the functions' addresses from
// kallsyms; 0 leaves the program doing nothing.
const volatile __u64 kfree_rcu_monitor_fn = 0; // frees the per-CPU lists whose grace period passed
const volatile __u64 kfree_rcu_work_fn = 0; // frees the lists handed to it after a grace period

// A node holds a page of pointers; a batch, a few nodes.
#define RCU_BATCH_NODES 16
#define RCU_BATCH_RECORDS 512

// rcu_node_records is where a node's pointers start: bpf_loop passes its
// callback a pointer to the stack only.
struct rcu_node_records {
	void **first;
};

// forget_object forgets the object at key, which a kfree_rcu batch is
// about to free, counting the free. A global function, as live_insert:
// the verifier checks it once, not in every turn of the loops below.
__noinline int forget_object(__u64 key)
{
	struct object *obj = find_object(key);
	if (!obj)
		return 0;
	__u32 allocator = obj->allocator == ALLOCATOR_SLAB ? ALLOCATOR_SLAB : ALLOCATOR_KMALLOC;
	__u64 cache = obj->cache;
	struct counters *c = counters_of(allocator);
	if (!c || !delete_object(allocator, key, c))
		return 0;
	c->frees++;
	if (allocator == ALLOCATOR_SLAB)
		note_cache_free(cache, NULL);
	return 0;
}

static long forget_rcu_record(__u64 i, struct rcu_node_records *r)
{
	__u64 key = 0;
	bpf_probe_read_kernel(&key, sizeof(key), &r->first[i]);
	// Tested here rather than in forget_object: the verifier needs a
	// branch in the callback to see its states repeat.
	if (is_object((const void *)key) && sampled(key))
		forget_object(key);
	return 0;
}

// A list of nodes of a kfree_rcu batch, as forget_rcu_node walks it.
struct rcu_list {
	void *head;
	struct list_head *pos;
};

// forget_rcu_node forgets the objects of the node at l->pos and moves on
// to the next, or ends the walk (1) at the list's end.
static long forget_rcu_node(__u64 n, struct rcu_list *l)
{
	struct list_head *pos = l->pos;
	if (!pos || (void *)pos == l->head)
		return 1;
	struct kvfree_rcu_bulk_data *node = (void *)pos - bpf_core_field_offset(struct kvfree_rcu_bulk_data, list);
	__u64 records = BPF_CORE_READ(node, nr_records);
	struct rcu_node_records r = {(void *)node + bpf_core_field_offset(struct kvfree_rcu_bulk_data, records)};
	bpf_loop(records < RCU_BATCH_RECORDS ? records : RCU_BATCH_RECORDS, forget_rcu_record, &r, 0);
	return bpf_probe_read_kernel(&l->pos, sizeof(l->pos), &pos->next) ? 1 : 0;
}

// forget_rcu_batches forgets the objects of the slab channel's list of
// nodes (struct kvfree_rcu_bulk_data) that starts at head. A loop of
// bpf_loop, not a for loop around one: the verifier checks the callbacks
// once rather than once a node.
static __always_inline void forget_rcu_batches(void *head)
{
	struct rcu_list l = {.head = head};
	bpf_probe_read_kernel(&l.pos, sizeof(l.pos), head);
	bpf_loop(RCU_BATCH_NODES, forget_rcu_node, &l, 0);
}

SEC("tp_btf/workqueue_execute_start")
int BPF_PROG(rcu_batch_free, struct work_struct *work)
{
	__u64 fn = (__u64)work->func;
	if (!fn)
		return 0;
	if (fn == kfree_rcu_work_fn) {
		// rcu_work.work is where the work struct sits in it.
		struct kfree_rcu_cpu_work *w = (void *)work - bpf_core_field_offset(struct kfree_rcu_cpu_work, rcu_work);
		forget_rcu_batches((void *)w + bpf_core_field_offset(struct kfree_rcu_cpu_work, bulk_head_free));
	} else if (fn == kfree_rcu_monitor_fn) {
		struct kfree_rcu_cpu *c = (void *)work - bpf_core_field_offset(struct kfree_rcu_cpu, monitor_work);
		forget_rcu_batches((void *)c + bpf_core_field_offset(struct kfree_rcu_cpu, bulk_head));
	}
	return 0;
}

// Run once by the loader (BPF_PROG_TEST_RUN), never attached: the pair of
// clocks that maps jiffies onto CLOCK_MONOTONIC.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct clock_pair);
} clock SEC(".maps");

SEC("raw_tp")
int read_clock(void *ctx)
{
	__u32 zero = 0;
	struct clock_pair *p = bpf_map_lookup_elem(&clock, &zero);
	if (p) {
		p->jiffies = bpf_jiffies64();
		p->ns = bpf_ktime_get_ns();
	}
	return 0;
}

// A process ending: the name and times of its thread group, for user
// space to name the objects it leaves and to tell them from a later
// process's under the same pid (struct exited). Process exits are rare
// next to allocations; attached only with attribution.
SEC("raw_tp/sched_process_exit")
int process_exit(void *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	// do_exit counts the group's live threads down before this event: only
	// the last thread's exit ends the process.
	if (task->signal->live.counter != 0)
		return 0;
	struct task_struct *leader = task->group_leader;
	struct exited e = {.start_time = leader->start_time, .exit_time = bpf_ktime_get_ns()};
	bpf_probe_read_kernel_str(e.comm, sizeof(e.comm), leader->comm);
	__u32 tgid = task->tgid;
	bpf_map_update_elem(&exits, &tgid, &e, BPF_ANY);
	return 0;
}
