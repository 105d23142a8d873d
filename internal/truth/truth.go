// Package truth checks the tracker against the kernel's own object counts
// and finds the caches whose frees the tracepoints never see (slab sheaves,
// kfree_rcu batching, bulk frees): left alone, every object of such a cache
// becomes a phantom leak once it passes min_age.
package truth

import (
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
	Reason string
	Kernel int64 // the kernel's count of allocated objects, which Old must not pass
	// Vanished are the tracked objects of a cache with no traced free
	// that were old at the previous scan and are gone at this one.
	Vanished int64
}

// Checker remembers, across scans, which caches failed the check.
type Checker struct {
	// prevOld is, per cache, how many tracked objects the previous scan
	// found allocated before its cutoff.
	prevOld  map[kmem.CacheID]int64
	strikes  map[kmem.CacheID]int
	untraced map[kmem.CacheID]string
}

// NewChecker returns a Checker that has found nothing yet.
func NewChecker() *Checker {
	return &Checker{
		prevOld:  map[kmem.CacheID]int64{},
		strikes:  map[kmem.CacheID]int{},
		untraced: map[kmem.CacheID]string{},
	}
}

// Result is what one check found.
type Result struct {
	Untraced []UntracedCache // caches found untraced in this scan
	// Stale are the caches untraced earlier that still have entries,
	// allocated before the probes learned of it: phantoms too, to delete.
	Stale []kmem.CacheID
	// Bounds is, per cache name, the most objects allocated before the
	// cutoff that the cache can truly hold (the kernel's count), or 0 when
	// none of its groups is believable: it holds more than that, or it
	// has shown no traced free and has not yet kept its objects across a
	// scan (see bound). A suspect group larger than its bound is, or may
	// be, made of phantoms.
	Bounds map[string]int64
}

// Check bounds, per cache, the tracked objects allocated before the
// snapshot's cutoff by what the kernel's counts, read after the cutoff and
// before the scan, allow (see bound), and drops the objects of every
// untraced cache from snap. It returns the caches that just crossed their
// bound. snap's Ages.Previous must be the cutoff of the snapshot of the
// previous Check, or 0.
func (c *Checker) Check(snap *kmem.Snapshot, kernel map[string]int64) Result {
	res := Result{Bounds: map[string]int64{}}
	// No pass over the objects while no cache is untraced.
	if len(c.untraced) > 0 {
		res.Stale = snap.Remove(func(id kmem.CacheID) bool { _, done := c.untraced[id]; return done })
	}
	// Strikes must come in consecutive scans: only this scan's carry over.
	strikes := map[kmem.CacheID]int{}
	counts := count(snap)
	for id, n := range counts {
		if id.IsKmallocLarge() {
			continue
		}
		name := snap.CacheName(id)
		b, known := c.bound(snap, id, name, n, kernel)
		if !known {
			continue
		}
		report := b.report
		if n.old > b.count {
			// A cache over its count holds phantoms, and which of its
			// objects they are is unknown: none of its groups is
			// believable.
			report = 0
		}
		if prev, seen := res.Bounds[name]; !seen || report < prev {
			res.Bounds[name] = report
		}
		if n.old <= b.count && b.vanished == 0 {
			continue
		}
		if strikes[id] = c.strikes[id] + 1; strikes[id] < strikesToUntrace {
			continue
		}
		delete(strikes, id)
		c.untraced[id] = name
		res.Untraced = append(res.Untraced, UntracedCache{ID: id, Name: name, Old: n.old, Kernel: b.count, Reason: b.reason(n.old),
			Vanished: b.vanished})
	}
	c.strikes = strikes
	c.prevOld = make(map[kmem.CacheID]int64, len(counts))
	for id, n := range counts {
		c.prevOld[id] = n.old
	}
	if len(res.Untraced) > 0 {
		snap.Remove(func(id kmem.CacheID) bool { return c.untraced[id] != "" })
	}
	return res
}

// oldCount is a cache's tracked objects allocated before the cutoff, and
// of them those allocated before the previous scan's cutoff.
type oldCount struct{ old, kept int64 }

// count counts each cache's objects allocated before the cutoff.
func count(snap *kmem.Snapshot) map[kmem.CacheID]oldCount {
	out := map[kmem.CacheID]oldCount{}
	for key, t := range snap.Groups() {
		if t.Old == 0 {
			continue
		}
		n := out[key.Cache]
		n.old += t.Old
		n.kept += t.Kept
		out[key.Cache] = n
	}
	return out
}

// bounds limit what a cache can truly hold of the tracked objects allocated
// before the cutoff.
type bounds struct {
	count  int64 // the kernel's count: above it, in consecutive scans, the cache is untracked
	report int64 // no reported group holds more
	// vanished: the cache has shown no traced free, yet tracked objects
	// old at the previous scan are gone; in consecutive scans, the cache
	// is untracked.
	vanished int64
}

// Why a cache is untracked, for its WARN line.
const (
	reasonOverCount = "more tracked objects than the kernel has allocated"
	reasonVanished  = "no traced free since attach, yet tracked objects vanished: its frees go unseen"
)

func (b bounds) reason(old int64) string {
	if old > b.count {
		return reasonOverCount
	}
	return reasonVanished
}

// bound computes a cache's bounds. Each of its tracked objects allocated
// before the cutoff was alive when the kernel counted, so it cannot hold
// more of them than the kernel's count: that bound is sound for every
// cache, whatever happened before Start.
//
// A cache whose frees never reach the tracepoints (maple_node's sheaves and
// kfree_rcu batches on 6.18) can hold phantoms below its count, since the
// count also holds the objects allocated before attach. Such a cache shows
// no traced free, so the check asks more of a cache that has shown none:
// that its tracked objects stay. Without a traced free an entry leaves the
// table only when the kernel hands its address out again (the probes take
// the new allocation for a missed free, and replace the entry), and SLUB
// hands freed objects out again first; so objects that were old at the
// previous scan and are gone now were freed unseen. Until a scan has shown
// the cache keeping them, its groups are withheld; once it has, its own
// count bounds it, as if it had shown a free. How much the count moved
// since Start plays no part: frees just before Start, or slabs SLUB counts
// as active while their objects are free, say nothing of what the probes
// saw since.
func (c *Checker) bound(snap *kmem.Snapshot, id kmem.CacheID, name string, n oldCount, kernel map[string]int64) (b bounds, known bool) {
	now, known := kernel[name]
	if !known {
		return b, false
	}
	b = bounds{count: now, report: now}
	if id.Allocator != kmem.Slab || snap.Freed[id.Key] {
		return b, true
	}
	prev, watched := c.prevOld[id]
	if b.vanished = max(0, prev-n.kept); b.vanished > 0 || !watched {
		b.report = 0
	}
	return b, true
}

// Forget drops what the check knows of a cache, for another cache created
// at its address: the new one starts with no strikes, unwatched, and
// tracked.
func (c *Checker) Forget(id kmem.CacheID) {
	delete(c.prevOld, id)
	delete(c.strikes, id)
	delete(c.untraced, id)
}

// Untraced lists every cache found so far, by name.
func (c *Checker) Untraced() map[kmem.CacheID]string {
	return c.untraced
}
