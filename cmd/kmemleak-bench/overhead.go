//go:build linux && (amd64 || arm64)

package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"

	"go.uber.org/zap"

	"github.com/kmemleak/kmemleakreceiver"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

// An overheadRow is one thing attached while the loop runs.
type overheadRow struct {
	name     string
	hooks    string // the attach mode of its programs
	slabOnly bool   // only on kmem_cache_alloc/free
	attach   func() (io.Closer, error)
	// reference: its counters count the events of every row.
	reference bool
}

// ours loads the receiver's probes with its defaults and these settings.
// The receiver leaves out its own process; here the loop runs in the
// bench's process, so the process left out is one that never runs, and
// every allocation pays the check, as other processes' do in production.
func ours(mode kmem.Mode, stacks kmem.StackMode, sampleRate int) overheadRow {
	return oursWith(mode, stacks, sampleRate, math.MaxUint32, false)
}

// oursWith is ours with the own-process filter's process (0: none) and
// attribution as given.
func oursWith(mode kmem.Mode, stacks kmem.StackMode, sampleRate int, ignoreTgid uint32, attribution bool) overheadRow {
	name := "ours, stack_traces " + stacks.String()
	if sampleRate != 1 {
		name += fmt.Sprintf(", sample_rate %d", sampleRate)
	}
	if ignoreTgid == 0 {
		name += rowNoOwnFilter
	}
	if attribution {
		name += rowAttribution
	}
	return overheadRow{
		name:  name,
		hooks: string(mode),
		attach: func() (io.Closer, error) {
			cfg := kmemleakreceiver.NewFactory().CreateDefaultConfig().(*kmemleakreceiver.Config)
			return tracker.Open(tracker.Options{
				Allocators:  []kmem.Allocator{kmem.Slab, kmem.Kmalloc}, // the default allocators
				Mode:        mode,
				MaxObjects:  uint32(cfg.MaxTrackedObjects),
				SampleRate:  uint32(sampleRate),
				Stacks:      tracker.StackOptions{Mode: stacks, Depth: cfg.StackDepth},
				MaxSize:     math.MaxUint32,
				IgnoreTgid:  ignoreTgid,
				Attribution: attribution,
				Logger:      zap.NewNop(),
			})
		},
	}
}

func programRow(name string, s progSet) overheadRow {
	return overheadRow{
		name: name, hooks: string(s.mode), slabOnly: len(s.progs) == len(slabEvents),
		attach: func() (io.Closer, error) { return s.attach() },
	}
}

func bpftraceRow(kstack bool, maxObjects int) overheadRow {
	name := "bpftrace"
	if kstack {
		name = "bpftrace, kstack"
	}
	return overheadRow{
		name: name, hooks: string(kmem.ModeTracepoint),
		attach: func() (io.Closer, error) { return startBpftrace(kstack, maxObjects) },
	}
}

// The row names the ratios refer to.
const (
	rowNone     = "nothing attached"
	rowOff      = "ours, stack_traces off"
	rowAdaptive = "ours, stack_traces adaptive"
	rowAlways   = "ours, stack_traces always"
	rowSampled  = "ours, stack_traces off, sample_rate 100"
	rowBpftrace = "bpftrace"
	rowKstack   = "bpftrace, kstack"
	rowFloor    = "map insert/delete only"
	rowTable    = "live table insert/delete only"
	rowEmpty    = "empty program"
	// rowNoOwnFilter ends the name of a row that tracks every process.
	rowNoOwnFilter = ", no own-process filter"
	// rowAttribution ends the name of a row that records who allocated.
	rowAttribution = ", attribution"
)

// overheadRows lists what is measured, the reference row first after the
// baseline: the others take its event counts.
func overheadRows(maxObjects int) (rows []overheadRow, skipped []string) {
	reference := ours(kmem.ModeTPBTF, kmem.StacksOff, 1)
	reference.reference = true
	rows = []overheadRow{
		{name: rowNone, hooks: "-"},
		reference,
		oursWith(kmem.ModeTPBTF, kmem.StacksOff, 1, 0, false),
		oursWith(kmem.ModeTPBTF, kmem.StacksOff, 1, math.MaxUint32, true),
		ours(kmem.ModeRawTP, kmem.StacksOff, 1),
		ours(kmem.ModeTracepoint, kmem.StacksOff, 1),
		ours(kmem.ModeTPBTF, kmem.StacksAdaptive, 1),
		ours(kmem.ModeTPBTF, kmem.StacksAlways, 1),
		ours(kmem.ModeTPBTF, kmem.StacksOff, 100),
		ours(kmem.ModeTPBTF, kmem.StacksAdaptive, 100),
	}
	if why := bpftraceMissing(); why != "" {
		skipped = append(skipped, "bpftrace rows: "+why)
	} else {
		rows = append(rows, bpftraceRow(false, maxObjects), bpftraceRow(true, maxObjects))
	}
	return append(rows,
		programRow("tracex4", tracex4),
		programRow(rowFloor, floorBTF),
		programRow(rowTable, tableBTF(maxObjects)),
		programRow(rowEmpty, emptyBTF),
		programRow(rowEmpty, emptyRaw),
		programRow(rowEmpty, emptyTP),
	), skipped
}

// overheadResults are the rounds' measurements.
type overheadResults struct {
	rows   []overheadRow
	ns     [][]float64 // [row][round] ns per iteration
	events [][]float64 // [row][round] events per iteration, as the reference row counted them
}

