//go:build linux && (amd64 || arm64)

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.uber.org/zap"

	"github.com/kmemleak/kmemleakreceiver/internal/holders"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/ksym"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
	"github.com/kmemleak/kmemleakreceiver/internal/profile"
	"github.com/kmemleak/kmemleakreceiver/internal/report"
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

// scanMethod reads the whole live table (or hash map) once and returns how many entries
// it read.
type scanMethod struct {
	name string
	scan func() (int, error)
}

// scanMethods returns the methods compared: tr's scan of its live table,
// and the passes over hash, the same objects in a hash map. Each has its
// own buffers, reused from scan to scan as the receiver reuses them; the
// per-key reads come last.
// pidOwners names owners by pid alone: the synthetic objects' processes
// do not exist.
type pidOwners struct{}

func (pidOwners) Describe(o kmem.Owner) owner.Owner {
	return owner.Owner{Context: o.Context, Pid: o.Tgid}
}

func scanMethods(tr *tracker.Tracker, hash *ebpf.Map, walker *walker, held *heldObjects, sym report.Symbolizer) []scanMethod {
	var snap kmem.Snapshot
	scan := func(holds *kmem.Holds) (int, error) {
		now, err := tracker.MonotonicNow()
		if err != nil {
			return 0, err
		}
		snap.Begin(kmem.Ages{Now: now, Cutoff: now, Aged: now})
		snap.Holds = holds
		err = tr.Read(&snap)
		return int(snap.Objects()), err
	}
	methods := []scanMethod{
		{"ours (Tracker.Read: the live table in place, counted by group)", func() (int, error) { return scan(nil) }},
		// What a scan adds while some call site rises like a leak: list
		// what live tasks hold, and look every aged object up in it.
		{"ours, listing what live tasks hold (holders.Iterators.Read) then counting the held objects", func() (int, error) {
			holds, err := held.read()
			if err != nil {
				return 0, err
			}
			return scan(holds)
		}},
		// After the scan above: what a profiles pipeline adds to it.
		{"ours, then every aged group's report and profile (report.Build, profile.Build)", func() (int, error) {
			rep := report.Build(&snap, report.Options{Owners: pidOwners{}}, sym)
			pd := profile.Build(rep.Groups, profile.Options{Resource: pcommon.NewResource(), Time: time.Now()})
			return pd.SampleCount(), nil
		}},
		{"hash map, per key (NextKey+Lookup, tracex4)", func() (int, error) { return scanPerKey(hash) }},
	}
	if walker != nil {
		methods = slices.Insert(methods, 1, scanMethod{"hash map, iterator that does nothing", walker.walk})
	}
	return methods
}

func runScan(c config) error {
	fmt.Printf("scan: the live table holding N synthetic objects plus what the kernel adds; medians of %d runs, methods in turn\n", c.runs)
	var rows [][]string
	var ts []target
	for _, n := range []int{100_000, 1_000_000} {
		var took [][]float64
		var entries []int
		var names []string
		err := c.locked(func() error {
			var err error
			took, entries, names, err = measureScans(n, c.runs)
			return err
		})
		if err != nil {
			return err
		}
		perKey := median(took[len(took)-1])
		for i, name := range names {
			ms := median(took[i])
			rows = append(rows, []string{fmt.Sprint(n), name, fmt.Sprint(entries[i]), num(ms),
				num(float64(entries[i]) / ms * 1000 / 1e6), num(perKey / ms)})
		}
		if n == 1_000_000 {
			ts = append(ts,
				target{what: "scan of 10^6: x faster than per key", value: perKey / median(took[0]), limit: 100, atLeast: true},
				target{what: "scan of 10^6, ms", value: median(took[0]), limit: 30},
				target{what: "scan of 10^6 with what live tasks hold (300k), ms", value: median(took[1]), limit: 60})
		}
	}
	table(os.Stdout, "N\tmethod\tentries\tms\tM entries/s\tx faster than per key", rows)
	printTargets(ts)
	return nil
}

