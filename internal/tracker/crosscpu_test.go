//go:build linux && (amd64 || arm64)

package tracker

import (
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/ksym"
	"github.com/kmemleak/kmemleakreceiver/internal/livetable"
)

// A server's objects are allocated on one CPU and freed on another: no
// free may be lost to the young area (docs/live-table.md). Two threads,
// pinned to CPUs 0 and 1, each open pipes and hand them to the other to
// close. A pipe's two kmalloc objects (alloc_pipe_info: the pipe and its
// buffers) are freed by the close of its last end, in the closing task,
// on the other CPU; no interrupt frees them, so none of those frees can
// be lost to recursion either. Once every pipe is closed, none of them may
// be tracked. With eight young slots nearly every allocation moves
// another object into the live table, often one being freed at that
// moment on the other CPU; with the machine's young area most pipes are
// freed while young, and the rest after they moved.
func TestIntegrationCrossCPUFreesLeaveNoPhantoms(t *testing.T) {
	kerneltest.RequireBPF(t)
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: nothing can be freed on another than it was allocated on")
	}
	sym, err := ksym.New("/proc/kallsyms", "/proc/modules")
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		slots uint32
	}{{"eight young slots", 8}, {"the machine's young area", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := Open(Options{
				Allocators: []kmem.Allocator{kmem.Slab, kmem.Kmalloc}, Mode: kmem.ModeAuto, MaxObjects: 1 << 18, MaxSize: ^uint32(0),
				Stacks: StackOptions{Depth: 1}, Attribution: true, YoungSlots: tc.slots,
				Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
			})
			require.NoError(t, err)
			defer tr.Close()
			start, err := MonotonicNow()
			require.NoError(t, err)

			opened := exchangePipes(t, 10*time.Second)

			snap := scan(t, tr)
			var left, elsewhere int
			self := uint32(os.Getpid())
			walkTracked(tr, func(o *livetable.Object) {
				var obj kmem.Object
				s, ok := sym.Resolve(o.CallSite)
				if !ok || !strings.Contains(s.Name, "alloc_pipe_info") || !tr.scan.decode(o.Key, &o.KmemleakObject, &obj) || obj.AllocNs < start {
					return
				}
				if obj.Owner.Tgid == self {
					left++
				} else {
					elsewhere++
				}
			})
			c := snap.Counters[kmem.Kmalloc]
			t.Logf("%d pipes opened on one CPU and closed on the other; kmalloc: %d allocations, %d frees, %d moved into the live table, %d not tracked for a race with their address's previous object, %d missed frees, %d frees of untracked objects, %d dropped; %d pipe objects of other processes tracked",
				opened, c.Allocs, c.Frees, c.Promoted, c.Raced, c.MissedFrees, c.UntrackedFrees, c.Dropped, elsewhere)
			require.Greater(t, opened, int64(10_000), "too few pipes to tell")
			require.Zero(t, c.Dropped, "the live table was full")
			if tc.slots != 0 {
				assert.Greater(t, c.Promoted, uint64(opened), "the objects were not moved out of eight slots")
			}
			assert.Zero(t, left, "pipe objects still tracked after every pipe was closed: phantoms")
		})
	}
}

// exchangePipes runs two threads, pinned to CPUs 0 and 1, for d: each
// opens pipes in batches and hands them to the other, which closes them.
// It returns how many pipes were opened, every one closed by then.
func exchangePipes(t *testing.T, d time.Duration) int64 {
	t.Helper()
	const batch = 64
	// A thread that cannot hand a batch over closes what it was handed
	// meanwhile: neither waits on the other, and few pipes are open.
	handoff := [2]chan [][2]int{make(chan [][2]int, 4), make(chan [][2]int, 4)}
	var opened atomic.Int64
	var wg sync.WaitGroup
	// Once closed, a thread stops, and one that cannot hand its last batch
	// over (the other stopped) closes it itself.
	stop := make(chan struct{})
	time.AfterFunc(d, func() { close(stop) })
	for cpu := range 2 {
		wg.Go(func() {
			unpin, err := pinToCPU(cpu)
			if err != nil {
				t.Errorf("pinning a thread to CPU %d: %v", cpu, err)
				return
			}
			defer unpin()
			mine, other := handoff[cpu], handoff[1-cpu]
			for stopped := false; !stopped; {
				pipes := make([][2]int, 0, batch)
				for range batch {
					var p [2]int
					if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
						kerneltest.ClosePipes(pipes)
						t.Errorf("pipe2 on CPU %d: %v", cpu, err)
						return
					}
					pipes = append(pipes, p)
				}
				opened.Add(batch)
				for sent := false; !sent; {
					select {
					case other <- pipes:
						sent = true
					case theirs := <-mine:
						kerneltest.ClosePipes(theirs)
					case <-stop:
						kerneltest.ClosePipes(pipes)
						sent, stopped = true, true
					}
				}
			}
		})
	}
	wg.Wait()
	// What is left was handed over as the threads stopped: closed here,
	// on whatever CPU.
	for _, ch := range handoff {
		close(ch)
		for pipes := range ch {
			kerneltest.ClosePipes(pipes)
		}
	}
	return opened.Load()
}
