package truth

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/slabinfo"
)

// The truth-check decision on recorded slabinfo sequences.
//
// A scenario is a sequence of scans. Each scan gives the kernel's counts (a
// slabinfo snapshot under testdata/<scenario>/scan-N.slabinfo, parsed with
// slabinfo.Parse like the receiver does, or an inline map), how many objects
// the probes track per cache before and after the cutoff (and of the old
// ones, how many were allocated before the previous scan's cutoff), and
// which slab caches have shown a traced free. The harness plays the
// receiver: it builds the snapshot, runs Check, and forgets the objects the
// check told it to delete (the tracker would too).
//
// Scans come every scanEvery unless a scan says otherwise.

// The reasons the check gives for untracking a cache, word for word.
const (
	overKernel     = "more tracked objects than the kernel has allocated"
	noFreeVanished = "no traced free since attach, yet tracked objects vanished: its frees go unseen"
)

// The receiver's clock, as the scenarios see it.
const (
	firstCutoff = 1000 * time.Second     // CLOCK_MONOTONIC at the first scan's cutoff
	scanEvery   = 10 * time.Second       // the default time between two scans
	scanTook    = 100 * time.Millisecond // from the cutoff to the end of the scan (Snapshot.TakenNs)
)

// cacheDef is one cache the probes can report objects of.
type cacheDef struct {
	label   string // unique in caches; what scans refer to
	name    string // the kernel's name for it
	alloc   kmem.Allocator
	bytes   uint32
	family  kmem.KmallocFamily // kmalloc only
	unnamed bool               // slab only: the probes never learned its name
	key     uint64             // slab only: set by init
	index   int
}

var caches = []*cacheDef{
	{label: "maple_node", name: "maple_node", bytes: 256},
	{label: "dentry", name: "dentry", bytes: 192},
	{label: "filp", name: "filp", bytes: 192},
	{label: "vm_area_struct", name: "vm_area_struct", bytes: 176},
	{label: "eventpoll_epi", name: "eventpoll_epi", bytes: 128},
	{label: "eventpoll_pwq", name: "eventpoll_pwq", bytes: 72},
	{label: "sock_inode_cache", name: "sock_inode_cache", bytes: 704},
	{label: "radix_tree_node", name: "radix_tree_node", bytes: 576},
	{label: "buffer_head", name: "buffer_head", bytes: 104},
	{label: "task_struct", name: "task_struct", bytes: 9792},
	{label: "signal_cache", name: "signal_cache", bytes: 1152},
	{label: "leaky_module_cache", name: "leaky_module_cache", bytes: 64},
	{label: "new_cache", name: "new_cache", bytes: 128},
	{label: "old_cache", name: "old_cache", bytes: 128},
	{label: "late_cache", name: "late_cache", bytes: 128},
	{label: "gone_cache", name: "gone_cache", bytes: 128},
	{label: "noisy_cache", name: "noisy_cache", bytes: 128},
	{label: "damon_region", name: "damon_region", bytes: 32},
	{label: "unnamed", name: "unknown", bytes: 128, unnamed: true},
	// Two live caches of one name (a module loaded twice, or reloaded
	// while the old cache still holds objects).
	{label: "fuse_request#1", name: "fuse_request", bytes: 152},
	{label: "fuse_request#2", name: "fuse_request", bytes: 152},
	// The probes' name of every slab cache of 192 bytes, where the
	// kernel's record names no cache (classic tracepoints on 6.1, 6.12).
	{label: "slab-192", name: "slab-192", bytes: 192},
	// A slab cache that shares its name with a kmalloc class.
	{label: "kmalloc-64#slab", name: "kmalloc-64", bytes: 64},

	{label: "kmalloc-64", name: "kmalloc-64", alloc: kmem.Kmalloc, bytes: 64},
	{label: "kmalloc-192", name: "kmalloc-192", alloc: kmem.Kmalloc, bytes: 192},
	{label: "kmalloc-512", name: "kmalloc-512", alloc: kmem.Kmalloc, bytes: 512},
	{label: "kmalloc-cg-512", name: "kmalloc-cg-512", alloc: kmem.Kmalloc, bytes: 512, family: kmem.KmallocAccounted},
	{label: "kmalloc-large", name: "kmalloc-large", alloc: kmem.Kmalloc, bytes: 16384, family: kmem.KmallocLarge},
}

var cacheByLabel = map[string]*cacheDef{}

func init() {
	for i, c := range caches {
		c.index = i
		if c.alloc == kmem.Slab {
			c.key = 0xffff888100a00000 + uint64(i)*0x400
		}
		cacheByLabel[c.label] = c
	}
}

func cache(t testing.TB, label string) *cacheDef {
	t.Helper()
	c, ok := cacheByLabel[label]
	require.True(t, ok, "no cache labeled %q", label)
	return c
}

// object returns the j-th object of c in a scan.
func (c *cacheDef) object(scan, j int, allocNs uint64) kmem.Object {
	obj := kmem.Object{
		Address:   uint64(c.index+1)<<40 | uint64(scan)<<32 | uint64(j),
		AllocNs:   allocNs,
		CallSite:  0xffffffff81000000 + uint64(c.index)*0x100,
		Bytes:     c.bytes,
		Allocator: c.alloc,
	}
	if c.alloc == kmem.Slab {
		obj.Cache = c.key
	} else {
		obj.Cache = uint64(c.family)
	}
	return obj
}

func (c *cacheDef) id() kmem.CacheID {
	return kmem.CacheOf(c.object(0, 0, 0))
}

// pop is how many objects of a cache the probes track in a scan.
type pop struct {
	cache string
	old   int // allocated before the cutoff
	young int // allocated at or after the cutoff
	// kept: of the old ones, allocated before the previous scan's cutoff
	// (at most old).
	kept int
}

