//go:build linux && (amd64 || arm64)

package livetable

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmemleak/kmemleakreceiver/bpf"
)

// newTable returns a table for the given number of objects, in Go memory.
func newTable(t testing.TB, objects uint32) *Table {
	t.Helper()
	words := make([]uint64, int(Buckets(objects))*BucketSize/8)
	tab, err := New(unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8))
	require.NoError(t, err)
	return tab
}

// record is what the tests store for key, in generation gen: every field
// follows from the two, so a torn read shows.
func record(key uint64, gen uint32) *bpf.KmemleakObject {
	return &bpf.KmemleakObject{
		AllocTime: uint64(gen) * 7, CallSite: key, Cache: uint64(gen) << 20, Bytes: gen * 3,
		StackId: int32(gen % 1000), Allocator: uint8(gen % 4), StackSkipped: uint8(gen % 2), Tgid: uint32(gen), Cgroup: uint32(gen * 7), Context: uint8(gen % 4),
	}
}

func consistent(o *Object) bool {
	gen := uint32(o.Cache >> 20)
	want := record(o.Key, gen)
	want.Seq = o.Seq
	return o.KmemleakObject == *want
}

func walk(tab *Table) map[uint64]bpf.KmemleakObject {
	out := map[uint64]bpf.KmemleakObject{}
	tab.Walk(func(o *Object) { out[o.Key] = o.KmemleakObject })
	return out
}

func TestInsertWalkDelete(t *testing.T) {
	tab := newTable(t, 1000)
	for k := uint64(1); k <= 1000; k++ {
		require.True(t, tab.Insert(k<<6, record(k<<6, uint32(k))))
	}
	seen := walk(tab)
	require.Len(t, seen, 1000)
	for key, obj := range seen {
		assert.True(t, consistent(&Object{Key: key, KmemleakObject: obj}))
		assert.Zero(t, obj.Seq%2, "published records have an even seq")
	}
	for k := uint64(1); k <= 1000; k += 2 {
		assert.True(t, tab.Delete(k<<6))
		assert.False(t, tab.Delete(k<<6), "deleted twice")
	}
	assert.Len(t, walk(tab), 500)
	assert.False(t, tab.Delete(1<<40), "never inserted")
}

// An address inserted again without a free in between (the probes missed
// it) replaces its entry rather than adding a second one.
func TestInsertReplacesAStaleEntry(t *testing.T) {
	tab := newTable(t, 100)
	require.True(t, tab.Insert(0x1000, record(0x1000, 1)))
	require.True(t, tab.Insert(0x1000, record(0x1000, 2)))
	seen := walk(tab)
	require.Len(t, seen, 1)
	assert.Equal(t, uint64(2)<<20, seen[0x1000].Cache)
	assert.True(t, tab.Delete(0x1000))
	assert.Empty(t, walk(tab))
}

// Addresses whose first bucket is full go to their second, are found and
// deleted there, and the first bucket's overflow count goes back to zero.
// firstBucketZero returns three buckets' worth of keys whose first bucket
// is bucket 0 and whose second is another.
func firstBucketZero(tab *Table) []uint64 {
	var keys []uint64
	for k := uint64(64); len(keys) < 3*slots; k += 64 {
		if i1, i2 := indexes(k, tab.Len()); i1 == 0 && i2 != 0 {
			keys = append(keys, k)
		}
	}
	return keys
}

func TestOverflowToTheSecondBucket(t *testing.T) {
	tab := newTable(t, 2000)
	keys := firstBucketZero(tab)
	for _, k := range keys {
		require.True(t, tab.Insert(k, record(k, 1)))
	}
	assert.GreaterOrEqual(t, usedSlots(&tab.buckets[0]), preferFirst, "the first bucket fills up to where the second is preferred")
	assert.NotZero(t, tab.buckets[0].Overflow)
	assert.Len(t, walk(tab), len(keys))
	// A stale entry in the second bucket is found and replaced too.
	last := keys[len(keys)-1]
	require.True(t, tab.Insert(last, record(last, 2)))
	assert.Len(t, walk(tab), len(keys))
	for _, k := range keys {
		require.True(t, tab.Delete(k), "key %#x", k)
	}
	assert.Zero(t, tab.buckets[0].Overflow)
	assert.Empty(t, walk(tab))
}

