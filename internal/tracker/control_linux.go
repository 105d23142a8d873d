//go:build linux && (amd64 || arm64)

package tracker

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/kmemleak/kmemleakreceiver/bpf"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/livetable"
)

// controlState mirrors what user space has written into the probes' maps,
// so that each change writes only what changed.
type controlState struct {
	stackSites  map[uint64]bool // the contents of the stack_sites map
	kmallocSkip bpf.KmemleakKmallocSkipTable
}

// Untrack stops tracking a cache (its frees go unseen, or the
// configuration filters it out). Its entries stay: DeleteCaches deletes
// those of any number of caches in one pass over the table.
func (t *Tracker) Untrack(id kmem.CacheID) error {
	switch id.Allocator {
	case kmem.Slab:
		var info bpf.KmemleakCacheInfo
		if err := t.maps.Caches.Lookup(id.Key, &info); err != nil {
			return fmt.Errorf("looking up slab cache %#x: %w", id.Key, err)
		}
		info.Skip = 1
		if err := t.maps.Caches.Update(id.Key, &info, ebpf.UpdateExist); err != nil {
			return fmt.Errorf("marking slab cache %#x skipped: %w", id.Key, err)
		}
	case kmem.Kmalloc:
		if err := t.skipKmalloc(id); err != nil {
			return err
		}
	default:
		return fmt.Errorf("cannot skip a cache of %s", id.Allocator)
	}
	return nil
}

// trackEveryCache clears the skip flag of every slab cache the probes
// know.
func (t *Tracker) trackEveryCache() error {
	var key uint64
	var info bpf.KmemleakCacheInfo
	var skipped []uint64
	it := t.maps.Caches.Iterate()
	for it.Next(&key, &info) {
		if info.Skip != 0 {
			skipped = append(skipped, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading slab caches: %w", err)
	}
	for _, key := range skipped {
		if err := t.maps.Caches.Lookup(key, &info); err != nil {
			continue // destroyed meanwhile
		}
		info.Skip = 0
		if err := t.maps.Caches.Update(key, &info, ebpf.UpdateExist); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("tracking slab cache %#x again: %w", key, err)
		}
	}
	return nil
}

// skipKmalloc sets the kmalloc cache's flag in the probes' skip table.
func (t *Tracker) skipKmalloc(id kmem.CacheID) error {
	family, bytes := id.Kmalloc()
	table := &t.control.kmallocSkip.Skip
	f, slot := int(bpfKmallocFamilies[family]), int(t.scan.kmallocSizes.slabSize(bytes)/8)
	if id.IsKmallocLarge() || f >= len(table) || slot >= len(table[f]) {
		return fmt.Errorf("%s is no kmalloc slab cache and cannot be skipped", kmem.KmallocName(id))
	}
	table[f][slot] = 1
	if err := t.maps.KmallocSkip.Update(uint32(0), &t.control.kmallocSkip, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("marking %s skipped: %w", kmem.KmallocName(id), err)
	}
	return nil
}

// KmallocCaches lists every kmalloc cache the probes can skip: each slot
// of their skip table, a size class or not, by the size its objects are
// named by.
func (t *Tracker) KmallocCaches() []kmem.CacheID {
	var out []kmem.CacheID
	seen := map[kmem.CacheID]bool{}
	slots := len(t.control.kmallocSkip.Skip[0]) // as many for every family
	for _, family := range kmem.KmallocFamilies {
		for slot := 1; slot < slots; slot++ {
			id := kmem.KmallocID(family, t.scan.kmallocSizes.objectSize(uint32(slot*8)))
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	return out
}

// DeleteCaches removes the objects of slab and kmalloc caches from the
// live table, in one pass over it.
func (t *Tracker) DeleteCaches(ids []kmem.CacheID) error {
	if t.live == nil {
		return fmt.Errorf("deleting the objects of %d caches: neither slab nor kmalloc is tracked", len(ids))
	}
	var obj kmem.Object
	drop := func(o *livetable.Object) bool {
		return t.scan.decode(o.Key, &o.KmemleakObject, &obj) && slices.Contains(ids, kmem.CacheOf(obj))
	}
	// The young area first: an object moved out of it meanwhile is in the
	// live table by the time its pass comes.
	t.young.DeleteIf(drop)
	t.live.DeleteIf(drop)
	return nil
}

// SetStackSites makes sites the call sites whose allocations get a stack in
// adaptive mode. The map holds the first MaxEntries of them: callers pass
// the most important first.
func (t *Tracker) SetStackSites(sites []uint64) error {
	m := t.maps.StackSites
	sites = sites[:min(len(sites), int(m.MaxEntries()))]
	want := make(map[uint64]bool, len(sites))
	for _, site := range sites {
		want[site] = true
		if !t.control.stackSites[site] {
			if err := m.Update(site, uint8(1), ebpf.UpdateAny); err != nil {
				return fmt.Errorf("adding stack call site: %w", err)
			}
		}
	}
	for site := range t.control.stackSites {
		if !want[site] {
			if err := m.Delete(site); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("removing stack call site: %w", err)
			}
		}
	}
	t.control.stackSites = want
	return nil
}
