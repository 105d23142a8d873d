//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/slabinfo"
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

// debugSlabDir is where a kernel booted with slub_debug=U (6.8 and later:
// also slab_debug=U) lists, per slab cache, the callers that allocated its
// live objects: the kernel's own record of every object, the oracle the
// receiver's counts are checked against.
const debugSlabDir = "/sys/kernel/debug/slab"

// The oracle's bound: every call site with at least oracleMinObjects live
// objects in the kernel's records, all allocated since attach and all
// older than min_age, is within oracleSharePct percent (or oracleSlack
// objects) of what the receiver reports for it; and no site the receiver
// reports with oracleMinObjects or more is missing from the records.
const (
	oracleMinObjects = 50
	oracleSharePct   = 2
	oracleSlack      = 3
)

// traceSite is what alloc_traces says of one caller's live objects in one
// cache, summed over the stacks it lists them by.
type traceSite struct {
	objects        int64
	minAge, maxAge int64 // jiffies since allocation, at the reading
}

// symbolSize is the function's size %pS prints after its offset
// (alloc_pipe_info+0x69/0x1b0), which the receiver's names leave out.
var symbolSize = regexp.MustCompile(`/0x[0-9a-f]+`)

// parseAllocTraces reads one cache's alloc_traces: a line per caller and
// stack, "<count> <function+0xoff/0xsize [module]> age=<min>/<avg>/<max>
// pid=... cpus=...", the age a single number when all are alike, then the
// stack's frames indented, which start with no count. Lines of one caller
// are summed.
func parseAllocTraces(r io.Reader) (map[string]traceSite, error) {
	out := map[string]traceSite{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		count, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue // a frame of the stack
		}
		site := symbolSize.ReplaceAllString(fields[1], "")
		if strings.HasPrefix(fields[2], "[") {
			site += " " + fields[2]
		}
		minAge, maxAge := int64(-1), int64(-1)
		for _, f := range fields[2:] {
			ages, ok := strings.CutPrefix(f, "age=")
			if !ok {
				continue
			}
			parts := strings.Split(ages, "/")
			if minAge, err = strconv.ParseInt(parts[0], 10, 64); err != nil {
				return nil, fmt.Errorf("%q: %w", sc.Text(), err)
			}
			if maxAge, err = strconv.ParseInt(parts[len(parts)-1], 10, 64); err != nil {
				return nil, fmt.Errorf("%q: %w", sc.Text(), err)
			}
		}
		if minAge < 0 {
			return nil, fmt.Errorf("%q has no age", sc.Text())
		}
		s, seen := out[site]
		if !seen {
			s.minAge, s.maxAge = minAge, maxAge
		}
		s.objects += count
		s.minAge, s.maxAge = min(s.minAge, minAge), max(s.maxAge, maxAge)
		out[site] = s
	}
	return out, sc.Err()
}

// oracleSite is one call site's live objects in the kernel's records, and
// when they were allocated at the earliest and at the latest, on
// CLOCK_MONOTONIC (before boot, for the oldest, where jiffies ran ahead of
// it: arm64 under qemu's TCG): from their ages in jiffies and when their cache's
// records were read. Reading them all takes seconds under slub_debug, so
// one moment for all would put objects made after the attach before it.
type oracleSite struct {
	objects          int64
	earliest, latest time.Duration
}

// readAllocTraces reads every cache's records by cache and call site, named
// as the receiver names them (the kmalloc-rnd copies of a size class as
// one), as scanView.groups has the receiver's. tick is a jiffy.
func readAllocTraces(t *testing.T, tick time.Duration) map[[2]string]oracleSite {
	t.Helper()
	entries, err := os.ReadDir(debugSlabDir)
	require.NoError(t, err)
	out := map[[2]string]oracleSite{}
	for _, e := range entries {
		before := monotonic(t)
		f, err := os.Open(filepath.Join(debugSlabDir, e.Name(), "alloc_traces"))
		if err != nil {
			continue // a cache destroyed meanwhile, or one that records no caller
		}
		sites, err := parseAllocTraces(f)
		f.Close()
		after := monotonic(t)
		require.NoError(t, err, e.Name())
		cache := slabinfo.FoldRandomKmalloc(e.Name())
		for site, s := range sites {
			// An age is whole jiffies: the true one is up to a tick more.
			got := oracleSite{
				objects:  s.objects,
				earliest: before - time.Duration(s.maxAge+1)*tick,
				latest:   after - time.Duration(s.minAge)*tick,
			}
			key := [2]string{cache, site}
			if prev, ok := out[key]; ok {
				got.objects += prev.objects
				got.earliest, got.latest = min(got.earliest, prev.earliest), max(got.latest, prev.latest)
			}
			out[key] = got
		}
	}
	return out
}

