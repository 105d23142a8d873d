// Package truth checks the tracker against the kernel's own object counts
// and finds the caches whose frees the tracepoints never see (slab sheaves,
// kfree_rcu batching, bulk frees): left alone, every object of such a cache
// becomes a phantom leak once it passes min_age.
package truth

import (
	"math"
	"time"

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
	Old    int64 // tracked objects allocated before the kernel was asked
	Bound  int64 // the count above which the cache is untracked (see bound)
	Reason string
	Kernel int64    // the kernel's count of allocated objects
	Addrs  []uint64 // its live entries in the snapshot, to delete
}

// Checker remembers, across scans, which caches failed the check.
type Checker struct {
	baseline  map[string]int64 // the kernel's counts before the probes attached
	firstSeen map[tracker.CacheID]uint64
	strikes   map[tracker.CacheID]int
	untraced  map[tracker.CacheID]string
}

// NewChecker returns a Checker that has found nothing yet. baseline is the
// kernel's count per cache read before the probes attached.
func NewChecker(baseline map[string]int64) *Checker {
	return &Checker{
		baseline:  baseline,
		firstSeen: map[tracker.CacheID]uint64{},
		strikes:   map[tracker.CacheID]int{},
		untraced:  map[tracker.CacheID]string{},
	}
}

// Result is what one check found.
type Result struct {
	Verdicts []Verdict // caches found untraced in this scan
	// Stale are the entries of caches untraced earlier, allocated before
	// the probes learned of it: they are phantoms too, to delete.
	Stale []uint64
	// Bounds is, per cache name, the most objects allocated before the
	// cutoff that the cache can truly hold (see bound), or 0 when it holds
	// more than that: a suspect group larger than its bound is, or may be,
	// made of phantoms.
	Bounds map[string]int64
}

// Check bounds, per cache, the tracked objects allocated before cutoff by
// what kernel, the kernel's counts read after cutoff and before the scan,
// allows (see bound), and drops the objects of every untraced cache from
// snap. It returns the caches that just crossed their bound.
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
			if _, ok := c.firstSeen[id]; !ok {
				c.firstSeen[id] = snap.TakenNs
			}
		}
		old[id]++
	}
	snap.Objects = kept

	res.Bounds = map[string]int64{}
	// Strikes must come in consecutive scans: only this scan's carry over.
	strikes := map[tracker.CacheID]int{}
	for id, n := range old {
		if id.Key == tracker.KmallocLargeKey {
			continue
		}
		name := snap.CacheName(sample[id])
		b, known := c.bound(snap, id, name, kernel)
		if !known {
			continue
		}
		// A cache over its bound holds phantoms, and which of its objects
		// they are is unknown: none of its groups is believable.
		report := b.report
		if n > b.withhold {
			report = 0
		}
		if prev, seen := res.Bounds[name]; !seen || report < prev {
			res.Bounds[name] = report
		}
		if n <= b.untrace {
			continue
		}
		if strikes[id] = c.strikes[id] + 1; strikes[id] < strikesToUntrace {
			continue
		}
		delete(strikes, id)
		c.untraced[id] = name
		reason := "more tracked objects than the kernel has allocated"
		if b.unconfirmed {
			reason = "no traced free since attach, and more tracked objects than the kernel's count grew by"
		}
		res.Verdicts = append(res.Verdicts, Verdict{ID: id, Name: name, Old: n, Bound: b.untrace, Kernel: kernel[name], Reason: reason})
	}
	c.strikes = strikes
	if len(res.Verdicts) > 0 {
		c.dropObjects(snap, res.Verdicts)
	}
	return res
}

// Evidence the check asks of a cache that has shown no traced free before
// it untracks it: the kernel's "active" count is exact as an upper bound,
// but moves by whole per-CPU batches as objects migrate between per-CPU and
// node free lists, so its growth is only a rough measure.
// A cache that merely has not freed anything yet (DAMON splits regions for
// seconds before it merges any) is not convicted: it must have gone
// unconfirmedMinAge without a traced free.
const (
	unconfirmedMinObjects = 64
	unconfirmedMinSlack   = 32
	unconfirmedSlackShare = 3 // percent of the kernel's count
	unconfirmedMinAge     = 30 * time.Second
)

// bounds limit what a cache can truly hold of the tracked objects allocated
// before the cutoff.
type bounds struct {
	report      int64 // no reported group holds more
	withhold    int64 // above it, the cache holds phantoms: withhold all its groups
	untrace     int64 // above it, in consecutive scans, the cache is untracked
	unconfirmed bool  // the cache has shown no traced free
}

// bound computes a cache's bounds. Each of its tracked objects allocated
// before the cutoff was alive when it was read, so alive all along from the
// cutoff, so counted by the kernel: never more than the kernel's count. And
// if the cache has not shown one traced free since the probes attached,
// then, unless its frees go unseen, none of its objects was freed and the
// tracked ones are all new: never more than the kernel's count grew by,
// give or take the batches in which that count moves. known is false when
// the kernel has no count under that name.
func (c *Checker) bound(snap *tracker.Snapshot, id tracker.CacheID, name string, kernel map[string]int64) (b bounds, known bool) {
	now, known := kernel[name]
	if !known {
		return b, false
	}
	before, hasBaseline := c.baseline[name]
	if id.Allocator != tracker.Slab || snap.Freed[id.Key] || !hasBaseline {
		return bounds{report: now, withhold: now, untrace: now}, true
	}
	growth := max(0, now-before)
	slack := max(unconfirmedMinSlack, now*unconfirmedSlackShare/100)
	b = bounds{report: growth, withhold: growth + slack, untrace: math.MaxInt64, unconfirmed: true}
	if first := c.firstSeen[id]; snap.TakenNs-first >= uint64(unconfirmedMinAge) {
		b.untrace = max(unconfirmedMinObjects-1, growth+slack)
	}
	return b, true
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
