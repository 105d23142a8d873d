package scan

import (
	"errors"
	"fmt"
	"iter"
	"maps"
	"path"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
	"github.com/kmemleak/kmemleakreceiver/internal/reclaim"
	"github.com/kmemleak/kmemleakreceiver/internal/report"
	"github.com/kmemleak/kmemleakreceiver/internal/verdict"
)

// The scanner against a fake kernel: the fake holds the live objects the
// probes would track, the kernel's slab counts and both clocks, and
// records what the scanner asks of the probes.

// Slab cache keys, as the probes would report them.
const (
	dentryKey = 0xffff888100a3c000
	filpKey   = 0xffff888100a3d000
	filp2Key  = 0xffff888100a3e000 // a second cache named "filp" (a reloaded module's)
	damonKey  = 0xffff888100a3f000
)

// Call sites, and the names the fake symbolizer gives them.
const (
	dentrySite  = 0xffffffff81100010
	filpSite    = 0xffffffff81100020
	kmallocSite = 0xffffffff81100030
	bigSite     = 0xffffffff81100040
	pageSite    = 0xffffffff81100050
	damonSite   = 0xffffffff81100060
	sheafSite   = 0xffffffff81100070
	lsmSite     = 0xffffffff81100080
	memcgSite   = 0xffffffff81100090
	lruSite     = 0xffffffff811000a0
	skbSite     = 0xffffffff811000b0

	// Frames of the stacks only.
	allocFrame = 0xffffffff81200010 // the allocator's own frame
	openFrame  = 0xffffffff81200020
	mkdirFrame = 0xffffffff81200030
	vsockFrame = 0xffffffff81200040
)

var symbols = map[uint64]string{
	dentrySite:  "d_alloc+0x1e",
	filpSite:    "alloc_empty_file+0x5b",
	kmallocSite: "kstrdup+0x31",
	bigSite:     "seq_buf_alloc+0x22",
	pageSite:    "pipe_write+0x1c4",
	damonSite:   "damon_new_region+0x12",
	sheafSite:   "alloc_empty_sheaf+0x2c",
	memcgSite:   "mem_cgroup_css_alloc+0x4d",
	lruSite:     "memcg_list_lru_alloc+0x1bb",
	lsmSite:     "security_inode_alloc+0x28",
	skbSite:     "__alloc_skb+0x179",
	vsockFrame:  "virtio_vsock_rx_fill+0x1a0",
	allocFrame:  "kmem_cache_alloc_noprof+0x1a5",
	openFrame:   "path_openat+0x3c",
	mkdirFrame:  "do_mkdirat+0x8e",
}

// fakeSymbolizer names the addresses of symbols, every other "unknown".
type fakeSymbolizer struct{}

func (fakeSymbolizer) Symbolize(addr uint64) string {
	if name, ok := symbols[addr]; ok {
		return name
	}
	return "unknown"
}

// firstMonotonic is CLOCK_MONOTONIC when a test starts: well past boot,
// so no object's AllocNs is 0.
const firstMonotonic = 1000 * time.Second

// scanEvery is the time between two scans.
const scanEvery = 10 * time.Second

// fakeKernel implements both Machine and Probes.
type fakeKernel struct {
	mono     time.Duration // CLOCK_MONOTONIC
	wallBase time.Time     // the wall clock at mono 0

	live       map[uint64]kmem.Object // by address
	nextAddr   uint64
	cacheNames map[uint64]string // slab caches the probes have seen
	recreated  []uint64          // caches destroyed and created again since the last scan
	freed      map[uint64]bool   // slab caches that have shown a traced free
	counters   map[kmem.Allocator]kmem.Counters
	untracked  map[kmem.CacheID]bool // caches the probes skip
	stacks     map[int32][]uint64
	kmalloc    []kmem.CacheID
	exits      []kmem.Exit // processes ended since the last scan
	vmstat     reclaim.Counters
	// The slab caches the kernel reclaims, and what live tasks hold now.
	reclaimable map[string]bool
	held        map[uint64]kmem.Holder
	processes   map[uint32]kmem.Process
	tmpfsFiles  int64
	cgroups     int64
	damonBound  int64

	slab map[string]int64 // the kernel's counts
	// merged are the names of the slab caches SLUB merged others into, and
	// mergedAsks how often the scanner asked for a cache's.
	merged     map[string][]string
	mergedAsks map[string]int
	slabErr    error
	nowErr     error
	readErr    error

	// What the scanner did.
	calls      []string // the Machine and Probes methods called, in order
	slabReads  int
	reads      int
	untracks   []kmem.CacheID
	deletes    [][]kmem.CacheID
	stackSites [][]uint64
	stackReads []int32
	holdReads  int
}

func newFakeKernel() *fakeKernel {
	k := &fakeKernel{
		mono:       firstMonotonic,
		wallBase:   time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC),
		live:       map[uint64]kmem.Object{},
		nextAddr:   0xffff888200000000,
		cacheNames: map[uint64]string{},
		freed:      map[uint64]bool{},
		counters:   map[kmem.Allocator]kmem.Counters{kmem.Slab: {}, kmem.Kmalloc: {}, kmem.Page: {}},
		untracked:  map[kmem.CacheID]bool{},
		stacks:     map[int32][]uint64{},
		slab:       map[string]int64{},
	}
	// The kmalloc caches the probes can skip: every family, a few slots.
	for _, family := range kmem.KmallocFamilies {
		for _, slot := range []uint32{1, 2, 4, 8, 12, 64} {
			k.kmalloc = append(k.kmalloc, kmem.KmallocID(family, 8*slot))
		}
	}
	return k
}

// advance moves both clocks on.
func (k *fakeKernel) advance(d time.Duration) { k.mono += d }

// wallNow is the wall clock, for Options.Clock.
func (k *fakeKernel) wallNow() time.Time { return k.wallBase.Add(k.mono) }

// alloc allocates n objects like obj now, and returns the addresses of
// those the probes track: none of a cache they skip.
func (k *fakeKernel) alloc(n int, obj kmem.Object) []uint64 {
	if k.untracked[kmem.CacheOf(obj)] {
		return nil
	}
	return k.sneak(n, obj)
}

// sneak allocates n objects like obj now, tracked even if their cache is
// skipped: allocations that raced the probes' being told to skip it.
func (k *fakeKernel) sneak(n int, obj kmem.Object) []uint64 {
	var addrs []uint64
	for range n {
		obj.Address = k.nextAddr
		obj.AllocNs = uint64(k.mono)
		k.nextAddr += 0x40
		k.live[obj.Address] = obj
		addrs = append(addrs, obj.Address)
	}
	return addrs
}

// recreate destroys the cache at key, freeing its objects, and creates one
// named name at the same address, which the probes track afresh.
func (k *fakeKernel) recreate(key uint64, name string) {
	id := slabID(key)
	k.free(k.liveOf(id))
	delete(k.untracked, id)
	delete(k.freed, key)
	k.cacheNames[key] = name
	k.recreated = append(k.recreated, key)
}

func (k *fakeKernel) free(addrs []uint64) {
	for _, a := range addrs {
		delete(k.live, a)
	}
}

// liveOf returns the addresses of the live objects of a cache.
func (k *fakeKernel) liveOf(id kmem.CacheID) []uint64 {
	var out []uint64
	for a, obj := range k.live {
		if kmem.CacheOf(obj) == id {
			out = append(out, a)
		}
	}
	return out
}

// deleted returns the caches of every DeleteCaches call so far.
func (k *fakeKernel) deleted() []kmem.CacheID {
	var out []kmem.CacheID
	for _, d := range k.deletes {
		out = append(out, d...)
	}
	return out
}

func (k *fakeKernel) SlabCounts() (map[string]int64, error) {
	k.calls = append(k.calls, "SlabCounts")
	k.slabReads++
	if k.slabErr != nil {
		return nil, k.slabErr
	}
	return maps.Clone(k.slab), nil
}

func (k *fakeKernel) Reclaim() (reclaim.Counters, error) { return k.vmstat, nil }

func (k *fakeKernel) Reclaimable(cache string) bool { return k.reclaimable[cache] }

func (k *fakeKernel) MergedNames(cache string) []string {
	if k.mergedAsks == nil {
		k.mergedAsks = map[string]int{}
	}
	k.mergedAsks[cache]++
	return k.merged[cache]
}

func (k *fakeKernel) TmpfsFiles() (int64, error) { return k.tmpfsFiles, nil }

func (k *fakeKernel) Cgroups() (int64, error) { return k.cgroups, nil }

func (k *fakeKernel) DamonRegions() (int64, error) { return k.damonBound, nil }

// fakeHolders lists what the fake kernel's live tasks hold, as
// holders.Iterators does: a type of its own, for its Read is not the
// probes'.
type fakeHolders struct{ k *fakeKernel }

func (f fakeHolders) Read() (*kmem.Holds, error) {
	f.k.holdReads++
	return &kmem.Holds{Objects: maps.Clone(f.k.held), Processes: maps.Clone(f.k.processes)}, nil
}

// hold makes live tasks hold objects at addrs.
func (k *fakeKernel) hold(addrs []uint64, h kmem.Holder) {
	if k.held == nil {
		k.held = map[uint64]kmem.Holder{}
	}
	for _, a := range addrs {
		k.held[a] = h
	}
}

