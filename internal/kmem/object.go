package kmem

// Object is one live allocation as the probes recorded it.
type Object struct {
	Address  uint64
	AllocNs  uint64 // CLOCK_MONOTONIC, the clock of Snapshot.TakenNs
	CallSite uint64
	// Cache says where the object came from, per allocator: slab, the
	// probes' cache key (see Snapshot.CacheNames); kmalloc, its
	// KmallocFamily; page, the order; percpu, 0. See CacheOf.
	Cache   uint64
	Bytes   uint32
	StackID int32 // -1 when the probes took no stack
	// StackSkipped: the stack lacks its innermost frame, which is CallSite.
	StackSkipped bool
	Allocator    Allocator
}

// Counters are the probes' totals for one allocator since attach.
type Counters struct {
	Allocs         uint64
	Frees          uint64
	UntrackedFrees uint64 // frees of objects the map did not hold (allocated before attach, or dropped)
	Dropped        uint64 // allocations not tracked because the map was full
	// RecursionMisses are events the kernel did not run a program for
	// because it was already running on the CPU (an interrupt inside it).
	// The backup free program catches most of the frees among them.
	RecursionMisses uint64
	// FreeMisses are the recursion misses of the primary free program, and
	// RecoveredFrees the frees the backup free program handled for it: the
	// frees lost to recursion are about FreeMisses - RecoveredFrees.
	FreeMisses     uint64
	RecoveredFrees uint64
	// MissedFrees are allocations at an address the map still held: the
	// free in between went unseen, whatever the cause, and the new object
	// replaced the stale entry.
	MissedFrees uint64
	StackErrors uint64 // stacks the probes failed to capture
}

// Snapshot is one scan of the live-object maps.
type Snapshot struct {
	TakenNs    uint64 // CLOCK_MONOTONIC when the scan finished
	Objects    []Object
	Counters   map[Allocator]Counters
	CacheNames map[uint64]string // slab cache key -> name, as the probes saw it
	// Recreated are the slab cache keys at which a cache was destroyed and
	// another created since the previous scan: what was decided about the
	// old one does not hold for the new.
	Recreated []uint64
	// Freed holds the slab cache keys that have shown a kmem_cache_free
	// event since the probes attached.
	Freed map[uint64]bool
	// Stacks is the number of kernel stacks kept, when stacks are on.
	Stacks int
}

// Age is how long obj had been live when the snapshot was taken.
func (s *Snapshot) Age(obj Object) uint64 {
	if obj.AllocNs >= s.TakenNs {
		return 0
	}
	return s.TakenNs - obj.AllocNs
}

// Remove takes the objects of the caches drop picks out of the snapshot,
// keeping the order of the rest, and returns their addresses by cache, for
// the tracker to delete.
func (s *Snapshot) Remove(drop func(CacheID) bool) map[CacheID][]uint64 {
	removed := map[CacheID][]uint64{}
	kept := s.Objects[:0]
	for _, obj := range s.Objects {
		if id := CacheOf(obj); drop(id) {
			removed[id] = append(removed[id], obj.Address)
			continue
		}
		kept = append(kept, obj)
	}
	s.Objects = kept
	return removed
}
