//go:build linux && (amd64 || arm64)

package livetable

import (
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/kmemleak/kmemleakreceiver/bpf"
)

const (
	hashYoung  = uint64(bpf.KmemleakTableHashTABLE_HASH_YOUNG)
	promoting  = uint64(bpf.KmemleakYoungKeyYOUNG_PROMOTING)
	freedFlag  = uint64(bpf.KmemleakYoungKeyYOUNG_FREED)
	promoted   = uint64(bpf.KmemleakYoungKeyYOUNG_PROMOTED)
	youngFlags = uint64(bpf.KmemleakYoungKeyYOUNG_FLAGS)
)

// YoungSlotSize is the size of one slot of the young area, its value size:
// one cache line.
const YoungSlotSize = int(unsafe.Sizeof(bpf.KmemleakYoungSlot{}))

// Young is the young area in front of the slab and kmalloc live table
// (struct young_slot of bpf/kmemleak.h) in memory the probes share: a slot
// per address hash, whose object moves into the live table only when
// another allocation takes the slot while it lives. Most objects are freed
// before that, and never touch the live table.
type Young struct {
	slots []bpf.KmemleakYoungSlot
}

// NewYoung views mem, a whole number of slots, as a young area, as New
// views a table.
func NewYoung(mem []byte) (*Young, error) {
	slots, err := view[bpf.KmemleakYoungSlot](mem, "young area", "slots")
	if err != nil {
		return nil, err
	}
	return &Young{slots: slots}, nil
}

// YoungSlots is how many slots the young area has on a machine of cpus
// CPUs: 4096 a CPU, a power of two, at least 8192 (512 KiB) and at most
// 2^18 (16 MiB). The allocations of all CPUs share it, so it grows with
// them: an object keeps its slot for slots / (allocations a second)
// seconds on average (35 ms for nginx on 2 CPUs, 236,000 slab allocations a
// second), time for what lives microseconds to go without being moved. The
// slots an allocation touches are few and hot: slab allocators hand the
// address freed last out first.
func YoungSlots(cpus int) uint32 {
	const perCPU, least, most = 4096, 1 << 13, 1 << 18
	want := uint64(max(cpus, 1)) * perCPU
	return uint32(min(max(uint64(1)<<bits.Len64(want-1), least), most)) //nolint:gosec // G115: at most 2^18
}

// Len is the number of slots.
func (y *Young) Len() int { return len(y.slots) }

// slot is the address's slot, as young_slot_of() in the probes.
func (y *Young) slot(key uint64) *bpf.KmemleakYoungSlot {
	return &y.slots[bucketOf(key, hashYoung, len(y.slots))]
}

// WalkPart walks part i of n of the young area's objects, as
// Table.WalkPart: a slot whose object is being moved into the live table
// (its key flagged) is skipped, so that an object is never counted twice
// by a walk of the live table followed by one of the young area.
func (y *Young) WalkPart(i, n int, fn func(obj *Object)) {
	var obj Object
	first, end := part(i, n, len(y.slots))
	for s := first; s < end; s++ {
		visit(&y.slots[s].Key, &y.slots[s].Object, youngFlags, &obj, fn)
	}
}

// Walk calls fn for every object of the young area.
func (y *Young) Walk(fn func(obj *Object)) {
	y.WalkPart(0, 1, fn)
}

// DeleteIf removes every object drop picks, each only if its slot still
// holds the object read, and returns how many it removed. An object being
// moved into the live table meanwhile is left to a pass over the table.
func (y *Young) DeleteIf(drop func(obj *Object) bool) int {
	deleted := 0
	y.Walk(func(obj *Object) {
		if drop(obj) && atomic.CompareAndSwapUint64(&y.slot(obj.Key).Key, obj.Key, empty) {
			deleted++
		}
	})
	return deleted
}

// YoungInsertion is what an insertion into the young area did, as
// young_insert() in the probes says.
type YoungInsertion int

// What Young.Insert did.
const (
	YoungNew      YoungInsertion = iota // into an empty slot, or one whose object moved to the live table
	YoungReplaced                       // over a stale entry of the same address
	YoungBusy                           // the slot is being written or moved out: inserted into the live table
	YoungRaced                          // the address's previous object is still being moved: not tracked
)

// Insert adds an object as an allocation in the probes does (young_insert
// and insert_object in bpf/kmemleak.bpf.c, but for insert_object's
// occasional look for a stale entry in live), moving the slot's object
// into live, and reports what it did; full is set when an insertion into
// live found no room. For tests and benchmarks: the probes do their own
// inserts. Every access is atomic, and Go's atomics are sequentially
// consistent, so the probes' full barriers need nothing more here.
func (y *Young) Insert(key uint64, obj *bpf.KmemleakObject, live *Table) (r YoungInsertion, full bool) {
	if r = y.insert(key, obj, live, &full); r == YoungBusy {
		full = !live.Insert(key, obj)
	}
	return r, full
}

func (y *Young) insert(key uint64, obj *bpf.KmemleakObject, live *Table, full *bool) YoungInsertion {
	if !youngAddress(key) {
		return YoungBusy
	}
	s := y.slot(key)
	k := atomic.LoadUint64(&s.Key)
	switch {
	case k == empty || k == key:
		if !atomic.CompareAndSwapUint64(&s.Key, k, busy) {
			return YoungBusy
		}
		youngPublish(s, key, obj)
		if k == key {
			return YoungReplaced
		}
		return YoungNew
	case !youngAddress(k):
		if k == busy || k&^youngFlags != key {
			return YoungBusy
		}
		atomic.CompareAndSwapUint64(&s.Key, key|promoting, key|promoting|freedFlag)
		return YoungRaced
	}
	if !atomic.CompareAndSwapUint64(&s.Key, k, k|promoting) {
		return YoungBusy
	}
	var old bpf.KmemleakObject
	read(&s.Object, &old) // the slot is this writer's: nothing rewrites it meanwhile
	inserted := live.Insert(k, &old)
	*full = !inserted
	if atomic.SwapUint64(&s.Key, k|promoted)&freedFlag != 0 && inserted {
		live.Delete(k)
	}
	youngPublish(s, key, obj)
	return YoungNew
}

// Delete removes key as a free in the probes does (young_delete), from
// the young area or live, and says whether it was in either.
func (y *Young) Delete(key uint64, live *Table) bool {
	if !youngAddress(key) {
		return live.Delete(key)
	}
	s := y.slot(key)
	k := atomic.LoadUint64(&s.Key)
	if k == key {
		if atomic.CompareAndSwapUint64(&s.Key, key, empty) {
			return true
		}
		k = atomic.LoadUint64(&s.Key)
	}
	if k == key|promoting && atomic.CompareAndSwapUint64(&s.Key, k, k|freedFlag) {
		return true
	}
	// The probes look twice, the second time after a full barrier; Go's
	// atomics need no barrier, and the first look is enough.
	return live.Delete(key)
}

// youngAddress says whether an object at key can have a young slot, as
// young_address() in the probes.
func youngAddress(key uint64) bool {
	return key != empty && key&youngFlags == 0
}

func youngPublish(s *bpf.KmemleakYoungSlot, key uint64, obj *bpf.KmemleakObject) {
	writeRecord(&s.Object, obj)
	atomic.StoreUint64(&s.Key, key)
}