func (k *fakeKernel) Now() (uint64, error) {
	k.calls = append(k.calls, "Now")
	if k.nowErr != nil {
		return 0, k.nowErr
	}
	return uint64(k.mono), nil
}

// Read fills snap as the tracker does: objects added, cache names and
// frees accumulated, TakenNs the time of the scan.
func (k *fakeKernel) Read(snap *kmem.Snapshot) error {
	k.calls = append(k.calls, "Read")
	k.reads++
	if k.readErr != nil {
		return k.readErr
	}
	for _, obj := range k.live {
		snap.Add(&obj)
	}
	snap.Counters = maps.Clone(k.counters)
	if snap.CacheNames == nil {
		snap.CacheNames, snap.Freed = map[uint64]string{}, map[uint64]bool{}
	}
	for key, name := range k.cacheNames {
		if _, ok := snap.CacheNames[key]; !ok {
			snap.CacheNames[key] = name
		}
	}
	snap.Recreated = snap.Recreated[:0]
	for _, key := range k.recreated {
		snap.CacheNames[key] = k.cacheNames[key]
		delete(snap.Freed, key)
		snap.Recreated = append(snap.Recreated, key)
	}
	k.recreated = nil
	for key := range k.freed {
		snap.Freed[key] = true
	}
	snap.Stacks = len(k.stacks)
	snap.TakenNs = uint64(k.mono)
	return nil
}

func (k *fakeKernel) Untrack(id kmem.CacheID) error {
	k.untracks = append(k.untracks, id)
	k.untracked[id] = true
	return nil
}

func (k *fakeKernel) DeleteCaches(ids []kmem.CacheID) error {
	k.deletes = append(k.deletes, slices.Clone(ids))
	for _, id := range ids {
		k.free(k.liveOf(id))
	}
	return nil
}

func (k *fakeKernel) SetStackSites(sites []uint64) error {
	k.stackSites = append(k.stackSites, slices.Clone(sites))
	return nil
}

func (k *fakeKernel) Stack(id int32) ([]uint64, error) {
	k.stackReads = append(k.stackReads, id)
	frames, ok := k.stacks[id]
	if !ok {
		return nil, fmt.Errorf("no stack %d", id)
	}
	return slices.Clone(frames), nil
}

func (k *fakeKernel) KmallocCaches() []kmem.CacheID { return slices.Clone(k.kmalloc) }

func (k *fakeKernel) Exits() ([]kmem.Exit, error) {
	exits := k.exits
	k.exits = nil
	return exits, nil
}

// Objects to allocate, without a stack.

func slabObj(key uint64, bytes uint32, site uint64) kmem.Object {
	return kmem.Object{Allocator: kmem.Slab, Cache: key, Bytes: bytes, CallSite: site, StackID: -1}
}

func kmallocObj(family kmem.KmallocFamily, bytes uint32, site uint64) kmem.Object {
	return kmem.Object{Allocator: kmem.Kmalloc, Cache: uint64(family), Bytes: bytes, CallSite: site, StackID: -1}
}

func pageObj(order uint64, site uint64) kmem.Object {
	return kmem.Object{Allocator: kmem.Page, Cache: order, Bytes: 4096 << order, CallSite: site, StackID: -1}
}

func slabID(key uint64) kmem.CacheID { return kmem.CacheID{Allocator: kmem.Slab, Key: key} }

// harness is a scanner attached to a fake kernel.
type harness struct {
	t       *testing.T
	k       *fakeKernel
	p       *Scanner
	logs    *observer.ObservedLogs
	results []Result // of every scan, in order
}

// start creates the scanner and attaches the fake's probes. Options left
// zero get the defaults a test rarely cares about.
func start(t *testing.T, k *fakeKernel, opts Options) *harness {
	t.Helper()
	h := newScanner(t, k, opts)
	require.NoError(t, h.p.Attach(k, fakeSymbolizer{}))
	return h
}

// newScanner is start without the Attach.
func newScanner(t *testing.T, k *fakeKernel, opts Options) *harness {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	opts.Logger = zap.New(core)
	opts.Clock = k.wallNow
	if opts.TopN == 0 {
		opts.TopN = 50
	}
	if opts.Verdict == (verdict.Options{}) {
		opts.Verdict = verdict.Options{Window: 10 * time.Minute, Persist: time.Minute, ReportInterval: time.Hour, MaxGroups: 100}
	}
	if opts.EventStates == nil {
		opts.EventStates = []verdict.State{verdict.Leaking}
	}
	if opts.MaxTrackedObjects == 0 {
		opts.MaxTrackedObjects = 1 << 20
	}
	return &harness{t: t, k: k, p: New(k, opts), logs: logs}
}

// scan lets scanEvery pass, so that every object allocated so far is older
// than the scan's cutoff, and scans.
func (h *harness) scan() Result {
	h.t.Helper()
	h.k.advance(scanEvery)
	res, err := h.p.Scan()
	require.NoError(h.t, err)
	h.results = append(h.results, res)
	return res
}

// began returns the call sites that turned leaking, over every scan so
// far: those the collector's log warns of.
func (h *harness) began() []report.Group {
	var out []report.Group
	for _, res := range h.results {
		for _, s := range res.Sites {
			if s.Verdict.Began {
				out = append(out, s)
			}
		}
	}
	return out
}

// summarized is what the collector's log says of a site every scan.
type summarized struct {
	callSite, cache string
	state           verdict.State
	objects, bytes  int64
}

// sitesIn returns a scan's sites, in order, as its summary sees them.
func sitesIn(res Result) []summarized {
	var out []summarized
	for _, s := range res.Sites {
		out = append(out, summarized{s.CallSiteSym, s.Cache, s.Verdict.State, s.Objects, s.Bytes})
	}
	return out
}

// logged returns the entries whose message contains snippet, and checks
// they are all at level.
func (h *harness) logged(level zapcore.Level, snippet string) []observer.LoggedEntry {
	h.t.Helper()
	entries := h.logs.FilterMessageSnippet(snippet).All()
	for _, e := range entries {
		assert.Equal(h.t, level, e.Level, "level of %q", e.Message)
	}
	return entries
}

// group returns the group of a cache, and whether there is one; the tests
// that use it have one group per cache.
func group(groups []report.Group, cache string) (report.Group, bool) {
	for _, g := range groups {
		if g.Cache == cache {
			return g, true
		}
	}
	return report.Group{}, false
}

func caches(groups []report.Group) []string {
	var out []string
	for _, g := range groups {
		out = append(out, g.Cache)
	}
	sort.Strings(out)
	return out
}

// --- 1. The cache filter ---

// excludeFilpAndCg is a caches: filter that leaves out filp and every
// accounted kmalloc cache.
func excludeFilpAndCg(name string) bool {
	cg, err := path.Match("kmalloc-cg-*", name)
	if err != nil {
		panic(err)
	}
	return name != "filp" && !cg
}

func TestFilterSkipsKmallocCachesAtAttach(t *testing.T) {
	k := newFakeKernel()
	h := newScanner(t, k, Options{Tracks: excludeFilpAndCg})
	require.Empty(t, k.untracks, "nothing is untracked before the probes are attached")
	require.NoError(t, h.p.Attach(k, fakeSymbolizer{}))

	// Exactly the accounted caches, with no entry to delete: the probes
	// have just been attached.
	var want []kmem.CacheID
	for _, id := range k.kmalloc {
		if family, _ := id.Kmalloc(); family == kmem.KmallocAccounted {
			want = append(want, id)
		}
	}
	require.NotEmpty(t, want)
	assert.ElementsMatch(t, want, k.untracks)
}

// kmalloc objects of a filtered cache that the probes tracked between
// attaching and being told, or that raced the skip, are deleted by the
// first scan, in one call. None is ever reported.
func TestFilterDeletesKmallocObjectsFromBeforeAttach(t *testing.T) {
	k := newFakeKernel()
	h := newScanner(t, k, Options{Tracks: excludeFilpAndCg})
	accounted := kmem.KmallocID(kmem.KmallocAccounted, 64)
	k.alloc(3, kmallocObj(kmem.KmallocAccounted, 64, kmallocSite))
	kept := k.alloc(2, kmallocObj(kmem.KmallocNormal, 64, kmallocSite))
	require.NoError(t, h.p.Attach(k, fakeSymbolizer{}))
	assert.Empty(t, k.deletes, "the skips delete nothing: each deletion is a pass over the table")
	k.sneak(2, kmallocObj(kmem.KmallocAccounted, 64, kmallocSite))

	res := h.scan()
	assert.Equal(t, [][]kmem.CacheID{{accounted}}, k.deletes)
	assert.Empty(t, k.liveOf(accounted))
	assert.ElementsMatch(t, kept, k.liveOf(kmem.KmallocID(kmem.KmallocNormal, 64)))
	assert.Equal(t, []string{"kmalloc-64"}, caches(res.Report.Groups))
}

func TestFilterAttachFailure(t *testing.T) {
	k := newFakeKernel()
	h := newScanner(t, k, Options{Tracks: excludeFilpAndCg})
	failing := &failingUntrack{fakeKernel: k, err: errors.New("map update failed")}
	assert.ErrorIs(t, h.p.Attach(failing, fakeSymbolizer{}), failing.err)
}

type failingUntrack struct {
	*fakeKernel
	err error
}

func (f *failingUntrack) Untrack(kmem.CacheID) error { return f.err }