type wantUntraced struct {
	cache    string
	old      int64
	kernel   int64
	vanished int64 // the reason is noFreeVanished when set, else overKernel
}

type scanSpec struct {
	// after is the time from the previous scan's cutoff to this one's
	// (from the previous scan's end to this one's end too); 0 is
	// scanEvery. Ignored for the first scan.
	after    time.Duration
	kernel   map[string]int64 // nil: testdata/<scenario>/scan-N.slabinfo
	objects  []pop
	freed    []string // slab caches that have shown a traced free
	untraced []wantUntraced
	stale    []string         // caches whose objects come back in Stale
	bounds   map[string]int64 // Result.Bounds, exactly
}

type scenario struct {
	name  string
	dir   string // under testdata; "" for inline counts
	scans []scanSpec
}

func readSlabinfo(t *testing.T, dir, file string) map[string]int64 {
	t.Helper()
	counts, err := slabinfo.Read(filepath.Join("testdata", dir, file))
	require.NoError(t, err)
	return counts
}

func TestCheckScenarios(t *testing.T) {
	scenarios := []scenario{
		{
			// Linux 6.18 frees maple nodes through sheaves and kfree_rcu
			// batches, bypassing kmem_cache_free: the probes never see a
			// free, and the kernel hands the freed nodes out again at once,
			// so the probes replace their entries (missed frees). The
			// kernel's count stays flat while the tracked objects come and
			// go below it: the count alone would believe them.
			name: "maple_node: no traced free, its tracked objects vanish",
			dir:  "maple_node",
			scans: func() []scanSpec {
				freed := []string{"dentry", "filp", "vm_area_struct"}
				others := []pop{{"dentry", 100, 10, 0}, {"filp", 300, 5, 0}, {"vm_area_struct", 1500, 30, 0}}
				with := func(p pop) []pop { return append([]pop{p}, others...) }
				return []scanSpec{
					{
						// Young objects only: not seen yet, no bound.
						objects: with(pop{"maple_node", 0, 50, 0}),
						freed:   freed,
						bounds:  map[string]int64{"dentry": 139355, "filp": 642, "vm_area_struct": 2110},
					},
					{
						// First seen: not yet seen to keep its objects.
						objects: with(pop{"maple_node", 40, 80, 0}),
						freed:   freed,
						bounds:  map[string]int64{"maple_node": 0, "dentry": 139340, "filp": 650, "vm_area_struct": 2120},
					},
					{
						// 30 of the 40 vanished: a first strike.
						objects: with(pop{"maple_node", 500, 90, 10}),
						freed:   freed,
						bounds:  map[string]int64{"maple_node": 0, "dentry": 139360, "filp": 645, "vm_area_struct": 2105},
					},
					{
						// 490 of the 500 vanished: the second.
						objects:  with(pop{"maple_node", 520, 120, 10}),
						freed:    freed,
						untraced: []wantUntraced{{cache: "maple_node", old: 520, kernel: 603, vanished: 490}},
						bounds:   map[string]int64{"maple_node": 0, "dentry": 139350, "filp": 648, "vm_area_struct": 2115},
					},
					{
						// Allocated while the probes were being told.
						objects: with(pop{"maple_node", 3, 2, 0}),
						freed:   freed,
						stale:   []string{"maple_node"},
						bounds:  map[string]int64{"dentry": 139345, "filp": 644, "vm_area_struct": 2112},
					},
					{
						objects: with(pop{"maple_node", 0, 1, 0}),
						freed:   freed,
						stale:   []string{"maple_node"},
						bounds:  map[string]int64{"dentry": 139352, "filp": 646, "vm_area_struct": 2118},
					},
					{
						objects: others,
						freed:   freed,
						bounds:  map[string]int64{"dentry": 139348, "filp": 647, "vm_area_struct": 2114},
					},
					{
						objects: others,
						freed:   freed,
						bounds:  map[string]int64{"dentry": 139351, "filp": 643, "vm_area_struct": 2111},
					},
				}
			}(),
		},
		{
			// Frees are traced, but some bypass the tracepoints: more old
			// objects tracked than the kernel has at all. Two strikes in a
			// row from its first scan on.
			name: "eventpoll_epi: frees traced, tracked exceeds the kernel's count",
			dir:  "eventpoll_epi",
			scans: func() []scanSpec {
				freed := []string{"eventpoll_epi", "eventpoll_pwq", "filp"}
				return []scanSpec{
					{
						objects: []pop{{"eventpoll_epi", 300, 40, 0}, {"eventpoll_pwq", 290, 10, 0}, {"filp", 200, 0, 0}},
						freed:   freed,
						bounds:  map[string]int64{"eventpoll_epi": 512, "eventpoll_pwq": 504, "filp": 650},
					},
					{
						// Over its bound: none of its groups is believable.
						objects: []pop{{"eventpoll_epi", 1568, 40, 0}, {"eventpoll_pwq", 300, 10, 0}, {"filp", 200, 0, 0}},
						freed:   freed,
						bounds:  map[string]int64{"eventpoll_epi": 0, "eventpoll_pwq": 504, "filp": 652},
					},
					{
						objects:  []pop{{"eventpoll_epi", 1568, 12, 0}, {"eventpoll_pwq", 300, 10, 0}, {"filp", 200, 0, 0}},
						freed:    freed,
						untraced: []wantUntraced{{cache: "eventpoll_epi", old: 1568, kernel: 512}},
						bounds:   map[string]int64{"eventpoll_epi": 0, "eventpoll_pwq": 504, "filp": 651},
					},
					{
						objects: []pop{{"eventpoll_epi", 0, 4, 0}, {"eventpoll_pwq", 300, 10, 0}, {"filp", 200, 0, 0}},
						freed:   freed,
						stale:   []string{"eventpoll_epi"},
						bounds:  map[string]int64{"eventpoll_pwq": 504, "filp": 649},
					},
				}
			}(),
		},
		{
			name: "one scan over then one at the bound resets the strike",
			dir:  "strike_reset",
			scans: func() []scanSpec {
				freed := []string{"sock_inode_cache"}
				over := map[string]int64{"sock_inode_cache": 0}
				return []scanSpec{
					{objects: []pop{{"sock_inode_cache", 1200, 0, 0}}, freed: freed, bounds: over},
					// At the bound: not over.
					{objects: []pop{{"sock_inode_cache", 1000, 50, 0}}, freed: freed, bounds: map[string]int64{"sock_inode_cache": 1000}},
					// A first strike again.
					{objects: []pop{{"sock_inode_cache", 1200, 0, 0}}, freed: freed, bounds: over},
					{
						objects:  []pop{{"sock_inode_cache", 1001, 0, 0}},
						freed:    freed,
						untraced: []wantUntraced{{cache: "sock_inode_cache", old: 1001, kernel: 1000}},
						bounds:   over,
					},
					{objects: []pop{{"sock_inode_cache", 0, 3, 0}}, freed: freed, stale: []string{"sock_inode_cache"}, bounds: map[string]int64{}},
				}
			}(),
		},
		{
			// Only this scan's strikes carry over: a scan in which the cache
			// has no old object leaves it without a strike.
			name: "a scan without old objects resets the strike",
			scans: func() []scanSpec {
				kernel := map[string]int64{"eventpoll_epi": 512}
				freed := []string{"eventpoll_epi"}
				over := map[string]int64{"eventpoll_epi": 0}
				return []scanSpec{
					{kernel: kernel, objects: []pop{{"eventpoll_epi", 600, 0, 0}}, freed: freed, bounds: over},
					// Young ones only: no bound, no strike.
					{kernel: kernel, objects: []pop{{"eventpoll_epi", 0, 600, 0}}, freed: freed, bounds: map[string]int64{}},
					// A first strike again, not a second.
					{kernel: kernel, objects: []pop{{"eventpoll_epi", 600, 0, 0}}, freed: freed, bounds: over},
					{
						kernel:   kernel,
						objects:  []pop{{"eventpoll_epi", 600, 0, 0}},
						freed:    freed,
						untraced: []wantUntraced{{cache: "eventpoll_epi", old: 600, kernel: 512}},
						bounds:   over,
					},
					{kernel: kernel, objects: []pop{{"eventpoll_epi", 1, 1, 0}}, freed: freed, stale: []string{"eventpoll_epi"}, bounds: map[string]int64{}},
				}
			}(),
		},
		{
			// Nor does a scan in which the kernel has no count for the
			// cache's name (slabinfo read while the cache was being
			// destroyed and created again, say): it is not judged, and
			// loses its strike.
			name: "a scan without the cache's count resets the strike",
			scans: func() []scanSpec {
				kernel := map[string]int64{"eventpoll_pwq": 504, "filp": 640}
				without := map[string]int64{"filp": 640}
				freed := []string{"eventpoll_pwq", "filp"}
				objects := []pop{{"eventpoll_pwq", 600, 0, 0}, {"filp", 10, 0, 0}}
				over := map[string]int64{"eventpoll_pwq": 0, "filp": 640}
				return []scanSpec{
					{kernel: kernel, objects: objects, freed: freed, bounds: over},
					{kernel: without, objects: objects, freed: freed, bounds: map[string]int64{"filp": 640}},
					{kernel: kernel, objects: objects, freed: freed, bounds: over},
					{
						kernel:   kernel,
						objects:  objects,
						freed:    freed,
						untraced: []wantUntraced{{cache: "eventpoll_pwq", old: 600, kernel: 504}},
						bounds:   over,
					},
				}
			}(),
		},
		{
			// Young objects were not alive when the kernel counted: however
			// many there are, they prove nothing. One of them is allocated
			// exactly at the cutoff.
			name: "healthy: tracked at most the kernel's count, young objects do not count",
			dir:  "healthy",
			scans: func() []scanSpec {
				freed := []string{"radix_tree_node"}
				b := map[string]int64{"radix_tree_node": 5000}
				return []scanSpec{
					{objects: []pop{{"radix_tree_node", 4999, 20000, 0}, {"buffer_head", 0, 10000, 0}}, freed: freed, bounds: b},
					{objects: []pop{{"radix_tree_node", 5000, 20000, 0}, {"buffer_head", 0, 10000, 0}}, freed: freed, bounds: b},
					{objects: []pop{{"radix_tree_node", 5000, 20000, 0}, {"buffer_head", 0, 10000, 0}}, freed: freed, bounds: b},
					{objects: []pop{{"radix_tree_node", 3000, 30000, 0}, {"buffer_head", 0, 10000, 0}}, freed: freed, bounds: b},
				}
			}(),
		},
		{
			// dentries are freed (traced) and replaced at the same pace: the
			// kernel's count is flat while the tracked ones climb toward it.
			// A rule on the count's growth would untrace it.
			name: "dentry: frees traced, kernel flat, tracked climbs below the count",
			dir:  "dentry",
			scans: func() []scanSpec {
				freed := []string{"dentry", "filp"}
				return []scanSpec{
					{objects: []pop{{"dentry", 10000, 500, 0}, {"filp", 600, 10, 0}}, freed: freed, bounds: map[string]int64{"dentry": 139355, "filp": 642}},
					{objects: []pop{{"dentry", 60000, 800, 0}, {"filp", 600, 10, 0}}, freed: freed, bounds: map[string]int64{"dentry": 139310, "filp": 642}},
					{objects: []pop{{"dentry", 120000, 900, 0}, {"filp", 600, 10, 0}}, freed: freed, bounds: map[string]int64{"dentry": 139402, "filp": 642}},
					{objects: []pop{{"dentry", 139000, 1000, 0}, {"filp", 600, 10, 0}}, freed: freed, bounds: map[string]int64{"dentry": 139380, "filp": 642}},
				}
			}(),
		},
		{
			// task_struct and signal_cache in the first seconds: no free
			// seen yet. Withheld the first scan that sees their old
			// objects; from the next, having kept them, bounded by their
			// counts, and never untracked: signal_cache holds 64 of its
			// 200 and keeps them, however little its count grew.
			name: "young cache with no traced free yet",
			dir:  "young_cache",
			scans: []scanSpec{
				{
					objects: []pop{{"task_struct", 1, 0, 0}, {"signal_cache", 63, 0, 0}},
					bounds:  map[string]int64{"task_struct": 0, "signal_cache": 0},
				},
				{
					objects: []pop{{"task_struct", 1, 2, 1}, {"signal_cache", 64, 0, 63}},
					bounds:  map[string]int64{"task_struct": 405, "signal_cache": 200},
				},
				{
					objects: []pop{{"task_struct", 3, 0, 1}, {"signal_cache", 64, 0, 64}},
					bounds:  map[string]int64{"task_struct": 416, "signal_cache": 200},
				},
				{
					// The first traced free: a task_struct freed may vanish.
					objects: []pop{{"task_struct", 5, 0, 2}, {"signal_cache", 64, 0, 64}},
					freed:   []string{"task_struct"},
					bounds:  map[string]int64{"task_struct": 420, "signal_cache": 200},
				},
				{
					objects: []pop{{"task_struct", 5, 0, 5}, {"signal_cache", 64, 0, 64}},
					freed:   []string{"task_struct"},
					bounds:  map[string]int64{"task_struct": 418, "signal_cache": 200},
				},
				{
					objects: []pop{{"task_struct", 5, 0, 5}, {"signal_cache", 64, 0, 64}},
					freed:   []string{"task_struct"},
					bounds:  map[string]int64{"task_struct": 421, "signal_cache": 200},
				},
			},
		},
		{
			// A real leak in a cache that never frees: every object stays,
			// and the count grows with them. Believed up to the count from
			// its second scan on.
			name: "no-free cache whose objects all stay: a real leak",
			dir:  "leak",
			scans: []scanSpec{
				{objects: []pop{{"leaky_module_cache", 200, 20, 0}, {"filp", 300, 0, 0}}, freed: []string{"filp"}, bounds: map[string]int64{"leaky_module_cache": 0, "filp": 640}},
				{objects: []pop{{"leaky_module_cache", 500, 30, 200}, {"filp", 300, 0, 0}}, freed: []string{"filp"}, bounds: map[string]int64{"leaky_module_cache": 600, "filp": 640}},
				{objects: []pop{{"leaky_module_cache", 990, 10, 500}, {"filp", 300, 0, 0}}, freed: []string{"filp"}, bounds: map[string]int64{"leaky_module_cache": 1100, "filp": 640}},
				{objects: []pop{{"leaky_module_cache", 2050, 50, 990}, {"filp", 300, 0, 0}}, freed: []string{"filp"}, bounds: map[string]int64{"leaky_module_cache": 2100, "filp": 640}},
				{objects: []pop{{"leaky_module_cache", 3050, 50, 2050}, {"filp", 300, 0, 0}}, freed: []string{"filp"}, bounds: map[string]int64{"leaky_module_cache": 3100, "filp": 640}},
			},
		},
		{
			// Two caches with no traced free and the same counts: new_cache
			// keeps its objects and then holds more than its count, which
			// untracks it; old_cache loses some of its objects in two scans
			// in a row, which untracks it too.
			name: "no traced free: over the count, or objects vanished",
			dir:  "first_seen",
			scans: []scanSpec{
				{
					objects: []pop{{"new_cache", 40, 5, 0}, {"old_cache", 40, 5, 0}, {"filp", 10, 0, 0}},
					freed:   []string{"filp"},
					bounds:  map[string]int64{"new_cache": 0, "old_cache": 0, "filp": 640},
				},
				{
					objects: []pop{{"new_cache", 60, 5, 40}, {"old_cache", 45, 5, 39}, {"filp", 10, 0, 0}},
					freed:   []string{"filp"},
					bounds:  map[string]int64{"new_cache": 0, "old_cache": 0, "filp": 640},
				},
				{
					objects: []pop{{"new_cache", 60, 5, 60}, {"old_cache", 45, 5, 44}, {"filp", 10, 0, 0}},
					freed:   []string{"filp"},
					untraced: []wantUntraced{
						{cache: "new_cache", old: 60, kernel: 50},
						{cache: "old_cache", old: 45, kernel: 50, vanished: 1},
					},
					bounds: map[string]int64{"new_cache": 0, "old_cache": 0, "filp": 640},
				},
				{
					objects: []pop{{"new_cache", 0, 3, 0}, {"old_cache", 2, 0, 0}, {"filp", 10, 0, 0}},
					freed:   []string{"filp"},
					stale:   []string{"new_cache", "old_cache"},
					bounds:  map[string]int64{"filp": 640},
				},
				{
					objects: []pop{{"filp", 10, 0, 0}},
					freed:   []string{"filp"},
					bounds:  map[string]int64{"filp": 640},
				},
			},
		},
		{
			// A scan in which nothing vanished resets the strike, and only
			// objects old at the previous scan count: those allocated since
			// may come and go.
			name: "no traced free: a scan that keeps every object resets the strike",
			scans: func() []scanSpec {
				kernel := map[string]int64{"noisy_cache": 300}
				withheld := map[string]int64{"noisy_cache": 0}
				return []scanSpec{
					{kernel: kernel, objects: []pop{{"noisy_cache", 100, 0, 0}}, bounds: withheld},
					// 1 vanished: a first strike.
					{kernel: kernel, objects: []pop{{"noisy_cache", 100, 0, 99}}, bounds: withheld},
					// All 100 kept, 50 more since: believed.
					{kernel: kernel, objects: []pop{{"noisy_cache", 150, 0, 100}}, bounds: map[string]int64{"noisy_cache": 300}},
					// 1 vanished: a first strike again.
					{kernel: kernel, objects: []pop{{"noisy_cache", 150, 0, 149}}, bounds: withheld},
					{
						kernel:   kernel,
						objects:  []pop{{"noisy_cache", 150, 0, 100}},
						untraced: []wantUntraced{{cache: "noisy_cache", old: 150, kernel: 300, vanished: 50}},
						bounds:   withheld,
					},
				}
			}(),
		},
		{
			// DAMON splits its regions for seconds before it merges (frees)
			// any: no traced free yet, and many more tracked objects than
			// the count grew by (SLUB counts a CPU slab's objects as active
			// all at once, so allocations from slabs counted already do not
			// move it). Every region stays until then: believed up to the
			// count once seen to stay; then its first merge shows a traced
			// free, and the count itself bounds it.
			name: "DAMON-like: no traced free for 20 s, then one",
			scans: []scanSpec{
				{
					kernel:  map[string]int64{"damon_region": 2010},
					objects: []pop{{"damon_region", 800, 200, 0}},
					bounds:  map[string]int64{"damon_region": 0},
				},
				{
					kernel:  map[string]int64{"damon_region": 2020},
					objects: []pop{{"damon_region", 1500, 200, 800}},
					bounds:  map[string]int64{"damon_region": 2020},
				},
				{
					kernel:  map[string]int64{"damon_region": 2020},
					objects: []pop{{"damon_region", 1900, 100, 1500}},
					bounds:  map[string]int64{"damon_region": 2020},
				},
				{
					kernel:  map[string]int64{"damon_region": 2030},
					objects: []pop{{"damon_region", 1900, 100, 1800}},
					freed:   []string{"damon_region"},
					bounds:  map[string]int64{"damon_region": 2030},
				},
				{
					kernel:  map[string]int64{"damon_region": 2030},
					objects: []pop{{"damon_region", 2030, 10, 1900}},
					freed:   []string{"damon_region"},
					bounds:  map[string]int64{"damon_region": 2030},
				},
				{
					// Now over the count itself.
					kernel:  map[string]int64{"damon_region": 2030},
					objects: []pop{{"damon_region", 2031, 10, 2030}},
					freed:   []string{"damon_region"},
					bounds:  map[string]int64{"damon_region": 0},
				},
				{
					kernel:   map[string]int64{"damon_region": 2030},
					objects:  []pop{{"damon_region", 2031, 10, 2031}},
					freed:    []string{"damon_region"},
					untraced: []wantUntraced{{cache: "damon_region", old: 2031, kernel: 2030}},
					bounds:   map[string]int64{"damon_region": 0},
				},
			},
		},
		{
			// What vanished is counted against the previous scan that saw
			// old objects of the cache: one without any forgets it, and the
			// next is a first sighting again.
			name: "no traced free: a scan without old objects starts the watch again",
			scans: func() []scanSpec {
				kernel := map[string]int64{"late_cache": 30}
				return []scanSpec{
					{kernel: kernel, objects: []pop{{"late_cache", 10, 0, 0}}, bounds: map[string]int64{"late_cache": 0}},
					{kernel: kernel, objects: []pop{{"late_cache", 0, 4, 0}}, bounds: map[string]int64{}},
					{kernel: kernel, objects: []pop{{"late_cache", 4, 0, 0}}, bounds: map[string]int64{"late_cache": 0}},
					{kernel: kernel, objects: []pop{{"late_cache", 4, 0, 4}}, bounds: map[string]int64{"late_cache": 30}},
				}
			}(),
		},
		{
			// In tracepoint mode on 6.1 and 6.12 the probes know a slab
			// object's size, not its cache: slab-192 holds filp's, dentry's
			// and any other 192-byte cache's objects, and is checked
			// against all their counts together (600+1000+400 here, kmalloc-192
			// included: kmem_cache_alloc may serve a kmalloc cache). Before,
			// slabinfo had no line of that name and the objects were never
			// bounded.
			name: "slab-N: objects of every cache of one size, against their counts together",
			dir:  "sized_caches",
			scans: []scanSpec{
				{objects: []pop{{"slab-192", 1500, 10, 0}}, freed: []string{"slab-192"}, bounds: map[string]int64{"slab-192": 2000}},
				{objects: []pop{{"slab-192", 2100, 10, 0}}, freed: []string{"slab-192"}, bounds: map[string]int64{"slab-192": 0}},
				{
					objects:  []pop{{"slab-192", 2100, 10, 0}},
					freed:    []string{"slab-192"},
					untraced: []wantUntraced{{cache: "slab-192", old: 2100, kernel: 2000}},
					bounds:   map[string]int64{"slab-192": 0},
				},
			},
		},
		{
			// kmalloc objects are judged by their kmalloc class, against the
			// kernel's count (kmalloc-512 folds two kmalloc-rnd copies: 40 on
			// its own line, 100 in all), never by what vanished since
			// kmalloc frees are kfree. kmalloc-large is no slab cache: never
			// judged, even with a count under that name.
			name: "kmalloc classes",
			dir:  "kmalloc",
			scans: func() []scanSpec {
				others := []pop{{"kmalloc-512", 90, 20, 0}, {"kmalloc-large", 10000, 0, 0}, {"kmalloc-192", 50, 0, 0}}
				with := func(p pop) []pop { return append([]pop{p}, others...) }
				b := map[string]int64{"kmalloc-512": 100, "kmalloc-cg-512": 0, "kmalloc-192": 7287}
				return []scanSpec{
					{objects: with(pop{"kmalloc-cg-512", 150, 5, 0}), bounds: b},
					{
						objects:  with(pop{"kmalloc-cg-512", 150, 5, 0}),
						untraced: []wantUntraced{{cache: "kmalloc-cg-512", old: 150, kernel: 100}},
						bounds:   b,
					},
					{
						objects: with(pop{"kmalloc-cg-512", 0, 2, 0}),
						stale:   []string{"kmalloc-cg-512"},
						bounds:  map[string]int64{"kmalloc-512": 100, "kmalloc-192": 7287},
					},
				}
			}(),
		},
		{
			// gone_cache was destroyed; unnamed was never named by the
			// probes ("unknown"). Neither has a count: neither is judged.
			name: "caches missing from the kernel's counts are skipped",
			scans: func() []scanSpec {
				s := scanSpec{
					kernel:  map[string]int64{"filp": 640},
					objects: []pop{{"gone_cache", 5000, 0, 0}, {"unnamed", 100, 0, 0}, {"filp", 10, 0, 0}},
					freed:   []string{"filp"},
					bounds:  map[string]int64{"filp": 640},
				}
				return []scanSpec{s, s, s, s, s, s}
			}(),
		},
		{
			// Caches are judged one by one, even under a shared name; the
			// report bound of a name is the smallest.
			name: "caches sharing a name",
			scans: func() []scanSpec {
				kernel := map[string]int64{"fuse_request": 400, "kmalloc-64": 1010}
				freed := []string{"fuse_request#1"}
				// #2 holds more than the count: no group of the name is
				// believable.
				over := scanSpec{
					kernel:  kernel,
					objects: []pop{{"fuse_request#1", 100, 0, 0}, {"fuse_request#2", 500, 0, 10}, {"kmalloc-64#slab", 5, 0, 5}, {"kmalloc-64", 500, 0, 0}},
					freed:   freed,
					bounds:  map[string]int64{"fuse_request": 0, "kmalloc-64": 1010},
				}
				last := over
				last.objects = []pop{{"fuse_request#1", 100, 0, 0}, {"fuse_request#2", 500, 0, 500}, {"kmalloc-64#slab", 5, 0, 5}, {"kmalloc-64", 500, 0, 0}}
				last.untraced = []wantUntraced{{cache: "fuse_request#2", old: 500, kernel: 400}}
				return []scanSpec{
					{
						// fuse_request: 400 for #1 (frees seen), 0 for #2,
						// seen for the first time with no traced free.
						// kmalloc-64: 1010 for kmalloc, 0 for the slab
						// cache, seen for the first time too.
						kernel:  kernel,
						objects: []pop{{"fuse_request#1", 100, 0, 0}, {"fuse_request#2", 10, 0, 0}, {"kmalloc-64#slab", 5, 0, 0}, {"kmalloc-64", 500, 0, 0}},
						freed:   freed,
						bounds:  map[string]int64{"fuse_request": 0, "kmalloc-64": 0},
					},
					over, // a first strike
					last,
					{
						// Only the untraced one of the two is dropped; the
						// other is bounded by the count again.
						kernel:  kernel,
						objects: []pop{{"fuse_request#1", 100, 0, 0}, {"fuse_request#2", 2, 0, 0}, {"kmalloc-64#slab", 5, 0, 5}, {"kmalloc-64", 500, 0, 0}},
						freed:   freed,
						stale:   []string{"fuse_request#2"},
						bounds:  map[string]int64{"fuse_request": 400, "kmalloc-64": 1010},
					},
				}
			}(),
		},
		{
			name: "several caches untraced, in one scan and in later ones",
			scans: func() []scanSpec {
				kernel := map[string]int64{"maple_node": 600, "eventpoll_epi": 512, "kmalloc-cg-512": 100}
				freed := []string{"eventpoll_epi"}
				return []scanSpec{
					{
						kernel:  kernel,
						objects: []pop{{"maple_node", 500, 0, 0}, {"eventpoll_epi", 300, 0, 0}, {"kmalloc-cg-512", 50, 0, 0}},
						freed:   freed,
						bounds:  map[string]int64{"maple_node": 0, "eventpoll_epi": 512, "kmalloc-cg-512": 100},
					},
					{
						kernel:  kernel,
						objects: []pop{{"maple_node", 500, 0, 0}, {"eventpoll_epi", 1000, 0, 0}, {"kmalloc-cg-512", 50, 0, 0}},
						freed:   freed,
						bounds:  map[string]int64{"maple_node": 0, "eventpoll_epi": 0, "kmalloc-cg-512": 100},
					},
					{
						kernel:  kernel,
						objects: []pop{{"maple_node", 500, 7, 0}, {"eventpoll_epi", 1000, 3, 0}, {"kmalloc-cg-512", 50, 0, 0}},
						freed:   freed,
						untraced: []wantUntraced{
							{cache: "maple_node", old: 500, kernel: 600, vanished: 500},
							{cache: "eventpoll_epi", old: 1000, kernel: 512},
						},
						bounds: map[string]int64{"maple_node": 0, "eventpoll_epi": 0, "kmalloc-cg-512": 100},
					},
					{
						kernel:  kernel,
						objects: []pop{{"maple_node", 1, 0, 0}, {"eventpoll_epi", 0, 2, 0}, {"kmalloc-cg-512", 150, 0, 0}},
						freed:   freed,
						stale:   []string{"maple_node", "eventpoll_epi"},
						bounds:  map[string]int64{"kmalloc-cg-512": 0},
					},
					{
						kernel:   kernel,
						objects:  []pop{{"kmalloc-cg-512", 150, 0, 0}},
						freed:    freed,
						untraced: []wantUntraced{{cache: "kmalloc-cg-512", old: 150, kernel: 100}},
						bounds:   map[string]int64{"kmalloc-cg-512": 0},
					},
					{
						kernel:  kernel,
						objects: []pop{{"maple_node", 1, 1, 0}, {"eventpoll_epi", 1, 1, 0}, {"kmalloc-cg-512", 1, 1, 0}},
						freed:   freed,
						stale:   []string{"maple_node", "eventpoll_epi", "kmalloc-cg-512"},
						bounds:  map[string]int64{},
					},
				}
			}(),
		},
	}

	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			runScenario(t, sc)
		})
	}
}

