//go:build linux && (amd64 || arm64)

package tracker

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/livetable"
)

// walkTracked calls fn for every object the probes track: in the live
// tables, then in the young area.
func walkTracked(tr *Tracker, fn func(o *livetable.Object)) {
	tr.walkParts(1, func(int) func(*livetable.Object) { return fn })
}

// pinToCPU keeps the calling goroutine on its thread and the thread on
// cpu, until the function it returns is called.
func pinToCPU(cpu int) (unpin func(), err error) {
	runtime.LockOSThread()
	var all, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	return func() {
		_ = unix.SchedSetaffinity(0, &all) // the thread goes back to the pool either way
		runtime.UnlockOSThread()
	}, nil
}

// Where the probes read the preempt count (arm64 always, x86-64 where its
// offsets were found), attribution attaches only the program that records
// process exits; elsewhere also the four that tell softirqs and interrupt
// handlers, exits first.
func TestAttributionPrograms(t *testing.T) {
	progs := &testSpecs(t).KmemleakProgramSpecs
	names := func(readsPreemptCount bool) []string {
		var out []string
		for _, at := range attributionPrograms(progs, readsPreemptCount) {
			out = append(out, at.program.Name+"@"+at.String())
		}
		return out
	}
	assert.Equal(t, []string{"process_exit@sched:sched_process_exit"}, names(true))
	assert.Equal(t, []string{
		"softirq_exit@irq:softirq_exit", "hardirq_exit@irq:irq_handler_exit",
		"softirq_entry@irq:softirq_entry", "hardirq_entry@irq:irq_handler_entry",
		"process_exit@sched:sched_process_exit",
	}, names(false))
}
