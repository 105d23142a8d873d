//go:build linux && (amd64 || arm64)

package livetable

import (
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmemleak/kmemleakreceiver/bpf"
)

// newYoung returns a young area of the given number of slots, in Go memory.
func newYoung(t testing.TB, slots int) *Young {
	t.Helper()
	words := make([]uint64, slots*YoungSlotSize/8)
	y, err := NewYoung(unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8))
	require.NoError(t, err)
	return y
}

func walkYoung(y *Young) map[uint64]int {
	out := map[uint64]int{}
	y.Walk(func(o *Object) { out[o.Key]++ })
	return out
}

// sameSlot returns n addresses that share a young slot.
func sameSlot(y *Young, n int) []uint64 {
	var keys []uint64
	want := y.slot(64)
	for k := uint64(64); len(keys) < n; k += 64 {
		if y.slot(k) == want {
			keys = append(keys, k)
		}
	}
	return keys
}

func TestYoungSlots(t *testing.T) {
	for cpus, want := range map[int]uint32{0: 8192, 1: 8192, 2: 8192, 3: 16384, 4: 16384, 5: 32768, 64: 262144, 1024: 262144} {
		assert.Equal(t, want, YoungSlots(cpus), "%d CPUs", cpus)
	}
}

func TestNewYoungRefusesPartialSlots(t *testing.T) {
	_, err := NewYoung(make([]byte, YoungSlotSize+8))
	assert.ErrorContains(t, err, "whole number")
	assert.Equal(t, 64, YoungSlotSize, "a slot is one cache line")
}

// An object freed while young never touches the live table.
func TestYoungInsertWalkDelete(t *testing.T) {
	y, live := newYoung(t, 4096), newTable(t, 1000)
	inserted := 0
	for k := uint64(1); k <= 100; k++ {
		if r, full := y.Insert(k<<6, record(k<<6, uint32(k)), live); r == YoungNew && !full {
			inserted++
		}
	}
	require.Equal(t, 100, inserted)
	seen := map[uint64]bool{}
	y.Walk(func(o *Object) {
		seen[o.Key] = true
		assert.True(t, consistent(o))
	})
	promoted := walk(live)
	assert.Len(t, seen, 100-len(promoted), "every object is in one place")
	for k := range promoted {
		assert.False(t, seen[k], "%#x in both places", k)
	}
	for k := uint64(1); k <= 100; k++ {
		assert.True(t, y.Delete(k<<6, live), "%#x", k<<6)
		assert.False(t, y.Delete(k<<6, live), "%#x deleted twice", k<<6)
	}
	assert.Empty(t, walkYoung(y))
	assert.Empty(t, walk(live))
}

// An allocation whose slot holds a live object moves that object into
// the live table, with its record.
func TestYoungPromotesTheSlotsObject(t *testing.T) {
	y, live := newYoung(t, 64), newTable(t, 1000)
	keys := sameSlot(y, 3)
	for i, k := range keys {
		r, full := y.Insert(k, record(k, uint32(i+1)), live)
		require.Equal(t, YoungNew, r)
		require.False(t, full)
	}
	assert.Equal(t, map[uint64]int{keys[2]: 1}, walkYoung(y))
	moved := walk(live)
	require.Len(t, moved, 2)
	for i, k := range keys[:2] {
		obj, ok := moved[k]
		require.True(t, ok, "%#x not moved", k)
		assert.True(t, consistent(&Object{Key: k, KmemleakObject: obj}))
		assert.Equal(t, uint64(i+1)<<20, obj.Cache, "%#x moved with another's record", k)
	}
	for _, k := range keys {
		assert.True(t, y.Delete(k, live), "%#x", k)
	}
	assert.Empty(t, walkYoung(y))
	assert.Empty(t, walk(live))
}

// An address allocated again while its young entry is there (a free the
// probes missed) replaces the entry.
func TestYoungReplacesAStaleEntry(t *testing.T) {
	y, live := newYoung(t, 64), newTable(t, 100)
	r, _ := y.Insert(0x1000, record(0x1000, 1), live)
	require.Equal(t, YoungNew, r)
	r, _ = y.Insert(0x1000, record(0x1000, 2), live)
	require.Equal(t, YoungReplaced, r)
	var got []*Object
	y.Walk(func(o *Object) { c := *o; got = append(got, &c) })
	require.Len(t, got, 1)
	assert.Equal(t, uint64(2)<<20, got[0].Cache)
	assert.Empty(t, walk(live))
}

// moving returns a young area whose object at k a mover has just taken
// (its slot flagged YOUNG_PROMOTING), the live table behind it, and the slot.
func moving(t *testing.T, k uint64) (*Young, *Table, *bpf.KmemleakYoungSlot) {
	t.Helper()
	y, live := newYoung(t, 64), newTable(t, 100)
	r, _ := y.Insert(k, record(k, 1), live)
	require.Equal(t, YoungNew, r)
	s := y.slot(k)
	require.True(t, atomic.CompareAndSwapUint64(&s.Key, k, k|promoting))
	return y, live, s
}