// Sized by Buckets, a table holds its number of objects through churn
// without dropping one: the probes count a drop only past it.
func TestTableHoldsItsSizeThroughChurn(t *testing.T) {
	const objects = 200_000
	tab := newTable(t, objects)
	rng := rand.New(rand.NewPCG(1, 2))
	live := make([]uint64, 0, objects)
	used := map[uint64]bool{}
	newKey := func() uint64 {
		for {
			if k := 0xffff888000000000 | rng.Uint64()&0x7fffffffff&^63; !used[k] {
				used[k] = true
				return k
			}
		}
	}
	for len(live) < objects {
		k := newKey()
		require.True(t, tab.Insert(k, record(k, 1)), "dropped at %d objects", len(live))
		live = append(live, k)
	}
	for i := range 3 * objects {
		j := rng.IntN(len(live))
		require.True(t, tab.Delete(live[j]))
		delete(used, live[j])
		live[j] = newKey()
		require.True(t, tab.Insert(live[j], record(live[j], uint32(i))), "dropped after %d replacements", i)
	}
	assert.Len(t, walk(tab), objects)
}

// Writers insert and delete the same few addresses over and over, each
// time with a new generation of their records, while a reader walks the
// table: every record it sees is whole.
func TestWalkSeesNoTornRecord(t *testing.T) {
	tab := newTable(t, 64)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for gen := uint32(1); !stop.Load(); gen++ {
				for k := uint64(w*16 + 1); k <= uint64(w*16+16); k++ {
					tab.Insert(k<<6, record(k<<6, gen))
					if gen%3 == 0 {
						tab.Delete(k << 6)
					}
				}
			}
		}()
	}
	// Until the walks have read many records the writers were busy with,
	// however the scheduler shares the CPUs out.
	seen, torn := 0, 0
	for deadline := time.Now().Add(10 * time.Second); seen < 50_000 && time.Now().Before(deadline); {
		tab.Walk(func(o *Object) {
			seen++
			if !consistent(o) {
				torn++
			}
		})
	}
	stop.Store(true)
	wg.Wait()
	assert.GreaterOrEqual(t, seen, 50_000, "the writers hardly ran")
	assert.Zero(t, torn, "torn records among %d read", seen)
}

// DeleteIf removes the objects picked, from either bucket, and keeps the
// overflow counts right.
func TestDeleteIf(t *testing.T) {
	tab := newTable(t, 2000)
	keys := firstBucketZero(tab)
	for i, k := range keys {
		require.True(t, tab.Insert(k, record(k, uint32(i%2))))
	}
	require.NotZero(t, tab.buckets[0].Overflow)
	deleted := tab.DeleteIf(func(o *Object) bool { return o.Cache>>20 == 1 })
	assert.Equal(t, len(keys)/2, deleted)
	for key, obj := range walk(tab) {
		assert.Zero(t, obj.Cache>>20, "key %#x", key)
	}
	assert.Equal(t, len(keys)-deleted, len(walk(tab)))
	tab.DeleteIf(func(*Object) bool { return true })
	assert.Zero(t, tab.buckets[0].Overflow)
	assert.Empty(t, walk(tab))
}

// The parts of a walk see every object once.
func TestWalkParts(t *testing.T) {
	tab := newTable(t, 1000)
	for k := uint64(1); k <= 1000; k++ {
		require.True(t, tab.Insert(k<<6, record(k<<6, 1)))
	}
	for _, n := range []int{1, 2, 3, 7} {
		seen := map[uint64]int{}
		for i := range n {
			tab.WalkPart(i, n, func(o *Object) { seen[o.Key]++ })
		}
		require.Len(t, seen, 1000, "%d parts", n)
		for key, times := range seen {
			require.Equal(t, 1, times, "key %#x in %d parts", key, n)
		}
	}
}

func TestNewRefusesPartialBuckets(t *testing.T) {
	_, err := New(make([]byte, BucketSize+8))
	assert.ErrorContains(t, err, "whole number")
	_, err = New(nil)
	assert.Error(t, err)
}
