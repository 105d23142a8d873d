//go:build linux && (amd64 || arm64)

// Command kmemleak-bench measures what the kmemleak receiver costs, against
// the alternatives, as root: the probes' overhead on an allocation-heavy
// syscall loop, the scan of the live table, the collector's memory
// with a million tracked objects, its CPU time, and what the probes cost
// real programs (nginx under wrk, tar of a big tree). It prints one table
// per section, medians of several runs; see BENCHMARKS.md.
//
//	sudo go run ./cmd/kmemleak-bench
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

var sections = []string{"overhead", "scan", "memory", "cpu", "server"}

type config struct {
	iterations   int
	runs         int
	cpu          int
	lock         string
	sections     []string
	scans        int
	cpuWindow    time.Duration
	serverWindow time.Duration
	serverTree   string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == childArg {
		if err := runChild(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "kmemleak-bench child:", err)
			os.Exit(1)
		}
		return
	}
	var c config
	var only string
	flag.IntVar(&c.iterations, "iterations", 1_000_000, "syscall-loop iterations per measurement")
	flag.IntVar(&c.runs, "runs", 5, "measurements per row; the table shows medians")
	flag.IntVar(&c.cpu, "cpu", runtime.NumCPU()-1, "the CPU the syscall loop is pinned to")
	flag.StringVar(&c.lock, "lock", "", "a file to flock during each measurement, so that other jobs sharing the machine can wait for it")
	flag.StringVar(&only, "sections", strings.Join(sections, ","), "which sections to run")
	flag.IntVar(&c.scans, "scans", 100, "memory section: scans of a million tracked objects")
	flag.DurationVar(&c.cpuWindow, "cpu-window", time.Minute, "cpu section: how long each state is measured")
	flag.DurationVar(&c.serverWindow, "server-window", 10*time.Second, "server section: how long each measurement runs (whole seconds)")
	flag.StringVar(&c.serverTree, "server-tree", "/usr", "server section: the tree tar walks")
	flag.Parse()
	c.sections = strings.Split(only, ",")
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "kmemleak-bench:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	for _, s := range c.sections {
		if !slices.Contains(sections, s) {
			return fmt.Errorf("no section %q (known: %s)", s, strings.Join(sections, ", "))
		}
	}
	if err := tracker.CheckPrivileges(); err != nil {
		return err
	}
	describeMachine(c)
	steps := map[string]func(config) error{"overhead": runOverhead, "scan": runScan, "memory": runMemory, "cpu": runCPU, "server": runServer}
	for _, s := range c.sections {
		fmt.Println()
		if err := steps[s](c); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// closeInto closes c, adding its error to *err: `defer closeInto(&err, c)`
// in a function whose error result is named err.
func closeInto(err *error, c io.Closer) {
	*err = errors.Join(*err, c.Close())
}

// locked runs f holding the lock file, if one was given.
func (c config) locked(f func() error) error {
	if c.lock == "" {
		return f()
	}
	fd, err := unix.Open(c.lock, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("opening the lock file: %w", err)
	}
	defer func() { _ = unix.Close(fd) }() // releases the lock, as exiting would
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", c.lock, err)
	}
	return f()
}

func describeMachine(c config) {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	fmt.Printf("kmemleak-bench: Linux %s, %d CPUs (%s), %s; loop pinned to CPU %d\n",
		unix.ByteSliceToString(uts.Release[:]), runtime.NumCPU(), cpuModel(), memTotal(), c.cpu)
}

func cpuModel() string {
	return procField("/proc/cpuinfo", "model name")
}

func memTotal() string {
	return strings.Join(strings.Fields(procField("/proc/meminfo", "MemTotal")), " ") + " RAM"
}

// procField returns the value of the first "name: value" line of a /proc file.
func procField(path, name string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(data)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// target is a figure issue #5 bounds: at most limit, or at least it.
type target struct {
	what    string
	value   float64
	limit   float64
	atLeast bool
}

func (t target) met() bool {
	if t.atLeast {
		return t.value >= t.limit
	}
	return t.value <= t.limit
}

func printTargets(ts []target) {
	fmt.Println("targets:")
	for _, t := range ts {
		verdict, bound := "met", "at most"
		switch {
		case math.IsNaN(t.value):
			verdict = "not measured"
		case !t.met():
			verdict = "MISSED"
		}
		if t.atLeast {
			bound = "at least"
		}
		fmt.Printf("  %-52s %8s  (%s %s)  %s\n", t.what, num(t.value), bound, num(t.limit), verdict)
	}
}

func runOverhead(c config) error {
	const maxObjects = 1_000_000 // the receiver's default max_tracked_objects
	rows, skipped := overheadRows(maxObjects)
	res := &overheadResults{rows: rows, ns: make([][]float64, len(rows)), events: make([][]float64, len(rows))}
	for round := range c.runs {
		fmt.Fprintf(os.Stderr, "overhead: round %d of %d\n", round+1, c.runs)
		if err := c.locked(func() error { return res.measureRound(mixedLoop, c.iterations, c.cpu) }); err != nil {
			return err
		}
	}
	fmt.Printf("probe overhead: %d iterations of open/close /dev/null, socket/close, pipe/close in turn, pinned to CPU %d; medians of %d rounds, rows in turn within a round\n",
		c.iterations, c.cpu, c.runs)
	for _, s := range skipped {
		fmt.Println("skipped:", s)
	}
	res.print(os.Stdout)
	printTargets(res.targets())
	return nil
}