func runScenario(t *testing.T, sc scenario) {
	if sc.dir != "" {
		// Every recorded scan is played.
		_, err := os.Stat(filepath.Join("testdata", sc.dir, fmt.Sprintf("scan-%d.slabinfo", len(sc.scans)+1)))
		require.ErrorIs(t, err, os.ErrNotExist, "testdata/%s has more scans than the scenario", sc.dir)
	}
	checker := NewChecker()
	untracedSoFar := map[kmem.CacheID]string{}
	rng := rand.New(rand.NewPCG(1, 2))

	cutoff, previous := uint64(firstCutoff), uint64(0)
	for i, spec := range sc.scans {
		if i > 0 {
			after := cmp.Or(spec.after, scanEvery)
			previous, cutoff = cutoff, cutoff+uint64(after)
		}
		ok := t.Run(fmt.Sprintf("scan-%d", i+1), func(t *testing.T) {
			kernel := spec.kernel
			if kernel == nil {
				require.NotEmpty(t, sc.dir, "an inline scenario needs kernel counts")
				kernel = readSlabinfo(t, sc.dir, fmt.Sprintf("scan-%d.slabinfo", i+1))
			}
			snap, byCache := buildSnapshot(t, i, kmem.Ages{Now: cutoff, Cutoff: cutoff, Previous: previous}, spec, rng)

			res := checker.Check(snap, kernel)

			// The caches untraced, matched by cache: the order is not part of the contract.
			dropped := map[string]bool{}
			require.Len(t, untracedNames(res.Untraced), len(spec.untraced), "untraced")
			for _, want := range spec.untraced {
				c := cache(t, want.cache)
				v, found := findUntraced(res.Untraced, c.id())
				require.True(t, found, "%s is not among the untraced %v", want.cache, untracedNames(res.Untraced))
				assert.Equal(t, c.name, v.Name)
				assert.Equal(t, want.old, v.Old, "old")
				assert.Equal(t, want.kernel, v.Kernel, "kernel")
				assert.Equal(t, want.vanished, v.Vanished, "vanished")
				if want.vanished > 0 {
					assert.Equal(t, noFreeVanished, v.Reason)
				} else {
					assert.Equal(t, overKernel, v.Reason)
				}
				dropped[want.cache] = true
				untracedSoFar[c.id()] = c.name
			}

			var wantStale []kmem.CacheID
			for _, label := range spec.stale {
				wantStale = append(wantStale, cache(t, label).id())
				dropped[label] = true
			}
			assert.ElementsMatch(t, wantStale, res.Stale, "stale")

			// What is left in the snapshot: everything else, untouched.
			want := map[kmem.CacheID]int64{}
			for _, p := range spec.objects {
				if !dropped[p.cache] {
					want[cache(t, p.cache).id()] += int64(len(byCache[p.cache]))
				}
			}
			got := map[kmem.CacheID]int64{}
			for key, g := range snap.Groups() {
				got[key.Cache] += g.Objects
			}
			assert.Equal(t, want, got, "objects left in the snapshot, by cache")

			if spec.bounds != nil {
				assert.Equal(t, spec.bounds, res.Bounds, "bounds")
			}
			assert.Equal(t, untracedSoFar, checker.Untraced(), "untraced")
		})
		if !ok {
			return // later scans depend on this one
		}
	}
}

