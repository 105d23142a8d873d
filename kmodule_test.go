//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
)

// The tests with a real kernel leak load kernels/kmltest/kmltest.c, a
// module that every leak_interval_ms (500) leaks a kmalloc object from
// kmltest_leak_one, keeps the last 64 of kmltest_keep_recent's kmalloc
// objects, and the last 32 of kmltest_cache_one's from a kmem_cache of its
// own; and kmlpad.c, which only takes module space. kernels/kmod.sh builds
// both for a Debian kernel; kernels/vm.sh, given their directory as
// KMEMLEAK_MODULES, runs these tests with KMEMLEAK_TEST_MODULES naming it.
const (
	kmodName    = "kmltest"
	kmodPadName = "kmlpad"
	// The module's cache, and the name the test loads it under to have
	// the receiver leave it out (caches: exclude).
	kmodCache         = "kmltest_cache"
	kmodExcludedCache = "kmltest_skipped"
	// The kmalloc caches of kmltest_leak_one's 200 bytes (LEAK_BYTES) and
	// kmltest_keep_recent's 100 (RECENT_BYTES).
	kmodLeakCache   = "kmalloc-256"
	kmodRecentCache = "kmalloc-128"
	// How many objects kmltest_keep_recent and kmltest_cache_one keep.
	kmodRecent = 64
	kmodCached = 32
)

// The module's call sites as the receiver must name them: function+offset
// [module].
var (
	kmodLeakSite   = regexp.MustCompile(`^kmltest_leak_one\+0x[0-9a-f]+ \[kmltest\]$`)
	kmodRecentSite = regexp.MustCompile(`^kmltest_keep_recent\+0x[0-9a-f]+ \[kmltest\]$`)
	kmodCacheSite  = regexp.MustCompile(`^kmltest_cache_one\+0x[0-9a-f]+ \[kmltest\]$`)
)

// testModules loads and unloads the test's modules, and knows where the
// kernel put kmltest.
type testModules struct {
	dir       string
	padLoaded bool
	// kmltest's text and its kmem_cache.
	text, cache uint64
}

// requireModules skips where the modules cannot be loaded, and unloads
// them when the test ends.
func requireModules(t *testing.T) *testModules {
	t.Helper()
	kerneltest.RequireBPF(t)
	dir := os.Getenv("KMEMLEAK_TEST_MODULES")
	if dir == "" {
		t.Skip("KMEMLEAK_TEST_MODULES names no directory of kmltest.ko and kmlpad.ko: kernels/vm.sh runs this test with the modules kernels/kmod.sh builds for the VM's kernel (KMEMLEAK_MODULES)")
	}
	if _, err := os.Stat("/proc/modules"); err != nil {
		t.Skip("this kernel cannot load modules (no /proc/modules)")
	}
	for _, cmd := range []string{"insmod", "rmmod", "taskset"} {
		_, err := exec.LookPath(cmd)
		require.NoError(t, err, "loading the modules needs %s", cmd)
	}
	for _, name := range []string{kmodName, kmodPadName} {
		_, err := os.Stat(filepath.Join(dir, name+".ko"))
		require.NoError(t, err, "KMEMLEAK_TEST_MODULES")
		require.NoFileExists(t, "/sys/module/"+name+"/initstate", "%s is loaded already", name)
	}
	m := &testModules{dir: dir}
	t.Cleanup(func() {
		if _, err := os.Stat("/sys/module/" + kmodName); err == nil {
			rmmod(t, kmodName)
		}
		if m.padLoaded {
			rmmod(t, kmodPadName)
		}
	})
	return m
}

// load loads kmltest with params.
func (m *testModules) load(t *testing.T, params ...string) {
	t.Helper()
	insmod(t, filepath.Join(m.dir, kmodName+".ko"), params...)
	m.text, m.cache = moduleAddress(t, "sections/.text"), moduleAddress(t, "parameters/cache_addr")
}

// movePad loads kmlpad if it is not loaded, else unloads it: kmltest,
// unloaded, loads where it was unless kmlpad took that range meanwhile or
// gave back a lower one.
func (m *testModules) movePad(t *testing.T) {
	t.Helper()
	if m.padLoaded {
		rmmod(t, kmodPadName)
	} else {
		insmod(t, filepath.Join(m.dir, kmodPadName+".ko"))
	}
	m.padLoaded = !m.padLoaded
}

