// SPDX-License-Identifier: GPL-2.0
//
// What the probes and user space share: the records the probes write into
// the maps user space reads, the values user space writes for the probes,
// and the numbers both sides must agree on. The Go side takes every one of
// them from bpf2go (-type), never from a copy.

#ifndef KMEMLEAK_H
#define KMEMLEAK_H

enum allocator {
	ALLOCATOR_SLAB,
	ALLOCATOR_KMALLOC,
	ALLOCATOR_PAGE,
	ALLOCATOR_PERCPU,
	ALLOCATOR_COUNT,
};

enum stack_mode {
	STACKS_OFF,
	STACKS_ADAPTIVE, // for call sites in stack_sites, and 1 in stack_sample_rate
	STACKS_ALWAYS,
};

// What ran the allocation, by the preempt count and the task's flags.
enum run_context {
	CONTEXT_TASK,
	CONTEXT_KTHREAD,
	CONTEXT_SOFTIRQ, // serving a softirq, on whatever task it interrupted
	CONTEXT_IRQ, // hard interrupt or NMI
};

// A process that ended while the probes ran, by tgid, for user space to
// name the objects it left, and to tell them from those of a later process
// the pid is given to.
struct exited {
	char comm[16]; // the thread group leader's
	__u64 start_time; // CLOCK_MONOTONIC, the leader's start
	__u64 exit_time; // CLOCK_MONOTONIC, when its last thread exited
};

// The kmalloc caches a request can come from, as kmalloc_type() picks them
// by gfp flags; KMALLOC_FAMILY_LARGE is above the largest cache, served by the
// page allocator.
enum kmalloc_family {
	KMALLOC_FAMILY_NORMAL,
	KMALLOC_FAMILY_DMA,
	KMALLOC_FAMILY_RECLAIM,
	KMALLOC_FAMILY_CGROUP,
	KMALLOC_FAMILY_LARGE,
};

// KMALLOC_MAX_CACHE_SIZE for SLUB with 4 KiB pages.
#define KMALLOC_MAX_CACHE_SIZE 8192
// Slots of a kmalloc family in struct kmalloc_skip_table: bytes_alloc / 8.
#define KMALLOC_SLOTS (KMALLOC_MAX_CACHE_SIZE / 8 + 1)

#define CACHE_NAME_LEN 32

// A live object, as the probes record it in a slot of the live table.
struct object {
	// In jiffies where the loader set time_in_jiffies: bpf_jiffies64()
	// is a load where bpf_ktime_get_ns() reads the clock source, and user
	// space maps jiffies onto CLOCK_MONOTONIC (struct clock_pair). Else
	// bpf_ktime_get_ns().
	__u64 alloc_time;
	__u64 call_site;
	// slab: the kmem_cache pointer (tp_btf, raw_tp, kprobe) or a hash of
	// the cache name (classic tracepoint, which has no pointer); in both
	// cases a key of caches. kmalloc: its enum kmalloc_family. page: the
	// order. percpu: 0.
	__u64 cache;
	__u32 bytes;
	__s32 stack_id; // in stacks, or -1
	// Who allocated, where the loader set attribution: the task's process
	// (tgid) and its cgroup v2 id's low half (the cgroup directory's inode
	// number, which is the whole id on 64-bit kernels until 2^32 cgroups
	// have been created), both 0 in interrupt context.
	__u32 tgid;
	__u32 cgroup;
	__u8 allocator; // enum allocator
	// The stack was taken without its innermost frame (see capture_stack):
	// that frame is call_site.
	__u8 stack_skipped;
	__u8 context; // enum run_context
	__u8 unused;
	// Odd while the probes write the record: user space reads a record
	// between two equal even values, or not at all (see the table below).
	__u32 seq;
};

// The live table: an array of buckets that user space maps into its memory
// and reads in place, with no syscall and no copy of the objects. An
// address has two buckets, picked by two hashes of it (table_buckets());
// an allocation takes an empty key slot in the first, or in the emptier
// of the two once the first is fuller than TABLE_PREFER_FIRST, and a free
// clears the key. No locks and no allocation: a slot is claimed with a
// compare-and-swap of its key from TABLE_EMPTY to TABLE_BUSY, its record
// written, and the key published last.
//
// keys[] and overflow fill two cache lines, so a free reads two lines of
// its first bucket, and the second bucket only when overflow says some
// address whose first bucket this is lives in its second.
enum table_layout {
	TABLE_SLOTS = 15,
	TABLE_PREFER_FIRST = 12,
};

enum table_key {
	TABLE_EMPTY = 0,
	// No address: not an object (is_object() refuses it) nor a page
	// (is_page()).
	TABLE_BUSY = 0xffffffffffffffffULL,
};

// Two multiplicative hashes of an address, the first bucket's from the
// high half of the product, the second's from the high half of the other;
// and a third for the address's slot in the young area, which sampled()'s
// hash (TABLE_HASH1) would crowd into a corner of it under sampling.
enum table_hash {
	TABLE_HASH1 = 0x9e3779b97f4a7c15ULL,
	TABLE_HASH2 = 0xbf58476d1ce4e5b9ULL,
	TABLE_HASH_YOUNG = 0x94d049bb133111ebULL,
};

