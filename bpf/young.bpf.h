// SPDX-License-Identifier: GPL-2.0
//
// The young area's operations (struct young_slot in kmemleak.h): a small
// table in front of a live table (livetable.bpf.h), which the includer
// reaches through live_insert() and live_delete(). Lock-free, as the live
// table: every CPU may insert and delete at once, and user space reads the
// area meanwhile.

#ifndef YOUNG_BPF_H
#define YOUNG_BPF_H

#include "livetable.bpf.h"

// The young area (struct young_slot in kmemleak.h) and its size in slots.
// Its operations keep this invariant, which docs/live-table.md argues case
// by case: an object whose free has not been seen is in its young slot
// (key its address), or in the live table, or being moved from the one to
// the other by the CPU that flagged its slot YOUNG_PROMOTING, which
// inserts it into the live table and only then reads the flags (with a
// full barrier between); a free that finds it in neither place flags
// YOUNG_FREED if the move is under way (then the mover deletes what it
// inserted), else looks in the live table (on arm64 twice, the second time
// after a full barrier).
struct young {
	void *map;
	__u32 slots;
};

// The live table behind the young area, as the includer defines it: an
// insertion (enum insertion) and a deletion (whether the key was there).
int live_insert(__u64 key, const struct object *obj);
int live_delete(__u64 key);

static __always_inline struct young_slot *young_slot_of(struct young y, __u64 key)
{
	__u32 i = bucket_of(key, TABLE_HASH_YOUNG, y.slots);
	return bpf_map_lookup_elem(y.map, &i);
}

// young_address says whether an object at key can have a young slot: its
// key's low bits carry the slot's flags. Slab and kmalloc objects are
// 8-byte aligned; anything else goes straight to the live table.
static __always_inline bool young_address(__u64 key)
{
	return key != TABLE_EMPTY && !(key & YOUNG_FLAGS);
}

static __always_inline void young_publish(struct young_slot *s, __u64 key, const struct object *obj)
{
	write_record(&s->object, obj);
	ordered_store(&s->key, key);
}

enum young_insertion {
	YOUNG_NEW, // into an empty slot, or into one whose object moved to the live table
	YOUNG_REPLACED, // over a stale entry of the same address
	YOUNG_BUSY, // the slot is being written or moved out: the caller inserts into the live table
	YOUNG_RACED, // the address's previous object is still being moved: not tracked
};

// What an insertion moved out of the young area.
struct promotion {
	bool promoted; // an object moved into the live table
	bool freed; // its free came while it moved, and it was deleted again
	__u8 allocator; // its allocator
	enum insertion inserted; // how it went into the live table
	// YOUNG_RACED: the previous object at the address was freed unseen
	// (its slot was not flagged freed), now flagged so.
	bool missed;
};

// young_insert puts the object at key into its young slot, moving the
// slot's live object, if any, into the live table first. YOUNG_BUSY
// leaves the object to the caller, for the live table.
static __always_inline enum young_insertion young_insert(struct young y, __u64 key, const struct object *obj,
							  struct promotion *p)
{
	struct young_slot *s = young_slot_of(y, key);
	if (!s || !young_address(key))
		return YOUNG_BUSY;
	__u64 k = s->key;
	if (k == TABLE_EMPTY || k == key) {
		// A stale entry of the address (its free went unseen) is replaced
		// as the live table replaces one.
		if (__sync_val_compare_and_swap(&s->key, k, TABLE_BUSY) != k)
			return YOUNG_BUSY;
		young_publish(s, key, obj);
		return k == key ? YOUNG_REPLACED : YOUNG_NEW;
	}
	if (!young_address(k)) {
		// Being written, or its object moved out; the caller goes to the
		// live table unless that object was at this address. Then it was
		// freed (the kernel hands the address out again), and the mover
		// may yet delete what it inserted, which could be this object if
		// it went into the live table: it is not tracked. The mover is
		// told of a free it did not hear of, which it then undoes.
		if (k == TABLE_BUSY || (k & ~(__u64)YOUNG_FLAGS) != key)
			return YOUNG_BUSY;
		__u64 moving = key | YOUNG_PROMOTING;
		p->missed = k == moving && __sync_val_compare_and_swap(&s->key, moving, moving | YOUNG_FREED) == moving;
		return YOUNG_RACED;
	}
	// Another object, still live: it moves into the live table. The
	// compare-and-swap settles a race with its free, which clears the key
	// (a free that comes after it finds the flag instead).
	__u64 moving = k | YOUNG_PROMOTING;
	if (__sync_val_compare_and_swap(&s->key, k, moving) != k)
		return YOUNG_BUSY;
	struct object old = s->object;
	p->promoted = true;
	p->allocator = old.allocator;
	p->inserted = live_insert(k, &old);
	// The exchange is a full barrier on both architectures (x86-64's xchg
	// is locked; arm64's is SWPAL, or LDXR/STLXR then DMB ISH): the insert
	// above reaches every CPU before the flags are read. A free that set
	// YOUNG_FREED before it gets the insert undone here; one that comes
	// after finds the key flagged YOUNG_PROMOTED, and the object in the
	// live table.
	__u64 flags = __sync_lock_test_and_set(&s->key, k | YOUNG_PROMOTED);
	if (flags & YOUNG_FREED) {
		p->freed = true;
		if (p->inserted != INSERT_FULL)
			live_delete(k);
	}
	young_publish(s, key, obj);
	return YOUNG_NEW;
}

// young_delete removes the object at key from the young area or the live
// table, wherever it is, and says whether it was tracked. fence is a word
// of the CPU's own, exchanged for its full barrier (arm64).
static __always_inline bool young_delete(struct young y, __u64 key, __u64 *fence)
{
	struct young_slot *s = young_address(key) ? young_slot_of(y, key) : NULL;
	if (s) {
		__u64 k = s->key;
		if (k == key) {
			k = __sync_val_compare_and_swap(&s->key, key, TABLE_EMPTY);
			if (k == key)
				return true;
		}
		// Being moved: the mover deletes it from the live table once it
		// has inserted it there.
		__u64 moving = key | YOUNG_PROMOTING;
		if (k == moving && __sync_val_compare_and_swap(&s->key, moving, moving | YOUNG_FREED) == moving)
			return true;
	}
	if (live_delete(key))
		return true;
#if defined(__TARGET_ARCH_x86)
	// Not tracked: x86-64 keeps loads in order, so the look above came
	// after the read of the key, and saw the insert of any move that the
	// read found past YOUNG_PROMOTING (the mover's exchange made it
	// visible first).
	return false;
#else
	if (!s)
		return false;
	// Not found: not tracked, or moved into the live table so recently
	// that the look above may not have seen it (arm64 may do a load before
	// an earlier one). After a full barrier, any move whose slot this free
	// saw past YOUNG_PROMOTING has its insert visible.
	__sync_lock_test_and_set(fence, 0);
	return live_delete(key);
#endif
}

// young_find returns the record of the object at key in the young area,
// or NULL; unsynchronized, as table_find.
static __always_inline struct object *young_find(struct young y, __u64 key)
{
	struct young_slot *s = young_address(key) ? young_slot_of(y, key) : NULL;
	return s && s->key == key ? &s->object : NULL;
}
#endif