// monotonic is CLOCK_MONOTONIC, the clock the records' ages are placed on.
func monotonic(t *testing.T) time.Duration {
	t.Helper()
	ns, err := tracker.MonotonicNow()
	require.NoError(t, err)
	return time.Duration(ns) //nolint:gosec // G115: nanoseconds since boot, far below 2^63
}

// storeUser finds, on the kernel's command line, the debug flags that
// record the allocating caller (U) for every cache: slub_debug=U, or
// slab_debug=U from 6.8 on, before any list of caches.
var storeUser = regexp.MustCompile(`\bsl[au]b_debug=[A-Z]*U`)

// requireAllocTraces skips the test unless the kernel records who
// allocated its live slab objects.
func requireAllocTraces(t *testing.T) {
	t.Helper()
	cmdline, err := os.ReadFile("/proc/cmdline")
	require.NoError(t, err)
	if !storeUser.Match(cmdline) {
		t.Skip("the kernel was not booted with slub_debug=U: no alloc_traces to check against (make test-kernels boots it so)")
	}
	if entries, err := os.ReadDir(debugSlabDir); err != nil || len(entries) == 0 {
		t.Skipf("%s lists no cache (debugfs mounted? CONFIG_SLUB_DEBUG?): %v", debugSlabDir, err)
	}
}

// Per call site, the receiver against the kernel's own records. The test
// holds objects from known call sites (pipes, TCP connections, bound
// listening sockets) while fork/exec, file and TCP churn runs beside them,
// stops the churn, waits until everything left is older than min_age, and
// then compares one scan's aged objects per cache and call site with
// alloc_traces read right after it. alloc_traces gives a caller's count
// and only the minimum, mean and maximum age of its objects, so a site is
// compared where all its objects are older than min_age (with the time the
// scan and the reading took to spare) and all were allocated after the
// probes attached; the others (boot-time objects at the same site, young
// ones) are logged as not comparable. Both counts of every site with
// oracleMinObjects or more go into the log.
func TestIntegrationAllocTracesOracle(t *testing.T) {
	kerneltest.RequireBPF(t)
	requireAllocTraces(t)
	clock, err := tracker.ProbeClock()
	require.NoError(t, err, "the kernel's HZ, for alloc_traces' ages in jiffies")
	tick := time.Second / time.Duration(clock.HZ)

	cfg := testConfig()
	cfg.CollectionInterval = time.Second
	cfg.MinAge = 5 * time.Second
	p := startReceiver(t, cfg)
	attached := monotonic(t)
	// The records place an object to within a jiffy and the reading of its
	// cache's file: the test's own come a second after the attach, where
	// no such error puts them before it.
	time.Sleep(time.Second)

	kerneltest.OpenPipes(t, 300)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	kerneltest.Connect(t, ln, 100)
	for range 100 {
		bound, err := net.Listen("tcp4", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { bound.Close() })
	}
	stop := make(chan struct{})
	churning := startChurn(t, stop)
	time.Sleep(10 * time.Second)
	close(stop)
	churning.Wait()
	time.Sleep(cfg.MinAge + 2*time.Second)

	asked := monotonic(t)
	md := waitForMetrics(t, p.metrics, "a scan after the load", func(pmetric.Metrics) bool { return true })
	// The scan began at most a collection interval before it arrived, after
	// it was asked for: an object allocated before agedBy was aged then.
	agedBy := asked - cfg.CollectionInterval - cfg.MinAge
	reading := time.Now()
	kernel := readAllocTraces(t, tick)
	t.Logf("HZ %d; alloc_traces read in %v; compared: sites whose objects were all allocated after the attach and %v before the scan",
		clock.HZ, time.Since(reading).Round(time.Millisecond), cfg.MinAge)
	since := func(at time.Duration) string { return fmt.Sprintf("%+.1fs", (at - attached).Seconds()) }

	view := viewOf(md)
	ours, untraced := view.groups, view.untraced
	inKernel := map[[2]string]bool{}
	for key := range kernel {
		inKernel[key] = true
	}

	keys := make([][2]string, 0, len(kernel))
	for key, k := range kernel {
		if k.objects >= oracleMinObjects || ours[key] >= oracleMinObjects {
			keys = append(keys, key)
		}
	}
	for key, n := range ours {
		if n >= oracleMinObjects && !inKernel[key] {
			keys = append(keys, key)
		}
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return strings.Compare(a[0]+" "+a[1], b[0]+" "+b[1]) })
	compared := map[string]bool{} // call site functions compared and within the bound
	for _, key := range keys {
		k, n := kernel[key], ours[key]
		cache, site := key[0], key[1]
		row := fmt.Sprintf("%-24s %-48s kernel %6d (allocated %s..%s after the attach) receiver %6d",
			cache, site, k.objects, since(k.earliest), since(k.latest), n)
		switch {
		case !inKernel[key]:
			t.Errorf("%s: the receiver reports %d objects at a site the kernel has no live object of", row, n)
		case k.objects < oracleMinObjects:
			t.Logf("%s: not compared, under %d in the kernel's records", row, oracleMinObjects)
		case untraced[cache]:
			t.Logf("%s: not compared, the truth check untracked %s", row, cache)
		case k.latest > agedBy:
			t.Logf("%s: not compared, some objects younger than min_age", row)
		case k.earliest < attached:
			t.Logf("%s: not compared, some objects older than the attach", row)
		default:
			bound := max(oracleSlack, k.objects*oracleSharePct/100)
			if d := n - k.objects; d > bound || -d > bound {
				t.Errorf("%s: off by %d, more than %d", row, d, bound)
				continue
			}
			t.Logf("%s: within %d", row, bound)
			fn, _, _ := strings.Cut(site, "+")
			compared[fn] = true
		}
	}
	assert.GreaterOrEqual(t, len(compared), 3, "too few sites compared to mean anything: %v", compared)
	assert.True(t, compared["alloc_pipe_info"], "the held pipes' site was not compared within the bound: %v", compared)
}

