package kmem

import (
	"iter"
	"math"
	"slices"
)

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
	Owner        Owner
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
	// Promoted are the objects that lived long enough in the young area
	// for their slot to be wanted by another allocation, and moved into the
	// live table; the rest of Allocs were freed before, or are still there.
	Promoted uint64
	// Raced are allocations not tracked because the address's previous
	// object was being moved into the live table as it was freed and its
	// address handed out again.
	Raced uint64
}

// Snapshot is one scan of the live tables: their objects counted by group
// and by age, not copied, so that a scan of millions of objects needs no
// memory for them.
type Snapshot struct {
	Ages    Ages   // set by Begin, before the objects are added
	TakenNs uint64 // CLOCK_MONOTONIC when the scan finished
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
	// Reused holds, per tgid that a new process took after another with it
	// ended, when the earlier one ended: objects of the tgid allocated up to
	// then are the earlier process's (Owner.Earlier). Set before a scan.
	Reused map[uint32]uint64
	// Holds are what live tasks hold, listed just before the scan, or nil
	// when they were not: the aged objects among them are counted per
	// group (Tally.HeldByTask, FileHolders). Set before a scan.
	Holds *Holds

	groups groupIndex
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
	// Previous is the previous scan's Cutoff, 0 before there was one:
	// objects allocated before it were old at that scan too.
	Previous uint64
	// Recent: objects allocated after it are younger than the verdicts'
	// window.
	Recent uint64
}

// GroupKey is what a group's objects share: where they were allocated.
type GroupKey struct {
	Cache    CacheID
	CallSite uint64
	StackID  int32 // -1 without a stack
	// StackSkipped: the stack lacks its innermost frame, which is CallSite.
	StackSkipped bool
	Owner        Owner
}

// Tally counts a group's objects by age, as of the snapshot's Ages.
type Tally struct {
	Objects   int64 // all of them
	Old       int64 // allocated before Ages.Cutoff
	Kept      int64 // allocated before Ages.Previous: old at the previous scan, and still live
	Aged      int64 // allocated at or before Ages.Aged
	AgedBytes int64
	Survivors int64  // allocated at or before Ages.Survived
	OldestNs  uint64 // the earliest allocation time
	// Of the aged objects, those a live task holds (Snapshot.Holds): as its
	// own structures, or as its open files, and how many each process
	// holding the files holds; and those no live task holds allocated after
	// Ages.Recent.
	HeldByTask, UnheldRecent int64
	FileHolders              FileHolders
}

// Begin readies s for a scan with the given ages, forgetting the previous
// scan's objects.
func (s *Snapshot) Begin(ages Ages) {
	s.Ages = ages
	s.groups.clear()
}

// BeginPart readies s to count a part of whole's objects, with whole's
// ages and what its scan knows of owners and holders, for Merge.
func (s *Snapshot) BeginPart(whole *Snapshot) {
	s.Begin(whole.Ages)
	s.Reused, s.Holds = whole.Reused, whole.Holds
}

// Add counts obj into its group. It is what a scan does per object, a
// million times for a full table.
func (s *Snapshot) Add(obj *Object) {
	owner := obj.Owner
	if len(s.Reused) > 0 && owner.Tgid != 0 {
		if ended, ok := s.Reused[owner.Tgid]; ok && obj.AllocNs <= ended {
			owner.Earlier = true
		}
	}
	key := packed{obj.CallSite, obj.Cache, packMeta(obj.Allocator, obj.StackID, obj.StackSkipped, owner), packOwner(owner)}
	if obj.Allocator == Kmalloc {
		key[1] = KmallocID(KmallocFamily(obj.Cache), obj.Bytes).Key
	}
	e := s.groups.find(key)
	if e.tally.Objects == 0 {
		e = s.groups.add(key, Tally{OldestNs: obj.AllocNs})
	}
	t := &e.tally
	t.Objects++
	t.OldestNs = min(t.OldestNs, obj.AllocNs)
	if obj.AllocNs < s.Ages.Cutoff {
		t.Old++
		if obj.AllocNs < s.Ages.Previous {
			t.Kept++
		}
	}
	if obj.AllocNs <= s.Ages.Aged {
		t.Aged++
		t.AgedBytes += int64(obj.Bytes)
		if obj.AllocNs <= s.Ages.Survived {
			t.Survivors++
		}
		if s.Holds != nil {
			if h, ok := s.Holds.Objects[obj.Address]; ok {
				t.held(h)
			} else if obj.AllocNs > s.Ages.Recent {
				t.UnheldRecent++
			}
		}
	}
}

