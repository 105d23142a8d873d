//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.opentelemetry.io/collector/receiver/xreceiver"
	"go.uber.org/zap/zaptest"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

// heldPipes is how many pipes the leak test keeps open.
const heldPipes = 2000

func testConfig() *Config {
	cfg := createDefaultConfig()
	cfg.CollectionInterval = 500 * time.Millisecond
	cfg.InitialDelay = 0
	cfg.MinAge = time.Second
	cfg.Verdict.Window, cfg.Verdict.Persist = time.Minute, 3*time.Second
	// Events for every verdict: most tests follow held objects, which are
	// steady, through the events.
	cfg.Verdict.EventStates = []string{"leaking", "growing", "steady", "transient"}
	cfg.TopN = 2000
	cfg.MaxTrackedObjects = 1 << 20
	// The tests allocate what they check from the receiver's process.
	cfg.trackOwnProcess = true
	// Each test starts from empty tables, and leaves nothing pinned.
	cfg.Pinning.Directory = ""
	return cfg
}

type pipeline struct {
	rcv      receiver.Metrics
	metrics  *consumertest.MetricsSink
	logs     *consumertest.LogsSink
	profiles *consumertest.ProfilesSink
}

// startReceiver builds the receiver the way the collector does, with one
// metrics, one logs and one profiles pipeline sharing it.
func startReceiver(t *testing.T, cfg *Config) pipeline {
	t.Helper()
	set := receivertest.NewNopSettings(metadata.Type)
	if os.Getenv("KMEMLEAK_TEST_LOG") != "" {
		set.Logger = zaptest.NewLogger(t)
	}
	return startReceiverWith(t, set, cfg)
}

// startReceiverOrSkip is startReceiver, skipping the test where Start says
// the kernel cannot do what cfg asks, for a reason the tracker knows.
func startReceiverOrSkip(t *testing.T, cfg *Config) pipeline {
	t.Helper()
	return startReceiverWith(t, receivertest.NewNopSettings(metadata.Type), cfg, tracker.VoidArgRefused)
}

// startReceiverWith is startReceiver with the given settings. A Start error
// that contains one of skipOn skips the test.
func startReceiverWith(t *testing.T, set receiver.Settings, cfg *Config, skipOn ...string) pipeline {
	t.Helper()
	f := NewFactory()
	p := pipeline{metrics: new(consumertest.MetricsSink), logs: new(consumertest.LogsSink), profiles: new(consumertest.ProfilesSink)}
	m, err := f.CreateMetrics(context.Background(), set, cfg, p.metrics)
	require.NoError(t, err)
	l, err := f.CreateLogs(context.Background(), set, cfg, p.logs)
	require.NoError(t, err)
	pr, err := f.(xreceiver.Factory).CreateProfiles(context.Background(), set, cfg, p.profiles)
	require.NoError(t, err)
	require.Same(t, m, l, "metrics and logs must share one receiver so the probes load once")
	require.Same(t, m, pr, "profiles too")
	p.rcv = m
	if err := m.Start(context.Background(), componenttest.NewNopHost()); err != nil {
		require.NoError(t, m.Shutdown(context.Background()))
		for _, reason := range skipOn {
			if strings.Contains(err.Error(), reason) {
				t.Skipf("attach: %s on this kernel: %v", cfg.Attach, err)
			}
		}
		require.NoError(t, err)
	}
	require.NoError(t, l.Start(context.Background(), componenttest.NewNopHost()))
	t.Cleanup(func() {
		require.NoError(t, m.Shutdown(context.Background()))
		require.NoError(t, l.Shutdown(context.Background()))
	})
	return p
}

// trackerHealth sums the tracker's counters over the allocators, by metric
// name, for the log of a failed test.
func trackerHealth(md pmetric.Metrics) map[string]int64 {
	out := map[string]int64{}
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				if m.Type() == pmetric.MetricTypeSum {
					out[m.Name()] += sumOf(m)
				}
			}
		}
	}
	return out
}

// startError starts a receiver that must fail to start, and returns why.
func startError(t *testing.T, cfg *Config) error {
	t.Helper()
	require.NoError(t, cfg.Validate())
	rcv, err := NewFactory().CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, new(consumertest.MetricsSink))
	require.NoError(t, err)
	err = rcv.Start(context.Background(), componenttest.NewNopHost())
	require.Error(t, err)
	require.NoError(t, rcv.Shutdown(context.Background()))
	return err
}

// suspectsByFunction sums kmem.outstanding.objects of the latest scan by the
// function part of the call site ("alloc_pipe_info+0x2b" -> alloc_pipe_info).
func suspectsByFunction(md pmetric.Metrics) map[string]int64 {
	out := map[string]int64{}
	for fn, states := range verdictsByFunction(md) {
		for _, n := range states {
			out[fn] += n
		}
	}
	return out
}

