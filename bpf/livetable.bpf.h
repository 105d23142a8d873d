// SPDX-License-Identifier: GPL-2.0
//
// The live table's operations (struct live_bucket in kmemleak.h), shared by
// the probes and the bench's bare table row. Lock-free: every CPU may
// insert and delete at once, and user space reads the table meanwhile.

#ifndef LIVETABLE_BPF_H
#define LIVETABLE_BPF_H

#include "kmemleak.h"

// A live table and its size.
struct table {
	void *map;
	__u32 buckets;
};

// bucket_of maps a hash's high half onto [0, buckets) with a multiply
// instead of a division.
static __always_inline __u32 bucket_of(__u64 key, __u64 multiplier, __u32 buckets)
{
	return ((key * multiplier) >> 32) * buckets >> 32;
}

// ordered_store stores v at p so that no later store is seen before it by
// another CPU. x86-64 keeps stores in order (TSO), so a plain store does,
// kept in place by a compiler barrier; arm64 does not, and an exchange, a
// full barrier there, does.
#if defined(__TARGET_ARCH_x86)
#define ordered_store(p, v)                                                                                            \
	({                                                                                                             \
		barrier();                                                                                             \
		*(volatile typeof(*(p)) *)(p) = (v);                                                                   \
		barrier();                                                                                             \
	})
#else
#define ordered_store(p, v) __sync_lock_test_and_set(p, v)
#endif

// write_record writes obj into a record whose slot its caller claimed (its
// key TABLE_BUSY, or flagged in the young area), between two increments of
// its seq. The caller publishes the key next: user space reads a record
// between two equal even seq values with the key unchanged around them,
// so the stores must reach other CPUs in this order.
static __always_inline void write_record(struct object *rec, const struct object *obj)
{
	__u32 seq = rec->seq;
	ordered_store(&rec->seq, seq + 1);
	rec->alloc_time = obj->alloc_time;
	rec->call_site = obj->call_site;
	rec->cache = obj->cache;
	rec->bytes = obj->bytes;
	rec->stack_id = obj->stack_id;
	rec->tgid = obj->tgid;
	rec->cgroup = obj->cgroup;
	rec->allocator = obj->allocator;
	rec->stack_skipped = obj->stack_skipped;
	rec->context = obj->context;
	ordered_store(&rec->seq, seq + 2);
}

// publish writes obj into a slot of a bucket its caller claimed, then the
// key.
static __always_inline void publish(struct live_bucket *b, __u32 slot, __u64 key, const struct object *obj)
{
	write_record(&b->objects[slot], obj);
	ordered_store(&b->keys[slot], key);
}

// claim takes the slot holding from (an empty slot, or a stale entry of
// the address) and writes obj into it. The compare-and-swap settles races
// with other CPUs: it fails when another took the slot first.
static __always_inline bool claim(struct live_bucket *b, __u64 from, __u64 key, const struct object *obj)
{
	for (__u32 i = 0; i < TABLE_SLOTS; i++) {
		if (b->keys[i] == from && __sync_val_compare_and_swap(&b->keys[i], from, TABLE_BUSY) == from) {
			publish(b, i, key, obj);
			return true;
		}
	}
	return false;
}

// used_slots counts without a branch per slot: the verifier would follow
// every combination of full and empty slots.
static __always_inline __u64 used_slots(const struct live_bucket *b)
{
	__u64 used = 0;
	for (__u32 i = 0; i < TABLE_SLOTS; i++) {
		__u64 key = b->keys[i], sign = key | -key;
		// Or the compiler turns it back into a comparison and a branch.
		barrier_var(sign);
		used += sign >> 63; // 1 unless key is TABLE_EMPTY (0)
	}
	return used;
}

enum insertion {
	INSERT_NEW,
	INSERT_REPLACED, // a stale entry of the same address
	INSERT_FULL, // both buckets full
};

// table_insert puts the object at key into the table, in one of its two
// buckets.
static __always_inline enum insertion table_insert(struct table t, __u64 key, const struct object *obj)
{
	__u32 i1 = bucket_of(key, TABLE_HASH1, t.buckets), i2 = bucket_of(key, TABLE_HASH2, t.buckets);
	struct live_bucket *first = bpf_map_lookup_elem(t.map, &i1);
	struct live_bucket *second = i2 == i1 ? NULL : bpf_map_lookup_elem(t.map, &i2);
	if (!first)
		return INSERT_FULL;
	// The address came back after a free the caller missed: the new object
	// replaces the stale entry instead of keeping it as a phantom leak.
	// The second bucket can hold it only while the first's overflow is
	// not zero.
	bool overflowed = second && first->overflow;
	if (claim(first, key, key, obj) || (overflowed && claim(second, key, key, obj)))
		return INSERT_REPLACED;
	__u64 used = used_slots(first);
	if ((used < TABLE_PREFER_FIRST || !second || used <= used_slots(second)) && claim(first, TABLE_EMPTY, key, obj))
		return INSERT_NEW;
	if (second) {
		// Counted before the key is published: a free of it reads the
		// second bucket only when the count says to.
		__sync_fetch_and_add(&first->overflow, 1);
		if (claim(second, TABLE_EMPTY, key, obj))
			return INSERT_NEW;
		__sync_fetch_and_sub(&first->overflow, 1);
	}
	return INSERT_FULL;
}

// release clears the key of the address in the bucket, if there.
static __always_inline bool release(struct live_bucket *b, __u64 key)
{
	for (__u32 i = 0; i < TABLE_SLOTS; i++) {
		if (b->keys[i] == key && __sync_val_compare_and_swap(&b->keys[i], key, TABLE_EMPTY) == key)
			return true;
	}
	return false;
}

// table_delete removes the object at key from the table, if there.
static __always_inline bool table_delete(struct table t, __u64 key)
{
	__u32 i1 = bucket_of(key, TABLE_HASH1, t.buckets), i2 = bucket_of(key, TABLE_HASH2, t.buckets);
	struct live_bucket *first = bpf_map_lookup_elem(t.map, &i1);
	if (!first)
		return false;
	if (release(first, key))
		return true;
	if (i2 == i1 || !first->overflow)
		return false;
	struct live_bucket *second = bpf_map_lookup_elem(t.map, &i2);
	if (!second || !release(second, key))
		return false;
	__sync_fetch_and_sub(&first->overflow, 1);
	return true;
}

// table_find returns the record of the object at key, or NULL;
// unsynchronized, for reads that tolerate a record being rewritten.
static __always_inline struct object *table_find(struct table t, __u64 key)
{
	__u32 i1 = bucket_of(key, TABLE_HASH1, t.buckets), i2 = bucket_of(key, TABLE_HASH2, t.buckets);
	struct live_bucket *b = bpf_map_lookup_elem(t.map, &i1);
	for (int n = 0; n < 2 && b; n++) {
		for (__u32 i = 0; i < TABLE_SLOTS; i++) {
			if (b->keys[i] == key)
				return &b->objects[i];
		}
		b = i2 == i1 ? NULL : bpf_map_lookup_elem(t.map, &i2);
	}
	return NULL;
}

#endif
