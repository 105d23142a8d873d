package kmem

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
		{name: "kmalloc above the largest cache", obj: Object{Allocator: Kmalloc, Bytes: 8193, Cache: uint64(KmallocLarge)}, want: "kmalloc-large"},
		{name: "kmalloc page allocator", obj: Object{Allocator: Kmalloc, Bytes: 16384, Cache: uint64(KmallocLarge)}, want: "kmalloc-large"},
		{name: "kmalloc family the probes do not define", obj: Object{Allocator: Kmalloc, Bytes: 64, Cache: 9}, want: "kmalloc-large"},

		{name: "accounted", obj: Object{Allocator: Kmalloc, Bytes: 64, Cache: uint64(KmallocAccounted)}, want: "kmalloc-cg-64"},
		{name: "accounted in KiB", obj: Object{Allocator: Kmalloc, Bytes: 4096, Cache: uint64(KmallocAccounted)}, want: "kmalloc-cg-4k"},
		{name: "reclaimable", obj: Object{Allocator: Kmalloc, Bytes: 192, Cache: uint64(KmallocReclaimable)}, want: "kmalloc-rcl-192"},
		{name: "dma", obj: Object{Allocator: Kmalloc, Bytes: 256, Cache: uint64(KmallocDMA)}, want: "dma-kmalloc-256"},

		{name: "slab from the probes' names", obj: Object{Allocator: Slab, Cache: dentryKey, Bytes: 192}, want: "dentry"},
		{name: "slab larger than any kmalloc cache", obj: Object{Allocator: Slab, Cache: taskKey, Bytes: 9792}, want: "task_struct"},
		{name: "slab key never named", obj: Object{Allocator: Slab, Cache: missingKey, Bytes: 64}, want: "unknown"},
		{name: "slab key that looks like a kmalloc family", obj: Object{Allocator: Slab, Cache: uint64(KmallocAccounted), Bytes: 64}, want: "unknown"},
		{name: "page", obj: Object{Allocator: Page, Cache: 3, Bytes: 32768}, want: "order-3"},
		{name: "percpu", obj: Object{Allocator: Percpu, Bytes: 64}, want: "percpu"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, snap.CacheName(CacheOf(tt.obj)))
		})
	}
}

func TestSnapshotCacheNameWithoutNames(t *testing.T) {
	var snap Snapshot // no CacheNames map at all
	assert.Equal(t, "unknown", snap.CacheName(CacheOf(Object{Allocator: Slab, Cache: 1, Bytes: 64})))
	assert.Equal(t, "kmalloc-64", snap.CacheName(CacheOf(Object{Allocator: Kmalloc, Bytes: 64})))
}

