package report

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
	"github.com/kmemleak/kmemleakreceiver/internal/verdict"
)

// fakeSymbolizer names the addresses it knows and records every call.
type fakeSymbolizer struct {
	names map[uint64]string
	calls []uint64
}

func (f *fakeSymbolizer) Symbolize(addr uint64) string {
	f.calls = append(f.calls, addr)
	if name, ok := f.names[addr]; ok {
		return name
	}
	return "unknown"
}

// Call sites and slab cache keys used across the tests.
const (
	siteA = 0xffffffff81a00010
	siteB = 0xffffffff81b00020
	siteC = 0xffffffffc0c00030 // in a module

	dentryKey = 0xffff888100a3c000
	inodeKey  = 0xffff888100a3d000
)

var testNames = map[uint64]string{
	siteA: "alloc_pipe_info+0x2b",
	siteB: "d_alloc+0x2e",
	siteC: "nf_conntrack_alloc+0x51 [nf_conntrack]",
}

// takenNs is when the test snapshots were taken: an hour after boot.
const takenNs = uint64(time.Hour)

// minAge is the tests' min_age.
const minAge = 30 * time.Second

func newSnapshot(objs ...kmem.Object) *kmem.Snapshot {
	return snapshotWith(0, objs...)
}

// snapshotWith is a scan of objs begun at takenNs; survived, unless 0, is
// how old an object must be to have been aged at the previous scan.
func snapshotWith(survived time.Duration, objs ...kmem.Object) *kmem.Snapshot {
	snap := &kmem.Snapshot{
		TakenNs: takenNs,
		Counters: map[kmem.Allocator]kmem.Counters{
			kmem.Slab:    {Allocs: 100, Frees: 90},
			kmem.Kmalloc: {Allocs: 200, Frees: 150},
		},
		CacheNames: map[uint64]string{dentryKey: "dentry", inodeKey: "inode_cache"},
	}
	ages := kmem.Ages{Now: takenNs, Cutoff: takenNs, Aged: takenNs - uint64(minAge)}
	if survived > 0 {
		ages.Survived = takenNs - uint64(survived)
	}
	snap.Begin(ages)
	for _, o := range objs {
		snap.Add(&o)
	}
	return snap
}

func slabObj(cache, site uint64, bytes uint32, age time.Duration) kmem.Object {
	return kmem.Object{Allocator: kmem.Slab, Cache: cache, CallSite: site, Bytes: bytes, AllocNs: takenNs - uint64(age)}
}

func kmallocObj(family kmem.KmallocFamily, site uint64, bytes uint32, age time.Duration) kmem.Object {
	return kmem.Object{Allocator: kmem.Kmalloc, Cache: uint64(family), CallSite: site, Bytes: bytes, AllocNs: takenNs - uint64(age)}
}

func TestBuildMinAge(t *testing.T) {
	snap := newSnapshot(
		slabObj(dentryKey, siteB, 192, minAge-time.Nanosecond), // too young
		slabObj(dentryKey, siteB, 192, minAge),                 // exactly min_age: a suspect
		slabObj(dentryKey, siteB, 192, 10*time.Minute),
		kmallocObj(kmem.KmallocNormal, siteA, 64, time.Second), // too young
		// Recorded after the scan read its clock: age 0, never a suspect.
		kmem.Object{Allocator: kmem.Kmalloc, CallSite: siteA, Bytes: 64, AllocNs: takenNs + 1},
	)

	rep := Build(snap, Options{}, &fakeSymbolizer{names: testNames})

	assert.Equal(t, hashed([]Group{{
		Allocator:   kmem.Slab,
		Cache:       "dentry",
		CallSite:    siteB,
		CallSiteSym: "d_alloc+0x2e",
		Objects:     2,
		Bytes:       384,
		OldestAge:   10 * time.Minute,
	}}), rep.Groups)
	assert.Equal(t, int64(2), rep.Suspects)
	// Young objects are not suspects but the tracker still holds them.
	assert.Equal(t, map[kmem.Allocator]int64{kmem.Slab: 3, kmem.Kmalloc: 2}, rep.Tracked)
}