// buildSnapshot makes the snapshot a scan would take: every tracked
// object, added in no particular order.
func buildSnapshot(t *testing.T, scan int, ages kmem.Ages, spec scanSpec, rng *rand.Rand) (*kmem.Snapshot, map[string][]kmem.Object) {
	t.Helper()
	cutoff := ages.Cutoff
	snap := &kmem.Snapshot{
		TakenNs:    cutoff + uint64(scanTook),
		CacheNames: map[uint64]string{},
		Freed:      map[uint64]bool{},
	}
	snap.Begin(ages)
	for _, c := range caches {
		if c.alloc == kmem.Slab && !c.unnamed {
			snap.CacheNames[c.key] = c.name
		}
	}
	for _, label := range spec.freed {
		c := cache(t, label)
		require.Equal(t, kmem.Slab, c.alloc, "only slab caches have a Freed flag")
		snap.Freed[c.key] = true
	}
	byCache := map[string][]kmem.Object{}
	var all []kmem.Object
	for _, p := range spec.objects {
		c := cache(t, p.cache)
		require.NotContains(t, byCache, p.cache, "cache listed twice in a scan")
		objs := make([]kmem.Object, 0, p.old+p.young)
		require.LessOrEqual(t, p.kept, p.old, "kept objects are old ones")
		require.True(t, p.kept == 0 || ages.Previous > uint64(p.kept), "kept objects need a previous scan")
		for j := range p.old {
			at := cutoff - 1 - uint64(j)
			if j < p.kept {
				at = ages.Previous - 1 - uint64(j)
			} else {
				require.Greater(t, at, ages.Previous, "old objects not kept are allocated since the previous cutoff")
			}
			objs = append(objs, c.object(scan, j, at))
		}
		require.Less(t, p.young, int(scanTook), "young objects are allocated 1 ns apart during the scan")
		for j := range p.young {
			// The first young object is allocated exactly at the cutoff.
			objs = append(objs, c.object(scan, p.old+j, cutoff+uint64(j)))
		}
		byCache[p.cache] = objs
		all = append(all, objs...)
	}
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	for _, obj := range all {
		snap.Add(&obj)
	}
	return snap, byCache
}

