package tracker

import "fmt"

// Object is one live allocation as the probes recorded it.
type Object struct {
	Address  uint64
	AllocNs  uint64 // CLOCK_MONOTONIC, the clock of Snapshot.TakenNs
	CallSite uint64
	Cache    uint64 // see CacheName
	Bytes    uint32
	StackID  int32 // -1 when the probes took no stack
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
	StackErrors    uint64 // stacks the probes failed to capture
}

// Snapshot is one scan of the live-object map.
type Snapshot struct {
	TakenNs    uint64 // CLOCK_MONOTONIC when the scan finished
	Objects    []Object
	Counters   map[Allocator]Counters
	CacheNames map[uint64]string // slab cache key -> name, as the probes saw it
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

// The gfp bits the kmalloc probe keeps (KMALLOC_FAMILY_MASK in the BPF code).
const (
	gfpDMA         = 0x01
	gfpReclaimable = 0x10
	gfpAccount     = 0x400000
)

// kmallocMaxCacheSize is KMALLOC_MAX_CACHE_SIZE for SLUB with 4 KiB pages:
// larger kmalloc requests come straight from the page allocator.
const kmallocMaxCacheSize = 8192

// CacheID identifies a cache the way the probes do. For slab, Key is the
// probes' cache key. For kmalloc, Key is the slot of the cache in the BPF
// kmalloc_untraced array (kmalloc_slot() there): the gfp family that wins,
// as kmalloc_type() picks it (DMA, then reclaimable, then accounted), and the
// size; every size above the largest cache is one key, kmalloc-large.
type CacheID struct {
	Allocator Allocator
	Key       uint64
}

// kmallocSlotsPerFamily is KMALLOC_SLOTS_PER_FAMILY in the BPF code.
const kmallocSlotsPerFamily = kmallocMaxCacheSize/8 + 1

// KmallocLargeKey is the CacheID.Key of kmalloc-large, which is no slab
// cache and has no slot.
const KmallocLargeKey = 1 << 32

// CacheOf returns the cache obj came from. Objects of equal CacheID have
// equal CacheName, and objects of different CacheID do not.
func CacheOf(obj Object) CacheID {
	if obj.Allocator != Kmalloc {
		return CacheID{obj.Allocator, obj.Cache}
	}
	if obj.Bytes > kmallocMaxCacheSize {
		return CacheID{Kmalloc, KmallocLargeKey}
	}
	var family uint64
	switch {
	case obj.Cache&gfpDMA != 0:
		family = 1
	case obj.Cache&gfpReclaimable != 0:
		family = 2
	case obj.Cache&gfpAccount != 0:
		family = 3
	}
	return CacheID{Kmalloc, family*kmallocSlotsPerFamily + uint64(obj.Bytes)/8}
}

// CacheName names the slab cache obj came from. For kmalloc it reconstructs
// the kernel's naming (kmalloc-96, kmalloc-cg-1k, ...) from the size and
// the gfp family bits, the way kmalloc_type() picks the cache.
// Pages are named by their order (order-0 is one page), percpu objects
// all "percpu": neither comes from a cache.
func (s *Snapshot) CacheName(obj Object) string {
	switch obj.Allocator {
	case Page:
		return fmt.Sprintf("order-%d", obj.Cache)
	case Percpu:
		return "percpu"
	case Slab:
		if name, ok := s.CacheNames[obj.Cache]; ok {
			return name
		}
		return "unknown"
	}
	if obj.Bytes > kmallocMaxCacheSize {
		return "kmalloc-large"
	}
	size := fmt.Sprint(obj.Bytes)
	if obj.Bytes >= 1024 && obj.Bytes%1024 == 0 {
		size = fmt.Sprintf("%dk", obj.Bytes/1024)
	}
	switch {
	case obj.Cache&gfpDMA != 0:
		return "dma-kmalloc-" + size
	case obj.Cache&gfpReclaimable != 0:
		return "kmalloc-rcl-" + size
	case obj.Cache&gfpAccount != 0:
		return "kmalloc-cg-" + size
	}
	return "kmalloc-" + size
}

// kmallocSizes are the kmalloc cache sizes of SLUB with 4 KiB pages.
var kmallocSizes = []uint32{8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192}

// KmallocCaches lists every kmalloc cache the probes can name, by ID.
func KmallocCaches() map[CacheID]string {
	var snap Snapshot
	out := map[CacheID]string{}
	for _, size := range kmallocSizes {
		for _, family := range []uint64{0, gfpDMA, gfpReclaimable, gfpAccount} {
			obj := Object{Allocator: Kmalloc, Bytes: size, Cache: family}
			out[CacheOf(obj)] = snap.CacheName(obj)
		}
	}
	return out
}
