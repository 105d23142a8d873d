//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
)

// The tests with a real kernel leak: kernels/kmltest/kmltest.c, a module
// that every leak_interval_ms (500) leaks a kmalloc object from
// kmltest_leak_one, keeps the last 64 of kmltest_keep_recent's kmalloc
// objects, and the last 32 of kmltest_cache_one's from a kmem_cache of its
// own. kernels/kmod.sh builds it for a Debian kernel; kernels/vm.sh, given
// it as KMEMLEAK_MODULE, runs these tests with KMEMLEAK_TEST_MODULE naming
// it.
const (
	kmodName = "kmltest"
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

// requireModule skips where the module cannot be loaded, and returns its
// path.
func requireModule(t *testing.T) string {
	t.Helper()
	kerneltest.RequireBPF(t)
	ko := os.Getenv("KMEMLEAK_TEST_MODULE")
	if ko == "" {
		t.Skip("KMEMLEAK_TEST_MODULE names no kmltest.ko: kernels/vm.sh runs this test with the module kernels/kmod.sh builds for the VM's kernel (KMEMLEAK_MODULE)")
	}
	_, err := os.Stat(ko)
	require.NoError(t, err, "KMEMLEAK_TEST_MODULE")
	if _, err := os.Stat("/proc/modules"); err != nil {
		t.Skip("this kernel cannot load modules (no /proc/modules)")
	}
	for _, cmd := range []string{"insmod", "rmmod", "taskset"} {
		_, err := exec.LookPath(cmd)
		require.NoError(t, err, "loading the module needs %s", cmd)
	}
	_, err = os.Stat("/sys/module/" + kmodName)
	require.ErrorIs(t, err, os.ErrNotExist, "%s is loaded already", kmodName)
	t.Cleanup(func() {
		if _, err := os.Stat("/sys/module/" + kmodName); err == nil {
			rmmod(t)
		}
	})
	return ko
}

// insmod and rmmod run on CPU 0 (taskset), where the module's init and
// exit then run: the kmem_cache the exit frees is on that CPU's free list
// for the next init's kmem_cache_create to take, so that a reload puts the
// new cache where the old one was.
func insmod(t *testing.T, ko string, params ...string) {
	t.Helper()
	out, err := exec.Command("taskset", append([]string{"1", "insmod", ko}, params...)...).CombinedOutput()
	require.NoError(t, err, "insmod %s %v: %s", ko, params, out)
}

func rmmod(t *testing.T) {
	t.Helper()
	out, err := exec.Command("taskset", "1", "rmmod", kmodName).CombinedOutput()
	require.NoError(t, err, "rmmod %s: %s", kmodName, out)
}

// moduleAddress reads an address the module shows in sysfs: its cache's
// (parameters/cache_addr, decimal) or its text's (sections/.text, hex).
func moduleAddress(t *testing.T, file string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/sys/module/" + kmodName + "/" + file)
	require.NoError(t, err)
	addr, err := strconv.ParseUint(strings.TrimSpace(string(b)), 0, 64)
	require.NoError(t, err, "%s: %q", file, b)
	return addr
}

// group is one reported group of the metrics, summed over the attributes
// that are not these (stacks are summed already).
type group struct{ allocator, cache, callSite string }

// groupObjects is kmem.outstanding.objects of one scan by group.
func groupObjects(md pmetric.Metrics) map[group]int64 {
	out := map[group]int64{}
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				if m.Name() != "kmem.outstanding.objects" {
					continue
				}
				for _, dp := range m.Gauge().DataPoints().All() {
					a := dp.Attributes()
					allocator, _ := a.Get("kmem.allocator")
					cache, _ := a.Get("kmem.cache")
					site, _ := a.Get("kmem.call_site")
					out[group{allocator.Str(), cache.Str(), site.Str()}] += dp.IntValue()
				}
			}
		}
	}
	return out
}

// moduleGroups are the groups whose call site is in the module, or whose
// cache is one of its names.
func moduleGroups(groups map[group]int64) map[group]int64 {
	out := map[group]int64{}
	for g, n := range groups {
		if strings.HasSuffix(g.callSite, " ["+kmodName+"]") || strings.HasPrefix(g.cache, "kmltest") {
			out[g] = n
		}
	}
	return out
}