// insmod and rmmod run on CPU 0 (taskset), where the module's init and
// exit then run: the kmem_cache kmltest's exit frees is on that CPU's free
// list for the next init's kmem_cache_create to take, so that a reload
// puts the new cache where the old one was.
func insmod(t *testing.T, ko string, params ...string) {
	t.Helper()
	out, err := exec.Command("taskset", append([]string{"1", "insmod", ko}, params...)...).CombinedOutput()
	require.NoError(t, err, "insmod %s %v: %s", ko, params, out)
}

func rmmod(t *testing.T, name string) {
	t.Helper()
	out, err := exec.Command("taskset", "1", "rmmod", name).CombinedOutput()
	require.NoError(t, err, "rmmod %s: %s", name, out)
}

// moduleAddress reads an address kmltest shows in sysfs: its cache's
// (parameters/cache_addr, decimal) or its text's (sections/.text, hex).
func moduleAddress(t *testing.T, file string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/sys/module/" + kmodName + "/" + file)
	require.NoError(t, err)
	addr, err := strconv.ParseUint(strings.TrimSpace(string(b)), 0, 64)
	require.NoError(t, err, "%s: %q", file, b)
	return addr
}

// group is one reported group of the metrics.
type group struct{ allocator, cache, callSite string }

// groupObjects is kmem.outstanding.objects of one scan by group, summed
// over any other attribute.
func groupObjects(md pmetric.Metrics) map[group]int64 {
	out := map[group]int64{}
	for _, dp := range outstandingObjects(md) {
		out[groupOf(dp)] += dp.IntValue()
	}
	return out
}

func groupOf(dp pmetric.NumberDataPoint) group {
	a := dp.Attributes()
	allocator, _ := a.Get("kmem.allocator")
	cache, _ := a.Get("kmem.cache")
	site, _ := a.Get("kmem.call_site")
	return group{allocator.Str(), cache.Str(), site.Str()}
}

// moduleGroups are the groups whose call site is in one of the test's
// modules (kmlpad allocates nothing: a call site named after it is
// misnamed), or whose cache has one of kmltest's cache's names.
func moduleGroups(groups map[group]int64) map[group]int64 {
	out := map[group]int64{}
	for g, n := range groups {
		if strings.HasSuffix(g.callSite, " ["+kmodName+"]") || strings.HasSuffix(g.callSite, " ["+kmodPadName+"]") ||
			strings.HasPrefix(g.cache, kmodName) {
			out[g] = n
		}
	}
	return out
}

// moduleKmallocGroups are the kmalloc groups of moduleGroups.
func moduleKmallocGroups(groups map[group]int64) []group {
	var out []group
	for g := range moduleGroups(groups) {
		if g.allocator == "kmalloc" {
			out = append(out, g)
		}
	}
	return out
}

// matching returns the groups whose call site matches site, and the sum
// of their objects.
func matching(groups map[group]int64, site *regexp.Regexp) (map[group]int64, int64) {
	out := map[group]int64{}
	var n int64
	for g, c := range groups {
		if site.MatchString(g.callSite) {
			out[g] = c
			n += c
		}
	}
	return out, n
}

// moduleScans follows a receiver's scans in order.
type moduleScans struct {
	sink *consumertest.MetricsSink
	seen int
}

