package kmem

import "slices"

// Object is one live allocation as the probes recorded it.
type Object struct {
	Address  uint64
	AllocNs  uint64 // CLOCK_MONOTONIC, the clock of Snapshot.Ages
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

// Snapshot is one scan of the live tables: their objects counted by group
// and by age, not copied, so that a scan of millions of objects needs no
// memory for them.
type Snapshot struct {
	Ages    Ages   // set by Begin, before the objects are added
	TakenNs uint64 // CLOCK_MONOTONIC when the scan finished
	Groups  map[GroupKey]*Tally
	// Counters are the probes' totals per allocator.
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

// Ages are the allocation times a scan sorts objects by, CLOCK_MONOTONIC.
type Ages struct {
	Now uint64 // when the scan began: ages are taken from it
	// Cutoff: objects allocated before it were live when the kernel
	// counted its caches' objects (the truth check's).
	Cutoff uint64
	// Aged: objects allocated at or before it are min_age old.
	Aged uint64
	// Survived: objects allocated at or before it were already aged at
	// the previous scan; 0 before there was one.
	Survived uint64
}

// GroupKey is what a group's objects share: where they were allocated.
type GroupKey struct {
	Cache    CacheID
	CallSite uint64
	StackID  int32 // -1 without a stack
	// StackSkipped: the stack lacks its innermost frame, which is CallSite.
	StackSkipped bool
}

// Tally counts a group's objects by age, as of the snapshot's Ages.
type Tally struct {
	Objects   int64 // all of them
	Old       int64 // allocated before Ages.Cutoff
	Aged      int64 // allocated at or before Ages.Aged
	AgedBytes int64
	Survivors int64  // allocated at or before Ages.Survived
	OldestNs  uint64 // the earliest allocation time
}

// Begin readies s for a scan with the given ages, forgetting the previous
// scan's objects.
func (s *Snapshot) Begin(ages Ages) {
	s.Ages = ages
	if s.Groups == nil {
		s.Groups = map[GroupKey]*Tally{}
	}
	clear(s.Groups)
}

// Add counts obj into its group.
func (s *Snapshot) Add(obj Object) {
	key := GroupKey{Cache: CacheOf(obj), CallSite: obj.CallSite, StackID: obj.StackID, StackSkipped: obj.StackSkipped}
	t := s.Groups[key]
	if t == nil {
		if s.Groups == nil {
			s.Groups = map[GroupKey]*Tally{}
		}
		t = &Tally{OldestNs: obj.AllocNs}
		s.Groups[key] = t
	}
	t.Objects++
	t.OldestNs = min(t.OldestNs, obj.AllocNs)
	if obj.AllocNs < s.Ages.Cutoff {
		t.Old++
	}
	if obj.AllocNs <= s.Ages.Aged {
		t.Aged++
		t.AgedBytes += int64(obj.Bytes)
		if obj.AllocNs <= s.Ages.Survived {
			t.Survivors++
		}
	}
}

// Objects counts the objects of every group.
func (s *Snapshot) Objects() int64 {
	var n int64
	for _, t := range s.Groups {
		n += t.Objects
	}
	return n
}

// Age is how long a group's oldest object had been live when the scan
// began.
func (s *Snapshot) Age(t *Tally) uint64 {
	return s.Ages.Now - min(t.OldestNs, s.Ages.Now)
}

// Remove takes the groups of the caches drop picks out of the snapshot,
// and returns those caches, for the tracker to delete their entries.
func (s *Snapshot) Remove(drop func(CacheID) bool) []CacheID {
	var removed []CacheID
	for key := range s.Groups {
		if drop(key.Cache) {
			if !slices.Contains(removed, key.Cache) {
				removed = append(removed, key.Cache)
			}
			delete(s.Groups, key)
		}
	}
	return removed
}