// verdictsByFunction reads a scan's kmem.outstanding.objects by call-site
// function and verdict.
func verdictsByFunction(md pmetric.Metrics) map[string]map[string]int64 {
	out := map[string]map[string]int64{}
	for _, dp := range outstandingObjects(md) {
		site, _ := dp.Attributes().Get("kmem.call_site")
		state, _ := dp.Attributes().Get("kmem.verdict")
		fn, _, _ := strings.Cut(site.Str(), "+")
		if out[fn] == nil {
			out[fn] = map[string]int64{}
		}
		out[fn][state.Str()] += dp.IntValue()
	}
	return out
}

// outstandingObjects are a scan's kmem.outstanding.objects data points.
func outstandingObjects(md pmetric.Metrics) []pmetric.NumberDataPoint {
	var out []pmetric.NumberDataPoint
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				if m.Name() != "kmem.outstanding.objects" {
					continue
				}
				for _, dp := range m.Gauge().DataPoints().All() {
					// A series the scan ended (package staleness) is not in it.
					if !dp.Flags().NoRecordedValue() {
						out = append(out, dp)
					}
				}
			}
		}
	}
	return out
}

// waitForScan waits for a scan that starts after now and whose suspects,
// by function, satisfy ok.
func waitForScan(t *testing.T, sink *consumertest.MetricsSink, what string, ok func(map[string]int64) bool) map[string]int64 {
	t.Helper()
	md := waitForMetrics(t, sink, what, func(md pmetric.Metrics) bool { return ok(suspectsByFunction(md)) })
	return suspectsByFunction(md)
}

// waitForMetrics waits for a scan that starts after now and satisfies ok.
func waitForMetrics(t *testing.T, sink *consumertest.MetricsSink, what string, ok func(pmetric.Metrics) bool) pmetric.Metrics {
	t.Helper()
	seen := sink.DataPointCount()
	deadline := time.Now().Add(30 * time.Second)
	last := pmetric.NewMetrics() // what the failure prints when no scan came at all
	for time.Now().Before(deadline) {
		all := sink.AllMetrics()
		for _, md := range all[min(seen, len(all)):] {
			last = md
			if ok(md) {
				return md
			}
		}
		seen = len(all)
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no scan within 30s where %s; last scan: %v, tracker health: %v", what, suspectsByFunction(last), trackerHealth(last))
	return last
}

// The functions that allocate for pipe2(2), named from what the receiver
// reported while the test held pipes: pipe_inode_info and its buffer array
// (kmalloc), and the two struct files (slab, filp), allocated by
// alloc_empty_file on 6.18 and by __alloc_file on 6.1 (kernels/vm.sh).
var pipeCallSites = map[string][]string{
	"alloc_pipe_info":  {"alloc_pipe_info"},
	"alloc_empty_file": {"alloc_empty_file", "__alloc_file"},
}

// pipeObjects counts, per entry of pipeCallSites, the objects of its
// functions.
func pipeObjects(byFunction map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for site, names := range pipeCallSites {
		for _, fn := range names {
			out[site] += byFunction[fn]
		}
	}
	return out
}

// settledPipeBaseline is the pipes' call sites' count once two scans in a
// row agree on it, and the missed frees the probes had counted by then. The
// files of the probes of a receiver that just shut down are freed lazily
// (the bulk-free kprobe's perf event, where the kernel has kprobes): counted
// by the next receiver's first scan, they leave before the held pipes are
// counted, which then fall one short of the baseline (seen once on 6.12,
// tracepoint mode: 4014 files over a baseline of 15).
func settledPipeBaseline(t *testing.T, sink *consumertest.MetricsSink) (map[string]int64, int64) {
	t.Helper()
	var prev map[string]int64
	md := waitForMetrics(t, sink, "two scans in a row agree on the pipes' call sites", func(md pmetric.Metrics) bool {
		cur := pipeObjects(suspectsByFunction(md))
		settled := prev != nil && maps.Equal(prev, cur)
		prev = cur
		return settled
	})
	// What the baseline was made of, to tell which of its objects went
	// when a count falls short of it (how the data sections that cilium/ebpf
	// left mapped were found: see tracker.createMaps).
	all, fds := suspectsByFunction(md), openFDs(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("baseline suspects: %v", all)
			t.Logf("fds then: %v", fds)
			t.Logf("fds now: %v", openFDs(t))
		}
	})
	return prev, trackerHealth(md)["kmem.tracker.missed_frees"]
}