func TestFilterLeavesOutSlabCaches(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[filpKey] = "filp"
	k.cacheNames[dentryKey] = "dentry"
	h := start(t, k, Options{Tracks: excludeFilpAndCg})
	attachCalls := len(k.untracks)

	// Objects the probes tracked before the scan told them to skip filp.
	k.alloc(3, slabObj(filpKey, 256, filpSite))
	k.alloc(2, slabObj(dentryKey, 192, dentrySite))
	k.alloc(1, kmallocObj(kmem.KmallocNormal, 64, kmallocSite))

	res := h.scan()
	require.Len(t, k.untracks, attachCalls+1, "the scan untracks filp, once")
	assert.Equal(t, slabID(filpKey), k.untracks[attachCalls])
	assert.Empty(t, k.liveOf(slabID(filpKey)), "filp's live entries are deleted with it")
	assert.Equal(t, []string{"dentry", "kmalloc-64"}, caches(res.Report.Groups))
	assert.Equal(t, int64(6), res.Scanned, "filtered objects were read too")
	assert.Equal(t, [][]kmem.CacheID{{slabID(filpKey)}}, k.deletes)

	// A second cache named filp appears (a module reloaded), and an
	// allocation of the first raced its skip: the new cache is untracked,
	// the straggler deleted, the first cache not untracked again.
	k.alloc(4, slabObj(filp2Key, 256, filpSite))
	k.cacheNames[filp2Key] = "filp"
	k.sneak(1, slabObj(filpKey, 256, filpSite))
	require.Empty(t, k.alloc(5, slabObj(filpKey, 256, filpSite)), "the fake refuses objects of skipped caches")

	res = h.scan()
	require.Len(t, k.untracks, attachCalls+2)
	assert.Equal(t, slabID(filp2Key), k.untracks[attachCalls+1])
	assert.Empty(t, k.liveOf(slabID(filp2Key)))
	require.Len(t, k.deletes, 2)
	assert.ElementsMatch(t, []kmem.CacheID{slabID(filpKey), slabID(filp2Key)}, k.deletes[1],
		"the new cache's entries and the straggler's, in one call")
	assert.Empty(t, k.liveOf(slabID(filpKey)))
	assert.Equal(t, []string{"dentry", "kmalloc-64"}, caches(res.Report.Groups))

	// Nothing new: nothing untracked or deleted.
	deletes := len(k.deleted())
	res = h.scan()
	assert.Len(t, k.untracks, attachCalls+2)
	assert.Len(t, k.deleted(), deletes)
	assert.Equal(t, []string{"dentry", "kmalloc-64"}, caches(res.Report.Groups))

	// A straggler in a scan that meets no new cache is deleted all the same.
	k.sneak(2, slabObj(filp2Key, 256, filpSite))
	res = h.scan()
	assert.Len(t, k.untracks, attachCalls+2)
	assert.Equal(t, []kmem.CacheID{slabID(filp2Key)}, k.deleted()[deletes:])
	assert.Empty(t, k.liveOf(slabID(filp2Key)))
	assert.Equal(t, []string{"dentry", "kmalloc-64"}, caches(res.Report.Groups))
}

func TestFilterKeepingEveryCache(t *testing.T) {
	for name, tracks := range map[string]func(string) bool{
		"no filter":        nil,
		"include them all": func(string) bool { return true },
	} {
		t.Run(name, func(t *testing.T) {
			k := newFakeKernel()
			k.cacheNames[filpKey] = "filp"
			k.cacheNames[dentryKey] = "dentry"
			h := start(t, k, Options{Tracks: tracks})
			k.alloc(3, slabObj(filpKey, 256, filpSite))
			k.alloc(2, slabObj(dentryKey, 192, dentrySite))
			k.alloc(1, kmallocObj(kmem.KmallocAccounted, 64, kmallocSite))
			var res Result
			for range 3 {
				res = h.scan()
			}
			assert.Empty(t, k.untracks)
			assert.Empty(t, k.deleted())
			assert.Equal(t, []string{"dentry", "filp", "kmalloc-cg-64"}, caches(res.Report.Groups))
		})
	}
}

// --- 2. The truth check ---

const (
	untrackedMsg = "Slab cache frees bypass the tracepoints; no longer tracking it"
	noSlabMsg    = "Cannot read the kernel's slab counts"
)

func TestTruthUntracksCacheOverKernelCount(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "dentry"
	k.cacheNames[filpKey] = "filp"
	k.freed[dentryKey], k.freed[filpKey] = true, true
	// dentry tracks 50 objects the kernel says cannot all be live; filp is
	// within its count.
	k.slab = map[string]int64{"dentry": 10, "filp": 1000}
	h := start(t, k, Options{})
	k.alloc(50, slabObj(dentryKey, 192, dentrySite))
	k.alloc(5, slabObj(filpKey, 256, filpSite))

	// First strike: dentry's group is withheld, not reported, not untracked.
	res := h.scan()
	assert.Empty(t, k.untracks)
	assert.Equal(t, int64(1), res.Report.Withheld)
	assert.Equal(t, []string{"filp"}, caches(res.Report.Groups))
	assert.Empty(t, res.Report.Untraced)
	assert.Empty(t, h.logged(zapcore.WarnLevel, untrackedMsg))

	// Second strike: untracked, with its live entries.
	res = h.scan()
	require.Len(t, k.untracks, 1)
	assert.Equal(t, slabID(dentryKey), k.untracks[0])
	assert.Empty(t, k.liveOf(slabID(dentryKey)))
	assert.Equal(t, map[kmem.CacheID]string{slabID(dentryKey): "dentry"}, res.Report.Untraced)
	assert.Equal(t, []string{"filp"}, caches(res.Report.Groups))
	assert.Zero(t, res.Report.Withheld, "the untracked cache's objects are gone, not withheld")
	warns := h.logged(zapcore.WarnLevel, untrackedMsg)
	require.Len(t, warns, 1)
	fields := warns[0].ContextMap()
	assert.Equal(t, "dentry", fields["cache"])
	assert.Equal(t, "more tracked objects than the kernel has allocated", fields["reason"])
	assert.Equal(t, int64(50), fields["tracked_objects_older_than_scan"])
	assert.Equal(t, int64(10), fields["kernel_active_objects"])

	// An allocation that raced the skip shows up: deleted as stale, never
	// a suspect, and no second warning.
	k.sneak(1, slabObj(dentryKey, 192, dentrySite))
	res = h.scan()
	assert.Equal(t, [][]kmem.CacheID{{slabID(dentryKey)}, {slabID(dentryKey)}}, k.deletes, "with the verdict, then the straggler")
	assert.Empty(t, k.liveOf(slabID(dentryKey)))
	assert.Equal(t, []string{"filp"}, caches(res.Report.Groups))
	assert.Equal(t, map[kmem.CacheID]string{slabID(dentryKey): "dentry"}, res.Report.Untraced)

	for range 3 {
		res = h.scan()
		assert.Equal(t, []string{"filp"}, caches(res.Report.Groups))
	}
	assert.Len(t, h.logged(zapcore.WarnLevel, untrackedMsg), 1, "a cache is untracked once")
	assert.Len(t, k.untracks, 1, "filp, within its count, is never untracked")
	g, ok := group(res.Report.Groups, "filp")
	require.True(t, ok)
	assert.Equal(t, int64(5), g.Objects)
}

// A cache whose frees never reach the tracepoints, and whose freed objects
// the kernel hands out again: the probes replace their entries, and the
// objects old at one scan are gone at the next, though no free was traced.
// Withheld from the first scan, untracked at the third, far below the
// kernel's count.
func TestTruthUntracksCacheWithoutTracedFree(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[damonKey] = "damon_region"
	k.slab = map[string]int64{"damon_region": 1000}
	h := start(t, k, Options{MinAge: time.Nanosecond})
	addrs := k.alloc(100, slabObj(damonKey, 32, damonSite))

	for i := 1; i <= 2; i++ {
		res := h.scan()
		assert.Empty(t, k.untracks, "scan %d", i)
		assert.Equal(t, int64(1), res.Report.Withheld, "scan %d", i)
		assert.Empty(t, res.Report.Groups, "scan %d", i)
		k.free(addrs) // unseen
		addrs = k.alloc(100, slabObj(damonKey, 32, damonSite))
	}
	res := h.scan()
	require.Len(t, k.untracks, 1)
	assert.Equal(t, slabID(damonKey), k.untracks[0])
	assert.Empty(t, k.liveOf(slabID(damonKey)), "its 100 objects deleted with it")
	assert.Equal(t, map[kmem.CacheID]string{slabID(damonKey): "damon_region"}, res.Report.Untraced)
	warns := h.logged(zapcore.WarnLevel, untrackedMsg)
	require.Len(t, warns, 1)
	assert.Equal(t, "no traced free since attach, yet tracked objects vanished: its frees go unseen",
		warns[0].ContextMap()["reason"])
	assert.Equal(t, int64(100), warns[0].ContextMap()["tracked_objects_vanished"])
}

