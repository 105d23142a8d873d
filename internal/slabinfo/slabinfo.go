// Package slabinfo reads the kernel's own count of allocated objects per
// slab cache from /proc/slabinfo.
package slabinfo

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Path is where the kernel publishes the counts (root only: mode 0400).
const Path = "/proc/slabinfo"

// Read parses the slabinfo file at path.
func Read(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() //nolint:errcheck // read only: closing loses nothing
	return Parse(f)
}

// Parse returns each cache's active objects: every object the allocator
// has handed out and not taken back, plus those parked in per-CPU caches,
// so never fewer than are really in use. Only the 2.x format, which every
// kernel since 2.6 writes, is accepted.
//
// With CONFIG_RANDOM_KMALLOC_CACHES a kmalloc size class is spread over
// kmalloc-N and kmalloc-rnd-XX-N; the probes see only the size, so the
// copies are added up under kmalloc-N.
//
// Where the classic kmem_cache_alloc record names no cache (6.1, 6.12),
// the probes name a slab cache after its object size, slab-N, N being the
// kernel's size of it with its metadata (bytes_alloc, the objsize column):
// every cache of that size is added up under slab-N too, the count those
// objects are drawn from. No real cache is called slab-N.
func Parse(r io.Reader) (map[string]int64, error) {
	sc := bufio.NewScanner(r)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("slabinfo is empty")
	}
	if header := sc.Bytes(); !bytes.HasPrefix(header, []byte("slabinfo - version: 2.")) {
		return nil, fmt.Errorf("unknown slabinfo format %q", header)
	}
	active := map[string]int64{}
	for line := 2; sc.Scan(); line++ {
		text := sc.Bytes()
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		fields := bytes.Fields(text)
		if len(fields) < 2 {
			return nil, fmt.Errorf("slabinfo line %d: %q has no object count", line, text)
		}
		n, err := strconv.ParseInt(string(fields[1]), 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("slabinfo line %d: bad active object count %q", line, fields[1])
		}
		active[FoldRandomKmalloc(string(fields[0]))] += n
		if len(fields) < 4 {
			continue
		}
		size, err := strconv.ParseUint(string(fields[3]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("slabinfo line %d: bad object size %q", line, fields[3])
		}
		active[SizedName(uint32(size))] += n
	}
	// A partial table would undercount folded caches: all or nothing.
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return active, nil
}

// SizedName is the probes' name of a slab cache of size bytes, where the
// kernel's record does not name the cache.
func SizedName(size uint32) string {
	return "slab-" + strconv.FormatUint(uint64(size), 10)
}

// FoldRandomKmalloc maps kmalloc-rnd-07-64 to kmalloc-64, the name the
// probes give every copy of the size class; other names stay as they are.
func FoldRandomKmalloc(name string) string {
	rest, ok := strings.CutPrefix(name, "kmalloc-rnd-")
	if !ok {
		return name
	}
	if _, size, ok := strings.Cut(rest, "-"); ok {
		return "kmalloc-" + size
	}
	return name
}
