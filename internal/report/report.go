// Package report groups a scan's aged objects into leak-suspect groups, by
// call site or stack and owner, and keeps the top ones; internal/otlp
// exports them.
package report

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
	"github.com/kmemleak/kmemleakreceiver/internal/verdict"
)

// Symbolizer names a kernel address, e.g. "alloc_pipe_info+0x2b".
type Symbolizer interface {
	Symbolize(addr uint64) string
}

// Owners names who allocated (owner.Resolver).
type Owners interface {
	Describe(kmem.Owner) owner.Owner
}

// Group is the live objects older than min_age that share an allocator,
// a cache, a call site (or stack) and, with attribution, an owner.
type Group struct {
	Allocator kmem.Allocator
	Cache     string
	// MergedNames are every name of a slab cache SLUB merged others into,
	// Cache among them, sorted; nil when it merged none. Set by the caller.
	MergedNames []string
	CallSite    uint64      // the probes' call site (raw), lowest of a merged group
	CallSiteSym string      // the code that asked for memory, function+0xoff [module]
	Frames      []Frame     // the kernel stack from CallSiteSym outwards, or nil
	StackHash   string      // the fingerprint of StackOrCallSite (stackHash)
	Owner       owner.Owner // the zero Owner without attribution
	Objects     int64
	Bytes       int64
	OldestAge   time.Duration
	// Survivors are the objects that were already older than min_age at
	// the previous scan (kmem.Ages.Survived).
	Survivors int64
	// Of the objects, those live tasks held when last listed (zero when
	// they were not): as their own structures, or as open files, and how
	// many each process holding the files holds; and those no live task
	// holds younger than the verdicts' window (kmem.Ages.Recent).
	HeldByTask, UnheldRecent int64
	FileHolders              kmem.FileHolders
	// Set by the caller from the group's history.
	Verdict verdict.Verdict
}

// StackText is the group's stack one frame a line, or "" without one.
func (g Group) StackText() string {
	return stackText(g.Frames)
}

// StackOrCallSite is the group's stack or, without one, its call site
// alone: the code its objects came from.
func (g Group) StackOrCallSite() []Frame {
	if len(g.Frames) > 0 {
		return g.Frames
	}
	return []Frame{SymbolFrame(g.CallSiteSym)}
}

// Add counts o's objects into g.
func (g *Group) Add(o Group) {
	g.Objects += o.Objects
	g.Bytes += o.Bytes
	g.Survivors += o.Survivors
	g.OldestAge = max(g.OldestAge, o.OldestAge)
	g.HeldByTask += o.HeldByTask
	g.UnheldRecent += o.UnheldRecent
	g.FileHolders = g.FileHolders.Add(o.FileHolders)
}

// Options say what Build reports. Which objects are aged, and which
// survived from the previous scan, the snapshot's ages say.
type Options struct {
	// Bounds is, per cache name, the most aged objects the cache can truly
	// hold (truth.Result.Bounds); nil skips the check.
	Bounds map[string]int64
	// Stacks reads the stacks objects carry; nil when stacks are off.
	Stacks StackSource
	// SampleRate is the probes' 1-in-N object sampling: reported counts
	// and bytes are scaled up by it. 0 and 1 mean every object.
	SampleRate int
	// Owners names the owners objects carry; nil without attribution.
	Owners Owners
}

// Report is what one scan found.
type Report struct {
	// Groups are every group, largest first by bytes, until the caller
	// keeps the top ones (Top).
	Groups   []Group
	Suspects int64 // objects older than min_age, in all groups
	// Withheld counts the groups not reported because they held more
	// objects than their cache can truly hold: phantoms, not leaks.
	Withheld int64
	Tracked  map[kmem.Allocator]int64
	Counters map[kmem.Allocator]kmem.Counters
	// Untraced are the caches no longer tracked because their frees bypass
	// the tracepoints, by name; the caller fills it in.
	Untraced map[kmem.CacheID]string
	Stacks   int // stacks kept in the stack map (kmem.Snapshot.Stacks)
	// States counts the groups of every verdict state, reported or not;
	// the caller fills it in.
	States map[verdict.State]int
}

// Incomplete reports whether the tracker has dropped allocations for lack
// of room: then every count is a lower bound, and a leak may be missing.
func (r Report) Incomplete() bool {
	for _, c := range r.Counters {
		if c.Dropped > 0 {
			return true
		}
	}
	return false
}