// The quiet TCP cache: 400 sockets held, no socket freed since attach, and
// a kernel count that did not grow (frees just before Start left it
// high). The scanner tells the check which objects were old at the
// previous scan: all 400 stay, so from the second scan they are reported,
// and the cache is never untracked.
func TestTruthBelievesQuietCacheThatKeepsItsObjects(t *testing.T) {
	k := newFakeKernel()
	const tcpKey = 0xffff888100c00000
	k.cacheNames[tcpKey] = "TCP"
	k.slab = map[string]int64{"TCP": 480}
	h := start(t, k, Options{MinAge: time.Nanosecond})
	k.alloc(400, slabObj(tcpKey, 2368, filpSite))

	res := h.scan()
	assert.Equal(t, int64(1), res.Report.Withheld, "scan 1: not yet seen to keep its objects")
	for i := 2; i <= 8; i++ {
		res = h.scan()
		g, ok := group(res.Report.Groups, "TCP")
		require.True(t, ok, "scan %d", i)
		assert.Equal(t, int64(400), g.Objects, "scan %d", i)
		assert.Zero(t, res.Report.Withheld, "scan %d", i)
	}
	assert.Empty(t, k.untracks)
}

// SLUB merged tcp_bind2_bucket into eventpoll_epi: the probes, and
// slabinfo, name its objects by the cache's own name, and the groups say
// which names share it, asked once per cache and scan however many groups.
// So does the WARN line of a merged cache the check untracks.
func TestMergedCacheNames(t *testing.T) {
	k := newFakeKernel()
	const epiKey, bindSite = 0xffff888100c10000, 0xffffffff81100100
	k.cacheNames[epiKey] = "eventpoll_epi"
	k.freed[epiKey] = true
	k.cacheNames[damonKey] = "ftrace_event_field"
	k.freed[damonKey] = true
	k.cacheNames[dentryKey] = "dentry"
	k.freed[dentryKey] = true
	epi := []string{"eventpoll_epi", "fib6_node", "tcp_bind2_bucket", "tcp_bind_bucket"}
	ftrace := []string{"damon_region", "ftrace_event_field"}
	k.merged = map[string][]string{"eventpoll_epi": epi, "ftrace_event_field": ftrace}
	k.slab = map[string]int64{"eventpoll_epi": 1000, "ftrace_event_field": 10, "dentry": 1000}
	h := start(t, k, Options{MinAge: time.Nanosecond})
	k.alloc(30, slabObj(epiKey, 128, bindSite))
	k.alloc(20, slabObj(epiKey, 128, filpSite))
	k.alloc(5, slabObj(dentryKey, 192, dentrySite))
	k.alloc(100, slabObj(damonKey, 56, damonSite)) // more than its count: untracked at the second scan

	for i := 1; i <= 2; i++ {
		res := h.scan()
		for _, groups := range [][]report.Group{res.Report.Groups, res.Sites} {
			var epiGroups int
			for _, g := range groups {
				switch g.Cache {
				case "eventpoll_epi":
					epiGroups++
					assert.Equal(t, epi, g.MergedNames, "scan %d: %s", i, g.CallSiteSym)
				default:
					assert.Nil(t, g.MergedNames, "scan %d: %s", i, g.Cache)
				}
			}
			assert.Equal(t, 2, epiGroups, "scan %d", i)
		}
		assert.Equal(t, i, k.mergedAsks["eventpoll_epi"], "once per scan")
		assert.Equal(t, i, k.mergedAsks["dentry"], "once per scan")
	}
	warns := h.logged(zapcore.WarnLevel, untrackedMsg)
	require.Len(t, warns, 1)
	assert.Equal(t, "ftrace_event_field", warns[0].ContextMap()["cache"])
	assert.Equal(t, []any{"damon_region", "ftrace_event_field"}, warns[0].ContextMap()["merged_caches"])
}

func TestTruthOffWithoutSlabCounts(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "dentry"
	k.freed[dentryKey] = true
	k.slabErr = errors.New("open /proc/slabinfo: permission denied")
	h := start(t, k, Options{})
	k.alloc(50, slabObj(dentryKey, 192, dentrySite))

	// The kernel would hold at most 10: unknown, so the objects are
	// suspects, scan after scan.
	k.slab = map[string]int64{"dentry": 10}
	for i := range 4 {
		res := h.scan()
		g, ok := group(res.Report.Groups, "dentry")
		require.True(t, ok, "scan %d", i)
		assert.Equal(t, int64(50), g.Objects)
		assert.Zero(t, res.Report.Withheld)
	}
	assert.Empty(t, k.untracks)
	assert.Equal(t, 4, k.slabReads, "read in every scan")
	assert.Len(t, h.logged(zapcore.WarnLevel, noSlabMsg), 1, "one warning across every scan")

	// Once readable again, the check resumes.
	k.slabErr = nil
	h.scan()
	h.scan()
	require.Len(t, k.untracks, 1)
	assert.Equal(t, slabID(dentryKey), k.untracks[0])
	assert.Len(t, h.logged(zapcore.WarnLevel, noSlabMsg), 1)
}

// --- 3. Verdicts ---

// A leak of 6 objects a scan, next to a steady cache and a pool that
// recycles its objects: only the leak is called one, gets an event and
// turns leaking once (the WARN line), and each scan's sites and counts
// (its summary line) have it.
func TestVerdicts(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "dentry"
	h := start(t, k, Options{MinAge: 30 * time.Second})
	k.alloc(20, slabObj(dentryKey, 192, dentrySite)) // steady
	leakStart := k.wallNow()
	pool := k.alloc(50, kmallocObj(kmem.KmallocNormal, 512, bigSite))

	var foundAt int
	var events []report.Group
	for i := 1; i <= 30; i++ {
		k.alloc(6, kmallocObj(kmem.KmallocNormal, 64, kmallocSite))
		k.free(pool[:10]) // the pool replaces a fifth of its objects a scan
		pool = append(pool[10:], k.alloc(10, kmallocObj(kmem.KmallocNormal, 512, bigSite))...)
		res := h.scan()
		events = append(events, res.Events...)
		if g, ok := group(res.Report.Groups, "kmalloc-64"); ok && g.Verdict.State == verdict.Leaking && foundAt == 0 {
			foundAt = i
			assert.InDelta(t, 36, g.Verdict.PerMinute, 1e-6)
			assert.InDelta(t, 36*64, g.Verdict.BytesPerMinute, 1e-6)
			assert.Equal(t, leakStart, g.Verdict.Since, "since the oldest object")
			assert.Equal(t, 1, res.Report.States[verdict.Leaking])
		}
		for _, g := range res.Report.Groups {
			if g.Cache != "kmalloc-64" {
				assert.NotEqual(t, verdict.Leaking, g.Verdict.State, "scan %d: %s", i, g.Cache)
			}
		}
	}
	// Aged after 30 s, a leak verdict needs 9 samples and two scans that
	// agree: found 2 minutes after the leak began.
	assert.Equal(t, 12, foundAt, "the scan that found the leak")
	require.Len(t, events, 1, "one event: when the leak was found (report_interval is an hour)")
	assert.Equal(t, "kstrdup+0x31", events[0].CallSiteSym)

	began := h.began()
	require.Len(t, began, 1)
	assert.Equal(t, "kstrdup+0x31", began[0].CallSiteSym)
	assert.InDelta(t, 36, began[0].Verdict.PerMinute, 1e-6)
	assert.InDelta(t, 2304, began[0].Verdict.BytesPerMinute, 1e-6)
	assert.Equal(t, "keeps rising, and nothing that holds kernel memory explains it", began[0].Verdict.Reason)

	last := h.results[29]
	assert.Equal(t, 1, last.Report.States[verdict.Leaking])
	assert.Equal(t, []summarized{
		{"seq_buf_alloc+0x22", "kmalloc-512", verdict.Transient, 30, 30 * 512},
		{"kstrdup+0x31", "kmalloc-64", verdict.Leaking, 168, 168 * 64},
		{"d_alloc+0x1e", "dentry", verdict.Steady, 20, 20 * 192},
	}, sitesIn(last))
	leak := last.Sites[1]
	assert.InDelta(t, 36, leak.Verdict.PerMinute, 1e-6)
	assert.Equal(t, "keeps rising, and nothing that holds kernel memory explains it", leak.Verdict.Reason)
}

// Survivors are the group's objects already aged at the previous scan.
func TestVerdictSamplesCountSurvivors(t *testing.T) {
	k := newFakeKernel()
	h := start(t, k, Options{MinAge: 30 * time.Second})
	first := k.alloc(4, kmallocObj(kmem.KmallocNormal, 64, kmallocSite))
	for range 3 {
		h.scan()
	}
	k.alloc(3, kmallocObj(kmem.KmallocNormal, 64, kmallocSite)) // aged 30 s, 3 scans on
	k.free(first[:1])
	for range 2 {
		h.scan()
	}
	res := h.scan()
	g, ok := group(res.Report.Groups, "kmalloc-64")
	require.True(t, ok)
	assert.Equal(t, int64(6), g.Objects)
	assert.Equal(t, int64(3), g.Survivors, "the newer three turned 30 s old in this scan")
}

// event_states: every verdict can get events; a group gets one when it is
// new and when its state changes, not every scan.
func TestEventStates(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "dentry"
	h := start(t, k, Options{EventStates: verdict.States})
	k.alloc(20, slabObj(dentryKey, 192, dentrySite))
	first := h.scan()
	assert.Equal(t, []string{"dentry"}, caches(first.Events), "new")
	assert.Equal(t, verdict.Transient, first.Events[0].Verdict.State, "one sample says nothing yet")
	second := h.scan()
	assert.Equal(t, []string{"dentry"}, caches(second.Events), "turned steady")
	assert.Equal(t, verdict.Steady, second.Events[0].Verdict.State)
	for range 5 {
		assert.Empty(t, h.scan().Events)
	}
}