func TestBuildGrouping(t *testing.T) {
	tests := []struct {
		name string
		objs []kmem.Object
		want []Group
	}{
		{
			name: "one call site and cache is one group",
			objs: []kmem.Object{
				slabObj(dentryKey, siteB, 192, time.Minute),
				slabObj(dentryKey, siteB, 192, 3*time.Minute),
				slabObj(dentryKey, siteB, 192, 2*time.Minute),
			},
			want: []Group{
				{Allocator: kmem.Slab, Cache: "dentry", CallSite: siteB, CallSiteSym: "d_alloc+0x2e", Objects: 3, Bytes: 576, OldestAge: 3 * time.Minute},
			},
		},
		{
			name: "one call site in two slab caches is two groups",
			objs: []kmem.Object{
				slabObj(dentryKey, siteB, 192, time.Minute),
				slabObj(inodeKey, siteB, 600, 2*time.Minute),
			},
			want: []Group{
				{Allocator: kmem.Slab, Cache: "inode_cache", CallSite: siteB, CallSiteSym: "d_alloc+0x2e", Objects: 1, Bytes: 600, OldestAge: 2 * time.Minute},
				{Allocator: kmem.Slab, Cache: "dentry", CallSite: siteB, CallSiteSym: "d_alloc+0x2e", Objects: 1, Bytes: 192, OldestAge: time.Minute},
			},
		},
		{
			name: "one cache from two call sites is two groups",
			objs: []kmem.Object{
				slabObj(dentryKey, siteB, 192, time.Minute),
				slabObj(dentryKey, siteC, 192, time.Minute),
				slabObj(dentryKey, siteC, 192, time.Minute),
			},
			want: []Group{
				{Allocator: kmem.Slab, Cache: "dentry", CallSite: siteC, CallSiteSym: "nf_conntrack_alloc+0x51 [nf_conntrack]", Objects: 2, Bytes: 384, OldestAge: time.Minute},
				{Allocator: kmem.Slab, Cache: "dentry", CallSite: siteB, CallSiteSym: "d_alloc+0x2e", Objects: 1, Bytes: 192, OldestAge: time.Minute},
			},
		},
		{
			name: "kmalloc call site with two sizes is two groups",
			objs: []kmem.Object{
				kmallocObj(kmem.KmallocNormal, siteA, 64, time.Minute),
				kmallocObj(kmem.KmallocNormal, siteA, 1024, 2*time.Minute),
				kmallocObj(kmem.KmallocNormal, siteA, 64, 5*time.Minute),
			},
			want: []Group{
				{Allocator: kmem.Kmalloc, Cache: "kmalloc-1k", CallSite: siteA, CallSiteSym: "alloc_pipe_info+0x2b", Objects: 1, Bytes: 1024, OldestAge: 2 * time.Minute},
				{Allocator: kmem.Kmalloc, Cache: "kmalloc-64", CallSite: siteA, CallSiteSym: "alloc_pipe_info+0x2b", Objects: 2, Bytes: 128, OldestAge: 5 * time.Minute},
			},
		},
		{
			name: "kmalloc call site in two gfp families is two groups",
			objs: []kmem.Object{
				kmallocObj(kmem.KmallocNormal, siteA, 256, time.Minute),
				kmallocObj(kmem.KmallocAccounted, siteA, 256, time.Minute),
			},
			want: []Group{
				{Allocator: kmem.Kmalloc, Cache: "kmalloc-256", CallSite: siteA, CallSiteSym: "alloc_pipe_info+0x2b", Objects: 1, Bytes: 256, OldestAge: time.Minute},
				{Allocator: kmem.Kmalloc, Cache: "kmalloc-cg-256", CallSite: siteA, CallSiteSym: "alloc_pipe_info+0x2b", Objects: 1, Bytes: 256, OldestAge: time.Minute},
			},
		},
		{
			// Each group must be a distinct (allocator, cache, call site):
			// two groups with equal attributes would be merged (averaged!)
			// by the metrics builder and duplicated in the events.
			name: "kmalloc-large sizes from one call site are one group",
			objs: []kmem.Object{
				kmallocObj(kmem.KmallocLarge, siteA, 16384, time.Minute),
				kmallocObj(kmem.KmallocLarge, siteA, 32768, 2*time.Minute),
				kmallocObj(kmem.KmallocLarge, siteA, 65536, time.Minute),
			},
			want: []Group{
				{Allocator: kmem.Kmalloc, Cache: "kmalloc-large", CallSite: siteA, CallSiteSym: "alloc_pipe_info+0x2b", Objects: 3, Bytes: 114688, OldestAge: 2 * time.Minute},
			},
		},
		{
			name: "objects of one family and size class are one group",
			objs: []kmem.Object{
				kmallocObj(kmem.KmallocDMA, siteA, 128, time.Minute),
				kmallocObj(kmem.KmallocDMA, siteA, 128, time.Minute),
				kmallocObj(kmem.KmallocDMA, siteA, 128, time.Minute),
				kmallocObj(kmem.KmallocReclaimable, siteB, 512, time.Minute),
				kmallocObj(kmem.KmallocReclaimable, siteB, 512, time.Minute),
			},
			want: []Group{
				{Allocator: kmem.Kmalloc, Cache: "kmalloc-rcl-512", CallSite: siteB, CallSiteSym: "d_alloc+0x2e", Objects: 2, Bytes: 1024, OldestAge: time.Minute},
				{Allocator: kmem.Kmalloc, Cache: "dma-kmalloc-128", CallSite: siteA, CallSiteSym: "alloc_pipe_info+0x2b", Objects: 3, Bytes: 384, OldestAge: time.Minute},
			},
		},
		{
			name: "slab and kmalloc from one call site are two groups",
			objs: []kmem.Object{
				slabObj(dentryKey, siteA, 192, time.Minute),
				kmallocObj(kmem.KmallocNormal, siteA, 192, time.Minute),
			},
			want: []Group{
				// Equal bytes and objects: slab sorts first.
				{Allocator: kmem.Slab, Cache: "dentry", CallSite: siteA, CallSiteSym: "alloc_pipe_info+0x2b", Objects: 1, Bytes: 192, OldestAge: time.Minute},
				{Allocator: kmem.Kmalloc, Cache: "kmalloc-192", CallSite: siteA, CallSiteSym: "alloc_pipe_info+0x2b", Objects: 1, Bytes: 192, OldestAge: time.Minute},
			},
		},
		{
			name: "slab cache the probes did not name",
			objs: []kmem.Object{slabObj(0xffff8881deadb000, siteB, 64, time.Minute)},
			want: []Group{
				{Allocator: kmem.Slab, Cache: "unknown", CallSite: siteB, CallSiteSym: "d_alloc+0x2e", Objects: 1, Bytes: 64, OldestAge: time.Minute},
			},
		},
		{
			name: "call site the symbolizer cannot name",
			objs: []kmem.Object{kmallocObj(kmem.KmallocNormal, 0xffffffff8badf00d, 32, time.Minute)},
			want: []Group{
				{Allocator: kmem.Kmalloc, Cache: "kmalloc-32", CallSite: 0xffffffff8badf00d, CallSiteSym: "unknown", Objects: 1, Bytes: 32, OldestAge: time.Minute},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := Build(newSnapshot(tt.objs...), Options{}, &fakeSymbolizer{names: testNames})
			assert.Equal(t, hashed(tt.want), rep.Groups)
			assert.Equal(t, int64(len(tt.objs)), rep.Suspects)
		})
	}
}