// A slot whose object is being moved is skipped by walks, which read the
// live table first: the object is counted in one place or the other, never
// both. An allocation at the moved object's own address is not tracked
// (the mover may yet delete what it inserted), and tells the mover that
// the object was freed.
func TestYoungSlotBeingMoved(t *testing.T) {
	const k = 0x4000
	y, live, s := moving(t, k)
	assert.Empty(t, walkYoung(y), "an object being moved is walked")
	assert.Zero(t, y.DeleteIf(func(*Object) bool { return true }))

	other := sameSlot(y, 2)[1]
	if y.slot(other) == s && other != k {
		r, _ := y.Insert(other, record(other, 2), live)
		assert.Equal(t, YoungBusy, r, "another address goes to the live table")
		assert.Contains(t, walk(live), other)
	}
	r, _ := y.Insert(k, record(k, 3), live)
	assert.Equal(t, YoungRaced, r)
	assert.Equal(t, k|promoting|freedFlag, atomic.LoadUint64(&s.Key), "the mover is told the object was freed")
}

// A free that comes while its object is being moved flags the slot, and
// the mover deletes what it inserted.
func TestYoungFreeWhileMoved(t *testing.T) {
	const k = 0x8000
	y, live, s := moving(t, k)
	assert.True(t, y.Delete(k, live), "the free of an object being moved is tracked")
	assert.Equal(t, k|promoting|freedFlag, atomic.LoadUint64(&s.Key))
	// The mover's part: insert, then read the flags, then undo.
	require.True(t, live.Insert(k, record(k, 1)))
	if atomic.SwapUint64(&s.Key, k|promoted)&freedFlag != 0 {
		live.Delete(k)
	}
	assert.Empty(t, walk(live), "a phantom from a free during a move")
}

func TestYoungDeleteIf(t *testing.T) {
	y, live := newYoung(t, 4096), newTable(t, 1000)
	for k := uint64(1); k <= 200; k++ {
		y.Insert(k<<6, record(k<<6, uint32(k%2)), live)
	}
	inYoung := len(walkYoung(y))
	deleted := y.DeleteIf(func(o *Object) bool { return o.Cache>>20 == 1 })
	assert.Positive(t, deleted)
	for key := range walkYoung(y) {
		assert.Zero(t, key>>6%2, "key %#x", key)
	}
	assert.Equal(t, inYoung-deleted, len(walkYoung(y)))
}

// Each of four writers allocates addresses and hands each object to the
// next writer to free, as a server's objects are allocated on one CPU and
// freed on another; the young area has a few slots, so that nearly every
// allocation moves another object into the live table, often one that is
// being freed at that moment. A reader walks both meanwhile and sees no
// torn record. Once every object is freed, nothing is left in either
// place (no phantom), and every free of a tracked object found it.
func TestYoungCrossFreesLeaveNoPhantom(t *testing.T) {
	const writers, perWriter = 4, 64
	y, live := newYoung(t, 8), newTable(t, writers*perWriter*4)
	// Buffered for every address, so that no send blocks.
	toFree, back := make([]chan uint64, writers), make([]chan uint64, writers)
	for i := range writers {
		toFree[i], back[i] = make(chan uint64, writers*perWriter), make(chan uint64, writers*perWriter)
	}
	owner := func(addr uint64) int { return int(addr>>6-1) / perWriter }
	var lost, raced, tracked, full atomic.Int64
	// free frees one object handed over (its low bit set when its
	// allocation was not tracked) and gives the address back.
	free := func(k uint64) {
		addr := k &^ 1
		if !y.Delete(addr, live) && k&1 == 0 {
			lost.Add(1)
		}
		back[owner(addr)] <- addr
	}
	var allocating, writing sync.WaitGroup
	// A count of allocations, not a time: on a loaded machine two seconds
	// were 5,567 of them once, too few to mean anything, and the test
	// failed for it.
	const allocations = 20_000
	enough := func() bool { return tracked.Load()+raced.Load() >= allocations }
	for w := range writers {
		allocating.Add(1)
		writing.Go(func() {
			var mine []uint64
			for i := range perWriter {
				mine = append(mine, uint64(w*perWriter+i+1)<<6)
			}
			for gen := uint32(1); !enough(); gen++ {
				for len(mine) > 0 {
					k := mine[len(mine)-1]
					mine = mine[:len(mine)-1]
					r, f := y.Insert(k, record(k, gen), live)
					if f {
						full.Add(1)
					}
					if r == YoungRaced {
						raced.Add(1)
						k |= 1
					} else {
						tracked.Add(1)
					}
					toFree[(w+1)%writers] <- k
				}
				for more := true; more; {
					select {
					case k := <-toFree[w]:
						free(k)
					case k := <-back[w]:
						mine = append(mine, k)
					default:
						more = false
					}
				}
			}
			allocating.Done()
			// No one allocates any more: free what is left.
			allocating.Wait()
			for {
				select {
				case k := <-toFree[w]:
					free(k)
				default:
					return
				}
			}
		})
	}
	var torn, seen atomic.Int64
	var reading sync.WaitGroup
	done := make(chan struct{})
	reading.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			check := func(o *Object) {
				seen.Add(1)
				if !consistent(o) {
					torn.Add(1)
				}
			}
			live.Walk(check)
			y.Walk(check)
		}
	})
	writing.Wait()
	close(done)
	reading.Wait()

	t.Logf("%d objects tracked, %d not for a race with their address's previous object; %d records read", tracked.Load(), raced.Load(), seen.Load())
	require.Zero(t, full.Load(), "the live table was full")
	assert.Zero(t, lost.Load(), "frees of tracked objects that found nothing")
	assert.Zero(t, torn.Load(), "torn records among %d read", seen.Load())
	assert.Empty(t, walkYoung(y), "phantoms in the young area")
	assert.Empty(t, walk(live), "phantoms in the live table")
}