// matching sums the groups whose call site site matches, and returns them.
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

// moduleScans follows the scans of a receiver from the moment it is made.
type moduleScans struct {
	sink *consumertest.MetricsSink
	seen int
}

// next waits, up to within, for a scan after the last one next returned
// that satisfies ok, and returns its groups; every scan it passes goes
// through each first.
func (s *moduleScans) next(t *testing.T, what string, within time.Duration, each func(map[group]int64), ok func(map[group]int64) bool) map[group]int64 {
	t.Helper()
	deadline := time.Now().Add(within)
	var last map[group]int64
	for time.Now().Before(deadline) {
		all := s.sink.AllMetrics()
		for _, md := range all[min(s.seen, len(all)):] {
			s.seen++
			last = groupObjects(md)
			if each != nil {
				each(last)
			}
			if ok(last) {
				return last
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no scan within %v where %s; the module's groups in the last scan: %v", within, what, moduleGroups(last))
	return nil
}

func moduleConfig() *Config {
	cfg := createDefaultConfig()
	cfg.CollectionInterval = 2 * time.Second
	cfg.InitialDelay = 0
	cfg.MinAge = 5 * time.Second
	cfg.TopN = 2000
	cfg.Caches.Exclude = []string{kmodExcludedCache}
	return cfg
}

// A leak in a module is reported under its function, offset and module,
// in the kmalloc cache of its size, and keeps rising; the module's bounded
// kmalloc objects and its own cache's objects stay bounded, the cache
// named. After the module is unloaded nothing of it is left, and loaded
// again (at another address, its text and cache often elsewhere) its call
// sites are named as before. Loaded again under another cache name, with
// its new cache where the old one was, the cache is named and filtered by
// its new name, and after one more reload, tracked again under the first.
func TestIntegrationKernelModuleLeakIsFoundAndReloadsAreFollowed(t *testing.T) {
	ko := requireModule(t)
	cfg := moduleConfig()
	p := startReceiver(t, cfg)
	scans := &moduleScans{sink: p.metrics}
	scans.next(t, "a first scan", 30*time.Second, nil, func(map[group]int64) bool { return true })

	insmod(t, ko)
	loadedAt := time.Now()
	text, cacheAddr := moduleAddress(t, "sections/.text"), moduleAddress(t, "parameters/cache_addr")
	t.Logf("%s loaded: text at %#x, %s at %#x", kmodName, text, kmodCache, cacheAddr)

	var leakSites map[group]int64
	t.Run("leak", func(t *testing.T) {
		var series []int64
		maxRecent, maxCached := int64(0), int64(0)
		// Every scan: the leak never shrinks, the bounded groups stay
		// within what the module keeps.
		each := func(groups map[group]int64) {
			_, leak := matching(groups, kmodLeakSite)
			if len(series) > 0 && leak < series[len(series)-1] {
				assert.Failf(t, "the leak shrank", "kmltest_leak_one's objects fell from %d to %d: %v", series[len(series)-1], leak, moduleGroups(groups))
			}
			if leak > 0 || len(series) > 0 {
				series = append(series, leak)
			}
			_, recent := matching(groups, kmodRecentSite)
			_, cached := matching(groups, kmodCacheSite)
			maxRecent, maxCached = max(maxRecent, recent), max(maxCached, cached)
		}
		// The leak outgrows what the bounded group keeps: 64 objects at
		// 2 a second, aged 5 s, about 40 s after loading.
		last := scans.next(t, fmt.Sprintf("kmltest_leak_one has more than %d objects", kmodRecent), 90*time.Second, each, func(groups map[group]int64) bool {
			_, leak := matching(groups, kmodLeakSite)
			return leak > kmodRecent
		})
		t.Logf("%s's groups %v after %v; kmltest_leak_one's objects scan by scan %v; at most %d of kmltest_keep_recent's, %d of kmltest_cache_one's",
			kmodName, moduleGroups(last), time.Since(loadedAt).Round(time.Second), series, maxRecent, maxCached)

		leakSites, _ = matching(last, kmodLeakSite)
		for g := range leakSites {
			assert.Equal(t, group{"kmalloc", kmodLeakCache, g.callSite}, g, "the leak's group")
		}
		recent, _ := matching(last, kmodRecentSite)
		require.NotEmpty(t, recent, "no group of kmltest_keep_recent")
		for g := range recent {
			assert.Equal(t, group{"kmalloc", kmodRecentCache, g.callSite}, g, "the bounded group")
		}
		assert.LessOrEqual(t, maxRecent, int64(kmodRecent), "kmltest_keep_recent keeps %d objects", kmodRecent)
		cached, _ := matching(last, kmodCacheSite)
		require.NotEmpty(t, cached, "no group of kmltest_cache_one")
		for g := range cached {
			assert.Equal(t, group{"slab", kmodCache, g.callSite}, g, "the module's cache's group")
		}
		assert.LessOrEqual(t, maxCached, int64(kmodCached), "kmltest_cache_one keeps %d objects", kmodCached)
	})

	// reload unloads the module, waits for a scan without any of its
	// objects, and loads it again with params; until its new cache is
	// where the old one was if sameCache (up to 5 times, freeing and
	// allocating a kmem_cache on one CPU usually hands the same one back).
	reload := func(t *testing.T, sameCache bool, params ...string) {
		t.Helper()
		for attempt := 1; ; attempt++ {
			rmmod(t)
			gone := scans.next(t, "none of the module's objects is left", 30*time.Second, nil, func(groups map[group]int64) bool {
				return len(moduleGroups(groups)) == 0
			})
			require.Empty(t, moduleGroups(gone))
			oldText, oldCache := text, cacheAddr
			insmod(t, ko, params...)
			loadedAt = time.Now()
			text, cacheAddr = moduleAddress(t, "sections/.text"), moduleAddress(t, "parameters/cache_addr")
			t.Logf("%s loaded again %v: text at %#x (was %#x), cache at %#x (was %#x)", kmodName, params, text, oldText, cacheAddr, oldCache)
			if !sameCache || cacheAddr == oldCache {
				return
			}
			require.Less(t, attempt, 5, "the new cache was never where the old one was")
		}
	}
	// firstScanWithLeak waits for the reloaded module's leak to be
	// reported, and checks its call site is named as before: the module's
	// text may have moved, and the receiver must read the symbols again.
	firstScanWithLeak := func(t *testing.T) map[group]int64 {
		t.Helper()
		groups := scans.next(t, "the reloaded module's leak is reported", 30*time.Second, nil, func(groups map[group]int64) bool {
			_, n := matching(groups, kmodLeakSite)
			return n > 0
		})
		sites, _ := matching(groups, kmodLeakSite)
		assert.ElementsMatch(t, slices.Collect(maps.Keys(leakSites)), slices.Collect(maps.Keys(sites)),
			"the reloaded module's leak is named otherwise (stale symbols?): %v", moduleGroups(groups))
		return groups
	}

	t.Run("reloaded", func(t *testing.T) {
		reload(t, false)
		groups := firstScanWithLeak(t)
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
		groups := firstScanWithLeak(t)
		// Two more scans: the cache's first objects aged with the leak's.
		for range 2 {
			groups = scans.next(t, "a scan", 10*time.Second, nil, func(map[group]int64) bool { return true })
		}
		t.Logf("%s's groups with its cache named %s: %v", kmodName, kmodExcludedCache, moduleGroups(groups))
		for g := range moduleGroups(groups) {
			assert.NotEqual(t, kmodCache, g.cache, "the cache at the address %s had is still called so", kmodCache)
		}
		cached, _ := matching(groups, kmodCacheSite)
		assert.Empty(t, cached, "objects of the cache %s, which the configuration excludes, are reported", kmodExcludedCache)
	})

	// And back under its first name at the same address: the exclusion of
	// the name before must not stick to the address.
	t.Run("same cache address, name back", func(t *testing.T) {
		reload(t, true)
		firstScanWithLeak(t)
		groups := scans.next(t, "kmltest_cache_one's objects are reported", 30*time.Second, nil, func(groups map[group]int64) bool {
			_, n := matching(groups, kmodCacheSite)
			return n > 0
		})
		cached, _ := matching(groups, kmodCacheSite)
		for g := range cached {
			assert.Equal(t, group{"slab", kmodCache, g.callSite}, g, "the module's cache's group")
		}
	})
}