func TestBuildOrdersGroups(t *testing.T) {
	snap := newSnapshot(
		slabObj(dentryKey, 0x1000, 128, time.Minute), // 128 B in 1
		slabObj(dentryKey, 0x2000, 64, time.Minute),  // 128 B in 2
		slabObj(dentryKey, 0x2000, 64, time.Minute),
		slabObj(dentryKey, 0x3000, 384, time.Minute),             // 384 B in 1
		slabObj(inodeKey, 0x1000, 128, time.Minute),              // 128 B in 1, inode_cache
		slabObj(dentryKey, 0x0500, 128, time.Minute),             // 128 B in 1, lower call site
		kmallocObj(kmem.KmallocNormal, 0x0100, 128, time.Minute), // 128 B in 1, kmalloc
		kmallocObj(kmem.KmallocNormal, 0x4000, 8, time.Minute),   // 8 B
	)
	// By bytes, then objects, then allocator (slab first), cache and call
	// site: a total order, so every scan of the same objects agrees.
	wantAll := []Group{
		{Allocator: kmem.Slab, Cache: "dentry", CallSite: 0x3000, Objects: 1, Bytes: 384},
		{Allocator: kmem.Slab, Cache: "dentry", CallSite: 0x2000, Objects: 2, Bytes: 128},
		{Allocator: kmem.Slab, Cache: "dentry", CallSite: 0x0500, Objects: 1, Bytes: 128},
		{Allocator: kmem.Slab, Cache: "dentry", CallSite: 0x1000, Objects: 1, Bytes: 128},
		{Allocator: kmem.Slab, Cache: "inode_cache", CallSite: 0x1000, Objects: 1, Bytes: 128},
		{Allocator: kmem.Kmalloc, Cache: "kmalloc-128", CallSite: 0x0100, Objects: 1, Bytes: 128},
		{Allocator: kmem.Kmalloc, Cache: "kmalloc-8", CallSite: 0x4000, Objects: 1, Bytes: 8},
	}
	for i := range wantAll {
		wantAll[i].OldestAge = time.Minute
		wantAll[i].CallSiteSym = fmt.Sprintf("fn_%x", wantAll[i].CallSite)
	}

	// Build ranges over a map: repeat to shake out any order that depends
	// on it.
	for range 20 {
		rep := Build(snap, Options{}, hexSymbolizer{})
		require.Equal(t, hashed(wantAll), rep.Groups)
		require.Equal(t, int64(8), rep.Suspects)
	}
}

