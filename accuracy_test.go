//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/kmemleak/kmemleakreceiver/internal/churn"
	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/slabinfo"
)

// startChurn runs churn.Run until stop is closed, failing the test if it fails.
func startChurn(t *testing.T, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	var rounds atomic.Int64
	wg.Go(func() {
		if err := churn.Run(stop, &rounds); err != nil {
			t.Errorf("churn: %v", err)
		}
	})
	return &wg
}

type scanView struct {
	groups map[[2]string]int64 // {cache, call site} -> aged objects, from the metrics
	// byOrigin splits the aged objects of the last scan's events by cache and
	// by whether their stack starts at a system call (process context) or
	// in a kernel thread.
	byOrigin map[[2]string]int64
	untraced map[string]bool
	allocs   int64
	withheld int64
}

func viewOf(md pmetric.Metrics) scanView {
	v := scanView{groups: map[[2]string]int64{}, untraced: map[string]bool{}}
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				switch m.Name() {
				case "kmem.outstanding.objects":
					for _, dp := range m.Gauge().DataPoints().All() {
						cache, _ := dp.Attributes().Get("kmem.cache")
						site, _ := dp.Attributes().Get("kmem.call_site")
						v.groups[[2]string{cache.Str(), site.Str()}] += dp.IntValue()
					}
				case "kmem.tracker.untraced_caches":
					for _, dp := range m.Gauge().DataPoints().All() {
						cache, _ := dp.Attributes().Get("kmem.cache")
						v.untraced[cache.Str()] = true
					}
				case "kmem.allocations":
					for _, dp := range m.Sum().DataPoints().All() {
						v.allocs += dp.IntValue()
					}
				case "kmem.tracker.withheld_groups":
					v.withheld = m.Gauge().DataPoints().At(0).IntValue()
				}
			}
		}
	}
	return v
}

