//go:build linux && (amd64 || arm64)

package tracker

import (
	"flag"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kmemleak/kmemleakreceiver/internal/churn"
	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

var attachCycles = flag.Int("attach-cycles", 12, "TestIntegrationAttachDetachUnderFreeLoad: attach and detach cycles")

// Attaching and detaching the probes rewrites kernel text (the
// tracepoints' static keys, the bulk-free kprobe) while other CPUs run the
// allocators and free from softirqs: over and over, in every mode, it must
// leave the kernel running. Where it would not, the kernel oopses, which
// kernels/vm.sh reports with this test's name.
func TestIntegrationAttachDetachUnderFreeLoad(t *testing.T) {
	kerneltest.RequireBPF(t)
	modes := []kmem.Mode{kmem.ModeAuto, kmem.ModeTracepoint}
	if kerneltest.HasKprobes() {
		modes = append(modes, kmem.ModeKprobe)
	}
	stop := make(chan struct{})
	var rounds atomic.Int64
	loadErr := make(chan error, 1)
	go func() { loadErr <- churn.Run(stop, &rounds) }()
	defer func() {
		close(stop)
		require.NoError(t, <-loadErr)
	}()

	for i := range *attachCycles {
		mode := modes[i%len(modes)]
		allocators := kmem.Allocators
		if mode == kmem.ModeKprobe {
			allocators = kmem.KprobeAllocators
		}
		tr, err := Open(Options{
			Allocators: allocators, Mode: mode, MaxObjects: 1 << 16, MaxSize: ^uint32(0),
			Stacks: StackOptions{Mode: kmem.StacksAlways, Depth: 8}, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		})
		require.NoError(t, err, "cycle %d, %s", i, mode)
		before := rounds.Load()
		var snap kmem.Snapshot
		// Attached while the load runs a round or more: the probes fire.
		for rounds.Load() < before+2 {
			require.NoError(t, tr.Read(&snap))
		}
		require.NoError(t, tr.Close(), "cycle %d, %s", i, mode)
	}
	t.Logf("%d attach/detach cycles over %d rounds of load", *attachCycles, rounds.Load())
}
