package scan

import (
	"go.uber.org/zap"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

// cacheFilter applies the caches: setting. The probes skip a cache once
// told; objects allocated before that are deleted from the map by the scan
// that meets the cache.
type cacheFilter struct {
	tracks func(cache string) bool // nil: every cache is tracked
	// seen holds the slab caches met so far and the kmalloc caches: true
	// if the filter leaves them out.
	seen        map[kmem.CacheID]bool
	filteredOut int // how many of them it leaves out
}

// skipKmalloc tells the probes which kmalloc caches the filter leaves out.
// Their objects allocated before the probes were told are deleted by the
// scans, as those of slab caches are.
func (f *cacheFilter) skipKmalloc(probes Probes) error {
	if f.tracks == nil {
		return nil
	}
	for _, id := range probes.KmallocCaches() {
		if !f.tracks(kmem.KmallocName(id)) {
			if err := probes.Untrack(id); err != nil {
				return err
			}
			f.seen[id] = true
			f.filteredOut++
		}
	}
	return nil
}

// forget drops what the filter decided about a cache, for another cache
// created at its address.
func (f *cacheFilter) forget(id kmem.CacheID) {
	if f.seen[id] {
		f.filteredOut--
	}
	delete(f.seen, id)
}

// apply applies the filter to the slab caches the probes met since the
// last scan, and drops the objects of filtered caches from the snapshot
// and the map (those allocated before the probes were told).
func (f *cacheFilter) apply(snap *kmem.Snapshot, probes Probes, log *zap.Logger) {
	if f.tracks == nil {
		return
	}
	fresh := map[kmem.CacheID]bool{}
	for key, name := range snap.CacheNames {
		id := kmem.CacheID{Allocator: kmem.Slab, Key: key}
		if _, seen := f.seen[id]; !seen {
			f.seen[id] = !f.tracks(name)
			fresh[id] = f.seen[id]
			if f.seen[id] {
				f.filteredOut++
			}
		}
	}
	// Filters that leave no slab cache out (an include list that matches
	// them all) cost no pass over the objects.
	if f.filteredOut == 0 {
		return
	}
	removed := snap.Remove(func(id kmem.CacheID) bool { return f.seen[id] })
	for id, skip := range fresh {
		if skip {
			if err := probes.Untrack(id); err != nil {
				log.Error("Leaving out a filtered cache failed", zap.String("cache", snap.CacheNames[id.Key]), zap.Error(err))
			}
		}
	}
	if len(removed) > 0 {
		if err := probes.DeleteCaches(removed); err != nil {
			log.Error("Deleting objects of filtered caches failed", zap.Error(err))
		}
	}
}
