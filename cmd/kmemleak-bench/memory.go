//go:build linux && (amd64 || arm64)

package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"
)

const (
	synthetic = 1_000_000
	// Room for the synthetic objects and what the kernel holds meanwhile.
	memoryMaxObjects = 1_250_000
)

func runMemory(c config) error {
	return c.locked(func() (err error) {
		col, err := startCollector("-max-tracked-objects", strconv.Itoa(memoryMaxObjects),
			"-interval", "100ms", "-fill", strconv.Itoa(synthetic))
		if err != nil {
			return err
		}
		defer closeInto(&err, col)
		var rss, anon, heap, took []float64
		for range c.scans {
			d, h, err := col.nextScan(time.Minute)
			if err != nil {
				return err
			}
			r, err := rssMiB(col.pid(), "VmRSS")
			if err != nil {
				return err
			}
			a, err := rssMiB(col.pid(), "RssAnon")
			if err != nil {
				return err
			}
			took, rss, anon, heap = append(took, d), append(rss, r), append(anon, a), append(heap, h)
		}
		maps, err := bpfMaps(col.pid())
		if err != nil {
			return err
		}
		printMemory(c, memorySeries{rss, anon, heap}, took, maps)
		return nil
	})
}

// memorySeries are the receiver's memory after each scan, in MiB: its
// resident set all of it, which counts the live table the process maps
// (memory the kernel allocated for the map, counted again under BPF maps);
// the process's own (anonymous) part of it, which the size target is on;
// and the Go heap live after a collection the child forces after each
// scan, which the growth target is on: the resident set also holds memory
// the runtime has not yet returned, which moves with the collector's pace.
type memorySeries struct {
	rss, anon, heap []float64
}

func printMemory(c config, m memorySeries, took []float64, maps []bpfMap) {
	rss, anon, heap := m.rss, m.anon, m.heap
	fmt.Printf("memory: the receiver in a process of its own, max_tracked_objects %d, %d synthetic objects tracked (plus the kernel's), %d scans back to back\n",
		memoryMaxObjects, synthetic, c.scans)
	// After the heap and the verdicts' state have grown to their working
	// size: the live heap stops growing by scan 50 here (the same 9.0 MiB
	// after 100 and after 400 scans).
	settled := min(49, len(rss)-1)
	table(os.Stdout, "MiB after scan\t1\t"+strconv.Itoa(settled+1)+"\t"+strconv.Itoa(len(rss))+"\tmax", [][]string{
		{"RSS (VmRSS, with the mapped live table)", num(rss[0]), num(rss[settled]), num(rss[len(rss)-1]), num(slices.Max(rss))},
		{"RSS of the process's own memory (RssAnon)", num(anon[0]), num(anon[settled]), num(anon[len(anon)-1]), num(slices.Max(anon))},
		{"Go heap live after a collection", num(heap[0]), num(heap[settled]), num(heap[len(heap)-1]), num(slices.Max(heap))},
	})
	var total float64
	var rows [][]string
	slices.SortFunc(maps, func(a, b bpfMap) int { return int(b.memlockMiB*1000) - int(a.memlockMiB*1000) })
	for _, m := range maps {
		total += m.memlockMiB
		if m.memlockMiB >= 0.1 {
			rows = append(rows, []string{m.name, fmt.Sprint(m.maxEntries), num(m.memlockMiB)})
		}
	}
	rows = append(rows, []string{"all maps", "", num(total)})
	table(os.Stdout, "BPF map\tmax entries\tmemlock MiB", rows)
	fmt.Printf("scan to report of %d+ objects (kmem.tracker.scan.duration): median %s s, max %s s\n",
		synthetic, num(median(took)), num(slices.Max(took)))
	// Growth is between the medians of ten scans after settling and of
	// the last ten.
	window := min(10, len(heap)-settled)
	early, late := median(heap[settled:settled+window]), median(heap[len(heap)-window:])
	printTargets([]target{
		{what: "RSS MiB with 10^6 tracked objects, own memory (max)", value: slices.Max(anon), limit: 100},
		{what: fmt.Sprintf("live heap growth MiB, median of scans %d-%d to of the last %d", settled+1, settled+window, window),
			value: max(late-early, 0), limit: 0.02 * early},
		{what: "scan to report of 10^6 objects, ms", value: 1000 * median(took), limit: 150},
	})
}

func runCPU(c config) error {
	return c.locked(func() (err error) {
		col, err := startCollector()
		if err != nil {
			return err
		}
		defer closeInto(&err, col)
		if _, _, err := col.nextScan(time.Minute); err != nil {
			return err
		}
		window := c.cpuWindow / time.Duration(c.runs)
		idle, err := cpuPerMinute(col.pid(), c.runs, window, func(d time.Duration) error {
			time.Sleep(d)
			return nil
		})
		if err != nil {
			return err
		}
		var iterations int
		busy, err := cpuPerMinute(col.pid(), c.runs, window, func(d time.Duration) error {
			n, err := loopFor(d, c.cpu)
			iterations += n
			return err
		})
		if err != nil {
			return err
		}
		fmt.Printf("cpu: the receiver with the default configuration (collection_interval 10s, stack_traces adaptive), in a process of its own; CPU seconds per minute, median of %d windows of %v\n",
			c.runs, window)
		table(os.Stdout, "state\tCPU s/min", [][]string{
			{"idle", num(idle)},
			{fmt.Sprintf("pipe/close loop on CPU %d (%s pipes/s)", c.cpu, num(float64(iterations)/(c.cpuWindow.Seconds()))), num(busy)},
		})
		return nil
	})
}

// cpuPerMinute runs during for each of runs windows and returns the median
// rate of the process's CPU time, in seconds per minute.
func cpuPerMinute(pid, runs int, window time.Duration, during func(time.Duration) error) (float64, error) {
	var rates []float64
	for range runs {
		before, err := cpuSeconds(pid)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		if err := during(window); err != nil {
			return 0, err
		}
		after, err := cpuSeconds(pid)
		if err != nil {
			return 0, err
		}
		rates = append(rates, (after-before)/time.Since(start).Minutes())
	}
	return median(rates), nil
}

// loopFor runs the pipe/close loop pinned to cpu for about d and returns
// how many iterations it made.
func loopFor(d time.Duration, cpu int) (int, error) {
	const chunk = 10_000
	n := 0
	_, err := pinned(cpu, func() error {
		for deadline := time.Now().Add(d); time.Now().Before(deadline); n += chunk {
			if err := pipeLoop(chunk); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}
