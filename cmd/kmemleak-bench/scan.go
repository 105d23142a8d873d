//go:build linux

package main

import (
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

// scanMethod reads the whole live map once and returns how many entries
// it read.
type scanMethod struct {
	name string
	scan func(tr *tracker.Tracker) (int, error)
}

// scanMethods returns the methods compared, each with its own buffers.
func scanMethods() []scanMethod {
	// Reused from scan to scan, as the receiver reuses it.
	var snap tracker.Snapshot
	return []scanMethod{
		{"ours (Tracker.Scan: batch lookup)", func(tr *tracker.Tracker) (int, error) {
			err := tr.Scan(&snap)
			return len(snap.Objects), err
		}},
		{"per key (NextKey+Lookup, tracex4)", (*tracker.Tracker).ScanPerKey},
	}
}

func runScan(c config) error {
	fmt.Printf("scan: the live map holding N synthetic objects plus what the kernel adds; medians of %d runs, methods in turn\n", c.runs)
	methods := scanMethods()
	var rows [][]string
	var ts []target
	for _, n := range []int{100_000, 1_000_000} {
		var took [][]float64
		var entries []int
		err := c.locked(func() error {
			var err error
			took, entries, err = measureScans(methods, n, c.runs)
			return err
		})
		if err != nil {
			return err
		}
		perKey := median(took[len(took)-1])
		for i, m := range methods {
			ms := median(took[i])
			rows = append(rows, []string{fmt.Sprint(n), m.name, fmt.Sprint(entries[i]), num(ms),
				num(float64(entries[i]) / ms * 1000 / 1e6), num(perKey / ms)})
		}
		if n == 1_000_000 {
			ts = append(ts, target{what: "scan of 10^6: x faster than per key", value: perKey / median(took[0]), limit: 20, atLeast: true})
		}
	}
	table(os.Stdout, "N\tmethod\tentries\tms\tM entries/s\tx faster than per key", rows)
	printTargets(ts)
	return nil
}

// measureScans fills a tracker's live map with n objects and times every
// method runs times, in turn: took[method][run] in milliseconds.
func measureScans(methods []scanMethod, n, runs int) (took [][]float64, entries []int, err error) {
	tr, err := tracker.Open(tracker.Options{
		Allocators: []tracker.Allocator{tracker.Slab, tracker.Kmalloc}, Mode: tracker.ModeAuto, MaxObjects: uint32(n) + 1<<18,
		Stacks: tracker.StackOptions{Depth: 32}, MaxSize: ^uint32(0), Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, nil, err
	}
	defer tr.Close()
	if err := tr.FillSynthetic(n); err != nil {
		return nil, nil, err
	}
	took = make([][]float64, len(methods))
	entries = make([]int, len(methods))
	for range runs {
		for i, m := range methods {
			start := time.Now()
			if entries[i], err = m.scan(tr); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", m.name, err)
			}
			took[i] = append(took[i], float64(time.Since(start).Microseconds())/1000)
		}
	}
	return took, entries, nil
}