// top_n keeps the largest groups of each verdict: the leak is reported
// though a larger steady group is left out.
func TestTopNPerVerdict(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "dentry"
	h := start(t, k, Options{TopN: 1})
	k.alloc(500, slabObj(dentryKey, 192, dentrySite))
	k.alloc(100, kmallocObj(kmem.KmallocNormal, 512, bigSite))
	var res Result
	for range 20 {
		k.alloc(5, kmallocObj(kmem.KmallocNormal, 64, kmallocSite))
		res = h.scan()
	}
	assert.Equal(t, []string{"dentry", "kmalloc-64"}, caches(res.Report.Groups))
	assert.Equal(t, map[verdict.State]int{verdict.Steady: 2, verdict.Leaking: 1}, res.Report.States,
		"every group counted, reported or not")
}

// Past verdict.max_groups a group has no history: it counts as transient
// and gets no event, and the groups followed keep their verdicts.
func TestVerdictGroupCap(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "dentry"
	h := start(t, k, Options{Verdict: verdict.Options{Window: 10 * time.Minute, Persist: time.Minute, ReportInterval: time.Hour, MaxGroups: 1}})
	k.alloc(500, slabObj(dentryKey, 192, dentrySite)) // the largest: followed
	var res Result
	for range 20 {
		k.alloc(5, kmallocObj(kmem.KmallocNormal, 64, kmallocSite))
		res = h.scan()
	}
	steady, _ := group(res.Report.Groups, "dentry")
	leak, _ := group(res.Report.Groups, "kmalloc-64")
	assert.Equal(t, verdict.Steady, steady.Verdict.State)
	assert.Equal(t, verdict.Transient, leak.Verdict.State, "not followed")
	assert.Empty(t, res.Events)
}

// --- 4. Stack sites and stacks ---

// allocMixed allocates groups of distinct sizes: by bytes, page (204800)
// > kmalloc-512 (51200) > dentry (19200) > kmalloc-64 (640).
func allocMixed(k *fakeKernel) (big []uint64) {
	k.cacheNames[dentryKey] = "dentry"
	k.alloc(50, pageObj(0, pageSite))
	k.alloc(100, slabObj(dentryKey, 192, dentrySite))
	k.alloc(10, kmallocObj(kmem.KmallocNormal, 64, kmallocSite))
	return k.alloc(100, kmallocObj(kmem.KmallocNormal, 512, bigSite))
}

func TestAdaptiveStackSites(t *testing.T) {
	k := newFakeKernel()
	big := allocMixed(k)
	h := start(t, k, Options{AdaptiveStacks: true})

	res := h.scan()
	require.Len(t, res.Report.Groups, 4)
	require.Equal(t, kmem.Page, res.Report.Groups[0].Allocator, "the page group is the largest")
	require.Len(t, k.stackSites, 1)
	assert.Equal(t, []uint64{bigSite, dentrySite, kmallocSite}, k.stackSites[0],
		"largest first, no page group")

	// The sites follow the groups.
	k.free(big)
	h.scan()
	require.Len(t, k.stackSites, 2)
	assert.Equal(t, []uint64{dentrySite, kmallocSite}, k.stackSites[1])

	// Called every scan, even with nothing to ask for.
	k.free(slices.Collect(maps.Keys(k.live)))
	res = h.scan()
	assert.Empty(t, res.Report.Groups)
	require.Len(t, k.stackSites, 3)
	assert.Empty(t, k.stackSites[2])
}

func TestAdaptiveStackSitesOfReportedGroupsOnly(t *testing.T) {
	k := newFakeKernel()
	allocMixed(k)
	h := start(t, k, Options{AdaptiveStacks: true, TopN: 2})
	h.scan()
	require.Len(t, k.stackSites, 1)
	assert.Equal(t, []uint64{bigSite}, k.stackSites[0])
}

func TestNoStackSitesWithoutAdaptiveStacks(t *testing.T) {
	k := newFakeKernel()
	allocMixed(k)
	h := start(t, k, Options{StacksOn: true})
	for range 3 {
		h.scan()
	}
	assert.Empty(t, k.stackSites)
}

func TestStacks(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "dentry"
	// The allocator's frame on top: the group is named after the caller.
	k.stacks[7] = []uint64{allocFrame, dentrySite, openFrame}
	k.stacks[8] = []uint64{allocFrame, dentrySite, mkdirFrame}
	withStack := func(obj kmem.Object, id int32) kmem.Object { obj.StackID = id; return obj }
	k.alloc(3, withStack(slabObj(dentryKey, 192, dentrySite), 7))
	k.alloc(2, withStack(slabObj(dentryKey, 192, dentrySite), 8))
	k.alloc(4, kmallocObj(kmem.KmallocNormal, 64, kmallocSite)) // no stack taken

	t.Run("on", func(t *testing.T) {
		h := start(t, k, Options{StacksOn: true})
		res := h.scan()
		type described struct {
			cache, callSite, stack string
			objects                int64
		}
		var got []described
		for _, g := range res.Report.Groups {
			got = append(got, described{g.Cache, g.CallSiteSym, g.StackText(), g.Objects})
		}
		assert.ElementsMatch(t, []described{
			{"dentry", "d_alloc+0x1e", "d_alloc+0x1e\npath_openat+0x3c", 3},
			{"dentry", "d_alloc+0x1e", "d_alloc+0x1e\ndo_mkdirat+0x8e", 2},
			{"kmalloc-64", "kstrdup+0x31", "", 4},
		}, got)
		assert.ElementsMatch(t, []int32{7, 8}, k.stackReads)
	})

	t.Run("off", func(t *testing.T) {
		k.stackReads = nil
		h := start(t, k, Options{})
		res := h.scan()
		g, ok := group(res.Report.Groups, "dentry")
		require.True(t, ok)
		assert.Equal(t, int64(5), g.Objects, "one group per call site")
		assert.Equal(t, "d_alloc+0x1e", g.CallSiteSym)
		assert.Empty(t, g.Frames)
		assert.Empty(t, k.stackReads)
	})
}

// A call site is judged as a whole: in adaptive mode its stacks start
// once it is suspect, and its leak goes on in a stack group while its
// older objects stay in the group without a stack. Both groups get the
// site's verdict and an event each; the site turns leaking once (the WARN
// line), with its totals and its stack.
func TestVerdictPerCallSiteAcrossStacks(t *testing.T) {
	k := newFakeKernel()
	k.stacks[7] = []uint64{allocFrame, kmallocSite, openFrame}
	h := start(t, k, Options{StacksOn: true, MinAge: 30 * time.Second})
	var events []report.Group
	var res Result
	for i := range 20 {
		obj := kmallocObj(kmem.KmallocNormal, 64, kmallocSite)
		if i >= 6 { // the stacks start after a minute
			obj.StackID = 7
		}
		k.alloc(6, obj)
		res = h.scan()
		events = append(events, res.Events...)
	}
	require.Len(t, res.Report.Groups, 2, "a group without a stack and one with")
	for _, g := range res.Report.Groups {
		assert.Equal(t, verdict.Leaking, g.Verdict.State, "%q", g.StackText())
		assert.InDelta(t, 36, g.Verdict.PerMinute, 1e-6, "the site's rate")
	}
	assert.Equal(t, 1, res.Report.States[verdict.Leaking], "one site")
	// Found at scan 12, as in TestVerdicts: an event for each group, the
	// one without a stack (6 scans of 6) and the one with (4 scans aged).
	require.Len(t, events, 2)
	assert.Equal(t, []int64{36, 24}, []int64{events[0].Objects, events[1].Objects})
	assert.Equal(t, []string{"", "kstrdup+0x31\npath_openat+0x3c"}, []string{events[0].StackText(), events[1].StackText()})
	for _, e := range events {
		assert.Equal(t, verdict.Leaking, e.Verdict.State)
	}
	began := h.began()
	require.Len(t, began, 1, "one line per site")
	assert.Equal(t, int64(60), began[0].Objects, "the site's aged objects")
	assert.Equal(t, "kstrdup+0x31\npath_openat+0x3c", began[0].StackText())
}

// A cache created where a destroyed one was (a module reloaded) is
// filtered by its own name, and the truth check's verdict on the old one
// does not hold for it.
func TestRecreatedCacheIsJudgedAfresh(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[filpKey] = "filp"
	k.cacheNames[damonKey] = "damon_region"
	k.freed[damonKey] = true
	k.slab["damon_region"] = 10 // far fewer than tracked: untraced
	h := start(t, k, Options{Tracks: excludeFilpAndCg})
	k.alloc(5, slabObj(filpKey, 192, filpSite))
	k.alloc(100, slabObj(damonKey, 64, damonSite))
	for range 3 {
		h.scan()
	}
	require.True(t, k.untracked[slabID(filpKey)], "filtered out by name")
	require.True(t, k.untracked[slabID(damonKey)], "untraced by the truth check")

	k.recreate(filpKey, "kmltest_cache")
	k.recreate(damonKey, "kmltest_other")
	k.slab["kmltest_cache"], k.slab["kmltest_other"] = 100, 100
	k.alloc(7, slabObj(filpKey, 192, filpSite))
	k.alloc(9, slabObj(damonKey, 64, damonSite))
	// Neither has shown a traced free: withheld until a scan has seen
	// them keep their objects.
	res := h.scan()
	assert.Empty(t, caches(res.Report.Groups))
	res = h.scan()
	assert.Equal(t, []string{"kmltest_cache", "kmltest_other"}, caches(res.Report.Groups), "both tracked under their new names")
	assert.NotContains(t, res.Report.Untraced, slabID(damonKey))
	assert.Len(t, h.logged(zapcore.InfoLevel, "created where a destroyed one was"), 2)
}