// measureScans fills a tracker's live table with n objects and times every
// method runs times, in turn: took[method][run] in milliseconds.
func measureScans(n, runs int) (took [][]float64, entries []int, names []string, err error) {
	maxObjects := uint32(n) + 1<<18
	tr, err := tracker.Open(tracker.Options{
		Allocators: []kmem.Allocator{kmem.Slab, kmem.Kmalloc}, Mode: kmem.ModeAuto, MaxObjects: maxObjects,
		Stacks: tracker.StackOptions{Depth: 32}, MaxSize: ^uint32(0), Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, nil, nil, err
	}
	defer closeInto(&err, tr)
	live, err := liveTable(maxObjects)
	if err != nil {
		return nil, nil, nil, err
	}
	defer closeInto(&err, live)
	if err := fillSynthetic(live, n); err != nil {
		return nil, nil, nil, err
	}
	hash, err := hashMap(n)
	if err != nil {
		return nil, nil, nil, err
	}
	defer closeInto(&err, hash)
	// Some kernels refuse iterator programs (tracing programs, refused
	// with fentry here): that row is left out there, saying so.
	walker, err := attachWalker(hash)
	if err != nil {
		fmt.Println("scan: no do-nothing iterator row:", err)
	} else {
		defer closeInto(&err, walker)
	}

	symbols, err := ksym.New("/proc/kallsyms", "/proc/modules")
	if err != nil {
		return nil, nil, nil, err
	}
	it, err := holders.Open()
	if err != nil {
		return nil, nil, nil, err
	}
	defer closeInto(&err, it)
	methods := scanMethods(tr, hash, walker, &heldObjects{it: it, pad: busyServerHolds}, ksym.Symbolizer{Symbols: symbols})
	took = make([][]float64, len(methods))
	entries = make([]int, len(methods))
	// Run 0 is not counted: it sizes the buffers that later runs reuse.
	for run := range runs + 1 {
		for i, m := range methods {
			start := time.Now()
			if entries[i], err = m.scan(); err != nil {
				return nil, nil, nil, fmt.Errorf("%s: %w", m.name, err)
			}
			if run > 0 {
				took[i] = append(took[i], float64(time.Since(start).Microseconds())/1000)
			}
		}
	}
	for _, m := range methods {
		names = append(names, m.name)
	}
	return took, entries, names, nil
}

// busyServerHolds is how many objects the holder iterators list on a busy
// server (a few hundred processes, their mappings and open files): a
// listing of this machine is padded to it with addresses no object has, so
// that the scan looks objects up in a map of a server's size.
const busyServerHolds = 300_000

// heldObjects lists what live tasks hold, padded to pad objects.
type heldObjects struct {
	it  *holders.Iterators
	pad int
}

func (h *heldObjects) read() (*kmem.Holds, error) {
	holds, err := h.it.Read()
	if err != nil {
		return nil, err
	}
	for addr := uint64(1); len(holds.Objects) < h.pad; addr += 64 {
		holds.Objects[addr] = kmem.Holder{Hold: kmem.HeldByTask}
	}
	return holds, nil
}

// walker is the do-nothing iterator on a hash map.
type walker struct {
	coll   *ebpf.Collection
	iter   *link.Iter
	walked *ebpf.Variable
}

// attachWalker loads the do-nothing iterator onto a hash map.
func attachWalker(live *ebpf.Map) (*walker, error) {
	spec, specs, err := loadBenchSpecs()
	if err != nil {
		return nil, err
	}
	coll, err := loadOnly(spec, []*ebpf.ProgramSpec{specs.Walk}, nil)
	if err != nil {
		return nil, err
	}
	it, err := link.AttachIter(link.IterOptions{Program: coll.Programs[specs.Walk.Name], Map: live})
	if err != nil {
		coll.Close()
		return nil, fmt.Errorf("attaching the do-nothing iterator: %w", err)
	}
	return &walker{coll, it, coll.Variables[specs.Walked.Name]}, nil
}

// walk makes one pass and returns the elements visited.
func (w *walker) walk() (int, error) {
	if err := w.walked.Set(uint64(0)); err != nil {
		return 0, err
	}
	r, err := w.iter.Open()
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, r)
	if err = errors.Join(err, r.Close()); err != nil {
		return 0, err
	}
	var n uint64
	err = w.walked.Get(&n)
	return int(n), err
}

func (w *walker) Close() error {
	err := w.iter.Close()
	w.coll.Close()
	return err
}
