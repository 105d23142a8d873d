//go:build linux && (amd64 || arm64)

package tracker

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/kmemleak/kmemleakreceiver/bpf"
)

// kmallocSizes maps the size the kmalloc tracepoint reports of an object
// (bytes_alloc: its cache's slab size, s->size) to its cache's object size,
// indexed by slab size / 8. The two differ only where SLUB keeps debug
// metadata beside each object (slub_debug=U, red zones): there kmalloc-192's
// objects are reported as 264 bytes and were named kmalloc-264, a cache
// that does not exist. Nil where no kmalloc cache's sizes differ; a slab
// size two caches share is left as it is, since it cannot tell them apart.
type kmallocSizes []uint32

// kmallocSlots is how many size slots the probes' kmalloc skip table has.
const kmallocSlots = len(bpf.KmemleakKmallocSkipTable{}.Skip[0])

// kmallocCache matches the kmalloc caches of the normal family in sysfs:
// every family has the same sizes.
var kmallocCache = regexp.MustCompile(`^kmalloc-[0-9]+k?$`)

// readKmallocSizes reads each kmalloc cache's object_size and slab_size
// from SLUB's sysfs directory.
func readKmallocSizes(dir string) kmallocSizes {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	objects := map[uint32][]uint32{} // slab size -> object sizes
	for _, e := range entries {
		if !kmallocCache.MatchString(e.Name()) {
			continue
		}
		object, err1 := readSize(dir, e.Name(), "object_size")
		slab, err2 := readSize(dir, e.Name(), "slab_size")
		if err1 != nil || err2 != nil {
			continue
		}
		objects[slab] = append(objects[slab], object)
	}
	var out kmallocSizes
	for slab, sizes := range objects {
		if len(sizes) != 1 || sizes[0] == slab || int(slab/8) >= kmallocSlots {
			continue
		}
		if out == nil {
			out = make(kmallocSizes, kmallocSlots)
		}
		out[slab/8] = sizes[0]
	}
	return out
}

// readSize reads one of a cache's sizes in SLUB's sysfs directory.
func readSize(dir, cache, file string) (uint32, error) {
	b, err := os.ReadFile(filepath.Join(dir, cache, file))
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	return uint32(n), err
}

// objectSize is the object size of the cache whose objects the probes
// reported as bytes.
func (k kmallocSizes) objectSize(bytes uint32) uint32 {
	if i := int(bytes / 8); bytes%8 == 0 && i < len(k) && k[i] != 0 {
		return k[i]
	}
	return bytes
}

// slabSize is what the probes see of the objects of the cache of object
// size bytes: the skip table's slot is by it.
func (k kmallocSizes) slabSize(bytes uint32) uint32 {
	for i, object := range k {
		if object == bytes {
			return uint32(i * 8) //nolint:gosec // G115: i is below the probes' slot count
		}
	}
	return bytes
}