// --- 5. A full live table ---

const fullMsg = "live table is full"

func TestFullMap(t *testing.T) {
	k := newFakeKernel()
	h := start(t, k, Options{MaxTrackedObjects: 4096})
	k.alloc(1, kmallocObj(kmem.KmallocNormal, 64, kmallocSite))

	res := h.scan()
	assert.Zero(t, res.NewlyDropped)
	assert.False(t, res.Report.Incomplete())
	assert.Empty(t, h.logged(zapcore.WarnLevel, fullMsg))

	// Two allocators drop: the rise is their sum.
	raise := func(a kmem.Allocator, n uint64) {
		c := k.counters[a]
		c.Dropped += n
		k.counters[a] = c
	}
	raise(kmem.Slab, 3)
	raise(kmem.Kmalloc, 4)
	res = h.scan()
	assert.Equal(t, uint64(7), res.NewlyDropped)
	assert.True(t, res.Report.Incomplete())
	warns := h.logged(zapcore.WarnLevel, fullMsg)
	require.Len(t, warns, 1)
	assert.Equal(t, uint64(7), warns[0].ContextMap()["dropped_since_last_scan"])
	assert.Equal(t, int64(4096), warns[0].ContextMap()["max_tracked_objects"])

	// No new drops: no warning, but the counts stay lower bounds.
	res = h.scan()
	assert.Zero(t, res.NewlyDropped)
	assert.True(t, res.Report.Incomplete())
	assert.Len(t, h.logged(zapcore.WarnLevel, fullMsg), 1)

	raise(kmem.Kmalloc, 2)
	res = h.scan()
	assert.Equal(t, uint64(2), res.NewlyDropped)
	warns = h.logged(zapcore.WarnLevel, fullMsg)
	require.Len(t, warns, 2)
	assert.Equal(t, uint64(2), warns[1].ContextMap()["dropped_since_last_scan"])
}

// --- 6. min_age ---

func TestMinAge(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "dentry"
	k.cacheNames[filpKey] = "filp"
	h := start(t, k, Options{MinAge: 30 * time.Second, Tracks: func(name string) bool { return name != "filp" }})

	k.alloc(5, slabObj(dentryKey, 192, dentrySite))
	k.advance(40 * time.Second)
	k.alloc(3, slabObj(dentryKey, 192, dentrySite)) // 10 s old at the scan
	k.alloc(2, kmallocObj(kmem.KmallocNormal, 64, kmallocSite))
	k.alloc(4, slabObj(filpKey, 256, filpSite)) // filtered out

	res := h.scan()
	assert.Equal(t, int64(14), res.Scanned, "every object read, filtered or young")
	require.Len(t, res.Report.Groups, 1)
	g := res.Report.Groups[0]
	assert.Equal(t, "dentry", g.Cache)
	assert.Equal(t, int64(5), g.Objects)
	assert.Equal(t, 50*time.Second, g.OldestAge)
	assert.Equal(t, int64(5), res.Report.Suspects)
}

// --- 7. Errors, and the order of the reads ---

// The truth check needs the cutoff read before the kernel's counts, and
// the counts before the probes' maps: an object allocated before the
// cutoff was then counted by the kernel.
func TestScanReadsInOrder(t *testing.T) {
	k := newFakeKernel()
	h := start(t, k, Options{})
	k.calls = nil
	h.scan()
	require.GreaterOrEqual(t, len(k.calls), 3)
	assert.Equal(t, []string{"Now", "SlabCounts", "Read"}, k.calls[:3])
}

func TestScanErrors(t *testing.T) {
	t.Run("probes", func(t *testing.T) {
		k := newFakeKernel()
		h := start(t, k, Options{})
		k.readErr = errors.New("batch lookup failed")
		_, err := h.p.Scan()
		assert.ErrorIs(t, err, k.readErr)

		k.readErr = nil
		k.alloc(1, kmallocObj(kmem.KmallocNormal, 64, kmallocSite))
		res := h.scan()
		assert.Len(t, res.Report.Groups, 1, "the next scan works")
	})
	t.Run("clock", func(t *testing.T) {
		k := newFakeKernel()
		h := start(t, k, Options{})
		k.nowErr = errors.New("clock_gettime failed")
		_, err := h.p.Scan()
		assert.ErrorIs(t, err, k.nowErr)
		assert.Zero(t, k.reads, "no cutoff, no read")
	})
}

// fakeOwners names owners by pid and remembers what the scanner told it.
type fakeOwners struct {
	exits  []kmem.Exit        // every Begin's
	reused map[uint32]uint64  // what Begin returns
	live   map[kmem.Owner]int // the last End's
	exited map[uint32]bool    // processes that have ended
}

func (f *fakeOwners) Begin(exits []kmem.Exit) map[uint32]uint64 {
	f.exits = append(f.exits, exits...)
	return f.reused
}

func (f *fakeOwners) Describe(o kmem.Owner) owner.Owner {
	name := fmt.Sprintf("proc%d", o.Tgid)
	if o.Earlier {
		name = "earlier"
	}
	return owner.Owner{Context: o.Context, Pid: o.Tgid, Name: name, Exited: o.Earlier || f.exited[o.Tgid]}
}

func (f *fakeOwners) End(live iter.Seq[kmem.Owner]) {
	f.live = map[kmem.Owner]int{}
	for o := range live {
		f.live[o]++
	}
}

func TestAttributionSplitsALeakByOwnerAndFoldsTheRest(t *testing.T) {
	k := newFakeKernel()
	owners := &fakeOwners{}
	h := start(t, k, Options{MinAge: 30 * time.Second, TopN: 2, Owners: owners})
	leakBy := func(pid uint32, n int) {
		obj := kmallocObj(kmem.KmallocNormal, 64, kmallocSite)
		obj.Owner = kmem.Owner{Context: kmem.InTask, Tgid: pid, Cgroup: 3}
		k.alloc(n, obj)
	}
	k.exits = []kmem.Exit{{Tgid: 99, Name: "gone"}}
	var events []report.Group
	var res Result
	for range 20 {
		leakBy(10, 6)
		leakBy(11, 3)
		leakBy(12, 1)
		res = h.scan()
		events = append(events, res.Events...)
	}
	assert.Equal(t, []kmem.Exit{{Tgid: 99, Name: "gone"}}, owners.exits, "the probes' exits reach the resolver once")
	assert.Len(t, owners.live, 3, "End hears of every live owner")

	var sites []string
	for _, g := range res.Report.Groups {
		require.Equal(t, verdict.Leaking, g.Verdict.State, "the site's verdict is every owner's")
		sites = append(sites, g.Owner.String())
	}
	assert.Equal(t, []string{"proc10 (pid 10)", "proc11 (pid 11)", "[other]"}, sites, "the top 2 owners, the third folded")
	require.Len(t, events, 3, "one event per reported group when the leak was found")
	assert.Equal(t, "proc10 (pid 10)", events[0].Owner.String())

	began := h.began()
	require.Len(t, began, 1, "one leak: the call site")
	assert.Equal(t, "proc10 (pid 10)", began[0].Owner.String())
}

// Objects of a pid allocated before a new process took it are the ended
// process's: Begin's answer splits them in the scan.
func TestAttributionSplitsAReusedPid(t *testing.T) {
	k := newFakeKernel()
	owners := &fakeOwners{}
	h := start(t, k, Options{MinAge: 30 * time.Second, Owners: owners})
	obj := kmallocObj(kmem.KmallocNormal, 64, kmallocSite)
	obj.Owner = kmem.Owner{Context: kmem.InTask, Tgid: 10}
	k.alloc(4, obj)
	owners.reused = map[uint32]uint64{10: uint64(k.mono)}
	k.advance(time.Second)
	k.alloc(2, obj)
	k.advance(time.Minute)
	res := h.scan()
	byName := map[string]int64{}
	for _, g := range res.Report.Groups {
		byName[g.Owner.Name] += g.Objects
	}
	assert.Equal(t, map[string]int64{"earlier": 4, "proc10": 2}, byName)
}

// --- Growth that something explains ---

// explainedScans is how many scans explained runs.
const explainedScans = 30

// explained runs a site that gains 6 objects a scan, each scan after step
// has set up the kernel, and returns every scan's group of the site.
func explained(t *testing.T, k *fakeKernel, cache string, obj kmem.Object, step func(i int, addrs []uint64)) (*harness, []report.Group) {
	h := start(t, k, Options{MinAge: 30 * time.Second, Holders: fakeHolders{k}})
	var out []report.Group
	for i := 1; i <= explainedScans; i++ {
		step(i, k.alloc(6, obj))
		res := h.scan()
		g, _ := group(res.Report.Groups, cache)
		out = append(out, g)
	}
	return h, out
}

