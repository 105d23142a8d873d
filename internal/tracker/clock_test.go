//go:build linux && (amd64 || arm64)

package tracker

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/ksym"
	"github.com/kmemleak/kmemleakreceiver/internal/livetable"
)

// The probes stamp allocations in jiffies; mapped onto CLOCK_MONOTONIC, an
// object's time falls between the reads of the clock around its
// allocation, late by at most two ticks (jiffies.Clock.End), on every
// kernel the tests run on (each has an HZ the mapping knows).
func TestIntegrationAllocationTimesAreMonotonic(t *testing.T) {
	kerneltest.RequireBPF(t)
	sym, err := ksym.New("/proc/kallsyms", "/proc/modules")
	require.NoError(t, err)
	tr, err := Open(Options{
		Allocators: []kmem.Allocator{kmem.Kmalloc}, Mode: kmem.ModeAuto, MaxObjects: 1 << 16, MaxSize: ^uint32(0),
		Stacks: StackOptions{Depth: 1}, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	require.NoError(t, err)
	defer tr.Close()
	require.NotNil(t, tr.scan.clock, "the probes stamp nanoseconds: jiffies did not map onto CLOCK_MONOTONIC here")
	tick := time.Second / time.Duration(tr.scan.clock.HZ)

	var obj kmem.Object
	pipes := func(fn func(*kmem.Object)) {
		walkTracked(tr, func(o *livetable.Object) {
			if !tr.scan.decode(o.Key, &o.KmemleakObject, &obj) {
				return
			}
			if s, ok := sym.Resolve(obj.CallSite); ok && strings.Contains(s.Name, "alloc_pipe_info") {
				fn(&obj)
			}
		})
	}
	old := map[uint64]bool{}
	pipes(func(obj *kmem.Object) { old[obj.Address] = true })
	before, err := MonotonicNow()
	require.NoError(t, err)
	kerneltest.OpenPipes(t, 200)
	after, err := MonotonicNow()
	require.NoError(t, err)

	var seen int
	pipes(func(obj *kmem.Object) {
		if old[obj.Address] {
			return
		}
		seen++
		require.GreaterOrEqual(t, obj.AllocNs, before, "a pipe allocated %v before the test opened it", time.Duration(before-obj.AllocNs))
		require.LessOrEqual(t, obj.AllocNs, after+uint64(2*tick), "a pipe allocated %v after the test opened it", time.Duration(obj.AllocNs-after))
	})
	require.GreaterOrEqual(t, seen, 200, "the pipes' buffers are not tracked")
	t.Logf("HZ %d: %d pipes, each stamped within [%d, %d + 2 ticks]", tr.scan.clock.HZ, seen, before, after)
}