// Top keeps the largest groups of each verdict, so a small leak is not
// pushed out by the pools that outweigh it.
func TestTop(t *testing.T) {
	g := func(bytes int64, s verdict.State) Group {
		return Group{Bytes: bytes, Verdict: verdict.Verdict{State: s}}
	}
	groups := []Group{
		g(900, verdict.Steady), g(800, verdict.Steady), g(700, verdict.Transient), g(600, verdict.Steady),
		g(500, verdict.Growing), g(20, verdict.Leaking), g(10, verdict.Leaking), g(5, verdict.Leaking),
	}
	assert.Equal(t, []Group{g(900, verdict.Steady), g(700, verdict.Transient), g(500, verdict.Growing), g(20, verdict.Leaking)},
		Top(groups, 1))
	assert.Equal(t, []Group{
		g(900, verdict.Steady), g(800, verdict.Steady), g(700, verdict.Transient),
		g(500, verdict.Growing), g(20, verdict.Leaking), g(10, verdict.Leaking),
	}, Top(groups, 2))
	assert.Equal(t, groups, Top(groups, 50))
}

// With attribution, the groups outside each state's top n are folded per
// call site and stack into one owned by owner.Folded, and the n largest of
// those kept: at most 2n groups a state, however many owners there are.
func TestTopFoldsTheOtherOwners(t *testing.T) {
	leak := verdict.Verdict{State: verdict.Leaking}
	g := func(site string, pid uint32, bytes int64) Group {
		return Group{CallSiteSym: site, StackHash: "h" + site, Owner: owner.Owner{Pid: pid, Name: "p"}, Objects: bytes / 8, Bytes: bytes, Verdict: leak}
	}
	groups := []Group{g("a", 1, 1000), g("b", 1, 900), g("a", 2, 500), g("a", 3, 100), g("b", 4, 50), g("c", 5, 10)}
	got := Top(groups, 2)
	folded := func(site string, parts ...Group) Group {
		f := Group{CallSiteSym: site, StackHash: "h" + site, Owner: owner.Folded, Verdict: leak}
		for _, p := range parts {
			f.Objects += p.Objects
			f.Bytes += p.Bytes
		}
		return f
	}
	assert.Equal(t, []Group{g("a", 1, 1000), g("b", 1, 900), folded("a", g("a", 2, 500), g("a", 3, 100)), folded("b", g("b", 4, 50))}, got)

	var many []Group
	for pid := range uint32(1000) {
		many = append(many, g(fmt.Sprint("site", pid%7), pid+1, int64(10_000-pid)))
	}
	assert.Len(t, Top(many, 5), 10, "n owned groups and n folds a state")
}