// A reclaimable cache rising like a leak grows while no reclaim has tested
// it; once its objects stay through a drop of the caches it is a leak.
func TestReclaimableCacheIsALeakOnlyOnceItSurvivesReclaim(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "dentry"
	k.reclaimable = map[string]bool{"dentry": true}
	h, groups := explained(t, k, k.cacheNames[dentryKey], slabObj(dentryKey, 192, dentrySite), func(i int, _ []uint64) {
		if i == 20 {
			k.vmstat.DropSlab++
		}
	})
	for i, g := range groups[:19] {
		assert.NotEqual(t, verdict.Leaking, g.Verdict.State, "scan %d", i+1)
	}
	assert.Equal(t, verdict.Growing, groups[18].Verdict.State)
	assert.Equal(t, "reclaimable cache, no reclaim seen", groups[18].Verdict.Reason)
	assert.Equal(t, verdict.ReclaimableCache, groups[18].Verdict.ExplainedBy)
	var growing []report.Group
	for _, s := range h.results[18].Sites {
		if s.Verdict.State == verdict.Growing {
			growing = append(growing, s)
		}
	}
	require.Len(t, growing, 1)
	assert.Equal(t, []string{"d_alloc+0x1e", "dentry"}, []string{growing[0].CallSiteSym, growing[0].Cache})
	assert.InDelta(t, 36, growing[0].Verdict.PerMinute, 1e-6)
	assert.Equal(t, "reclaimable cache, no reclaim seen", growing[0].Verdict.Reason)
	assert.Equal(t, verdict.Leaking, groups[19].Verdict.State, "survived the drop")
	assert.Contains(t, groups[19].Verdict.Reason, "reclaimable cache, survived reclaim")
}

// A site whose objects are live tasks' own structures is growing, with the
// processes that started; the holders are listed only while a site rises
// like a leak.
func TestLiveTasksExplainTheirStructures(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "task_struct"
	k.processes = map[uint32]kmem.Process{
		40: {Name: "sleep", StartNs: uint64(firstMonotonic) + uint64(time.Minute)},
		41: {Name: "sleep", StartNs: uint64(firstMonotonic) + uint64(2*time.Minute)},
		42: {Name: "nginx", StartNs: uint64(firstMonotonic) + uint64(3*time.Minute)},
		1:  {Name: "init", StartNs: 1},
	}
	_, groups := explained(t, k, k.cacheNames[dentryKey], slabObj(dentryKey, 192, dentrySite), func(_ int, addrs []uint64) {
		k.hold(addrs, kmem.Holder{Tgid: 40, Hold: kmem.HeldByTask})
	})
	for i, g := range groups {
		assert.NotEqual(t, verdict.Leaking, g.Verdict.State, "scan %d", i+1)
	}
	last := groups[len(groups)-1].Verdict
	assert.Equal(t, verdict.Growing, last.State)
	assert.Equal(t, verdict.LiveTasks, last.ExplainedBy)
	assert.Equal(t, "live tasks' own structures (100% of its objects); 3 processes started in the last 10m0s: sleep x2, nginx", last.Reason)
	assert.Less(t, k.holdReads, 30, "not listed before the site rose")
	assert.Positive(t, k.holdReads)
}

// A site whose objects are live tasks' structures but for a few (the
// stacks the kernel keeps for reuse after tasks exit) is explained: the
// few are fewer than a leak adds.
func TestAFewUnheldAmongLiveTasksStructures(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "task_struct"
	k.processes = map[uint32]kmem.Process{40: {Name: "sleep", StartNs: 1}}
	h := start(t, k, Options{MinAge: 30 * time.Second, Holders: fakeHolders{k}})
	obj := slabObj(dentryKey, 192, dentrySite)
	k.alloc(verdict.MinRise-1, obj)
	var last verdict.Verdict
	for i := 1; i <= explainedScans; i++ {
		if i%2 == 0 {
			k.hold(k.alloc(1, obj), kmem.Holder{Tgid: 40, Hold: kmem.HeldByTask})
		}
		g, _ := group(h.scan().Report.Groups, "task_struct")
		assert.NotEqual(t, verdict.Leaking, g.Verdict.State, "scan %d", i)
		last = g.Verdict
	}
	assert.Equal(t, verdict.LiveTasks, last.ExplainedBy)
	assert.Contains(t, last.Reason, "live tasks' own structures (77% of its objects)")
}

// A leak of open files names the process that holds them.
func TestLeakOfOpenFilesNamesItsHolder(t *testing.T) {
	k := newFakeKernel()
	k.processes = map[uint32]kmem.Process{812: {Name: "python3", StartNs: 1}}
	_, groups := explained(t, k, "kmalloc-cg-192", kmallocObj(kmem.KmallocAccounted, 192, kmallocSite), func(_ int, addrs []uint64) {
		k.hold(addrs, kmem.Holder{Tgid: 812, Hold: kmem.HeldAsFile})
	})
	last := groups[len(groups)-1].Verdict
	assert.Equal(t, verdict.Leaking, last.State)
	assert.Equal(t, "held by python3 (pid 812), its open files (100%)", last.Reason)
}

// Objects that outlive the processes that allocated them, still rising: a
// leak, and its reason says so.
func TestLeakOutlivingItsAllocatorsSaysSo(t *testing.T) {
	vs := risingFromProcesses(t, newFakeKernel(), kmallocSite, true)
	last := vs[len(vs)-1]
	assert.Equal(t, verdict.Leaking, last.State)
	assert.Equal(t, "allocating processes exited (100% of its objects), still rising", last.Reason)
}

// tmpfs inodes that rise as tmpfs mounts gain files are growing.
func TestTmpfsFilesExplainTmpfsInodes(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "shmem_inode_cache"
	_, groups := explained(t, k, "shmem_inode_cache", slabObj(dentryKey, 760, dentrySite), func(int, []uint64) {
		k.tmpfsFiles += 6
	})
	for i, g := range groups {
		assert.NotEqual(t, verdict.Leaking, g.Verdict.State, "scan %d", i+1)
	}
	last := groups[len(groups)-1].Verdict
	assert.Equal(t, verdict.TmpfsFiles, last.ExplainedBy)
	assert.Equal(t, "files kept in tmpfs (its mounts gain 36.0 files/min)", last.Reason)
}

// Cgroups' structures rise with the cgroups a container host makes, from
// processes that exit at once: growing while the kernel keeps more
// cgroups; the same rise with cgroups made and removed is a leak.
func TestCgroupsExplainTheirStructures(t *testing.T) {
	k := newFakeKernel()
	k.cgroups = 40
	_, groups := explained(t, k, "kmalloc-cg-2k", kmallocObj(kmem.KmallocAccounted, 2048, memcgSite), func(i int, _ []uint64) {
		if i%3 == 0 {
			k.cgroups += 2
		}
	})
	for i, g := range groups {
		assert.NotEqual(t, verdict.Leaking, g.Verdict.State, "scan %d", i+1)
	}
	last := groups[len(groups)-1].Verdict
	assert.Equal(t, verdict.Cgroups, last.ExplainedBy)
	assert.Contains(t, last.Reason, "structures of cgroups, kept while they exist (")

	k = newFakeKernel()
	k.cgroups = 40
	_, groups = explained(t, k, "kmalloc-cg-2k", kmallocObj(kmem.KmallocAccounted, 2048, memcgSite), func(int, []uint64) {})
	assert.Equal(t, verdict.Leaking, groups[len(groups)-1].Verdict.State, "no more cgroups kept")
}

// A memory cgroup's list_lru heads rise as its running tasks reach more
// filesystems, the count of cgroups flat: growing while the processes
// that made them run; the same rise from processes that exited (their
// cgroups gone, the heads kept) is a leak.
func TestRunningProcessesCgroupsExplainTheirListLRUs(t *testing.T) {
	k := newFakeKernel()
	k.cgroups = 40
	vs := risingFromProcesses(t, k, lruSite, false)
	for i, v := range vs {
		assert.NotEqual(t, verdict.Leaking, v.State, "verdict %d", i+1)
	}
	running := vs[len(vs)-1]
	assert.Equal(t, verdict.LiveTasks, running.ExplainedBy)
	assert.Equal(t, "structures of the cgroups of the processes that made them, which still run (100% of its objects): one per cgroup and list_lru", running.Reason)
	exited := risingFromProcesses(t, newFakeKernel(), lruSite, true)
	assert.Equal(t, verdict.Leaking, exited[len(exited)-1].State)
}

// risingFromProcesses allocates 6 objects at site a scan for 30 scans,
// each scan's from a process of its own that has exited by the scan or
// still runs, and returns the site's verdicts, one a scan once its objects
// aged.
func risingFromProcesses(t *testing.T, k *fakeKernel, site uint64, exit bool) []verdict.Verdict {
	owners := &fakeOwners{exited: map[uint32]bool{}}
	h := start(t, k, Options{MinAge: 30 * time.Second, Owners: owners, Holders: fakeHolders{k}})
	var out []verdict.Verdict
	for i := 1; i <= 30; i++ {
		obj := kmallocObj(kmem.KmallocNormal, 64, site)
		obj.Owner = kmem.Owner{Context: kmem.InTask, Tgid: uint32(1000 + i)}
		k.alloc(6, obj)
		owners.exited[uint32(1000+i)] = exit
		for _, g := range h.scan().Report.Groups {
			out = append(out, g.Verdict)
		}
	}
	require.NotEmpty(t, out, "no objects aged")
	return out
}