// Objects of one kmalloc CacheID must share a cache name and objects of
// different IDs must not: report.Build groups kmalloc objects by CacheID
// and names each group after one of its members, and the probes' exclusion
// of a kmalloc cache takes the ID.
func TestCacheOfMatchesCacheName(t *testing.T) {
	sizes := []uint32{8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192}
	var objs []Object
	for _, family := range KmallocFamilies {
		for _, size := range sizes {
			objs = append(objs, Object{Allocator: Kmalloc, Bytes: size, Cache: uint64(family)})
		}
	}
	for _, size := range []uint32{8200, 16384, 32768, 1 << 20} {
		objs = append(objs, Object{Allocator: Kmalloc, Bytes: size, Cache: uint64(KmallocLarge)})
	}

	var snap Snapshot
	mismatches := 0
	for i, a := range objs {
		for _, b := range objs[i+1:] {
			sameClass := CacheOf(a) == CacheOf(b)
			sameName := snap.CacheName(CacheOf(a)) == snap.CacheName(CacheOf(b))
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

func TestKmallocLarge(t *testing.T) {
	large := CacheOf(Object{Allocator: Kmalloc, Bytes: 16384, Cache: uint64(KmallocLarge)})
	assert.True(t, large.IsKmallocLarge())
	assert.False(t, CacheOf(Object{Allocator: Kmalloc, Bytes: 8192}).IsKmallocLarge())
	assert.False(t, CacheID{Allocator: Slab, Key: uint64(KmallocLarge) << 32}.IsKmallocLarge(), "a slab key is never kmalloc-large")
	family, bytes := KmallocID(KmallocAccounted, 1024).Kmalloc()
	assert.Equal(t, KmallocAccounted, family)
	assert.Equal(t, uint32(1024), bytes)
}

// Remove takes out exactly the groups of the caches asked for and returns
// those caches.
func TestSnapshotRemove(t *testing.T) {
	var snap Snapshot
	snap.Begin(Ages{})
	for _, o := range []Object{
		{Address: 1, Allocator: Slab, Cache: 10},
		{Address: 2, Allocator: Kmalloc, Bytes: 64},
		{Address: 3, Allocator: Slab, Cache: 11},
		{Address: 4, Allocator: Slab, Cache: 10, CallSite: 7},
		{Address: 5, Allocator: Kmalloc, Bytes: 64, Cache: uint64(KmallocAccounted)},
	} {
		snap.Add(&o)
	}
	removed := snap.Remove(func(id CacheID) bool { return id == CacheID{Slab, 10} || id == KmallocID(KmallocNormal, 64) })
	assert.ElementsMatch(t, []CacheID{{Slab, 10}, KmallocID(KmallocNormal, 64)}, removed)
	var left []CacheID
	for key := range snap.Groups() {
		left = append(left, key.Cache)
	}
	assert.ElementsMatch(t, []CacheID{{Slab, 11}, KmallocID(KmallocAccounted, 64)}, left)
	assert.Empty(t, snap.Remove(func(CacheID) bool { return false }))
}

func describe(snap *Snapshot, obj Object) string {
	return fmt.Sprintf("{bytes %d, family %d -> %s}", obj.Bytes, obj.Cache, snap.CacheName(CacheOf(obj)))
}

// Add counts each object by its group and its age against the scan's
// times, the bounds included where the checks say "at or before".
func TestSnapshotAdd(t *testing.T) {
	var snap Snapshot
	snap.Begin(Ages{Now: 100, Cutoff: 90, Aged: 80, Survived: 70, Previous: 72})
	site := func(allocNs uint64, bytes uint32) Object {
		return Object{Allocator: Slab, Cache: 1, CallSite: 5, StackID: -1, AllocNs: allocNs, Bytes: bytes}
	}
	for _, o := range []Object{site(60, 8), site(70, 8), site(75, 8), site(80, 8), site(85, 8), site(90, 8), site(120, 8)} {
		snap.Add(&o)
	}
	snap.Add(&Object{Allocator: Slab, Cache: 1, CallSite: 5, StackID: 3, AllocNs: 10, Bytes: 16})
	groups := 0
	for range snap.Groups() {
		groups++
	}
	require.Equal(t, 2, groups, "a stack makes a group of its own")
	got := *group(&snap, GroupKey{Cache: CacheID{Slab, 1}, CallSite: 5, StackID: -1})
	assert.Equal(t, Tally{Objects: 7, Old: 5, Kept: 2, Aged: 4, AgedBytes: 32, Survivors: 2, OldestNs: 60}, got)
	assert.Equal(t, uint64(40), snap.Age(&got))

	// Objects allocated after the scan began are 0 old, not centuries.
	assert.Equal(t, uint64(0), snap.Age(&Tally{OldestNs: 120}))

	snap.Begin(Ages{Now: 200})
	assert.Zero(t, snap.Objects(), "a new scan starts empty")
	assert.Nil(t, group(&snap, GroupKey{Cache: CacheID{Slab, 1}, CallSite: 5, StackID: -1}))
}

// group returns a group's tally, or nil when it has no object.
func group(s *Snapshot, key GroupKey) *Tally {
	for k, t := range s.Groups() {
		if k == key {
			return t
		}
	}
	return nil
}

// Merging two snapshots of halves of the objects gives the snapshot of
// them all.
func TestSnapshotMerge(t *testing.T) {
	ages := Ages{Now: 100, Cutoff: 90, Aged: 80, Survived: 70, Previous: 72}
	var whole, a, b Snapshot
	for _, s := range []*Snapshot{&whole, &a, &b} {
		s.Begin(ages)
	}
	for i := range 200 {
		o := Object{Allocator: Allocators[i%len(Allocators)], Cache: uint64(i % 3), CallSite: uint64(i % 7), StackID: int32(i%5) - 1,
			AllocNs: uint64(i % 120), Bytes: uint32(i)}
		whole.Add(&o)
		if i%3 == 0 {
			a.Add(&o)
		} else {
			b.Add(&o)
		}
	}
	a.Merge(&b)
	want := map[GroupKey]Tally{}
	for key, t := range whole.Groups() {
		want[key] = *t
	}
	got := map[GroupKey]Tally{}
	for key, t := range a.Groups() {
		got[key] = *t
	}
	assert.Equal(t, want, got)
}