func TestBuildSplitsGroupsByOwner(t *testing.T) {
	nginx := kmem.Owner{Context: kmem.InTask, Tgid: 10, Cgroup: 5}
	irq := kmem.Owner{Context: kmem.InSoftirq}
	objs := []kmem.Object{
		slabObj(dentryKey, siteA, 192, time.Minute), slabObj(dentryKey, siteA, 192, time.Minute), slabObj(dentryKey, siteA, 192, time.Minute),
	}
	objs[0].Owner, objs[1].Owner, objs[2].Owner = nginx, nginx, irq
	names := describer{nginx: {Context: kmem.InTask, Pid: 10, Name: "nginx", Cgroup: "/a"}, irq: {Context: kmem.InSoftirq}}

	rep := Build(newSnapshot(objs...), Options{Owners: names}, &fakeSymbolizer{names: testNames})
	require.Len(t, rep.Groups, 2)
	assert.Equal(t, names[nginx], rep.Groups[0].Owner)
	assert.Equal(t, int64(2), rep.Groups[0].Objects)
	assert.Equal(t, names[irq], rep.Groups[1].Owner)
	assert.Equal(t, rep.Groups[0].StackHash, rep.Groups[1].StackHash, "the fingerprint is the code's, not the owner's")

	rep = Build(newSnapshot(objs...), Options{}, &fakeSymbolizer{names: testNames})
	require.Len(t, rep.Groups, 1, "without attribution the owners are not told apart")
	assert.Equal(t, int64(3), rep.Groups[0].Objects)
	assert.False(t, rep.Groups[0].Owner.Attributed())
}

type describer map[kmem.Owner]owner.Owner

func (d describer) Describe(o kmem.Owner) owner.Owner { return d[o] }

// Survivors are the aged objects that were aged at the previous scan too:
// with scans 10 s apart and min_age 30 s, those older than 40 s.
func TestBuildCountsSurvivors(t *testing.T) {
	objs := []kmem.Object{
		slabObj(dentryKey, 0x1000, 192, 35*time.Second),
		slabObj(dentryKey, 0x1000, 192, 40*time.Second),
		slabObj(dentryKey, 0x1000, 192, 5*time.Minute),
		slabObj(dentryKey, 0x1000, 192, 10*time.Second), // not aged
	}
	snap := snapshotWith(40*time.Second, objs...)
	rep := Build(snap, Options{}, hexSymbolizer{})
	require.Len(t, rep.Groups, 1)
	assert.Equal(t, int64(3), rep.Groups[0].Objects)
	assert.Equal(t, int64(2), rep.Groups[0].Survivors)

	sampled := Build(snap, Options{SampleRate: 8}, hexSymbolizer{})
	assert.Equal(t, int64(16), sampled.Groups[0].Survivors, "scaled like the objects")

	first := Build(newSnapshot(objs...), Options{}, hexSymbolizer{})
	assert.Zero(t, first.Groups[0].Survivors, "no previous scan")
}