// withEvents fills byOrigin from the newest scan's events.
func (v scanView) withEvents(sink *consumertest.LogsSink) scanView {
	v.byOrigin = map[[2]string]int64{}
	events := suspectEvents(sink)
	var last time.Time
	for _, e := range events {
		last = maxTime(last, e.at)
	}
	for _, e := range events {
		if !e.at.Equal(last) {
			continue
		}
		origin := "kernel thread"
		if strings.Contains(e.stack, kerneltest.SyscallEntry) {
			origin = "system call"
		}
		v.byOrigin[[2]string{e.cache, origin}] += e.objects
	}
	return v
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func TestIntegrationNoPhantomLeaksFromUntracedFrees(t *testing.T) {
	kerneltest.RequireBPF(t)
	cfg := testConfig()
	cfg.MinAge = 2 * time.Second
	cfg.TopN = 100000
	// Every object's stack, and every group in every scan's events: the
	// measurement below sorts suspects by where they were allocated.
	cfg.StackTraces = "always"
	cfg.ReportInterval = time.Nanosecond
	p := startReceiver(t, cfg)

	// What is old before the test does anything is not the test's.
	time.Sleep(cfg.MinAge + cfg.CollectionInterval)
	before := viewOf(lastMetrics(t, p.metrics)).withEvents(p.logs)
	kernelBefore, err := slabinfo.Read(slabinfo.Path)
	require.NoError(t, err)

	// Where kprobes hook kmem_cache_free_bulk, maple_node stays tracked.
	bulkFreesUnseen := !kerneltest.HasKprobes()
	stop := make(chan struct{})
	load := startChurn(t, stop)
	pipes := kerneltest.OpenPipes(t, heldPipes)
	// Long enough that the churn, not the machine's own background work
	// (DAMON regions, slab metadata), dominates what is allocated.
	minLoad := time.Now().Add(15 * time.Second)
	deadline := time.Now().Add(60 * time.Second)
	var during scanView
	for ; time.Now().Before(deadline); time.Sleep(cfg.CollectionInterval) {
		during = viewOf(lastMetrics(t, p.metrics))
		if during.untraced["maple_node"] == bulkFreesUnseen && pipesReported(during) && time.Now().After(minLoad) {
			break
		}
	}
	close(stop)
	load.Wait()
	t.Logf("untraced caches: %v; withheld groups: %d", slices.Sorted(maps.Keys(during.untraced)), during.withheld)
	require.Equal(t, bulkFreesUnseen, during.untraced["maple_node"],
		"maple_node (freed in bulk too) untraced: want %v, as the kernel has kprobes: %v", bulkFreesUnseen, !bulkFreesUnseen)
	require.True(t, pipesReported(during), "held pipes not reported during the churn")
	for g := range during.groups {
		assert.False(t, during.untraced[g[0]], "suspect group %v from untraced cache %s", g, g[0])
	}

	kerneltest.ClosePipes(pipes)
	time.Sleep(10 * time.Second)
	after := viewOf(lastMetrics(t, p.metrics)).withEvents(p.logs)
	kernelAfter, err := slabinfo.Read(slabinfo.Path)
	require.NoError(t, err)

	// What outlives the churn is phantoms, or objects the kernel keeps on
	// purpose. Kernel threads keep state of their own (DAMON, running here,
	// splits and merges its regions all the time), so only suspects from
	// system calls count, the churn's. vmalloc'ed task stacks are freed
	// lazily, thousands at a time, so their vmap areas pile up: a cache's
	// new suspects are phantoms only as far as the kernel's own count of the
	// cache did not grow with them. And where that count fell while ours
	// rose (buffer heads: file system metadata written by the churn stays
	// cached while older buffers are reclaimed), new objects replaced old
	// ones the tracker never saw: nothing can be concluded there.
	var leftover, phantoms, replaced int64
	for key, n := range after.byOrigin {
		d := n - before.byOrigin[key]
		kernelGrowth := kernelAfter[key[0]] - kernelBefore[key[0]]
		if d > 20 {
			t.Logf("  %s from a %s: %+d aged suspects, kernel count %+d", key[0], key[1], d, kernelGrowth)
		}
		if key[1] != "system call" {
			continue
		}
		leftover += d
		if kernelGrowth < 0 {
			replaced += max(0, d)
			continue
		}
		phantoms += max(0, d-kernelGrowth)
	}
	allocated := after.allocs - before.allocs
	ratio := float64(phantoms) / float64(allocated)
	t.Logf("the churn allocated %d objects; afterwards %d more aged suspects from system calls (%.4f%%): "+
		"%d in caches whose kernel count fell meanwhile, %d beyond the kernel's own counts (%.4f%%)",
		allocated, leftover, 100*float64(leftover)/float64(allocated), replaced, phantoms, 100*ratio)
	assert.Less(t, ratio, 0.001, "phantom suspects above 0.1%% of the churn's allocations")
}

func pipesReported(v scanView) bool {
	var n int64
	for g, c := range v.groups {
		if fn, _, _ := strings.Cut(g[1], "+"); fn == "alloc_pipe_info" {
			n += c
		}
	}
	return n >= 2*heldPipes
}

// lastMetrics is the newest scan's metrics.
func lastMetrics(t *testing.T, sink *consumertest.MetricsSink) pmetric.Metrics {
	t.Helper()
	require.Eventually(t, func() bool { return sink.DataPointCount() > 0 }, 10*time.Second, 50*time.Millisecond, "no scan")
	all := sink.AllMetrics()
	return all[len(all)-1]
}

// A free from an interrupt that lands while the free program runs on the
// same CPU is skipped by the kernel; the backup free program must handle
// it, or its object stays as a phantom. The frees lost are at most those
// the primary missed and the backup did not recover.
func TestIntegrationFreesLostToRecursionAreRecovered(t *testing.T) {
	kerneltest.RequireBPF(t)
	for _, mode := range []string{"tp_btf", "raw_tp"} {
		t.Run(mode, func(t *testing.T) {
			cfg := testConfig()
			cfg.Attach = mode
			cfg.StackTraces = "off"
			p := startReceiver(t, cfg)
			stop := make(chan struct{})
			load := startChurn(t, stop)
			time.Sleep(10 * time.Second)
			close(stop)
			load.Wait()
			time.Sleep(2 * cfg.CollectionInterval)

			var frees, missed, recovered int64
			for _, rm := range lastMetrics(t, p.metrics).ResourceMetrics().All() {
				for _, sm := range rm.ScopeMetrics().All() {
					for _, m := range sm.Metrics().All() {
						switch m.Name() {
						case "kmem.frees":
							frees += sumOf(m)
						case "kmem.tracker.free_recursion_misses":
							missed += sumOf(m)
						case "kmem.tracker.recovered_frees":
							recovered += sumOf(m)
						}
					}
				}
			}
			lost := max(0, missed-recovered)
			t.Logf("%d frees; the primary free program was skipped for %d, the backup handled %d: at most %d lost (%.5f%%)",
				frees, missed, recovered, lost, 100*float64(lost)/float64(frees))
			assert.Positive(t, frees)
			assert.LessOrEqual(t, float64(lost), 0.0001*float64(frees), "frees lost to recursion above 0.01%% of frees")
		})
	}
}

func sumOf(m pmetric.Metric) (n int64) {
	for _, dp := range m.Sum().DataPoints().All() {
		n += dp.IntValue()
	}
	return n
}