// Build groups the snapshot's aged objects, largest first.
func Build(snap *kmem.Snapshot, opts Options, sym Symbolizer) Report {
	scale := int64(max(opts.SampleRate, 1))
	rep := Report{Tracked: map[kmem.Allocator]int64{}, Counters: scaleEvents(snap.Counters, scale), Stacks: snap.Stacks}
	for a := range snap.Counters {
		rep.Tracked[a] = 0
	}
	tallies := tallyAged(snap, opts, &rep)
	merged := merge(snap, tallies, stackNames{source: opts.Stacks, sym: sym, byID: map[kmem.GroupKey]describedStack{}}, owners(opts.Owners))
	rep.Suspects *= scale
	groups := make([]Group, 0, len(merged))
	for _, g := range merged {
		// Sampled objects are real ones: unscaled, the count must still
		// fit the kernel's.
		if bound, known := opts.Bounds[g.Cache]; known && g.Objects > bound {
			rep.Withheld++
			continue
		}
		g.Objects *= scale
		g.Bytes *= scale
		g.Survivors *= scale
		g.HeldByTask *= scale
		g.UnheldRecent *= scale
		for tgid := range g.FileHolders {
			g.FileHolders[tgid] *= scale
		}
		groups = append(groups, *g)
	}
	slices.SortFunc(groups, compareGroups)
	rep.Groups = groups
	return rep
}

// scaleEvents scales the allocations and frees the probes counted up by
// the sampling rate: they count the sampled objects' only, since an
// unsampled event touches no map.
func scaleEvents(counters map[kmem.Allocator]kmem.Counters, scale int64) map[kmem.Allocator]kmem.Counters {
	if scale == 1 {
		return counters
	}
	out := make(map[kmem.Allocator]kmem.Counters, len(counters))
	by := uint64(max(scale, 1)) // a sampling rate, 1 or more
	for a, c := range counters {
		c.Allocs *= by
		c.Frees *= by
		out[a] = c
	}
	return out
}

// Top keeps the n largest groups of each verdict state, in their order: a
// small leak is reported next to the large pools that outweigh it. With
// attribution the others are not dropped but folded, per call site and
// stack, into one group owned by owner.Folded, of which the n largest of
// each state are kept too: at most 2n groups a state, whatever the node
// runs.
func Top(groups []Group, n int) []Group {
	kept := make(map[verdict.State]int, len(verdict.States))
	var out, rest []Group
	for _, g := range groups {
		switch {
		case kept[g.Verdict.State] < n:
			kept[g.Verdict.State]++
			out = append(out, g)
		case g.Owner.Attributed():
			rest = append(rest, g)
		}
	}
	if len(rest) == 0 {
		return out
	}
	folded := fold(rest)
	clear(kept)
	for _, g := range folded {
		if kept[g.Verdict.State] < n {
			kept[g.Verdict.State]++
			out = append(out, g)
		}
	}
	slices.SortFunc(out, compareGroups)
	return out
}

// fold sums groups that differ only in their owners into one each, owned
// by owner.Folded, largest first.
func fold(groups []Group) []Group {
	type site struct {
		allocator                         kmem.Allocator
		cache, callSite, stack, stackHash string
	}
	index := map[site]int{}
	var out []Group
	for _, g := range groups {
		k := site{g.Allocator, g.Cache, g.CallSiteSym, g.StackText(), g.StackHash}
		i, ok := index[k]
		if !ok {
			index[k] = len(out)
			g.Owner = owner.Folded
			out = append(out, g)
			continue
		}
		f := &out[i]
		f.CallSite = min(f.CallSite, g.CallSite)
		f.Add(g)
	}
	slices.SortFunc(out, compareGroups)
	return out
}

// tallyAged sums the snapshot's aged objects per group, without the stack
// when stacks are off, and counts every object per allocator into rep.
// The groups have their counts only, not yet their names.
func tallyAged(snap *kmem.Snapshot, opts Options, rep *Report) map[kmem.GroupKey]*Group {
	tallies := map[kmem.GroupKey]*Group{}
	for key, g := range snap.Groups() {
		rep.Tracked[key.Cache.Allocator] += g.Objects
		if g.Aged == 0 {
			continue
		}
		if opts.Stacks == nil {
			key.StackID, key.StackSkipped = -1, false
		}
		if opts.Owners == nil {
			key.Owner = kmem.Owner{}
		}
		t := tallies[key]
		if t == nil {
			t = &Group{}
			tallies[key] = t
		}
		t.Add(Group{
			Objects: g.Aged, Bytes: g.AgedBytes, OldestAge: time.Duration(min(snap.Age(g), math.MaxInt64)), Survivors: g.Survivors,
			HeldByTask: g.HeldByTask, UnheldRecent: g.UnheldRecent, FileHolders: g.FileHolders,
		})
		rep.Suspects += g.Aged
	}
	return tallies
}

