package tracker

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

// The gfp bits as the kernel defines them (include/linux/gfp_types.h),
// spelled out here rather than taken from snapshot.go so that a wrong
// constant there shows up as a wrong name.
const (
	gfpDMABit         = 0x01     // ___GFP_DMA
	gfpReclaimableBit = 0x10     // ___GFP_RECLAIMABLE
	gfpAccountBit     = 0x400000 // ___GFP_ACCOUNT
)

func TestSnapshotCacheName(t *testing.T) {
	const (
		dentryKey  = 0xffff888100a3c000
		taskKey    = 0xffff888100a3d000
		missingKey = 0xffff888100a3e000
	)
	snap := Snapshot{CacheNames: map[uint64]string{
		dentryKey: "dentry",
		taskKey:   "task_struct",
	}}

	tests := []struct {
		name string
		obj  Object
		want string
	}{
		{name: "kmalloc smallest", obj: Object{Allocator: Kmalloc, Bytes: 8}, want: "kmalloc-8"},
		{name: "kmalloc 96", obj: Object{Allocator: Kmalloc, Bytes: 96}, want: "kmalloc-96"},
		{name: "kmalloc 192", obj: Object{Allocator: Kmalloc, Bytes: 192}, want: "kmalloc-192"},
		{name: "kmalloc 512", obj: Object{Allocator: Kmalloc, Bytes: 512}, want: "kmalloc-512"},
		{name: "kmalloc 1024 in KiB", obj: Object{Allocator: Kmalloc, Bytes: 1024}, want: "kmalloc-1k"},
		{name: "kmalloc 2048 in KiB", obj: Object{Allocator: Kmalloc, Bytes: 2048}, want: "kmalloc-2k"},
		{name: "kmalloc largest cache", obj: Object{Allocator: Kmalloc, Bytes: 8192}, want: "kmalloc-8k"},
		{name: "kmalloc above the largest cache", obj: Object{Allocator: Kmalloc, Bytes: 8193}, want: "kmalloc-large"},
		{name: "kmalloc page allocator", obj: Object{Allocator: Kmalloc, Bytes: 16384}, want: "kmalloc-large"},
		{name: "kmalloc large ignores gfp", obj: Object{Allocator: Kmalloc, Bytes: 32768, Cache: gfpAccountBit}, want: "kmalloc-large"},

		{name: "accounted", obj: Object{Allocator: Kmalloc, Bytes: 64, Cache: gfpAccountBit}, want: "kmalloc-cg-64"},
		{name: "accounted in KiB", obj: Object{Allocator: Kmalloc, Bytes: 4096, Cache: gfpAccountBit}, want: "kmalloc-cg-4k"},
		{name: "reclaimable", obj: Object{Allocator: Kmalloc, Bytes: 192, Cache: gfpReclaimableBit}, want: "kmalloc-rcl-192"},
		{name: "dma", obj: Object{Allocator: Kmalloc, Bytes: 256, Cache: gfpDMABit}, want: "dma-kmalloc-256"},
		// kmalloc_type(): DMA wins over reclaimable, which wins over account.
		{name: "dma over reclaimable and account", obj: Object{Allocator: Kmalloc, Bytes: 128, Cache: gfpDMABit | gfpReclaimableBit | gfpAccountBit}, want: "dma-kmalloc-128"},
		{name: "reclaimable over account", obj: Object{Allocator: Kmalloc, Bytes: 1024, Cache: gfpReclaimableBit | gfpAccountBit}, want: "kmalloc-rcl-1k"},

		{name: "slab from the probes' names", obj: Object{Allocator: Slab, Cache: dentryKey, Bytes: 192}, want: "dentry"},
		{name: "slab larger than any kmalloc cache", obj: Object{Allocator: Slab, Cache: taskKey, Bytes: 9792}, want: "task_struct"},
		{name: "slab key never named", obj: Object{Allocator: Slab, Cache: missingKey, Bytes: 64}, want: "unknown"},
		{name: "slab key that looks like gfp bits", obj: Object{Allocator: Slab, Cache: gfpAccountBit, Bytes: 64}, want: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, snap.CacheName(tt.obj))
		})
	}
}

func TestSnapshotCacheNameWithoutNames(t *testing.T) {
	var snap Snapshot // no CacheNames map at all
	assert.Equal(t, "unknown", snap.CacheName(Object{Allocator: Slab, Cache: 1, Bytes: 64}))
	assert.Equal(t, "kmalloc-64", snap.CacheName(Object{Allocator: Kmalloc, Bytes: 64}))
}

// Objects of one kmalloc CacheID must share a cache name and objects of
// different IDs must not: report.Build groups kmalloc objects by CacheID
// and names each group after one of its members, and the BPF exclusion of a
// kmalloc cache uses the ID as its slot.
func TestCacheOfMatchesCacheName(t *testing.T) {
	sizes := []uint32{8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 1 << 20}
	var bits []uint64
	for _, dma := range []uint64{0, gfpDMABit} {
		for _, rcl := range []uint64{0, gfpReclaimableBit} {
			for _, acct := range []uint64{0, gfpAccountBit} {
				bits = append(bits, dma|rcl|acct)
			}
		}
	}
	var objs []Object
	for _, size := range sizes {
		for _, b := range bits {
			objs = append(objs, Object{Allocator: Kmalloc, Bytes: size, Cache: b})
		}
	}

	var snap Snapshot
	mismatches := 0
	for i, a := range objs {
		for _, b := range objs[i+1:] {
			sameClass := CacheOf(a) == CacheOf(b)
			sameName := snap.CacheName(a) == snap.CacheName(b)
			if sameClass != sameName {
				t.Errorf("%s and %s: same class = %t, same cache name = %t",
					describe(&snap, a), describe(&snap, b), sameClass, sameName)
				if mismatches++; mismatches == 10 {
					t.Fatal("too many mismatches")
				}
			}
		}
	}
}

func describe(snap *Snapshot, obj Object) string {
	return fmt.Sprintf("{bytes %d, gfp %#x -> %s}", obj.Bytes, obj.Cache, snap.CacheName(obj))
}

func TestSnapshotAge(t *testing.T) {
	const taken = 5_000_000_000
	snap := Snapshot{TakenNs: taken}
	tests := []struct {
		name    string
		allocNs uint64
		want    uint64
	}{
		{name: "allocated before the scan", allocNs: 1_500_000_000, want: 3_500_000_000},
		{name: "allocated at boot", allocNs: 0, want: taken},
		{name: "allocated as the scan finished", allocNs: taken, want: 0},
		// Another CPU can record an allocation after the scan read its clock:
		// the age is clamped instead of wrapping around to centuries.
		{name: "allocated after the scan", allocNs: taken + 1, want: 0},
		{name: "allocated long after the scan", allocNs: taken * 3, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, snap.Age(Object{AllocNs: tt.allocNs}))
		})
	}
}
