//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
)

// A restart, graceful or after a change of the configuration that leaves
// the tables' shape alone, keeps the live tables: the next receiver's first
// scan counts the pipes held since before it started, and its probes see
// them freed.
func TestIntegrationRestartKeepsTheLiveTables(t *testing.T) {
	kerneltest.RequireBPF(t)
	for name, change := range map[string]func(*Config){
		"graceful":                  func(*Config) {},
		"config keeping the shape":  func(c *Config) { c.TopN, c.ReportInterval = 500, time.Minute },
		"attach mode of same shape": func(c *Config) { c.Attach = "raw_tp" },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := pinnedConfig(t)
			first, _ := startReceiverLogged(t, cfg)
			baseline := settledOwnPipes(t, first.metrics)
			pipes := kerneltest.OpenPipes(t, heldPipes)
			waitForPipes(t, first.metrics, baseline, "the first receiver counts the held pipes")
			require.NoError(t, first.rcv.Shutdown(context.Background()))

			next := *cfg
			change(&next)
			second, logs := startReceiverLogged(t, &next)
			assert.Equal(t, 1, logs.FilterMessageSnippet("Adopting the pinned live tables").Len(), "%v", logs.All())
			got := firstScanPipes(t, second.metrics)
			t.Logf("the test process's pipe objects: %v before the pipes, %v at the first scan after the restart", baseline, got)
			assertHeldPipesCounted(t, got, baseline)

			kerneltest.ClosePipes(pipes)
			waitForMetrics(t, second.metrics, "the adopted pipes are seen freed", func(md pmetric.Metrics) bool {
				for site, n := range ownPipes(md, os.Getpid()) {
					if n > baseline[site]+heldPipes/20 {
						return false
					}
				}
				return true
			})
		})
	}
}

// A change of the tables' shape starts from empty tables, says why, and
// leaves nothing of the old ones in the kernel.
func TestIntegrationRestartWithAnotherShapeStartsClean(t *testing.T) {
	kerneltest.RequireBPF(t)
	cfg := pinnedConfig(t)
	first, _ := startReceiverLogged(t, cfg)
	baseline := settledOwnPipes(t, first.metrics)
	kerneltest.OpenPipes(t, heldPipes)
	waitForPipes(t, first.metrics, baseline, "the first receiver counts the held pipes")
	require.NoError(t, first.rcv.Shutdown(context.Background()))
	old := pinnedMapIDs(t, cfg.Pinning.Directory)
	require.NotEmpty(t, old)

	next := *cfg
	next.MaxTrackedObjects /= 2
	second, logs := startReceiverLogged(t, &next)
	clean := logs.FilterMessageSnippet("Starting with empty live tables").All()
	require.Len(t, clean, 1, "%v", logs.All())
	assert.Contains(t, clean[0].ContextMap()["reason"], "max_tracked_objects")
	got := firstScanPipes(t, second.metrics)
	for site, n := range got {
		assert.Less(t, n, int64(heldPipes), "%s: pipes opened before the start were counted", site)
	}
	assert.Eventually(t, func() bool {
		for _, id := range old {
			if m, err := ebpf.NewMapFromID(id); err == nil {
				_ = m.Close()
				return false
			}
		}
		return true
	}, 10*time.Second, 50*time.Millisecond, "maps of the old shape are left in the kernel")
}

// Stopped for good (pinning.on_shutdown: release), the receiver leaves no
// pinned map, no map and no program in the kernel.
func TestIntegrationRestartReleaseLeavesNothing(t *testing.T) {
	kerneltest.RequireBPF(t)
	progsBefore, mapsBefore := bpfProgramIDs(t), bpfMapIDs(t)
	cfg := pinnedConfig(t)
	cfg.Pinning.OnShutdown = releasePins
	p, _ := startReceiverLogged(t, cfg)
	firstScanPipes(t, p.metrics)
	assert.DirExists(t, cfg.Pinning.Directory)
	require.NoError(t, p.rcv.Shutdown(context.Background()))

	assert.NoDirExists(t, cfg.Pinning.Directory)
	assert.Eventually(t, func() bool {
		return len(added(progsBefore, bpfProgramIDs(t))) == 0 && len(added(mapsBefore, bpfMapIDs(t))) == 0
	}, 10*time.Second, 50*time.Millisecond, "programs or maps left in the kernel")
}

