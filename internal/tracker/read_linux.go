//go:build linux && (amd64 || arm64)

package tracker

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/kmemleak/kmemleakreceiver/bpf"
	"github.com/kmemleak/kmemleakreceiver/internal/jiffies"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/livetable"
)

// scanState is what scans reuse and remember.
type scanState struct {
	stacksOn     bool
	stackDepth   int
	unreferenced map[int32]bool // stack ids no live object used at the last scan
	// namePtrs is, per slab cache key, the name pointer of the cache the
	// probes saw there.
	namePtrs map[uint64]uint64
	// parts are the counts of the parts of a walk but the first, which
	// goes to the scan's snapshot; reused from scan to scan.
	parts []kmem.Snapshot
	// clock maps the probes' times in jiffies; nil where they are in
	// nanoseconds.
	clock *jiffies.Clock
	// kmallocSizes names kmalloc objects by their cache's object size
	// where the tracepoints report its slab size; nil elsewhere.
	kmallocSizes kmallocSizes
}

func newScanState(opts Options, clock *jiffies.Clock) scanState {
	return scanState{
		stacksOn:   opts.TakesStacks(),
		stackDepth: max(opts.Stacks.Depth, 1),
		clock:      clock,
	}
}

// Read adds the live tables' objects to snap, which the caller has begun.
// The tables keep changing while they are read, so an object freed during
// the read may still be counted and a new one may not.
func (t *Tracker) Read(snap *kmem.Snapshot) error {
	t.walk(snap)
	var err error
	if snap.Counters, err = t.counters(); err != nil {
		return err
	}
	if err := t.readCaches(snap); err != nil {
		return err
	}
	if t.scan.stacksOn {
		if snap.Stacks, err = t.pruneStacks(snap); err != nil {
			return err
		}
	}
	if snap.TakenNs, err = MonotonicNow(); err != nil {
		return err
	}
	if t.pins != nil {
		return t.pins.alive(snap.TakenNs)
	}
	return nil
}

// walk counts the live tables' objects into snap, in as many parts as
// the process has CPUs, up to four: counting a million objects by group
// takes tens of milliseconds. The live tables are walked to the end before
// the young area is begun: an object moves from the young area into the
// live table, never back, so it is counted once at most (an object moved
// while the walk runs may be missed, never counted twice; the truth
// check's bound holds).
func (t *Tracker) walk(snap *kmem.Snapshot) {
	parts := &t.scan.parts
	*parts = slices.Grow((*parts)[:0], 4)[:min(runtime.GOMAXPROCS(0), 4)]
	for i := 1; i < len(*parts); i++ {
		(*parts)[i].BeginPart(snap)
	}
	partOf := func(i int) *kmem.Snapshot {
		if i == 0 {
			return snap
		}
		return &(*parts)[i]
	}
	t.walkParts(len(*parts), func(i int) func(*livetable.Object) {
		part := partOf(i)
		var obj kmem.Object
		return func(o *livetable.Object) {
			if t.scan.decode(o.Key, &o.KmemleakObject, &obj) {
				part.Add(&obj)
			}
		}
	})
	for i := 1; i < len(*parts); i++ {
		snap.Merge(&(*parts)[i])
	}
}

// walkParts walks the live tables, then the young area, each in n parts at
// once: part i by one goroutine, which calls visit(i) for the function it
// calls with each object.
func (t *Tracker) walkParts(n int, visit func(i int) func(*livetable.Object)) {
	var areas []interface {
		WalkPart(i, n int, fn func(*livetable.Object))
	}
	for _, tab := range t.tables {
		areas = append(areas, tab)
	}
	if t.young != nil {
		areas = append(areas, t.young)
	}
	for _, area := range areas {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				area.WalkPart(i, n, visit(i))
			})
		}
		wg.Wait()
	}
}

// decode turns the probes' record into the domain's, in obj; it refuses
// values the probes do not define.
func (s *scanState) decode(addr uint64, v *bpf.KmemleakObject, obj *kmem.Object) bool {
	if int(v.Allocator) >= len(allocatorOf) || int(v.Context) >= len(contextOf) {
		return false
	}
	allocNs := v.AllocTime
	if s.clock != nil {
		allocNs = s.clock.End(v.AllocTime)
	}
	*obj = kmem.Object{
		Address:      addr,
		AllocNs:      allocNs,
		CallSite:     v.CallSite,
		Cache:        v.Cache,
		Bytes:        v.Bytes,
		StackID:      v.StackId,
		StackSkipped: v.StackSkipped != 0,
		Allocator:    allocatorOf[v.Allocator],
		Owner:        kmem.Owner{Context: contextOf[v.Context], Tgid: v.Tgid, Cgroup: v.Cgroup},
	}
	if obj.Allocator == kmem.Kmalloc {
		if v.Cache >= uint64(len(familyOf)) {
			return false
		}
		obj.Cache = uint64(familyOf[v.Cache])
		obj.Bytes = s.kmallocSizes.objectSize(obj.Bytes)
	}
	return true
}