func findUntraced(vs []UntracedCache, id kmem.CacheID) (UntracedCache, bool) {
	for _, v := range vs {
		if v.ID == id {
			return v, true
		}
	}
	return UntracedCache{}, false
}

func untracedNames(vs []UntracedCache) []string {
	names := make([]string, len(vs))
	for i, v := range vs {
		names[i] = fmt.Sprintf("%s(%v)", v.Name, v.ID)
	}
	return names
}

func TestCheckEmptySnapshot(t *testing.T) {
	c := NewChecker()
	snap := &kmem.Snapshot{}
	snap.Begin(kmem.Ages{Now: 1000, Cutoff: 1000})
	res := c.Check(snap, map[string]int64{"dentry": 10})
	assert.Empty(t, res.Untraced)
	assert.Empty(t, res.Stale)
	assert.NotNil(t, res.Bounds)
	assert.Empty(t, res.Bounds)
	assert.Empty(t, c.Untraced())
}

func TestUntracedListsEveryCacheByName(t *testing.T) {
	maple, epi, cg := cache(t, "maple_node"), cache(t, "eventpoll_epi"), cache(t, "kmalloc-cg-512")
	c := NewChecker()
	kernel := map[string]int64{"maple_node": 600, "eventpoll_epi": 10, "kmalloc-cg-512": 10}
	want := map[kmem.CacheID]string{}
	// eventpoll_epi and kmalloc-cg-512 fail in scans 1 and 2; maple_node,
	// with no traced free, loses its objects in scans 3 and 4: at scan 2
	// it had no earlier one to lose them since.
	var previous uint64
	for scan := range 5 {
		cutoff := uint64(firstCutoff + time.Duration(scan)*scanEvery)
		snap := &kmem.Snapshot{
			TakenNs:    cutoff + uint64(scanTook),
			CacheNames: map[uint64]string{maple.key: "maple_node", epi.key: "eventpoll_epi"},
			Freed:      map[uint64]bool{epi.key: true},
		}
		snap.Begin(kmem.Ages{Now: cutoff, Cutoff: cutoff, Previous: previous})
		for _, def := range []*cacheDef{epi, cg} {
			for j := range 100 {
				obj := def.object(scan, j, 1)
				snap.Add(&obj)
			}
		}
		if scan > 0 {
			// Allocated since the previous scan, every time.
			for j := range 100 {
				obj := maple.object(scan, j, cutoff-1-uint64(j))
				snap.Add(&obj)
			}
		}
		c.Check(snap, kernel)
		previous = cutoff
		switch scan {
		case 1:
			want[epi.id()] = "eventpoll_epi"
			want[cg.id()] = "kmalloc-cg-512"
		case 3:
			want[maple.id()] = "maple_node"
		}
		assert.Equal(t, want, c.Untraced(), "after scan %d", scan+1)
	}
}

