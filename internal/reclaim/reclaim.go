// Package reclaim reads what the kernel knows of memory reclaim: which slab
// caches its shrinkers reclaim, and how hard it has reclaimed. A
// reclaimable cache grows while memory is free and gives objects back under
// pressure; its growth is a leak only once it has survived reclaim.
package reclaim

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Paths where the kernel says it.
const (
	SlabDir    = "/sys/kernel/slab"
	VMStatPath = "/proc/vmstat"
)

// Caches says which slab caches the kernel reclaims (created with
// SLAB_RECLAIM_ACCOUNT), by their sysfs entry's reclaim_account. A merged
// cache's other names are symlinks to the same entry: merging keeps the
// flag alike.
type Caches struct {
	dir   string
	known map[string]bool
}

// companions are caches whose objects belong to objects of reclaimable
// caches, allocated and freed with them, though their own caches are not
// flagged.
var companions = map[string]bool{
	// Inodes' security blobs (security_inode_alloc, security_inode_free):
	// they go when the shrinkers reclaim their inodes.
	"lsm_inode_cache": true,
}

// NewCaches reads caches from dir (SlabDir), once per name.
func NewCaches(dir string) *Caches {
	return &Caches{dir: dir, known: map[string]bool{}}
}

// Reclaimable reports whether the kernel's shrinkers reclaim the cache
// named name, or the objects its objects belong to. Without sysfs,
// kmalloc's reclaimable caches still say so by their name.
func (c *Caches) Reclaimable(name string) bool {
	if r, ok := c.known[name]; ok {
		return r
	}
	r := strings.HasPrefix(name, "kmalloc-rcl-") || companions[name]
	if b, err := os.ReadFile(filepath.Join(c.dir, name, "reclaim_account")); err == nil {
		r = bytes.HasPrefix(b, []byte("1"))
	}
	c.known[name] = r
	return r
}

// Counters are the kernel's reclaim counters since boot.
type Counters struct {
	// SlabsScanned is the objects the shrinkers scanned.
	SlabsScanned int64
	// DropSlab counts writes of 2 or 3 to /proc/sys/vm/drop_caches.
	DropSlab int64
}

// ReadVMStat reads the counters from path (VMStatPath).
func ReadVMStat(path string) (Counters, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Counters{}, err
	}
	var c Counters
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, value, _ := strings.Cut(sc.Text(), " ")
		var field *int64
		switch name {
		case "slabs_scanned":
			field = &c.SlabsScanned
		case "drop_slab":
			field = &c.DropSlab
		default:
			continue
		}
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return Counters{}, fmt.Errorf("%s: %s: %w", path, name, err)
		}
		*field = n
		found++
	}
	if found == 0 {
		return Counters{}, fmt.Errorf("%s has no slabs_scanned", path)
	}
	return c, nil
}