// measureRound runs the loop once per row, every row in turn.
func (res *overheadResults) measureRound(w workload, iterations, cpu int) error {
	var allEvents, slabEvents float64
	for i, row := range res.rows {
		ns, counters, err := measureRow(row, w, iterations, cpu)
		if err != nil {
			return fmt.Errorf("%s on %s: %w", row.name, row.hooks, err)
		}
		if counters != nil {
			slab, kmalloc := counters[kmem.Slab], counters[kmem.Kmalloc]
			slabEvents = float64(slab.Allocs+slab.Frees) / float64(iterations)
			allEvents = slabEvents + float64(kmalloc.Allocs+kmalloc.Frees)/float64(iterations)
		}
		events := allEvents
		if row.slabOnly {
			events = slabEvents
		}
		res.ns[i] = append(res.ns[i], ns)
		res.events[i] = append(res.events[i], events)
	}
	return nil
}

// measureRow attaches the row, times the loop and detaches; the reference
// row's counters come back too.
func measureRow(row overheadRow, w workload, iterations, cpu int) (ns float64, counters map[kmem.Allocator]kmem.Counters, err error) {
	var probe io.Closer
	if row.attach != nil {
		if probe, err = row.attach(); err != nil {
			return 0, nil, err
		}
		defer closeInto(&err, probe)
	}
	// The loop allocates nothing in Go: a collection now keeps the
	// collector's work out of it.
	runtime.GC()
	took, err := pinned(cpu, func() error { return w(iterations) })
	if err != nil {
		return 0, nil, err
	}
	ns = float64(took.Nanoseconds()) / float64(iterations)
	if !row.reference {
		return ns, nil, nil
	}
	var snap kmem.Snapshot
	err = probe.(*tracker.Tracker).Read(&snap)
	return ns, snap.Counters, err
}

func (res *overheadResults) index(name, hooks string) int {
	return slices.IndexFunc(res.rows, func(r overheadRow) bool {
		return r.name == name && (hooks == "" || r.hooks == hooks)
	})
}

// added is, per round, row i's cost over the baseline, per event.
func (res *overheadResults) added(i int) []float64 {
	out := make([]float64, len(res.ns[i]))
	for r := range out {
		out[r] = (res.ns[i][r] - res.ns[0][r]) / res.events[i][r]
	}
	return out
}

// ratio is the median over rounds of row a's added cost per event over row
// b's: pair by pair, so that it holds when the machine's speed drifts.
func (res *overheadResults) ratio(a, b int) float64 {
	if a < 0 || b < 0 {
		return math.NaN() // a row skipped
	}
	x, y := res.added(a), res.added(b)
	r := make([]float64, len(x))
	for i := range r {
		r[i] = x[i] / y[i]
	}
	return median(r)
}

func (res *overheadResults) print(w io.Writer) {
	bpftrace := res.index(rowBpftrace, "")
	var rows [][]string
	for i, row := range res.rows {
		cells := []string{row.name, row.hooks, num(median(res.ns[i]))}
		if i == 0 {
			rows = append(rows, append(cells, "-", "-", "-", "-", "-"))
			continue
		}
		added := make([]float64, len(res.ns[i]))
		for r := range added {
			added[r] = res.ns[i][r] - res.ns[0][r]
		}
		cells = append(cells, num(median(res.events[i])), num(median(added)), num(median(res.added(i))))
		for _, other := range []int{res.index(rowEmpty, row.hooks), bpftrace} {
			if other == i || other < 0 {
				cells = append(cells, "-")
			} else {
				cells = append(cells, num(res.ratio(i, other)))
			}
		}
		rows = append(rows, cells)
	}
	table(w, "row\thooks\tns/iter\tevents/iter\tadded ns/iter\tadded ns/event\tx empty\tx bpftrace", rows)
}

// overheadTargets are the targets on added cost per event: issue #5's,
// and the live table's (#15) on full tracking and sampling.
func (res *overheadResults) targets() []target {
	tp := string(kmem.ModeTPBTF)
	off := res.index(rowOff, tp)
	return []target{
		{what: "ours (stacks off, tp_btf) / bpftrace", value: res.ratio(off, res.index(rowBpftrace, "")), limit: 0.5},
		{what: "ours (stacks off, tp_btf) / map insert+delete", value: res.ratio(off, res.index(rowFloor, tp)), limit: 0.8},
		{what: "live table insert+delete / map insert+delete (tp_btf)", value: res.ratio(res.index(rowTable, tp), res.index(rowFloor, tp)), limit: 0.8},
		{what: "ours, sample_rate 100 (tp_btf) / empty program", value: res.ratio(res.index(rowSampled, tp), res.index(rowEmpty, tp)), limit: 1.5},
		{what: "ours adaptive / ours stacks off (tp_btf)", value: res.ratio(res.index(rowAdaptive, tp), off), limit: 1.2},
		{what: "ours always (tp_btf) / bpftrace kstack", value: res.ratio(res.index(rowAlways, tp), res.index(rowKstack, "")), limit: 1.0},
		{what: "own-process filter: ours / ours without it (stacks off, tp_btf)", value: res.ratio(off, res.index(rowOff+rowNoOwnFilter, tp)), limit: 1.1},
		{what: "attribution on / off (stacks off, tp_btf)", value: res.ratio(res.index(rowOff+rowAttribution, tp), off), limit: 1.1},
	}
}
