// Package truth checks the tracker against the kernel's own object counts
// and finds the caches whose frees the tracepoints never see (slab sheaves,
// kfree_rcu batching, bulk frees): left alone, every object of such a cache
// becomes a phantom leak once it passes min_age.
package truth

import (
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

// strikesToUntrace is how many scans in a row a cache must fail the check.
// The check is sound on its own (see Check); the second scan guards against
// a slab count that is somehow off once.
const strikesToUntrace = 2

// Verdict names a cache found to have untraced frees.
type Verdict struct {
	ID     tracker.CacheID
	Name   string
	Old    int64    // tracked objects allocated before the kernel was asked
	Kernel int64    // the kernel's count of allocated objects
	Addrs  []uint64 // its live entries in the snapshot, to delete
}

// Checker remembers, across scans, which caches failed the check.
type Checker struct {
	strikes  map[tracker.CacheID]int
	untraced map[tracker.CacheID]string
}

// NewChecker returns a Checker that has found nothing yet.
func NewChecker() *Checker {
	return &Checker{strikes: map[tracker.CacheID]int{}, untraced: map[tracker.CacheID]string{}}
}

// Result is what one check found.
type Result struct {
	Verdicts []Verdict // caches found untraced in this scan
	// Stale are the entries of caches untraced earlier, allocated before
	// the probes learned of it: they are phantoms too, to delete.
	Stale []uint64
}

// Check compares, per cache, the tracked objects allocated before cutoff
// with kernel, the kernel's counts read after cutoff and before the scan.
// Each such object was alive when it was read, so alive all along from
// cutoff, so counted by the kernel: a cache with more of them than the
// kernel has allocated holds phantoms, objects freed without a trace event.
// Check drops the objects of every untraced cache from snap, and returns
// the caches that just crossed the line.
func (c *Checker) Check(snap *tracker.Snapshot, cutoff uint64, kernel map[string]int64) Result {
	var res Result
	old := map[tracker.CacheID]int64{}
	sample := map[tracker.CacheID]tracker.Object{}
	kept := snap.Objects[:0]
	for _, obj := range snap.Objects {
		id := tracker.CacheOf(obj)
		if _, done := c.untraced[id]; done {
			res.Stale = append(res.Stale, obj.Address)
			continue
		}
		kept = append(kept, obj)
		if obj.AllocNs >= cutoff {
			continue
		}
		if old[id] == 0 {
			sample[id] = obj
		}
		old[id]++
	}
	snap.Objects = kept

	for id, n := range old {
		if id.Key == tracker.KmallocLargeKey {
			continue
		}
		name := snap.CacheName(sample[id])
		k, known := kernel[name]
		if !known || n <= k {
			delete(c.strikes, id)
			continue
		}
		if c.strikes[id]++; c.strikes[id] < strikesToUntrace {
			continue
		}
		delete(c.strikes, id)
		c.untraced[id] = name
		res.Verdicts = append(res.Verdicts, Verdict{ID: id, Name: name, Old: n, Kernel: k})
	}
	if len(res.Verdicts) > 0 {
		c.dropObjects(snap, res.Verdicts)
	}
	return res
}

// dropObjects moves the objects of the verdicts' caches out of snap and
// into the verdicts' Addrs.
func (c *Checker) dropObjects(snap *tracker.Snapshot, verdicts []Verdict) {
	index := make(map[tracker.CacheID]int, len(verdicts))
	for i, v := range verdicts {
		index[v.ID] = i
	}
	kept := snap.Objects[:0]
	for _, obj := range snap.Objects {
		if i, ok := index[tracker.CacheOf(obj)]; ok {
			verdicts[i].Addrs = append(verdicts[i].Addrs, obj.Address)
			continue
		}
		kept = append(kept, obj)
	}
	snap.Objects = kept
}

// Untraced lists every cache found so far, by name.
func (c *Checker) Untraced() map[tracker.CacheID]string {
	return c.untraced
}
