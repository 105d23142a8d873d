//go:build linux && (amd64 || arm64)

package tracker

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/bpf"
	"github.com/kmemleak/kmemleakreceiver/internal/jiffies"
)

// clockTries is how many pairs of readings readClock fits before it gives
// up on jiffies: under emulation (the VMs of make test-kernels) a pair now
// and then fits no HZ, and which clock the probes stamp is part of the
// pinned tables' shape, so a miss would cost a restart its tables.
const clockTries = 3

// readClock reads jiffies and CLOCK_MONOTONIC at once in the kernel, with
// two runs of read_clock far enough apart to tell HZ, and fits the mapping
// between them, up to clockTries times; the error is the last try's.
func readClock(specs *bpf.KmemleakSpecs) (clock *jiffies.Clock, err error) {
	for range clockTries {
		if clock, err = readClockOnce(specs); err == nil {
			return clock, nil
		}
	}
	return nil, err
}

func readClockOnce(specs *bpf.KmemleakSpecs) (*jiffies.Clock, error) {
	var readings [2]jiffies.Reading
	err := withTestRun(specs.Clock, specs.ReadClock, func(clock *ebpf.Map, read *ebpf.Program) error {
		for i := range readings {
			if i > 0 {
				time.Sleep(jiffies.MinApart)
			}
			if _, err := read.Run(&ebpf.RunOptions{}); err != nil {
				return fmt.Errorf("running read_clock: %w", err)
			}
			var pair bpf.KmemleakClockPair
			if err := clock.Lookup(uint32(0), &pair); err != nil {
				return fmt.Errorf("reading the clocks: %w", err)
			}
			readings[i] = jiffies.Reading{Jiffies: pair.Jiffies, Ns: pair.Ns}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	clock, err := jiffies.Fit(readings[0], readings[1])
	if err != nil {
		return nil, err
	}
	return &clock, nil
}

// withTestRun loads prog, a program the loader runs itself (never
// attached), with m, the one map it uses, calls use with them, and closes
// them.
func withTestRun(m *ebpf.MapSpec, prog *ebpf.ProgramSpec, use func(m *ebpf.Map, prog *ebpf.Program) error) error {
	coll, err := ebpf.NewCollection(&ebpf.CollectionSpec{
		Maps:     map[string]*ebpf.MapSpec{m.Name: m.Copy()},
		Programs: map[string]*ebpf.ProgramSpec{prog.Name: prog.Copy()},
	})
	if err != nil {
		return fmt.Errorf("loading %s: %w", prog.Name, err)
	}
	// Only file descriptors, read from and done with.
	defer coll.Close()
	return use(coll.Maps[m.Name], coll.Programs[prog.Name])
}

// ProbeClock is the mapping Open gives the probes' times: nil where they
// stamp nanoseconds, the error saying why.
func ProbeClock() (*jiffies.Clock, error) {
	_, specs, err := loadSpecs()
	if err != nil {
		return nil, err
	}
	return readClock(specs)
}

// MonotonicNow reads the clock of kmem.Object.AllocNs: CLOCK_MONOTONIC,
// which the probes' jiffies are mapped onto (or bpf_ktime_get_ns's own).
func MonotonicNow() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("reading CLOCK_MONOTONIC: %w", err)
	}
	return uint64(ts.Nano()), nil //nolint:gosec // G115: CLOCK_MONOTONIC counts up from boot, never negative
}