// BenchmarkCheck runs the check on a snapshot of a million objects over 200
// caches, none of them over its bound (the steady state), as the tracker's
// scan counts them by group.
func BenchmarkCheck(b *testing.B) {
	const (
		objects   = 1_000_000
		slabCount = 150
		cutoff    = 1 << 40
	)
	snap := &kmem.Snapshot{CacheNames: map[uint64]string{}, Freed: map[uint64]bool{}}
	snap.Begin(kmem.Ages{Now: cutoff, Cutoff: cutoff})
	kernel := map[string]int64{}
	type def struct {
		obj  kmem.Object
		name string
	}
	var defs []def
	for i := range slabCount {
		key := 0xffff888100000000 + uint64(i)*0x400
		name := fmt.Sprintf("cache_%03d", i)
		snap.CacheNames[key] = name
		if i%2 == 0 {
			snap.Freed[key] = true
		}
		defs = append(defs, def{kmem.Object{Cache: key, Bytes: 128, Allocator: kmem.Slab}, name})
	}
	families := kmem.KmallocFamilies
	sizes := []uint32{8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192}
	for i := 0; len(defs) < 200; i++ {
		obj := kmem.Object{Cache: uint64(families[i/len(sizes)%len(families)]), Bytes: sizes[i%len(sizes)], Allocator: kmem.Kmalloc}
		defs = append(defs, def{obj, (&kmem.Snapshot{}).CacheName(kmem.CacheOf(obj))})
	}
	for i := range objects {
		d := defs[i%len(defs)]
		obj := d.obj
		obj.Address = 0xffff888200000000 + uint64(i)*64
		obj.AllocNs = cutoff - 1_000_000 + uint64(i/len(defs)%2)*2_000_000 // half old, half young
		snap.Add(&obj)
		kernel[d.name]++
	}
	for name, n := range kernel {
		kernel[name] = 2 * n // room for every tracked object
	}
	c := NewChecker()

	b.ReportAllocs()
	var res Result
	for b.Loop() {
		res = c.Check(snap, kernel)
	}
	require.Empty(b, res.Untraced)
	require.Len(b, res.Bounds, 200)
}
