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

// NewCaches reads caches from dir (SlabDir), once per name.
func NewCaches(dir string) *Caches {
	return &Caches{dir: dir, known: map[string]bool{}}
}

// Reclaimable reports whether the kernel's shrinkers reclaim the cache
// named name. Without sysfs, kmalloc's reclaimable caches still say so by
// their name.
func (c *Caches) Reclaimable(name string) bool {
	if r, ok := c.known[name]; ok {
		return r
	}
	r := strings.HasPrefix(name, "kmalloc-rcl-")
	if b, err := os.ReadFile(filepath.Join(c.dir, name, "reclaim_account")); err == nil {
		r = r || bytes.HasPrefix(b, []byte("1"))
	}
	c.known[name] = r
	return r
}

// companions are the call sites, by function, whose objects belong to an
// object of a reclaimable cache, allocated with it and freed with it, though
// their own caches are not flagged: what they belong to.
var companions = map[string]string{
	// security_inode_free frees the blob with the inode.
	"security_inode_alloc": "inodes' security blobs",
	// An inode's file lock context, made on its first lock and freed with
	// the inode (locks_free_lock_context).
	"locks_get_lock_context": "inodes' file lock contexts",
	// A fast symlink's target, cached on its ext4 inode (i_link) and freed
	// with it; through kmemdup_nul.
	"ext4_cache_fast_symlink": "inodes' cached symlink targets",
}

// copiers are helpers that allocate for their callers: the caller says
// what the copy belongs to.
var copiers = map[string]bool{
	"kmemdup": true, "kmemdup_nul": true, "kstrdup": true, "kstrndup": true, "kstrdup_const": true, "kvmemdup": true,
}

// Companion says what reclaimable objects a call site allocates for, or ""
// when it does not. functions are its frames' functions, innermost first:
// the call site's, then its callers' where its stack is known; a copier's
// caller speaks for it.
func Companion(functions []string) string {
	for _, fn := range functions {
		if what, ok := companions[fn]; ok {
			return what
		}
		if !copiers[fn] {
			return ""
		}
	}
	return ""
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