func TestIntegrationHeldPipesAreReportedAndVanish(t *testing.T) {
	kerneltest.RequireBPF(t)
	for _, mode := range kmem.AttachModes {
		t.Run(string(mode), func(t *testing.T) {
			cfg := testConfig()
			cfg.Attach = string(mode)
			if mode == kmem.ModeKprobe && !kerneltest.HasKprobes() {
				err := startError(t, cfg)
				require.ErrorContains(t, err, "the kernel has no kprobes (built without CONFIG_KPROBES")
				t.Logf("this kernel has no kprobes, and Start says so: %v", err)
				return
			}
			p := startReceiverOrSkip(t, cfg)

			baseline, missedBefore := settledPipeBaseline(t, p.metrics)
			// Classic tracepoints and kprobes share one recursion guard per
			// CPU, and kretprobes can miss returns: there an allocation can
			// go untracked (1 file of 4,000 on Linux 6.12 under qemu, in
			// either mode, before and after the layout change).
			var lost int64
			if mode == kmem.ModeTracepoint || mode == kmem.ModeKprobe {
				lost = heldPipes / 100
			}
			defer func() {
				if t.Failed() {
					t.Logf("tracker health: %v", trackerHealth(lastMetrics(t, p.metrics)))
				}
			}()
			pipes := kerneltest.OpenPipes(t, heldPipes)
			held := waitForMetrics(t, p.metrics, "the held pipes are suspects", func(md pmetric.Metrics) bool {
				// The baseline can hold objects whose frees the probes
				// missed; a new pipe at such an address replaces one,
				// counted as a missed free.
				replaced := trackerHealth(md)["kmem.tracker.missed_frees"] - missedBefore
				for site, n := range pipeObjects(suspectsByFunction(md)) {
					if n-baseline[site] < 2*heldPipes-lost-replaced { // two objects of each kind per pipe
						return false
					}
				}
				return true
			})
			t.Logf("baseline %v, holding %d pipes %v, missed frees counted %d then %d", baseline, heldPipes,
				pipeObjects(suspectsByFunction(held)), missedBefore, trackerHealth(held)["kmem.tracker.missed_frees"])

			kerneltest.ClosePipes(pipes)
			// Classic tracepoint programs share one guard per CPU: a
			// softirq that lands while one of them runs has all its frees
			// skipped, a whole batch of RCU callbacks at once (2-10% of the
			// pipes' file frees on Linux 6.1 under qemu). tp_btf and raw_tp
			// have a guard per program, and a backup free program; the
			// kprobe mode takes its frees from raw tracepoints too.
			slack := int64(heldPipes / 20)
			if mode == kmem.ModeTracepoint {
				slack = 2 * heldPipes / 4
			}
			gone := waitForScan(t, p.metrics, "the closed pipes are gone", func(got map[string]int64) bool {
				for site, n := range pipeObjects(got) {
					if n > baseline[site]+slack {
						return false
					}
				}
				return true
			})
			t.Logf("after close %v", pipeObjects(gone))

			assertSuspectEvents(t, p.logs, mode)
		})
	}
}

// assertSuspectEvents checks the events that reported the pipes: names,
// severity, resource, and no raw address by default.
func assertSuspectEvents(t *testing.T, sink *consumertest.LogsSink, mode kmem.Mode) {
	t.Helper()
	var found bool
	for _, ld := range sink.AllLogs() {
		for _, rl := range ld.ResourceLogs().All() {
			res := rl.Resource().Attributes()
			attachMode, _ := res.Get("kmem.attach_mode")
			assert.Equal(t, string(mode), attachMode.Str())
			osType, _ := res.Get("os.type")
			assert.Equal(t, "linux", osType.Str())
			for _, sl := range rl.ScopeLogs().All() {
				for _, lr := range sl.LogRecords().All() {
					assert.Equal(t, "kmem.leak.suspect", lr.EventName())
					_, hasAddr := lr.Attributes().Get("kmem.call_site.address")
					assert.False(t, hasAddr, "raw addresses must stay out unless include_addresses is set")
					site, _ := lr.Attributes().Get("kmem.call_site")
					if strings.HasPrefix(site.Str(), "alloc_pipe_info+") {
						found = true
					}
				}
			}
		}
	}
	assert.True(t, found, "no kmem.leak.suspect event named alloc_pipe_info")
}

func TestIntegrationShutdownReleasesEverything(t *testing.T) {
	kerneltest.RequireBPF(t)
	progsBefore := bpfProgramIDs(t)
	fdsBefore := openFDs(t)

	f := NewFactory()
	cfg := testConfig()
	m, err := f.CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, new(consumertest.MetricsSink))
	require.NoError(t, err)
	require.NoError(t, m.Start(context.Background(), componenttest.NewNopHost()))
	assert.Greater(t, len(bpfProgramIDs(t)), len(progsBefore), "Start loaded no program")
	time.Sleep(time.Second) // let a scan run so Shutdown stops a live loop
	require.NoError(t, m.Shutdown(context.Background()))

	// The kernel frees tracing programs after an RCU grace period, so their
	// IDs linger for a moment after the last reference is gone.
	assert.Eventually(t, func() bool { return len(added(progsBefore, bpfProgramIDs(t))) == 0 }, 10*time.Second, 50*time.Millisecond,
		"BPF programs left loaded after Shutdown")
	assert.Equal(t, fdsBefore, openFDs(t), "file descriptors left open after Shutdown")

	// The configuration is free again: a new receiver loads afresh.
	m2, err := f.CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, new(consumertest.MetricsSink))
	require.NoError(t, err)
	assert.NotSame(t, m, m2)
	require.NoError(t, m2.Shutdown(context.Background()))
}