func TestBuildMergesGroupsThatExportAlike(t *testing.T) {
	// Two call sites the symbolizer cannot name, in one cache: exported as
	// one "unknown" series, so they must be one group with summed counts,
	// not two data points with equal attributes.
	const unnamedA, unnamedB = 0xffffffff81900000, 0xffffffff81900040
	snap := newSnapshot(
		slabObj(dentryKey, unnamedA, 192, time.Minute),
		slabObj(dentryKey, unnamedB, 192, 2*time.Minute),
		slabObj(dentryKey, unnamedB, 192, time.Minute),
		kmallocObj(kmem.KmallocNormal, siteC, 32, time.Second), // too young: never looked at
	)
	sym := &fakeSymbolizer{names: testNames}

	rep := Build(snap, Options{}, sym)

	require.Len(t, rep.Groups, 1)
	g := rep.Groups[0]
	assert.Equal(t, "unknown", g.CallSiteSym)
	assert.Equal(t, int64(3), g.Objects)
	assert.Equal(t, int64(3*192), g.Bytes)
	assert.Equal(t, 2*time.Minute, g.OldestAge)
	assert.ElementsMatch(t, []uint64{unnamedA, unnamedB}, sym.calls)
}

func TestBuildTracked(t *testing.T) {
	snap := newSnapshot(
		slabObj(dentryKey, siteB, 192, time.Minute),
		slabObj(dentryKey, siteB, 192, time.Millisecond),
	)

	rep := Build(snap, Options{}, &fakeSymbolizer{names: testNames})

	// kmalloc has counters but no live objects: its tracker.objects point
	// must still be there, at zero.
	assert.Equal(t, map[kmem.Allocator]int64{kmem.Slab: 2, kmem.Kmalloc: 0}, rep.Tracked)
	assert.Equal(t, snap.Counters, rep.Counters)
}

// With 1-in-N sampling, counts and bytes are scaled up by N; the kernel's
// bound still applies to the objects actually tracked.
func TestBuildScalesSampledCounts(t *testing.T) {
	snap := newSnapshot(
		slabObj(dentryKey, siteB, 192, time.Minute),
		slabObj(dentryKey, siteB, 192, time.Minute),
		slabObj(inodeKey, siteA, 600, time.Minute),
	)
	opts := Options{SampleRate: 16, Bounds: map[string]int64{"dentry": 2}}

	rep := Build(snap, opts, &fakeSymbolizer{names: testNames})

	require.Len(t, rep.Groups, 2)
	inode, dentry := rep.Groups[0], rep.Groups[1]
	assert.Equal(t, int64(16*600), inode.Bytes)
	assert.Equal(t, int64(2*16), dentry.Objects)
	assert.Equal(t, int64(2*16*192), dentry.Bytes)
	assert.Equal(t, int64(3*16), rep.Suspects)
	assert.Equal(t, int64(3), rep.Tracked[kmem.Slab], "the map's own count stays unscaled")
	assert.Zero(t, rep.Withheld)
	// The probes count the sampled objects' events only.
	assert.Equal(t, kmem.Counters{Allocs: 16 * 100, Frees: 16 * 90}, rep.Counters[kmem.Slab])
	assert.Equal(t, kmem.Counters{Allocs: 100, Frees: 90}, snap.Counters[kmem.Slab], "the snapshot's own are left alone")
}

