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

// readClock reads jiffies and CLOCK_MONOTONIC at once in the kernel, with
// two runs of read_clock far enough apart to tell HZ, and fits the
// mapping between them.
func readClock(specs *bpf.KmemleakSpecs) (*jiffies.Clock, error) {
	spec := &ebpf.CollectionSpec{
		Maps:     map[string]*ebpf.MapSpec{"clock": specs.Clock.Copy()},
		Programs: map[string]*ebpf.ProgramSpec{"read_clock": specs.ReadClock.Copy()},
	}
	var objs struct {
		Clock     *ebpf.Map     `ebpf:"clock"`
		ReadClock *ebpf.Program `ebpf:"read_clock"`
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, fmt.Errorf("loading read_clock: %w", err)
	}
	defer func() {
		// Only file descriptors, read from and done with.
		_ = objs.Clock.Close()
		_ = objs.ReadClock.Close()
	}()
	var readings [2]jiffies.Reading
	for i := range readings {
		if i > 0 {
			time.Sleep(jiffies.MinApart)
		}
		if _, err := objs.ReadClock.Run(&ebpf.RunOptions{}); err != nil {
			return nil, fmt.Errorf("running read_clock: %w", err)
		}
		var pair bpf.KmemleakClockPair
		if err := objs.Clock.Lookup(uint32(0), &pair); err != nil {
			return nil, fmt.Errorf("reading the clocks: %w", err)
		}
		readings[i] = jiffies.Reading{Jiffies: pair.Jiffies, Ns: pair.Ns}
	}
	clock, err := jiffies.Fit(readings[0], readings[1])
	if err != nil {
		return nil, err
	}
	return &clock, nil
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