func bpfProgramIDs(t *testing.T) []ebpf.ProgramID { return kernelIDs(t, ebpf.ProgramGetNextID) }

func bpfMapIDs(t *testing.T) []ebpf.MapID { return kernelIDs(t, ebpf.MapGetNextID) }

// kernelIDs lists the IDs of every BPF object of a kind in the kernel.
func kernelIDs[ID ~uint32](t *testing.T, next func(ID) (ID, error)) []ID {
	t.Helper()
	var ids []ID
	var id ID
	for {
		n, err := next(id)
		if errors.Is(err, os.ErrNotExist) {
			return ids
		}
		require.NoError(t, err)
		ids = append(ids, n)
		id = n
	}
}

func openFDs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	var fds []string
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the fd ReadDir itself used, closed by now
		}
		fds = append(fds, e.Name()+" -> "+target)
	}
	return fds
}

// TestIntegrationLeastPrivilege runs this test binary again as nobody with
// chosen capabilities: with CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH
// (for /proc/slabinfo, root's only) the receiver scans, the truth check
// included, and lists what live tasks hold; with CAP_BPF or CAP_PERFMON
// missing, Start names it instead of
// failing with a bare EPERM.
func TestIntegrationLeastPrivilege(t *testing.T) {
	if os.Getenv("KMEMLEAK_UNPRIVILEGED_CHILD") == "1" {
		runUnprivilegedChild(t)
		return
	}
	kerneltest.RequireBPF(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	// The test binary sits in a directory only root can enter.
	dir, err := os.MkdirTemp("", "kmemleak-unprivileged")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "receiver.test")
	self, err := os.ReadFile(os.Args[0])
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, self, 0o755))

	tests := []struct {
		caps string
		want []string
	}{
		{"+bpf,+perfmon,+dac_read_search", []string{"START OK", "truth check on", "holders listed"}},
		{"+bpf,+perfmon", []string{"START OK", "truth check off", "holders listed"}},
		{"+bpf", []string{"START ERROR: kmemleak: missing CAP_PERFMON:", "run the collector as root or grant them"}},
		{"+perfmon", []string{"START ERROR: kmemleak: missing CAP_BPF:"}},
		{"", []string{"START ERROR: kmemleak: missing CAP_BPF and CAP_PERFMON"}},
	}
	for _, tt := range tests {
		t.Run("caps "+tt.caps, func(t *testing.T) {
			caps := "-all"
			if tt.caps != "" {
				caps += "," + tt.caps
			}
			cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
				"--inh-caps="+caps, "--ambient-caps="+caps, "--bounding-set="+caps,
				bin, "-test.run=^TestIntegrationLeastPrivilege$", "-test.v")
			cmd.Env = append(os.Environ(), "KMEMLEAK_UNPRIVILEGED_CHILD=1")
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "child failed:\n%s", out)
			for _, want := range tt.want {
				assert.Contains(t, string(out), want)
			}
		})
	}
}

// runUnprivilegedChild starts a receiver and says how it went: the parent
// reads stdout.
func runUnprivilegedChild(t *testing.T) {
	set, logs := settingsWithLogs(component.NewID(metadata.Type))
	sink := new(consumertest.MetricsSink)
	m, err := NewFactory().CreateMetrics(context.Background(), set, testConfig(), sink)
	require.NoError(t, err)
	if err := m.Start(context.Background(), componenttest.NewNopHost()); err != nil {
		fmt.Println("START ERROR: " + err.Error())
		return
	}
	defer func() { require.NoError(t, m.Shutdown(context.Background())) }()
	require.Eventually(t, func() bool { return sink.DataPointCount() > 0 }, 10*time.Second, 50*time.Millisecond, "no scan")
	truth := "truth check on"
	if logs.FilterMessageSnippet("Cannot read the kernel's slab counts").Len() > 0 {
		truth = "truth check off"
	}
	holders := "holders listed"
	if logs.FilterMessageSnippet("Cannot list what live tasks hold").Len() > 0 {
		holders = "holders not listed"
	}
	fmt.Println("START OK, " + truth + ", " + holders)
}
