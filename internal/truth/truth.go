// Package truth checks the tracker against the kernel's own object counts
// and finds the caches whose frees the tracepoints never see (slab sheaves,
// kfree_rcu batching, bulk frees): left alone, every object of such a cache
// becomes a phantom leak once it passes min_age.
package truth

import (
	"math"
	"time"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

// strikesToUntrace is how many scans in a row a cache must fail the check.
// The check is sound on its own (see Check); the second scan guards against
// a slab count that is somehow off once.
const strikesToUntrace = 2

// UntracedCache is a cache found to have untraced frees.
type UntracedCache struct {
	ID     kmem.CacheID
	Name   string
	Old    int64 // tracked objects allocated before the kernel was asked
	Bound  int64 // the count above which the cache is untracked (see bound)
	Reason string
	Kernel int64 // the kernel's count of allocated objects
}

// Checker remembers, across scans, which caches failed the check.
type Checker struct {
	baseline  map[string]int64 // the kernel's counts before the probes attached
	firstSeen map[kmem.CacheID]uint64
	strikes   map[kmem.CacheID]int
	untraced  map[kmem.CacheID]string
}

// NewChecker returns a Checker that has found nothing yet. baseline is the
// kernel's count per cache read before the probes attached.
func NewChecker(baseline map[string]int64) *Checker {
	return &Checker{
		baseline:  baseline,
		firstSeen: map[kmem.CacheID]uint64{},
		strikes:   map[kmem.CacheID]int{},
		untraced:  map[kmem.CacheID]string{},
	}
}

// Result is what one check found.
type Result struct {
	Untraced []UntracedCache // caches found untraced in this scan
	// Stale are the caches untraced earlier that still have entries,
	// allocated before the probes learned of it: phantoms too, to delete.
	Stale []kmem.CacheID
	// Bounds is, per cache name, the most objects allocated before the
	// cutoff that the cache can truly hold (see bound), or 0 when it holds
	// more than that: a suspect group larger than its bound is, or may be,
	// made of phantoms.
	Bounds map[string]int64
}

// Check bounds, per cache, the tracked objects allocated before the
// snapshot's cutoff by what kernel, the kernel's counts read after the
// cutoff and before the scan, allows (see bound), and drops the objects of
// every untraced cache from snap. It returns the caches that just crossed
// their bound.
func (c *Checker) Check(snap *kmem.Snapshot, kernel map[string]int64) Result {
	res := Result{Bounds: map[string]int64{}}
	// No pass over the objects while no cache is untraced.
	if len(c.untraced) > 0 {
		res.Stale = snap.Remove(func(id kmem.CacheID) bool { _, done := c.untraced[id]; return done })
	}
	// Strikes must come in consecutive scans: only this scan's carry over.
	strikes := map[kmem.CacheID]int{}
	for id, old := range c.count(snap) {
		if id.IsKmallocLarge() {
			continue
		}
		name := snap.CacheName(id)
		b, known := c.bound(snap, id, name, kernel)
		if !known {
			continue
		}
		// A cache over its bound holds phantoms, and which of its objects
		// they are is unknown: none of its groups is believable.
		report := b.report
		if old > b.withhold {
			report = 0
		}
		if prev, seen := res.Bounds[name]; !seen || report < prev {
			res.Bounds[name] = report
		}
		if old <= b.untrace {
			continue
		}
		if strikes[id] = c.strikes[id] + 1; strikes[id] < strikesToUntrace {
			continue
		}
		delete(strikes, id)
		c.untraced[id] = name
		res.Untraced = append(res.Untraced, UntracedCache{ID: id, Name: name, Old: old, Bound: b.untrace, Kernel: kernel[name], Reason: b.reason()})
	}
	c.strikes = strikes
	if len(res.Untraced) > 0 {
		snap.Remove(func(id kmem.CacheID) bool { return c.untraced[id] != "" })
	}
	return res
}

// count counts each cache's objects allocated before cutoff, and notes
// when the check first saw old objects of a cache.
func (c *Checker) count(snap *kmem.Snapshot) map[kmem.CacheID]int64 {
	out := map[kmem.CacheID]int64{}
	for key, t := range snap.Groups() {
		if t.Old == 0 {
			continue
		}
		id := key.Cache
		if _, ok := c.firstSeen[id]; !ok {
			c.firstSeen[id] = snap.TakenNs
		}
		out[id] += t.Old
	}
	return out
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

func (b bounds) reason() string {
	if b.unconfirmed {
		return "no traced free since attach, and more tracked objects than the kernel's count grew by"
	}
	return "more tracked objects than the kernel has allocated"
}

// bound computes a cache's bounds. Each of its tracked objects allocated
// before the cutoff was alive when it was read, so alive all along from the
// cutoff, so counted by the kernel: never more than the kernel's count. And
// if the cache has not shown one traced free since the probes attached,
// then, unless its frees go unseen, none of its objects was freed and the
// tracked ones are all new: never more than the kernel's count grew by,
// give or take the batches in which that count moves. known is false when
// the kernel has no count under that name.
func (c *Checker) bound(snap *kmem.Snapshot, id kmem.CacheID, name string, kernel map[string]int64) (b bounds, known bool) {
	now, known := kernel[name]
	if !known {
		return b, false
	}
	before, hasBaseline := c.baseline[name]
	if id.Allocator != kmem.Slab || snap.Freed[id.Key] || !hasBaseline {
		return bounds{report: now, withhold: now, untrace: now}, true
	}
	growth := max(0, now-before)
	slack := max(unconfirmedMinSlack, now*unconfirmedSlackShare/100)
	// Reported up to the slack too: a slow leak in a cache that never
	// frees fills slabs the count already holds, and the count catches up
	// only a whole slab at a time.
	b = bounds{report: growth + slack, withhold: growth + slack, untrace: math.MaxInt64, unconfirmed: true}
	if first := c.firstSeen[id]; snap.TakenNs-first >= uint64(unconfirmedMinAge) {
		b.untrace = max(unconfirmedMinObjects-1, growth+slack)
	}
	return b, true
}

// Forget drops what the check knows of a cache, for another cache created
// at its address: the new one starts with no baseline (the old one's count
// went with it), no strikes, and tracked.
func (c *Checker) Forget(id kmem.CacheID, name string) {
	delete(c.baseline, name)
	delete(c.firstSeen, id)
	delete(c.strikes, id)
	delete(c.untraced, id)
}

// Untraced lists every cache found so far, by name.
func (c *Checker) Untraced() map[kmem.CacheID]string {
	return c.untraced
}