// alloc_traces as slab_debugfs_show prints it: a caller's line, the age a
// single number when all its objects are alike, a module's name after the
// symbol, and stack frames that are not callers. One caller listed twice
// (two stacks) is summed.
func TestParseAllocTraces(t *testing.T) {
	const traces = `    300 alloc_pipe_info+0x69/0x1b0 age=2841/3010/3100 pid=91 cpus=0-1
        __kmalloc_cache_noprof+0x1f3/0x2a0
        alloc_pipe_info+0x69/0x1b0
        create_pipe_files+0x42/0x220
      2 alloc_pipe_info+0x69/0x1b0 age=12 pid=1 cpus=0
     64 kmltest_cache_one+0x17/0x40 [kmltest] age=100/150/200 waste=128/2 pid=95-97 cpus=1
      1 <not-available> age=4295 pid=0 cpus=0
`
	got, err := parseAllocTraces(strings.NewReader(traces))
	require.NoError(t, err)
	assert.Equal(t, map[string]traceSite{
		"alloc_pipe_info+0x69":             {objects: 302, minAge: 12, maxAge: 3100},
		"kmltest_cache_one+0x17 [kmltest]": {objects: 64, minAge: 100, maxAge: 200},
		"<not-available>":                  {objects: 1, minAge: 4295, maxAge: 4295},
	}, got)

	_, err = parseAllocTraces(strings.NewReader("      3 d_alloc+0x1e/0x90 pid=1 cpus=0\n"))
	require.Error(t, err, "a caller's line without an age")

	for cmdline, want := range map[string]bool{
		"console=ttyS0 slub_debug=U quiet": true, "slab_debug=FZU": true, "slub_debug=U,kmalloc-*": true,
		"slub_debug=F,UDP": false, "slub_debug": false, "noslub_debug=U": false, "console=ttyS0": false,
	} {
		assert.Equal(t, want, storeUser.MatchString(cmdline), cmdline)
	}
}
