//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

// heldLeak is something a test holds that an allocator reports under known
// call sites.
type heldLeak struct {
	allocator string
	// sites are the functions the allocations are reported under, on the
	// kernels tested; their objects are summed.
	sites []string
	// hold makes the allocations; the release it returns frees them.
	hold func(t *testing.T) (release func())
	// objects is how many objects a hold adds at least.
	objects int64
}

// Pipes filled with data hold their buffers' pages: 16 pages of a 64 KiB
// pipe, allocated by the pipe's write.
const (
	filledPipes  = 200
	pagesPerPipe = 16
)

// Per-CPU hash maps hold one percpu object per element.
const (
	percpuMaps     = 4
	percpuElements = 500
)

var pageLeak = heldLeak{
	allocator: "page",
	sites:     []string{"anon_pipe_write", "pipe_write"},
	objects:   filledPipes * pagesPerPipe,
	hold: func(t *testing.T) func() {
		pipes := kerneltest.OpenPipes(t, filledPipes)
		data := make([]byte, pagesPerPipe*unix.Getpagesize())
		for _, p := range pipes {
			require.NoError(t, unix.SetNonblock(p[1], true))
			n, err := unix.Write(p[1], data)
			require.NoError(t, err)
			require.Equal(t, len(data), n, "a pipe took less than its default 16 pages")
		}
		return func() { kerneltest.ClosePipes(pipes) }
	},
}

// A preallocated per-CPU hash map allocates one percpu object per element
// when it is created, and frees them when it is destroyed.
var percpuLeak = heldLeak{
	allocator: "percpu",
	sites:     []string{"bpf_map_alloc_percpu", "__bpf_map_alloc_percpu", "htab_map_alloc", "prealloc_init"},
	objects:   percpuMaps * percpuElements,
	hold: func(t *testing.T) func() {
		var maps []*ebpf.Map
		release := func() {
			for _, m := range maps {
				m.Close()
			}
			maps = nil
		}
		t.Cleanup(release)
		for i := range percpuMaps {
			m, err := ebpf.NewMap(&ebpf.MapSpec{
				Name: fmt.Sprintf("kmemleak_test%d", i), Type: ebpf.PerCPUHash,
				KeySize: 4, ValueSize: 8, MaxEntries: percpuElements,
			})
			require.NoError(t, err)
			maps = append(maps, m)
		}
		return release
	},
}

func (l heldLeak) count(byFunction map[string]int64) (n int64) {
	for _, fn := range l.sites {
		n += byFunction[fn]
	}
	return n
}

// Each allocator, in each attach mode, reports what the test holds and
// forgets it once freed.
func TestIntegrationEveryAllocatorReportsAHeldLeak(t *testing.T) {
	kerneltest.RequireBPF(t)
	for _, leak := range []heldLeak{pageLeak, percpuLeak} {
		for _, mode := range kmem.AttachModes {
			if mode == kmem.ModeKprobe { // slab and kmalloc only: Validate refuses it
				continue
			}
			t.Run(leak.allocator+"/"+string(mode), func(t *testing.T) {
				cfg := testConfig()
				cfg.Allocators = []string{leak.allocator}
				cfg.Attach = string(mode)
				p := startReceiverOrSkip(t, cfg)

				first := waitForScan(t, p.metrics, "a first scan", func(map[string]int64) bool { return true })
				baseline := leak.count(first)
				release := leak.hold(t)
				held := waitForScan(t, p.metrics, "the held objects are suspects", func(got map[string]int64) bool {
					return leak.count(got)-baseline >= leak.objects
				})
				t.Logf("baseline %d, held %d (%s)", baseline, leak.count(held), topFunctions(held, 8))

				release()
				waitForScan(t, p.metrics, "the freed objects are gone", func(got map[string]int64) bool {
					return leak.count(got) <= baseline+leak.objects/20
				})
			})
		}
	}
}

// topFunctions lists the n largest entries, for the test log.
func topFunctions(byFunction map[string]int64, n int) string {
	fns := slices.SortedFunc(maps.Keys(byFunction), func(a, b string) int {
		return cmp.Or(cmp.Compare(byFunction[b], byFunction[a]), cmp.Compare(a, b))
	})
	var parts []string
	for _, fn := range fns[:min(n, len(fns))] {
		parts = append(parts, fmt.Sprintf("%s=%d", fn, byFunction[fn]))
	}
	return strings.Join(parts, " ")
}

// With 1-in-8 sampling, the held pipes are still reported, at about their
// real count, while the map holds an eighth of the objects.
func TestIntegrationSampledTrackingEstimatesTheHeldLeak(t *testing.T) {
	kerneltest.RequireBPF(t)
	const rate = 8
	cfg := testConfig()
	cfg.SampleRate = rate
	p := startReceiver(t, cfg)

	baseline, _ := settledPipeBaseline(t, p.metrics)
	kerneltest.OpenPipes(t, heldPipes)
	want := int64(2 * heldPipes) // two objects of each kind per pipe
	held := waitForScan(t, p.metrics, "the held pipes are estimated", func(got map[string]int64) bool {
		for site, n := range pipeObjects(got) {
			if n-baseline[site] < want*3/4 {
				return false
			}
		}
		return true
	})
	t.Logf("baseline %v, holding %d pipes at 1 in %d: %v", baseline, heldPipes, rate, pipeObjects(held))
	for site, n := range pipeObjects(held) {
		assert.InDelta(t, want, n-baseline[site], float64(want)/4, "%s: estimate off by more than 25%%", site)
		assert.Zero(t, n%rate, "%s: %d is no multiple of the sample rate", site, n)
	}
}

// An allocator the kernel cannot follow in the mode asked for is left out
// with a warning while the others are tracked: on Linux 6.1, tp_btf refuses
// the slab probes but takes the page ones.
func TestIntegrationAllocatorTheKernelRefusesIsLeftOut(t *testing.T) {
	kerneltest.RequireBPF(t)
	cfg := testConfig()
	cfg.Allocators = []string{"slab", "page"}
	cfg.Attach = string(kmem.ModeTPBTF)
	set, logs := settingsWithLogs(component.MustNewID("kmemleak"))
	startReceiverWith(t, set, cfg)
	warnings := logs.FilterMessage("Not tracking an allocator the kernel offers no way to follow").All()
	if len(warnings) == 0 {
		t.Skip("this kernel follows both slab and page in tp_btf mode: nothing to leave out")
	}
	require.Len(t, warnings, 1)
	assert.Contains(t, fmt.Sprint(warnings[0].ContextMap()["error"]), "attaching slab allocator probes failed")
	attached := logs.FilterMessage("Attached allocator probes").All()
	require.Len(t, attached, 1)
	assert.Equal(t, "page", attached[0].ContextMap()["allocator"])
}