// Merge adds the groups of other, a snapshot of other objects with the
// same ages, to s's.
func (s *Snapshot) Merge(other *Snapshot) {
	for i := range other.groups.slots {
		o := &other.groups.slots[i]
		if o.tally.Objects == 0 {
			continue
		}
		e := s.groups.find(o.key)
		if e.tally.Objects == 0 {
			t := o.tally
			t.FileHolders = FileHolders(nil).Add(t.FileHolders)
			s.groups.add(o.key, t)
			continue
		}
		t := &e.tally
		t.Objects += o.tally.Objects
		t.Old += o.tally.Old
		t.Kept += o.tally.Kept
		t.Aged += o.tally.Aged
		t.AgedBytes += o.tally.AgedBytes
		t.Survivors += o.tally.Survivors
		t.OldestNs = min(t.OldestNs, o.tally.OldestNs)
		t.HeldByTask += o.tally.HeldByTask
		t.UnheldRecent += o.tally.UnheldRecent
		t.FileHolders = t.FileHolders.Add(o.tally.FileHolders)
	}
}

// Groups are the snapshot's groups, each with its tally, in no particular
// order. A tally is valid until the next Begin, Add or Remove.
func (s *Snapshot) Groups() iter.Seq2[GroupKey, *Tally] {
	return func(yield func(GroupKey, *Tally) bool) {
		for i := range s.groups.slots {
			if e := &s.groups.slots[i]; e.tally.Objects > 0 && !yield(e.key.unpack(), &e.tally) {
				return
			}
		}
	}
}

// Owners yields the owner of every group, once or more each.
func (s *Snapshot) Owners() iter.Seq[Owner] {
	return func(yield func(Owner) bool) {
		for key := range s.Groups() {
			if !yield(key.Owner) {
				return
			}
		}
	}
}

// Objects counts the objects of every group.
func (s *Snapshot) Objects() int64 {
	var n int64
	for _, t := range s.Groups() {
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
	for key := range s.Groups() {
		if drop(key.Cache) && !slices.Contains(removed, key.Cache) {
			removed = append(removed, key.Cache)
		}
	}
	if len(removed) == 0 {
		return nil
	}
	var kept groupIndex
	for key, t := range s.Groups() {
		if !slices.Contains(removed, key.Cache) {
			kept.add(key.pack(), *t)
		}
	}
	s.groups = kept
	return removed
}

// packed is a GroupKey in four words, which compare faster: the call
// site; the cache key; the allocator, stack id, skipped flag, context and
// earlier flag; the tgid and cgroup.
type packed [4]uint64

func packMeta(a Allocator, stackID int32, skipped bool, o Owner) uint64 {
	meta := uint64(uint32(stackID)) | uint64(a&0xff)<<40 | uint64(o.Context)<<48 //nolint:gosec // G115: the stack id's bits, -1 (none) as 0xffffffff; unpack reads them back
	if skipped {
		meta |= 1 << 32
	}
	if o.Earlier {
		meta |= 1 << 33
	}
	return meta
}

func packOwner(o Owner) uint64 { return uint64(o.Tgid)<<32 | uint64(o.Cgroup) }

func (k GroupKey) pack() packed {
	return packed{k.CallSite, k.Cache.Key, packMeta(k.Cache.Allocator, k.StackID, k.StackSkipped, k.Owner), packOwner(k.Owner)}
}

func (p packed) unpack() GroupKey {
	return GroupKey{
		Cache:    CacheID{Allocator: Allocator(p[2] >> 40 & 0xff), Key: p[1]},
		CallSite: p[0], StackID: int32(uint32(p[2])), StackSkipped: p[2]>>32&1 != 0, //nolint:gosec // G115: the bits packMeta packed
		Owner: Owner{Context: Context(p[2] >> 48 & 0xff), Earlier: p[2]>>33&1 != 0, Tgid: uint32(p[3] >> 32), Cgroup: uint32(p[3] & math.MaxUint32)},
	}
}

// groupIndex holds the groups' tallies by open addressing on a
// multiplicative hash of their keys, at most half full: a few times faster
// than a map, which matters at a million objects per scan. A slot whose
// tally counts no object is empty.
type groupIndex struct {
	slots []indexSlot // a power of two of them
	used  int
}

type indexSlot struct {
	key   packed
	tally Tally
}

func (x *groupIndex) clear() {
	clear(x.slots)
	x.used = 0
}

// find returns key's slot, or the empty one where it would go.
func (x *groupIndex) find(key packed) *indexSlot {
	if len(x.slots) == 0 {
		return &indexSlot{}
	}
	h := key[0]*0x9e3779b97f4a7c15 ^ key[1]*0xbf58476d1ce4e5b9 ^ key[2]*0x94d049bb133111eb ^ key[3]*0xd6e8feb86659fd93
	mask := len(x.slots) - 1
	for i := int(h>>40) & mask; ; i = (i + 1) & mask {
		if e := &x.slots[i]; e.tally.Objects == 0 || e.key == key {
			return e
		}
	}
}

// add adds a group that is not there yet, growing the index when it is
// half full.
func (x *groupIndex) add(key packed, t Tally) *indexSlot {
	if 2*(x.used+1) > len(x.slots) {
		old := x.slots
		x.slots, x.used = make([]indexSlot, max(1024, 2*len(old))), 0
		for i := range old {
			if old[i].tally.Objects > 0 {
				x.add(old[i].key, old[i].tally)
			}
		}
	}
	e := x.find(key)
	e.key, e.tally = key, t
	x.used++
	return e
}