// A collector killed with SIGKILL leaves its tables pinned and its probes
// detached (the kernel closes its links with it); the next one adopts the
// tables and counts the pipes held across the kill.
func TestIntegrationRestartAfterSIGKILL(t *testing.T) {
	kerneltest.RequireBPF(t)
	cfg := pinnedConfig(t)
	child := startChildCollector(t, cfg, "")
	baseline := settledOwnPipes(t, child.metrics)
	kerneltest.OpenPipes(t, heldPipes)
	waitForPipes(t, child.metrics, baseline, "the child collector counts the held pipes")
	child.stop(t, syscall.SIGKILL)
	assert.FileExists(t, filepath.Join(cfg.Pinning.Directory, "live"), "the killed collector's tables are gone")

	second, logs := startReceiverLogged(t, cfg)
	assert.Equal(t, 1, logs.FilterMessageSnippet("Adopting the pinned live tables").Len(), "%v", logs.All())
	got := firstScanPipes(t, second.metrics)
	t.Logf("baseline %v; first scan after the kill %v", baseline, got)
	assertHeldPipesCounted(t, got, baseline)
}

// pinnedConfig is testConfig pinning in a directory of the test's own.
func pinnedConfig(t *testing.T) *Config {
	t.Helper()
	cfg := testConfig()
	cfg.Pinning.Directory = fmt.Sprintf("/sys/fs/bpf/kmemleak-test-%d", os.Getpid())
	t.Cleanup(func() { _ = os.RemoveAll(cfg.Pinning.Directory) })
	return cfg
}

func startReceiverLogged(t *testing.T, cfg *Config) (pipeline, *observer.ObservedLogs) {
	t.Helper()
	set, logs := settingsWithLogs(component.NewID(metadata.Type))
	return startReceiverWith(t, set, cfg), logs
}

// waitForPipes waits for a scan that counts the pipes the test process
// holds.
func waitForPipes(t *testing.T, sink *consumertest.MetricsSink, baseline map[string]int64, what string) {
	t.Helper()
	waitForMetrics(t, sink, what, func(md pmetric.Metrics) bool { return heldPipesCounted(ownPipes(md, os.Getpid()), baseline) })
}

// settledOwnPipes is the count of the test process's pipe objects once two
// scans in a row agree on it.
func settledOwnPipes(t *testing.T, sink *consumertest.MetricsSink) map[string]int64 {
	t.Helper()
	var prev map[string]int64
	md := waitForMetrics(t, sink, "two scans in a row agree on the test process's pipe objects", func(md pmetric.Metrics) bool {
		cur := ownPipes(md, os.Getpid())
		settled := prev != nil && maps.Equal(prev, cur)
		prev = cur
		return settled
	})
	return ownPipes(md, os.Getpid())
}

// ownPipes counts, per entry of pipeCallSites, the aged objects a scan
// attributes to process pid: what that process holds, whatever else the
// machine does meanwhile.
func ownPipes(md pmetric.Metrics, pid int) map[string]int64 {
	byFunction := map[string]int64{}
	for _, rm := range md.ResourceMetrics().All() {
		if v, ok := rm.Resource().Attributes().Get("process.pid"); !ok || v.Int() != int64(pid) {
			continue
		}
		one := pmetric.NewMetrics()
		rm.CopyTo(one.ResourceMetrics().AppendEmpty())
		for fn, n := range suspectsByFunction(one) {
			byFunction[fn] += n
		}
	}
	return pipeObjects(byFunction)
}

// heldPipesCounted says whether every pipe call site counts the held
// pipes' objects (two of each kind per pipe) over its baseline, but for
// the 1% an allocation the probes miss can cost.
func heldPipesCounted(got, baseline map[string]int64) bool {
	for site := range pipeCallSites {
		if got[site]-baseline[site] < 2*heldPipes-2*heldPipes/100 {
			return false
		}
	}
	return true
}