func (t *Tracker) counters() (map[kmem.Allocator]kmem.Counters, error) {
	out := make(map[kmem.Allocator]kmem.Counters, len(t.attached))
	for a, at := range t.attached {
		var perCPU []bpf.KmemleakCounters
		if err := t.maps.Stats.Lookup(bpfAllocators[a], &perCPU); err != nil {
			return nil, fmt.Errorf("reading %s counters: %w", a, err)
		}
		sum := SumCounters(perCPU)
		for _, p := range at.programs {
			stats, err := p.Stats()
			if err != nil {
				return nil, fmt.Errorf("reading %s program statistics: %w", a, err)
			}
			sum.RecursionMisses += stats.RecursionMisses
			if p == at.primaryFree {
				sum.FreeMisses = stats.RecursionMisses
			}
		}
		out[a] = sum
	}
	return out, nil
}

// SumCounters adds up per-CPU values of the probes' counters (of one
// allocator, or more).
func SumCounters(perCPU []bpf.KmemleakCounters) kmem.Counters {
	var sum kmem.Counters
	for _, c := range perCPU {
		sum.Allocs += c.Allocs
		sum.Frees += c.Frees
		sum.UntrackedFrees += c.UntrackedFrees
		sum.Dropped += c.Dropped
		sum.StackErrors += c.StackErrors
		sum.RecoveredFrees += c.RecoveredFrees
		sum.MissedFrees += c.MissedFrees
		sum.Promoted += c.Promoted
		sum.Raced += c.Raced
	}
	return sum
}

// readCaches reads the slab caches the probes have seen: a few hundred
// entries. A key's name changes only when its cache was destroyed and
// another created at its address, so known ones are not copied again.
func (t *Tracker) readCaches(snap *kmem.Snapshot) error {
	if snap.CacheNames == nil {
		snap.CacheNames = map[uint64]string{}
		snap.Freed = map[uint64]bool{}
	}
	if t.scan.namePtrs == nil {
		t.scan.namePtrs = map[uint64]uint64{}
	}
	snap.Recreated = snap.Recreated[:0]
	var key uint64
	var val bpf.KmemleakCacheInfo
	it := t.maps.Caches.Iterate()
	for it.Next(&key, &val) {
		ptr, known := t.scan.namePtrs[key]
		if !known || ptr != val.NamePtr {
			if known {
				snap.Recreated = append(snap.Recreated, key)
				delete(snap.Freed, key)
			}
			t.scan.namePtrs[key] = val.NamePtr
			snap.CacheNames[key] = cString(val.Name[:])
		}
		if val.Freed != 0 {
			snap.Freed[key] = true
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading slab caches: %w", err)
	}
	return nil
}

// cString is a NUL-terminated C char array as a string.
func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c)) //nolint:gosec // G115: a C char's bits, as they are
	}
	return string(out)
}

// pruneStacks deletes the stacks no live object has used for two scans in a
// row, so the stack map cannot fill up over days, and returns how many
// stacks are left. Two scans, not one: an object allocated while this scan
// read the map may use a stack this scan did not see referenced.
func (t *Tracker) pruneStacks(snap *kmem.Snapshot) (int, error) {
	referenced := map[int32]bool{}
	for key := range snap.Groups() {
		if key.StackID >= 0 {
			referenced[key.StackID] = true
		}
	}
	ids, err := t.stackIDs()
	if err != nil {
		return 0, err
	}
	var doomed []int32
	unreferenced := map[int32]bool{}
	for _, id := range ids {
		switch {
		case referenced[id]:
		case t.scan.unreferenced[id]:
			doomed = append(doomed, id)
		default:
			unreferenced[id] = true
		}
	}
	t.scan.unreferenced = unreferenced
	for _, id := range doomed {
		if err := t.maps.Stacks.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, fmt.Errorf("deleting stack %d: %w", id, err)
		}
	}
	return len(ids) - len(doomed), nil
}

// stackIDs lists the ids in the stack map: a stack trace map has no batch
// lookup.
func (t *Tracker) stackIDs() ([]int32, error) {
	var ids []int32
	var key any // nil: the first key
	for {
		var next int32
		err := t.maps.Stacks.NextKey(key, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return ids, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing stacks: %w", err)
		}
		ids = append(ids, next)
		key = next
	}
}

// Stack returns the kernel stack with the given id, innermost frame first.
func (t *Tracker) Stack(id int32) ([]uint64, error) {
	frames := make([]uint64, t.scan.stackDepth)
	if err := t.maps.Stacks.Lookup(id, frames); err != nil {
		return nil, fmt.Errorf("reading stack %d: %w", id, err)
	}
	for i, f := range frames {
		if f == 0 {
			return frames[:i], nil
		}
	}
	return frames, nil
}

// Exits returns the processes that ended since the last call, and forgets
// them: the probes keep the latest 16384 between two calls.
func (t *Tracker) Exits() ([]kmem.Exit, error) {
	if t.exits == nil {
		return nil, nil
	}
	var tgids []uint32
	var tgid uint32
	var e bpf.KmemleakExited
	it := t.maps.Exits.Iterate()
	for it.Next(&tgid, &e) {
		tgids = append(tgids, tgid)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading process exits: %w", err)
	}
	// Each read and deleted at once: a later process of the same tgid
	// ending meanwhile is read now or at the next call, never lost.
	out := make([]kmem.Exit, 0, len(tgids))
	for _, tgid := range tgids {
		err := t.maps.Exits.LookupAndDelete(tgid, &e)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue // evicted since
		}
		if err != nil {
			return nil, fmt.Errorf("reading process exits: %w", err)
		}
		out = append(out, kmem.Exit{Tgid: tgid, Name: cString(e.Comm[:]), StartNs: e.StartTime, ExitNs: e.ExitTime})
	}
	return out, nil
}
