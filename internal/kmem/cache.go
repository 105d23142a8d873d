package kmem

import (
	"fmt"
	"math"
)

// CacheID identifies a cache the way the probes do: objects of equal
// CacheID have equal CacheName, and objects of different CacheID do not.
// For slab, Key is the probes' cache key; for kmalloc, the family and the
// size class (KmallocID); for page, the order; for percpu, 0.
type CacheID struct {
	Allocator Allocator
	Key       uint64
}

// KmallocFamily is the set of kmalloc caches an allocation's gfp flags
// pick, as kmalloc_type() does in the kernel; the probes decide it, and
// put objects above the largest kmalloc cache in KmallocLarge.
type KmallocFamily uint64

// The kmalloc families, by the prefix of their caches' names.
const (
	KmallocNormal      KmallocFamily = iota // kmalloc-N
	KmallocDMA                              // dma-kmalloc-N
	KmallocReclaimable                      // kmalloc-rcl-N
	KmallocAccounted                        // kmalloc-cg-N
	// KmallocLarge is no slab cache: the page allocator serves it.
	KmallocLarge
)

var kmallocPrefixes = map[KmallocFamily]string{
	KmallocNormal: "kmalloc-", KmallocDMA: "dma-kmalloc-", KmallocReclaimable: "kmalloc-rcl-", KmallocAccounted: "kmalloc-cg-",
}

// KmallocID is the cache of a kmalloc object of the family and size class.
func KmallocID(family KmallocFamily, bytes uint32) CacheID {
	if family == KmallocLarge {
		return CacheID{Kmalloc, uint64(KmallocLarge) << 32}
	}
	return CacheID{Kmalloc, uint64(family)<<32 | uint64(bytes)}
}

// Kmalloc returns the family and size class of a kmalloc cache's ID.
func (id CacheID) Kmalloc() (KmallocFamily, uint32) {
	return KmallocFamily(id.Key >> 32), uint32(id.Key & math.MaxUint32)
}

// IsKmallocLarge reports whether id is kmalloc-large, which is no slab
// cache: the kernel counts no objects of it, and it cannot be skipped.
func (id CacheID) IsKmallocLarge() bool {
	family, _ := id.Kmalloc()
	return id.Allocator == Kmalloc && family == KmallocLarge
}

// CacheOf returns the cache obj came from.
func CacheOf(obj Object) CacheID {
	if obj.Allocator == Kmalloc {
		return KmallocID(KmallocFamily(obj.Cache), obj.Bytes)
	}
	return CacheID{obj.Allocator, obj.Cache}
}

// CacheName names a cache. For kmalloc it is the kernel's name of the size
// class in the family (kmalloc-96, kmalloc-cg-1k, ...). Pages are named by
// their order (order-0 is one page), percpu objects all "percpu": neither
// comes from a cache.
func (s *Snapshot) CacheName(id CacheID) string {
	switch id.Allocator {
	case Page:
		return fmt.Sprintf("order-%d", id.Key)
	case Percpu:
		return "percpu"
	case Slab:
		if name, ok := s.CacheNames[id.Key]; ok {
			return name
		}
		return "unknown"
	}
	return KmallocName(id)
}

// KmallocName is the kernel's name of a kmalloc cache.
func KmallocName(id CacheID) string {
	family, bytes := id.Kmalloc()
	prefix, ok := kmallocPrefixes[family]
	if !ok {
		return "kmalloc-large"
	}
	if bytes >= 1024 && bytes%1024 == 0 {
		return fmt.Sprintf("%s%dk", prefix, bytes/1024)
	}
	return fmt.Sprintf("%s%d", prefix, bytes)
}

// KmallocFamilies are the families of kmalloc slab caches.
var KmallocFamilies = []KmallocFamily{KmallocNormal, KmallocDMA, KmallocReclaimable, KmallocAccounted}