// exported is what a group is exported as.
type exported struct {
	allocator              kmem.Allocator
	cache, callSite, stack string
	owner                  owner.Owner
}

// owners describes each owner once per report; without attribution every
// owner is the zero one.
func owners(o Owners) func(kmem.Owner) owner.Owner {
	if o == nil {
		return func(kmem.Owner) owner.Owner { return owner.Owner{} }
	}
	seen := map[kmem.Owner]owner.Owner{}
	return func(k kmem.Owner) owner.Owner {
		d, ok := seen[k]
		if !ok {
			d = o.Describe(k)
			seen[k] = d
		}
		return d
	}
}

// merge names the tallies and merges them by exported name: two
// addresses that both come out "unknown" must not become two series with
// equal attributes, and two stacks that differ only in the allocator's
// frames are one.
func merge(snap *kmem.Snapshot, tallies map[kmem.GroupKey]*Group, stacks stackNames, describe func(kmem.Owner) owner.Owner) map[exported]*Group {
	merged := map[exported]*Group{}
	for key, t := range tallies {
		name := exported{allocator: key.Cache.Allocator, cache: snap.CacheName(key.Cache), owner: describe(key.Owner)}
		stack := stacks.describe(key)
		name.stack = stack.text
		if len(stack.frames) > 0 {
			name.callSite = stack.frames[0].Symbol
		} else {
			name.callSite = stacks.sym.Symbolize(key.CallSite)
		}
		g := merged[name]
		if g == nil {
			g = &Group{Allocator: name.allocator, Cache: name.cache, CallSite: key.CallSite, CallSiteSym: name.callSite,
				Frames: stack.frames, Owner: name.owner}
			g.StackHash = stackHash(g.StackOrCallSite())
			merged[name] = g
		}
		g.CallSite = min(g.CallSite, key.CallSite) // deterministic across map orders
		g.Add(*t)
	}
	return merged
}

// compareGroups orders by bytes, then objects, descending, and breaks ties
// by identity so that equal scans give equal reports.
func compareGroups(a, b Group) int {
	return cmp.Or(
		cmp.Compare(b.Bytes, a.Bytes),
		cmp.Compare(b.Objects, a.Objects),
		cmp.Compare(a.Allocator, b.Allocator),
		cmp.Compare(a.Cache, b.Cache),
		cmp.Compare(a.CallSite, b.CallSite),
		compareStacks(a.Frames, b.Frames),
		compareOwners(a.Owner, b.Owner),
	)
}

func compareOwners(a, b owner.Owner) int {
	return cmp.Or(
		compareBools(a.Other, b.Other),
		cmp.Compare(a.Context, b.Context),
		cmp.Compare(a.Pid, b.Pid),
		compareBools(a.Exited, b.Exited),
		cmp.Compare(a.Name, b.Name),
		cmp.Compare(a.Cgroup, b.Cgroup),
	)
}

func compareBools(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// stackNames describes each stack once per report.
type stackNames struct {
	source StackSource
	sym    Symbolizer
	byID   map[kmem.GroupKey]describedStack
}

// describedStack is a stack's frames from its call site outwards, and their
// text, which tells stacks apart when groups are merged.
type describedStack struct {
	frames []Frame
	text   string
}

// describe returns a group's stack, or none (id -1, stacks off, or a stack
// the map no longer has).
func (s stackNames) describe(key kmem.GroupKey) describedStack {
	if key.StackID < 0 || s.source == nil {
		return describedStack{}
	}
	// A skipped stack lacks its innermost frame, the call site: the same id
	// reads differently for each call site.
	id := kmem.GroupKey{StackID: key.StackID}
	if key.StackSkipped {
		id.StackSkipped, id.CallSite = true, key.CallSite
	}
	if d, ok := s.byID[id]; ok {
		return d
	}
	var d describedStack
	if addrs, err := s.source.Stack(key.StackID); err == nil {
		if key.StackSkipped && (len(addrs) == 0 || addrs[0] != key.CallSite) {
			addrs = append([]uint64{key.CallSite}, addrs...)
		}
		d.frames = describeStack(addrs, s.sym)
		d.text = stackText(d.frames)
	}
	s.byID[id] = d
	return d
}