// next waits up to within for a scan after the last one it looked at that
// satisfies ok, and returns it; each scan it looks at goes through each
// first, if not nil.
func (s *moduleScans) next(t *testing.T, what string, within time.Duration, each func(pmetric.Metrics), ok func(map[group]int64) bool) map[group]int64 {
	t.Helper()
	deadline := time.Now().Add(within)
	var last map[group]int64
	for time.Now().Before(deadline) {
		all := s.sink.AllMetrics()
		for _, md := range all[min(s.seen, len(all)):] {
			s.seen++
			last = groupObjects(md)
			if each != nil {
				each(md)
			}
			if ok(last) {
				return last
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no scan within %v where %s; kmltest's groups in the last scan: %v", within, what, moduleGroups(last))
	return nil
}

func anyScan(map[group]int64) bool { return true }

func moduleConfig() *Config {
	cfg := createDefaultConfig()
	cfg.CollectionInterval = 2 * time.Second
	cfg.InitialDelay = 0
	cfg.MinAge = 5 * time.Second
	cfg.TopN = 2000
	cfg.Caches.Exclude = []string{kmodExcludedCache}
	// Each test starts from empty tables, and leaves nothing pinned.
	cfg.Pinning.Directory = ""
	return cfg
}

// loadUnderReceiver starts a receiver, waits for its first scan, and loads
// the test's modules.
func loadUnderReceiver(t *testing.T) (mods *testModules, p pipeline, scans *moduleScans, loadedAt time.Time) {
	t.Helper()
	mods = requireModules(t)
	p = startReceiver(t, moduleConfig())
	scans = &moduleScans{sink: p.metrics}
	scans.next(t, "a first scan", 30*time.Second, nil, anyScan)
	mods.load(t)
	t.Logf("%s loaded: text at %#x, %s at %#x", kmodName, mods.text, kmodCache, mods.cache)
	return mods, p, scans, time.Now()
}

// A leak in a module is reported under its function, offset and module,
// in the kmalloc cache of its size, and keeps rising; the module's bounded
// kmalloc objects and its own cache's objects stay bounded, the cache
// named. Unloaded, nothing of it is left; loaded again elsewhere, its call
// sites are named as before. Loaded again under another cache name, with
// its new cache where the old one was, the cache is named and filtered by
// its new name, and after one more reload, tracked again under the first.
func TestIntegrationKernelModuleLeakIsFoundAndReloadsAreFollowed(t *testing.T) {
	mods, _, scans, loadedAt := loadUnderReceiver(t)

	// The module's kmalloc groups, the leak's and kmltest_keep_recent's,
	// as first named.
	var kmallocGroups []group
	t.Run("leak", func(t *testing.T) {
		var series []int64
		var maxRecent, maxCached int64
		// Every scan: the leak never shrinks, the others stay within what
		// the module keeps.
		each := func(md pmetric.Metrics) {
			groups := groupObjects(md)
			_, leak := matching(groups, kmodLeakSite)
			if len(series) > 0 && leak < series[len(series)-1] {
				t.Errorf("kmltest_leak_one's objects fell from %d to %d: %v", series[len(series)-1], leak, moduleGroups(groups))
			}
			if leak > 0 || len(series) > 0 {
				series = append(series, leak)
			}
			_, recent := matching(groups, kmodRecentSite)
			_, cached := matching(groups, kmodCacheSite)
			maxRecent, maxCached = max(maxRecent, recent), max(maxCached, cached)
		}
		// The leak outgrows what kmltest_keep_recent keeps: 64 objects at
		// 2 a second, aged 5 s, about 40 s after loading.
		last := scans.next(t, fmt.Sprintf("kmltest_leak_one has more than %d objects", kmodRecent), 90*time.Second, each, func(groups map[group]int64) bool {
			_, leak := matching(groups, kmodLeakSite)
			return leak > kmodRecent
		})
		t.Logf("%s's groups %v after %v; kmltest_leak_one's objects scan by scan %v; at most %d of kmltest_keep_recent's, %d of kmltest_cache_one's",
			kmodName, moduleGroups(last), time.Since(loadedAt).Round(time.Second), series, maxRecent, maxCached)

		kmallocGroups = moduleKmallocGroups(last)
		leakSites, _ := matching(last, kmodLeakSite)
		for g := range leakSites {
			assert.Equal(t, group{"kmalloc", kmodLeakCache, g.callSite}, g, "the leak's group")
		}
		recent, _ := matching(last, kmodRecentSite)
		assert.NotEmpty(t, recent, "no group of kmltest_keep_recent")
		for g := range recent {
			assert.Equal(t, group{"kmalloc", kmodRecentCache, g.callSite}, g, "kmltest_keep_recent's group")
		}
		assert.LessOrEqual(t, maxRecent, int64(kmodRecent), "kmltest_keep_recent keeps %d objects", kmodRecent)
		cached, _ := matching(last, kmodCacheSite)
		assert.NotEmpty(t, cached, "no group of kmltest_cache_one")
		for g := range cached {
			assert.Equal(t, group{"slab", kmodCache, g.callSite}, g, "the module's cache's group")
		}
		assert.LessOrEqual(t, maxCached, int64(kmodCached), "kmltest_cache_one keeps %d objects", kmodCached)
	})
	require.Len(t, kmallocGroups, 2, "the leak and kmltest_keep_recent were not both reported: the reloads have nothing to compare with")

	// reload unloads kmltest, waits for a scan without any of its
	// objects, moves kmlpad and loads kmltest again with params: its text
	// must move, and with sameCache, its new cache must be where the old
	// one was (freeing and creating a kmem_cache on one CPU usually hands
	// the same one back; up to 5 tries).
	reload := func(t *testing.T, sameCache bool, params ...string) {
		t.Helper()
		for attempt := 1; ; attempt++ {
			rmmod(t, kmodName)
			gone := scans.next(t, "none of kmltest's objects is left", 30*time.Second, nil, func(groups map[group]int64) bool {
				return len(moduleGroups(groups)) == 0
			})
			require.Empty(t, moduleGroups(gone))
			text, cache := mods.text, mods.cache
			mods.movePad(t)
			mods.load(t, params...)
			t.Logf("%s loaded again %v (%s loaded: %v): text at %#x (was %#x), cache at %#x (was %#x)",
				kmodName, params, kmodPadName, mods.padLoaded, mods.text, text, mods.cache, cache)
			require.NotEqual(t, text, mods.text, "kmltest's text did not move: the receiver's symbols are not put to the test")
			if !sameCache || mods.cache == cache {
				return
			}
			require.Less(t, attempt, 5, "the new cache was never where the old one was")
		}
	}
	// reportedAgain waits for the reloaded module's kmalloc objects to be
	// reported, and checks their call sites are named as before, though
	// the module's text moved: the receiver must have read the symbols
	// again, and must not take another module's for kmltest's (a call site
	// named after kmlpad counts among the module's groups).
	reportedAgain := func(t *testing.T) map[group]int64 {
		t.Helper()
		groups := scans.next(t, "the reloaded module's kmalloc objects are reported", 30*time.Second, nil, func(groups map[group]int64) bool {
			return len(moduleKmallocGroups(groups)) >= len(kmallocGroups)
		})
		assert.ElementsMatch(t, kmallocGroups, moduleKmallocGroups(groups),
			"the reloaded module's call sites are named otherwise: %v", moduleGroups(groups))
		return groups
	}

	t.Run("reloaded elsewhere", func(t *testing.T) {
		reload(t, false)
		groups := reportedAgain(t)
		t.Logf("%s's groups after the reload: %v", kmodName, moduleGroups(groups))
		cached, _ := matching(groups, kmodCacheSite)
		for g := range cached {
			assert.Equal(t, kmodCache, g.cache, "the reloaded module's cache")
		}
	})

	// The cache's address comes back under a name the configuration
	// leaves out: the old name must not stick to it, and it must not be
	// tracked.
	t.Run("same cache address, excluded name", func(t *testing.T) {
		reload(t, true, "cache_name="+kmodExcludedCache)
		reportedAgain(t)
		// Two more scans: the cache's first objects aged with the leak's.
		var groups map[group]int64
		for range 2 {
			groups = scans.next(t, "a scan", 10*time.Second, nil, anyScan)
		}
		t.Logf("%s's groups with its cache named %s: %v", kmodName, kmodExcludedCache, moduleGroups(groups))
		for g := range moduleGroups(groups) {
			assert.NotEqual(t, kmodCache, g.cache, "%v: the cache %s is still called %s, the name of the cache destroyed at its address", g, kmodExcludedCache, kmodCache)
		}
		cached, _ := matching(groups, kmodCacheSite)
		assert.Empty(t, cached, "objects of %s, which the configuration excludes, are reported", kmodExcludedCache)
	})

	// And back under its first name at the same address: the exclusion of
	// the name before must not stick to the address.
	t.Run("same cache address, name back", func(t *testing.T) {
		reload(t, true)
		reportedAgain(t)
		groups := scans.next(t, "kmltest_cache_one's objects are reported", 30*time.Second, nil, func(groups map[group]int64) bool {
			_, n := matching(groups, kmodCacheSite)
			return n > 0
		})
		t.Logf("%s's groups with its cache named %s again: %v", kmodName, kmodCache, moduleGroups(groups))
		cached, _ := matching(groups, kmodCacheSite)
		for g := range cached {
			assert.Equal(t, group{"slab", kmodCache, g.callSite}, g, "the module's cache's group")
		}
	})
}

// The leak is called leaking within a few minutes, and stays so; the
// module's bounded groups, whose objects live 32 s (kmltest_keep_recent)
// and 16 s (kmltest_cache_one), never are.
func TestIntegrationKernelModuleVerdicts(t *testing.T) {
	_, p, scans, loadedAt := loadUnderReceiver(t)

	leaking := 0 // scans in a row that call the leak leaking
	// The verdicts of the module's call sites as they change, for the log.
	changes, last := map[string][]string{}, map[string]string{}
	defer func() { t.Logf("kmltest's verdicts as they changed: %v", changes) }()
	each := func(md pmetric.Metrics) {
		leakingNow := false
		for fn, verdicts := range verdictsByFunction(md) {
			if !strings.HasPrefix(fn, kmodName) {
				continue
			}
			if now := strings.Join(slices.Sorted(maps.Keys(verdicts)), "+"); last[fn] != now {
				last[fn] = now
				changes[fn] = append(changes[fn], fmt.Sprintf("%s after %v", now, time.Since(loadedAt).Round(time.Second)))
			}
			switch fn {
			case "kmltest_leak_one":
				leakingNow = verdicts["leaking"] > 0
			case "kmltest_keep_recent", "kmltest_cache_one":
				assert.Zero(t, verdicts["leaking"], "%s called leaking %v after loading: %v", fn, time.Since(loadedAt).Round(time.Second), verdicts)
			}
		}
		switch {
		case leakingNow:
			leaking++
		case leaking > 0:
			t.Errorf("the leak was called leaking, then not, %v after loading", time.Since(loadedAt).Round(time.Second))
			leaking = 0
		}
	}
	scans.next(t, "the leak has been called leaking in 5 scans in a row", 5*time.Minute, each, func(map[group]int64) bool { return leaking >= 5 })
	t.Logf("kmltest_leak_one called leaking in 5 scans in a row %v after loading", time.Since(loadedAt).Round(time.Second))

	// The events (by default, of leaking groups only) say so too.
	var leakEvent bool
	for lr := range logRecords(p.logs.AllLogs()) {
		site, _ := lr.Attributes().Get("kmem.call_site")
		v, _ := lr.Attributes().Get("kmem.verdict")
		switch {
		case kmodLeakSite.MatchString(site.Str()):
			leakEvent = leakEvent || v.Str() == "leaking"
		case kmodRecentSite.MatchString(site.Str()), kmodCacheSite.MatchString(site.Str()):
			assert.NotEqual(t, "leaking", v.Str(), "an event calls %s leaking", site.Str())
		}
	}
	assert.True(t, leakEvent, "no kmem.leak.suspect event calls kmltest_leak_one leaking")
}

// A real leak outlives a restart, whichever way the collector before
// ended: the next collector, with the tables pinned and the verdict
// histories in file_storage, calls kmltest_leak_one leaking at its first
// scan, counting every object of it the collector before counted, and
// its events give the same kmem.leak.since, the allocation of the leak's
// oldest object. Each restart ends the collector the one before started:
// one leak, found once, outlives the three. The collectors run in child
// processes, to be killed as the kernel kills them.
func TestIntegrationKernelModuleLeakSurvivesARestart(t *testing.T) {
	mods := requireModules(t)
	cfg := moduleConfig()
	cfg.Pinning.Directory = fmt.Sprintf("/sys/fs/bpf/kmemleak-test-%d", os.Getpid())
	t.Cleanup(func() { _ = os.RemoveAll(cfg.Pinning.Directory) })
	cfg.Verdict.Window, cfg.Verdict.Persist = 2*time.Minute, 10*time.Second
	cfg.ReportInterval = time.Nanosecond // a leak's event every scan, with its kmem.leak.since
	storageID := component.MustNewID("file_storage")
	cfg.Storage = &storageID
	storageDir := t.TempDir()

	collector := startChildCollector(t, cfg, storageDir)
	mods.load(t)
	var since string
	require.Eventually(t, func() bool {
		since = leakSince(collector.logs.AllLogs())
		return since != ""
	}, 3*time.Minute, time.Second, "kmltest_leak_one was never called leaking")

	for _, restart := range []struct {
		name   string
		signal syscall.Signal
		change func(*Config)
	}{
		// First, while the collector that found the leak runs: killed, it
		// leaves the next one only what it saved every minute.
		{"SIGKILL", syscall.SIGKILL, func(*Config) {}},
		{"graceful", syscall.SIGTERM, func(*Config) {}},
		{"config keeping the shape", syscall.SIGTERM, func(c *Config) { c.TopN, c.ReportInterval = 500, time.Second }},
	} {
		if restart.signal == syscall.SIGKILL {
			collector.waitForSave(t, saveEvery+time.Minute, "the leak was called leaking", func(events []plog.Logs) bool { return leakSince(events) != "" })
			// Killed mid-run: the scans since the save are lost.
			scans := len(collector.metrics.AllMetrics())
			require.Eventually(t, func() bool { return len(collector.metrics.AllMetrics()) >= scans+2 }, 30*time.Second, 100*time.Millisecond, "no scan after the save")
		}
		all := collector.metrics.AllMetrics()
		_, before := matching(groupObjects(all[len(all)-1]), kmodLeakSite)
		collector.stop(t, restart.signal)
		next := *cfg
		restart.change(&next)
		collector = startChildCollector(t, &next, storageDir)

		t.Run(restart.name, func(t *testing.T) {
			require.Eventually(t, func() bool { return len(collector.metrics.AllMetrics()) > 0 }, 30*time.Second, 100*time.Millisecond, "no scan")
			verdicts := map[string]int64{}
			for g, n := range groupVerdicts(collector.metrics.AllMetrics()[0]) {
				if kmodLeakSite.MatchString(g.callSite) {
					verdicts[g.verdict] += n
				}
			}
			t.Logf("kmltest_leak_one leaking since %s; its objects at the last scan before the restart: %d; at the first after, by verdict: %v", since, before, verdicts)
			assert.GreaterOrEqual(t, verdicts["leaking"], before, "the leak's objects counted before the restart are not all leaking at the first scan after it")
			require.Eventually(t, func() bool { return leakSince(collector.logs.AllLogs()) != "" }, 30*time.Second, 100*time.Millisecond, "no leak event after the restart")
			assert.Equal(t, since, leakSince(collector.logs.AllLogs()), "kmem.leak.since moved with the restart")
		})
	}
}

// startWithEvents starts a receiver with a metrics and a logs pipeline on a
// host that runs the given extensions.
func startWithEvents(t *testing.T, cfg *Config, extensions host) pipeline {
	t.Helper()
	set, _ := settingsWithLogs(component.NewID(metadata.Type))
	p := pipeline{metrics: new(consumertest.MetricsSink), logs: new(consumertest.LogsSink)}
	m, err := NewFactory().CreateMetrics(context.Background(), set, cfg, p.metrics)
	require.NoError(t, err)
	_, err = NewFactory().CreateLogs(context.Background(), set, cfg, p.logs)
	require.NoError(t, err)
	p.rcv = m
	require.NoError(t, m.Start(context.Background(), extensions))
	t.Cleanup(func() { require.NoError(t, m.Shutdown(context.Background())) })
	return p
}

// leakSince is the kmem.leak.since of the first of the events that calls
// kmltest_leak_one leaking, or "".
func leakSince(events []plog.Logs) string {
	for lr := range logRecords(events) {
		site, _ := lr.Attributes().Get("kmem.call_site")
		state, _ := lr.Attributes().Get("kmem.verdict")
		since, ok := lr.Attributes().Get("kmem.leak.since")
		if ok && state.Str() == "leaking" && kmodLeakSite.MatchString(site.Str()) {
			return since.Str()
		}
	}
	return ""
}

// verdictGroup is a group and its verdict.
type verdictGroup struct{ callSite, verdict string }

// groupVerdicts is kmem.outstanding.objects of one scan by call site and
// verdict.
func groupVerdicts(md pmetric.Metrics) map[verdictGroup]int64 {
	out := map[verdictGroup]int64{}
	for _, dp := range outstandingObjects(md) {
		site, _ := dp.Attributes().Get("kmem.call_site")
		state, _ := dp.Attributes().Get("kmem.verdict")
		out[verdictGroup{site.Str(), state.Str()}] += dp.IntValue()
	}
	return out
}