// Pages are named by order, percpu objects all "percpu".
func TestBuildNamesPagesAndPercpu(t *testing.T) {
	snap := newSnapshot(
		kmem.Object{Allocator: kmem.Page, Cache: 2, Bytes: 4 << 12, CallSite: siteA, StackID: -1, AllocNs: takenNs - uint64(time.Minute)},
		kmem.Object{Allocator: kmem.Percpu, Bytes: 64, CallSite: siteB, StackID: -1, AllocNs: takenNs - uint64(time.Minute)},
	)

	rep := Build(snap, Options{}, &fakeSymbolizer{names: testNames})

	require.Len(t, rep.Groups, 2)
	assert.Equal(t, "order-2", rep.Groups[0].Cache)
	assert.Equal(t, kmem.Page, rep.Groups[0].Allocator)
	assert.Equal(t, "percpu", rep.Groups[1].Cache)
	assert.Equal(t, "d_alloc+0x2e", rep.Groups[1].CallSiteSym)
}

func TestBuildEmpty(t *testing.T) {
	sym := &fakeSymbolizer{}
	rep := Build(newSnapshot(), Options{}, sym)

	assert.Empty(t, rep.Groups)
	assert.Zero(t, rep.Suspects)
	assert.Equal(t, map[kmem.Allocator]int64{kmem.Slab: 0, kmem.Kmalloc: 0}, rep.Tracked)
	assert.Empty(t, sym.calls)
}

// hexSymbolizer gives every address a name of its own.
type hexSymbolizer struct{}

func (hexSymbolizer) Symbolize(addr uint64) string { return fmt.Sprintf("fn_%x", addr) }

type constSymbolizer string

func (c constSymbolizer) Symbolize(uint64) string { return string(c) }

// BenchmarkBuild is the report of a full-sized table: a million live
// objects from some two thousand call sites, most of them older than
// min_age, already counted by group as the tracker's scan counts them.
func BenchmarkBuild(b *testing.B) {
	const (
		objects   = 1_000_000
		callSites = 2_000
	)
	kmallocSizes := []uint32{8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192, 16384}
	slabCaches := make(map[uint64]string)
	for i := range 50 {
		slabCaches[0xffff888100000000+uint64(i)<<12] = fmt.Sprintf("cache-%d", i)
	}
	snap := &kmem.Snapshot{
		TakenNs: uint64(24 * time.Hour),
		Counters: map[kmem.Allocator]kmem.Counters{
			kmem.Slab:    {Allocs: 1 << 30, Frees: 1 << 29},
			kmem.Kmalloc: {Allocs: 1 << 30, Frees: 1 << 29},
		},
		CacheNames: slabCaches,
	}
	snap.Begin(kmem.Ages{Now: snap.TakenNs, Cutoff: snap.TakenNs, Aged: snap.TakenNs - uint64(minAge)})
	for i := range objects {
		site := uint64(i % callSites)
		obj := kmem.Object{
			Address:  0xffff888200000000 + uint64(i)<<6,
			AllocNs:  uint64(i) * uint64(time.Millisecond) / 20, // spread over ~14 hours
			CallSite: 0xffffffff81000000 + site<<4,
			StackID:  -1,
		}
		if site%2 == 0 {
			obj.Allocator = kmem.Slab
			obj.Cache = 0xffff888100000000 + (site%50)<<12
			obj.Bytes = 192
		} else {
			obj.Allocator = kmem.Kmalloc
			obj.Bytes = kmallocSizes[(site/2)%uint64(len(kmallocSizes))]
			if site%3 == 0 {
				obj.Cache = uint64(kmem.KmallocAccounted)
			}
			if obj.Bytes > 8192 {
				obj.Cache = uint64(kmem.KmallocLarge)
			}
		}
		snap.Add(&obj)
	}

	b.ReportAllocs()
	for b.Loop() {
		Build(snap, Options{}, constSymbolizer("alloc_pipe_info+0x2b"))
	}
}

// hashed sets the stack hash Build gives each expected group.
func hashed(groups []Group) []Group {
	out := slices.Clone(groups)
	for i := range out {
		out[i].StackHash = stackHash(out[i].StackOrCallSite())
	}
	return out
}