struct live_bucket {
	__u64 keys[TABLE_SLOTS];
	// How many addresses whose first bucket this is live in their second.
	__u64 overflow;
	struct object objects[TABLE_SLOTS];
};

// The young area: a small table in front of the live table for slab and
// kmalloc objects, which most die within microseconds (a server's
// skbuffs), so that they never touch the live table, tens of MiB that a
// busy machine's own work pushes out of the CPU caches. One slot an
// address, picked by TABLE_HASH_YOUNG, one cache line each: an allocation
// takes its address's slot and moves the object there before it (one
// still live) into the live table; a free clears its slot, and goes to the
// live table only when the object is not there. docs/live-table.md gives
// the protocol and why no free is lost to a move.
//
// A slot's key is an address (8-byte aligned, as every slab object is) or
// TABLE_EMPTY or TABLE_BUSY, with flags in its low bits while its object
// is moved out: YOUNG_PROMOTING from when the mover took the slot, plus
// YOUNG_FREED when the object's free came meanwhile, and YOUNG_PROMOTED
// once the object is in the live table, until the slot holds the next
// object. User space reads the objects of slots whose key is an address
// with no flag, as it reads the live table's.
enum young_key {
	YOUNG_PROMOTING = 1,
	YOUNG_FREED = 2,
	YOUNG_PROMOTED = 4,
	YOUNG_FLAGS = 7,
};

struct young_slot {
	__u64 key;
	struct object object;
	__u64 unused; // to a whole cache line
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
	// The cache's name pointer: a cache created where a destroyed one was
	// (a module reloaded) has another, and gets an entry of its own.
	__u64 name_ptr;
};

// The kmalloc caches not to track, as skip in cache_info, by family and
// bytes_alloc / 8: one value, so that the check is one inlined load.
struct kmalloc_skip_table {
	__u8 skip[KMALLOC_FAMILY_LARGE][KMALLOC_SLOTS];
};

// Per allocator and CPU. allocs and frees count the sampled objects' only:
// an unsampled event touches no map.
struct counters {
	__u64 allocs;
	__u64 frees;
	__u64 untracked_frees;
	__u64 dropped;
	__u64 stack_errors;
	__u64 recovered_frees; // frees the backup free program handled for the primary
	__u64 missed_frees; // allocations at an address still tracked: the free before went unseen
	__u64 promoted; // objects moved from the young area into the live table
	// Allocations not tracked because the address's previous object was
	// still being moved into the live table (see young_insert()).
	__u64 raced;
	// Not counters, here to save the free path a lookup: the address the
	// primary free program handled last on this CPU (see free_backup()),
	// and the slab cache it marked freed last (note_cache_free()).
	__u64 last_free;
	__u64 noted_cache;
	// Scratch words: the target of an exchange whose only purpose is its
	// full barrier (young_delete()), and a pointer turned into a number
	// (this_cpu_var()).
	__u64 fence;
	__u64 scratch;
};

// The loader's check of where x86-64 keeps each CPU's preempt count
// (read_percpu): the offsets in the per-CPU section it found in the
// kernel's BTF, and what the program read through them.
struct percpu_check {
	__u64 runqueues_offset;
	__u64 current_task_offset;
	__u64 preempt_count_offset;
	__u64 current_task; // read where current_task is on this CPU
	__u64 task; // the task that ran the program: the same, if right
	__u32 preempt_count;
	__u32 unused;
};

// The two clocks read at once, by the loader's run of read_clock: where
// jiffies fall on CLOCK_MONOTONIC (bpf_ktime_get_ns()).
struct clock_pair {
	__u64 jiffies;
	__u64 ns;
};

// The kprobe mode's attach cookie says, per hooked function, where its
// arguments are: 1-based positions of the kmem_cache, the size and the gfp
// flags, 0 for none, in fields of COOKIE_FIELD_BITS, and the allocator
// above them. The probe reads the first KPROBE_ARGS arguments.
enum kprobe_cookie {
	COOKIE_FIELD_BITS = 4,
	COOKIE_CACHE_SHIFT = 0,
	COOKIE_SIZE_SHIFT = 4,
	COOKIE_GFP_SHIFT = 8,
	COOKIE_ALLOCATOR_SHIFT = 12,
	KPROBE_ARGS = 5,
};

// Puts the enums above into the object's BTF, where bpf2go finds them: no
// program needs their types, only their values.
struct shared_enums {
	enum allocator allocator;
	enum stack_mode stack_mode;
	enum kmalloc_family kmalloc_family;
	enum kprobe_cookie kprobe_cookie;
	enum table_layout table_layout;
	enum table_key table_key;
	enum table_hash table_hash;
	enum young_key young_key;
	enum run_context run_context;
};
const struct shared_enums *unused_shared_enums __attribute__((unused));

#endif
