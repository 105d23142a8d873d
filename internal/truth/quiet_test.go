package truth

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

// quietScan is one scan of a slab cache that has shown no traced free: the
// objects the probes hold, by allocation time, and the kernel's count.
type quietScan struct {
	objects []uint64 // allocation times, CLOCK_MONOTONIC
	kernel  int64
}

// runQuiet plays scans every scanEvery from firstCutoff through a Checker,
// as the scanner does (each scan's ages give the previous scan's cutoff),
// and returns each scan's result.
func runQuiet(t *testing.T, name string, scans []quietScan) []Result {
	t.Helper()
	const key = 0xffff888100b00000
	c := NewChecker()
	var results []Result
	var previous uint64
	for i, s := range scans {
		cutoff := uint64(firstCutoff + time.Duration(i)*scanEvery)
		snap := &kmem.Snapshot{
			TakenNs:    cutoff + uint64(scanTook),
			CacheNames: map[uint64]string{key: name},
			Freed:      map[uint64]bool{},
		}
		snap.Begin(kmem.Ages{Now: cutoff, Cutoff: cutoff, Previous: previous})
		for j, at := range s.objects {
			require.Less(t, at, cutoff, "scan %d: only old objects", i+1)
			obj := kmem.Object{Address: 0xffff888200000000 + uint64(j)*2368, AllocNs: at, CallSite: 0xffffffff81a00000,
				Cache: key, Bytes: 2368, Allocator: kmem.Slab, StackID: -1}
			snap.Add(&obj)
		}
		results = append(results, c.Check(snap, map[string]int64{name: s.kernel}))
		previous = cutoff
	}
	return results
}

// The TCP case: another program closed hundreds of sockets just before
// Start, after the baseline was read or into slabs SLUB still counts as
// active, so when a service then opens 400 connections and holds them, the
// kernel's count of TCP does not grow at all. No socket has been freed
// since attach. The 400 sockets are real: nothing vanished, the count holds
// them. They were withheld while the bound was the count's growth (0) plus
// the slack (32), and the cache was untracked 30 s later as if its frees
// went unseen.
func TestQuietCacheHoldingRealObjectsIsBelieved(t *testing.T) {
	const held, kernel = 400, 480
	sockets := make([]uint64, held)
	for i := range sockets {
		sockets[i] = uint64(firstCutoff) - uint64(5*time.Second) + uint64(i)*uint64(time.Millisecond)
	}
	scans := make([]quietScan, 8)
	for i := range scans {
		scans[i] = quietScan{objects: sockets, kernel: kernel}
	}
	results := runQuiet(t, "TCP", scans)
	for i, res := range results {
		assert.Empty(t, res.Untraced, "scan %d: TCP untracked", i+1)
		if i == 0 {
			// Not yet seen to keep its objects across a scan.
			assert.Equal(t, map[string]int64{"TCP": 0}, res.Bounds, "scan 1")
			continue
		}
		assert.Equal(t, map[string]int64{"TCP": kernel}, res.Bounds, "scan %d: the 400 sockets are believed up to the kernel's count", i+1)
	}
}

// maple_node on Linux 6.18: its frees bypass the tracepoints and its slots
// are handed out again at once, so the probes' entries are replaced
// (missed frees) and the objects that were old at one scan are gone at the
// next. With a flat count of 600 and 500 tracked, the count alone would
// believe them; the vanished objects convict the cache in two scans,
// whatever the count did before Start.
func TestQuietCacheWhoseObjectsVanishIsUntracked(t *testing.T) {
	const kernel = 600
	scans := make([]quietScan, 3)
	for i := range scans {
		// 500 objects, all allocated since the previous scan.
		cutoff := uint64(firstCutoff + time.Duration(i)*scanEvery)
		objs := make([]uint64, 500)
		for j := range objs {
			objs[j] = cutoff - 1 - uint64(j)*uint64(time.Millisecond)
		}
		scans[i] = quietScan{objects: objs, kernel: kernel}
	}
	results := runQuiet(t, "maple_node", scans)
	for i, res := range results {
		assert.Equal(t, map[string]int64{"maple_node": 0}, res.Bounds, "scan %d: withheld", i+1)
	}
	assert.Empty(t, results[0].Untraced, "scan 1: nothing to compare with")
	assert.Empty(t, results[1].Untraced, "scan 2: a first strike")
	require.Len(t, results[2].Untraced, 1, "scan 3: the second strike")
	got := results[2].Untraced[0]
	assert.Equal(t, "maple_node", got.Name)
	assert.Equal(t, int64(500), got.Vanished)
	assert.Equal(t, noFreeVanished, got.Reason)
}