// assertHeldPipesCounted checks the test process's count against the
// pipes it holds: at least them over its baseline, and no more than them
// and the baseline, give or take the files of the receiver before, freed
// while no probe watched.
func assertHeldPipesCounted(t *testing.T, got, baseline map[string]int64) {
	t.Helper()
	assert.True(t, heldPipesCounted(got, baseline), "the held pipes are not all counted: %v over %v", got, baseline)
	for site := range pipeCallSites {
		assert.LessOrEqual(t, got[site], baseline[site]+2*heldPipes+heldPipes/20, "%s counts more than the pipes held", site)
	}
}

// firstScanPipes is the test process's pipe objects in a receiver's first
// scan.
func firstScanPipes(t *testing.T, sink *consumertest.MetricsSink) map[string]int64 {
	t.Helper()
	require.Eventually(t, func() bool { return len(sink.AllMetrics()) > 0 }, 30*time.Second, 20*time.Millisecond, "no scan")
	return ownPipes(sink.AllMetrics()[0], os.Getpid())
}

// pinnedMapIDs are the IDs of the maps pinned in dir.
func pinnedMapIDs(t *testing.T, dir string) []ebpf.MapID {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var ids []ebpf.MapID
	for _, e := range entries {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, e.Name()), nil)
		require.NoError(t, err)
		info, err := m.Info()
		require.NoError(t, err)
		id, _ := info.ID()
		ids = append(ids, id)
		require.NoError(t, m.Close())
	}
	return ids
}

// A restart with a storage extension keeps the verdict histories: a call
// site whose rise the first receiver judged is judged the same at the next
// one's first scan, with no new wait for the points its trend needs.
func TestIntegrationRestartKeepsTheVerdicts(t *testing.T) {
	kerneltest.RequireBPF(t)
	cfg := pinnedConfig(t)
	storageID := component.MustNewID("file_storage")
	cfg.Storage = &storageID
	extensions := host{storageID: memStorage{memClient{}}}

	first := startWithEvents(t, cfg, extensions)
	stop := openPipesSteadily(t)
	waitForMetrics(t, first.metrics, "the steadily opened pipes are judged growing or leaking", func(md pmetric.Metrics) bool {
		return risen(verdictsByFunction(md)["alloc_pipe_info"])
	})
	stop()
	require.NoError(t, first.rcv.Shutdown(context.Background()))

	next := *cfg
	second := startWithEvents(t, &next, extensions)
	firstScan := func() pmetric.Metrics {
		require.Eventually(t, func() bool { return len(second.metrics.AllMetrics()) > 0 }, 30*time.Second, 20*time.Millisecond, "no scan")
		return second.metrics.AllMetrics()[0]
	}()
	verdicts := verdictsByFunction(firstScan)["alloc_pipe_info"]
	t.Logf("the pipes' verdicts at the first scan after the restart: %v", verdicts)
	assert.True(t, risen(verdicts), "the rise was forgotten: %v", verdicts)
}

// risen says a call site's objects are judged growing or leaking.
func risen(byVerdict map[string]int64) bool {
	return byVerdict["growing"] > 0 || byVerdict["leaking"] > 0
}

// openPipesSteadily opens 10 pipes every 100 ms until the returned stop is
// called; they stay open until the test ends.
func openPipesSteadily(t *testing.T) (stop func()) {
	t.Helper()
	done, stopped := make(chan struct{}), make(chan struct{})
	var pipes [][2]int
	t.Cleanup(func() { kerneltest.ClosePipes(pipes) })
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(done)
			<-stopped
		})
	}
	t.Cleanup(stop) // before the pipes are closed
	go func() {
		defer close(stopped)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for len(pipes) < 20000 {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			for range 10 {
				var p [2]int
				if syscall.Pipe2(p[:], syscall.O_CLOEXEC) != nil {
					return
				}
				pipes = append(pipes, p)
			}
		}
	}()
	return stop
}
