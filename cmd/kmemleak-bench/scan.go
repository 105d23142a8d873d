//go:build linux

package main

import (
	"fmt"
	"github.com/cilium/ebpf"
	"io"
	"os"
	"time"

	"github.com/cilium/ebpf/link"
	"go.uber.org/zap"

	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

// scanMethod reads the whole live map once and returns how many entries
// it read.
type scanMethod struct {
	name string
	scan func() (int, error)
}

// scanMethods returns the methods compared on tr, each with its own
// buffers, reused from scan to scan as the receiver reuses them; the
// per-key reads come last.
func scanMethods(tr *tracker.Tracker, agg *tracker.Aggregator, walker *walker) []scanMethod {
	var snap tracker.Snapshot
	var groups []tracker.Group
	return []scanMethod{
		{"ours (Tracker.Scan: batch lookup)", func() (int, error) {
			err := tr.Scan(&snap)
			return len(snap.Objects), err
		}},
		{"in-kernel aggregation (map iterator)", func() (int, error) {
			var err error
			groups, err = agg.Aggregate(2, 2, groups[:0])
			n := 0
			for _, g := range groups {
				n += int(g.Objects)
			}
			return n, err
		}},
		{"map iterator that does nothing (floor)", walker.walk},
		{"per key (NextKey+Lookup, tracex4)", tr.ScanPerKey},
	}
}

func runScan(c config) error {
	fmt.Printf("scan: the live map holding N synthetic objects plus what the kernel adds; medians of %d runs, methods in turn\n", c.runs)
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
				target{what: "scan of 10^6: x faster than per key", value: perKey / median(took[0]), limit: 20, atLeast: true},
				target{what: "in-kernel aggregation of 10^6: x faster than per key", value: perKey / median(took[1]), limit: 20, atLeast: true})
		}
	}
	table(os.Stdout, "N\tmethod\tentries\tms\tM entries/s\tx faster than per key", rows)
	printTargets(ts)
	return nil
}

// measureScans fills a tracker's live map with n objects and times every
// method runs times, in turn: took[method][run] in milliseconds.
func measureScans(n, runs int) (took [][]float64, entries []int, names []string, err error) {
	maxObjects := uint32(n) + 1<<18
	tr, err := tracker.Open(tracker.Options{
		Allocators: []tracker.Allocator{tracker.Slab, tracker.Kmalloc}, Mode: tracker.ModeAuto, MaxObjects: maxObjects,
		Stacks: tracker.StackOptions{Depth: 32}, MaxSize: ^uint32(0), Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, nil, nil, err
	}
	defer tr.Close()
	if err := tr.FillSynthetic(n); err != nil {
		return nil, nil, nil, err
	}
	agg, err := tr.NewAggregator()
	if err != nil {
		return nil, nil, nil, err
	}
	defer agg.Close()
	walker, err := attachWalker(maxObjects)
	if err != nil {
		return nil, nil, nil, err
	}
	defer walker.Close()

	methods := scanMethods(tr, agg, walker)
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

// walker is the do-nothing iterator on a live map.
type walker struct {
	coll *ebpf.Collection
	iter *link.Iter
}

// attachWalker loads the do-nothing iterator onto the live map of that size.
func attachWalker(maxEntries uint32) (*walker, error) {
	live, err := liveMap(maxEntries)
	if err != nil {
		return nil, err
	}
	defer live.Close()
	coll, err := loadOnly([]string{"walk"}, nil)
	if err != nil {
		return nil, err
	}
	it, err := link.AttachIter(link.IterOptions{Program: coll.Programs["walk"], Map: live})
	if err != nil {
		coll.Close()
		return nil, fmt.Errorf("attaching the do-nothing iterator: %w", err)
	}
	return &walker{coll, it}, nil
}

// walk makes one pass and returns the elements visited.
func (w *walker) walk() (int, error) {
	walked := w.coll.Variables["walked"]
	if err := walked.Set(uint64(0)); err != nil {
		return 0, err
	}
	r, err := w.iter.Open()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	if _, err := io.Copy(io.Discard, r); err != nil {
		return 0, err
	}
	var n uint64
	err = walked.Get(&n)
	return int(n), err
}

func (w *walker) Close() error {
	err := w.iter.Close()
	w.coll.Close()
	return err
}