// The allocators' own bookkeeping rises with every cache: growing, never a
// leak of its own.
func TestAllocatorBookkeepingIsNotALeak(t *testing.T) {
	k := newFakeKernel()
	_, groups := explained(t, k, "kmalloc-512", kmallocObj(kmem.KmallocNormal, 512, sheafSite), func(int, []uint64) {})
	for i, g := range groups {
		assert.NotEqual(t, verdict.Leaking, g.Verdict.State, "scan %d", i+1)
	}
	last := groups[len(groups)-1].Verdict
	assert.Equal(t, verdict.AllocatorBookkeeping, last.ExplainedBy)
	assert.Equal(t, "the allocator's own bookkeeping (SLUB sheaves), which follows the memory it manages", last.Reason)
}

// Buffers virtio-vsock posts to its device grow old on a quiet link: growing,
// explained by the refill on their stack (suite run 13 called them leaking).
func TestDeviceReceiveBuffersAreNotALeak(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "skbuff_head_cache"
	k.stacks[9] = []uint64{allocFrame, skbSite, vsockFrame}
	h := start(t, k, Options{StacksOn: true, MinAge: 30 * time.Second})
	var last verdict.Verdict
	for i := 1; i <= explainedScans; i++ {
		obj := slabObj(dentryKey, 256, skbSite)
		obj.StackID = 9
		k.alloc(6, obj)
		for _, g := range h.scan().Report.Groups {
			assert.NotEqual(t, verdict.Leaking, g.Verdict.State, "scan %d", i)
			last = g.Verdict
		}
	}
	assert.Equal(t, verdict.Growing, last.State)
	assert.Equal(t, verdict.DeviceBuffers, last.ExplainedBy)
	assert.Equal(t, "receive buffers a driver posts to its device (virtio_vsock_rx_fill), held by it until data arrives", last.Reason)
}

// DAMON's regions rise as it refines its view of memory: growing while
// they stay within what its kdamonds may keep, a leak beyond it (suite run
// 14 called kdamond.0's leaking at 13.6 a minute).
func TestDamonRegionsWithinTheirBoundAreNotALeak(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[damonKey] = "ftrace_event_field"
	k.damonBound = 120
	_, groups := explained(t, k, "ftrace_event_field", slabObj(damonKey, 48, damonSite), func(int, []uint64) {})
	var leaking []int
	for i, g := range groups {
		if g.Verdict.State == verdict.Leaking {
			leaking = append(leaking, i+1)
		}
	}
	last := groups[len(groups)-1]
	require.Greater(t, last.Objects, k.damonBound, "the test must rise past the bound")
	require.NotEmpty(t, leaking, "never a leak past the bound")
	for _, i := range leaking {
		assert.Greater(t, groups[i-1].Objects, k.damonBound, "scan %d: a leak within the bound", i)
	}
	assert.Equal(t, verdict.Leaking, last.Verdict.State)
	within := groups[leaking[0]-2].Verdict
	assert.Equal(t, verdict.KernelBound, within.ExplainedBy)
	assert.Equal(t, "DAMON's monitoring regions, within the 120 its kdamonds may keep", within.Reason)
}

// Inodes' security blobs go with their inodes: growing like a reclaimable
// cache, though their own cache is not flagged.
func TestCompanionsOfReclaimableObjectsAreReclaimable(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "lsm_inode_cache"
	_, groups := explained(t, k, "lsm_inode_cache", slabObj(dentryKey, 32, lsmSite), func(int, []uint64) {})
	for i, g := range groups {
		assert.NotEqual(t, verdict.Leaking, g.Verdict.State, "scan %d", i+1)
	}
	last := groups[len(groups)-1].Verdict
	assert.Equal(t, verdict.ReclaimableCache, last.ExplainedBy)
	assert.Equal(t, "inodes' security blobs, reclaimed with them, no reclaim seen", last.Reason)
}

// The reason names who still adds to a site, not who has the most of it:
// a batch makes 200 objects in the first scan and keeps them, beside a
// process leaking two a scan at the same call site. Whether live tasks
// hold them as open files or nobody does.
func TestLeakNamesWhoAddsToIt(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		held         bool
	}{
		{"unheld", "allocated by proc812 (pid 812), still rising", false},
		{"open files", "held by several processes, their open files (100%); still added to by proc812 (pid 812)", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel()
			h := start(t, k, Options{MinAge: 30 * time.Second, Owners: &fakeOwners{}, Holders: fakeHolders{k}})
			alloc := func(tgid uint32, n int) {
				obj := kmallocObj(kmem.KmallocNormal, 64, kmallocSite)
				obj.Owner = kmem.Owner{Context: kmem.InTask, Tgid: tgid}
				addrs := k.alloc(n, obj)
				if tc.held {
					k.hold(addrs, kmem.Holder{Tgid: tgid, Hold: kmem.HeldAsFile})
				}
			}
			var last verdict.Verdict
			for i := 1; i <= 30; i++ {
				alloc(812, 2)
				if i == 1 {
					alloc(900, 200)
				}
				for _, g := range h.scan().Report.Groups {
					last = g.Verdict
				}
			}
			assert.Equal(t, verdict.Leaking, last.State)
			assert.Equal(t, tc.reason, last.Reason)
		})
	}
}

// A shell's pipelines beside a batch that holds two hundred pipes: each
// new command holds the two its shell made for it, for minutes, so the
// site rises while no process opens more (suite run 13's pipe inodes).
// Holders are listed only from when it rises like a leak. A process that
// opens more is a leak (TestLeakNamesWhoAddsToIt).
func TestPipelinesBesideABatchAreNotALeak(t *testing.T) {
	k := newFakeKernel()
	h := start(t, k, Options{MinAge: 30 * time.Second, Owners: &fakeOwners{}, Holders: fakeHolders{k}})
	pipes := func(allocator, holder uint32, n int) {
		obj := kmallocObj(kmem.KmallocNormal, 64, kmallocSite)
		obj.Owner = kmem.Owner{Context: kmem.InTask, Tgid: allocator}
		k.hold(k.alloc(n, obj), kmem.Holder{Tgid: holder, Hold: kmem.HeldAsFile})
	}
	var last verdict.Verdict
	for i := 1; i <= 40; i++ {
		switch {
		case i == 1:
			pipes(900, 900, 200)
		case i >= 10:
			pipes(700, uint32(3000+i), 2)
		}
		if g, ok := group(h.scan().Report.Groups, "kmalloc-64"); ok {
			assert.NotEqual(t, verdict.Leaking, g.Verdict.State, "scan %d", i)
			last = g.Verdict
		}
	}
	assert.Equal(t, verdict.LiveTasks, last.ExplainedBy)
	assert.Equal(t, "open files of 30 live processes hold its growth, none of which opened 5 more (100% of its objects; 0 of the others are new)", last.Reason)
}

// Half of a site's objects live tasks' own: too few to explain its rise,
// and the reason says how many.
func TestHalfHeldByTasksIsNotExplained(t *testing.T) {
	k := newFakeKernel()
	_, groups := explained(t, k, "kmalloc-64", kmallocObj(kmem.KmallocNormal, 64, kmallocSite), func(_ int, addrs []uint64) {
		k.hold(addrs[:3], kmem.Holder{Tgid: 40, Hold: kmem.HeldByTask})
	})
	last := groups[len(groups)-1].Verdict
	assert.Equal(t, verdict.Leaking, last.State)
	assert.Equal(t, "50% live tasks' own structures", last.Reason)
}

// Open files spread over many processes, each holding a few (services
// that started, each with its socket), are growing; one process's are a
// leak (TestLeakOfOpenFilesNamesItsHolder).
func TestOpenFilesOfManyProcessesAreNotALeak(t *testing.T) {
	k := newFakeKernel()
	owners := &fakeOwners{}
	h := start(t, k, Options{MinAge: 30 * time.Second, Owners: owners, Holders: fakeHolders{k}})
	var last verdict.Verdict
	for i := 1; i <= 30; i++ {
		obj := kmallocObj(kmem.KmallocNormal, 64, kmallocSite)
		obj.Owner = kmem.Owner{Context: kmem.InTask, Tgid: uint32(2000 + i)}
		k.hold(k.alloc(2, obj), kmem.Holder{Tgid: uint32(2000 + i), Hold: kmem.HeldAsFile})
		for _, g := range h.scan().Report.Groups {
			assert.NotEqual(t, verdict.Leaking, g.Verdict.State, "scan %d", i)
			last = g.Verdict
		}
	}
	assert.Equal(t, verdict.LiveTasks, last.ExplainedBy)
	assert.Equal(t, "open files of 28 live processes, none holding a quarter of them", last.Reason, "the aged ones")
}

// Dentries that open files hold are pinned: a reclaimable cache's site
// rising with them is a leak, named by who holds them.
func TestOpenFilesPinReclaimableObjects(t *testing.T) {
	k := newFakeKernel()
	k.cacheNames[dentryKey] = "dentry"
	k.reclaimable = map[string]bool{"dentry": true}
	k.processes = map[uint32]kmem.Process{812: {Name: "python3"}}
	_, groups := explained(t, k, "dentry", slabObj(dentryKey, 192, dentrySite), func(_ int, addrs []uint64) {
		k.hold(addrs, kmem.Holder{Tgid: 812, Hold: kmem.HeldAsFile})
	})
	last := groups[len(groups)-1].Verdict
	assert.Equal(t, verdict.Leaking, last.State)
	assert.Equal(t, "held by python3 (pid 812), its open files (100%)", last.Reason)
}
