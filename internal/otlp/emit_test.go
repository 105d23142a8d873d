package otlp

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/plogtest"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/pmetrictest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
	"github.com/kmemleak/kmemleakreceiver/internal/report"
	"github.com/kmemleak/kmemleakreceiver/internal/verdict"
	"github.com/kmemleak/kmemleakreceiver/internal/workload"
)

// Run `go test ./internal/otlp -run TestEmit -update` to rewrite the golden
// files, then review the diff. The golden writers fail the run on purpose so
// that an -update run never passes; run again without -update.
var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var (
	startTime = pcommon.NewTimestampFromTime(time.Date(2025, time.March, 4, 10, 0, 0, 0, time.UTC))
	scanTime  = pcommon.NewTimestampFromTime(time.Date(2025, time.March, 4, 10, 5, 0, 0, time.UTC))
)

const scanDuration = 12500 * time.Microsecond

func newTestEmitter(mbc metadata.MetricsBuilderConfig, lbc metadata.LogsBuilderConfig, includeAddresses bool) *Emitter {
	settings := receivertest.NewNopSettings(metadata.Type)
	mb := metadata.NewMetricsBuilder(mbc, settings, metadata.WithStartTime(startTime))
	resource := func(o owner.Owner) pcommon.Resource {
		rb := mb.NewResourceBuilder()
		SetOwner(rb, o)
		rb.SetHostName("node-7")
		rb.SetOsType("linux")
		rb.SetOsVersion("6.8.0-45-generic")
		rb.SetKmemAttachMode("tp_btf")
		return rb.Emit()
	}
	return &Emitter{
		Metrics:          mb,
		Logs:             metadata.NewLogsBuilder(lbc, settings),
		Resource:         resource(owner.Owner{}),
		OwnerResource:    resource,
		IncludeAddresses: includeAddresses,
	}
}

// ownerReport is a leak at one call site by a container's process and a
// process outside containers, objects a softirq made, and the fold of the
// other owners.
func ownerReport() report.Report {
	leak := verdict.Verdict{State: verdict.Leaking, PerMinute: 400, BytesPerMinute: 409600,
		Since: time.Date(2025, time.March, 4, 10, 3, 24, 0, time.UTC), Report: true}
	nginx := owner.Owner{Context: kmem.InTask, Pid: 4242, Name: "nginx",
		Cgroup:   "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b3c4d_0000_4111_8222_333344445555.slice/cri-containerd-" + containerID + ".scope",
		Workload: workload.Workload{ContainerID: containerID, Runtime: "containerd", PodUID: "1a2b3c4d-0000-4111-8222-333344445555"}}
	bash := owner.Owner{Context: kmem.InTask, Pid: 977, Name: "bash", Exited: true, Cgroup: "/user.slice/user-1000.slice/session-3.scope"}
	pipe := func(o owner.Owner, objects int64) report.Group {
		return report.Group{Allocator: kmem.Kmalloc, Cache: "kmalloc-cg-1k", CallSite: 0xffffffff81a2b3c4, CallSiteSym: "alloc_pipe_info+0x2b",
			StackHash: "49e34a9e2b1dd41a", Owner: o, Objects: objects, Bytes: objects * 1024, OldestAge: 95 * time.Second, Verdict: leak}
	}
	return report.Report{
		Groups: []report.Group{
			pipe(nginx, 1500),
			pipe(bash, 400),
			{Allocator: kmem.Slab, Cache: "TCP", CallSite: 0xffffffff81b00010, CallSiteSym: "sk_prot_alloc+0x30",
				StackHash: "01b86f621699f84b", Owner: owner.Owner{Context: kmem.InSoftirq}, Objects: 50, Bytes: 50 * 2432, OldestAge: time.Minute,
				Verdict: verdict.Verdict{State: verdict.Steady}},
			pipe(owner.Folded, 100),
		},
		Tracked:  map[kmem.Allocator]int64{kmem.Slab: 12000, kmem.Kmalloc: 34000},
		Counters: map[kmem.Allocator]kmem.Counters{kmem.Slab: {Allocs: 1000, Frees: 900}, kmem.Kmalloc: {Allocs: 5000, Frees: 3000}},
	}
}

const containerID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// With attribution, each owner's groups are under a resource of their own,
// the host's with the owner's process, cgroup, container and pod (for the
// k8sattributes processor); the receiver's health stays on the host's.
func TestEmitPerOwnerResources(t *testing.T) {
	e := newTestEmitter(metadata.NewDefaultMetricsBuilderConfig(), metadata.DefaultLogsBuilderConfig(), false)
	rep := ownerReport()
	md := e.EmitMetrics(rep, scanDuration, scanTime)
	assertGoldenMetrics(t, "metrics_owners.yaml", md)
	require.Equal(t, 5, md.ResourceMetrics().Len(), "four owners and the host")
	nginx := md.ResourceMetrics().At(0).Resource().Attributes().AsRaw()
	assert.Equal(t, map[string]any{
		"host.name": "node-7", "os.type": "linux", "os.version": "6.8.0-45-generic", "kmem.attach_mode": "tp_btf",
		"kmem.context": "task", "process.pid": int64(4242), "process.executable.name": "nginx", "container.id": containerID,
		"k8s.pod.uid":          "1a2b3c4d-0000-4111-8222-333344445555",
		"process.linux.cgroup": "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b3c4d_0000_4111_8222_333344445555.slice/cri-containerd-" + containerID + ".scope",
	}, nginx)
	host := md.ResourceMetrics().At(4).Resource().Attributes()
	_, hasContext := host.Get("kmem.context")
	assert.False(t, hasContext, "the receiver's own metrics are the host's")

	logs := e.EmitLogs(context.Background(), rep.Groups, false, scanTime)
	assertGoldenLogs(t, "logs_owners.yaml", logs)
	assert.Equal(t, 4, logs.ResourceLogs().Len(), "one resource per owner")
}

// twoGroupReport is a leak with a stack and a growing group without one.
// Stack hashes here are what report.Build gives these stacks and call
// sites, as the golden files have them.
func twoGroupReport() report.Report {
	return report.Report{
		Groups: []report.Group{
			{
				Allocator:   kmem.Kmalloc,
				Cache:       "kmalloc-cg-1k",
				CallSite:    0xffffffff81a2b3c4,
				CallSiteSym: "alloc_pipe_info+0x2b",
				Frames: frames("alloc_pipe_info+0x2b", "create_pipe_files+0x45", "__do_pipe_flags+0x3a", "do_pipe2+0x4f",
					"__x64_sys_pipe2+0x18", "do_syscall_64+0x9e", "entry_SYSCALL_64_after_hwframe+0x76"),
				StackHash: "ba6ca1f1488d0263",
				Objects:   2000,
				Bytes:     2048000,
				OldestAge: 95*time.Second + 500*time.Millisecond,
				Verdict: verdict.Verdict{State: verdict.Leaking, PerMinute: 400, BytesPerMinute: 409600,
					Since:  time.Date(2025, time.March, 4, 10, 3, 24, 0, time.UTC),
					Reason: "held by python3 (pid 812), its open files (100%)"},
			},
			{
				Allocator:   kmem.Slab,
				Cache:       "dentry",
				CallSite:    0xffffffffc0a01234,
				CallSiteSym: "d_alloc+0x2e",
				StackHash:   "7f8034440ed589d9",
				Objects:     300,
				Bytes:       57600,
				OldestAge:   42 * time.Second,
				Verdict: verdict.Verdict{State: verdict.Growing, PerMinute: 0.5, BytesPerMinute: 96,
					Reason: "reclaimable cache, no reclaim seen", ExplainedBy: verdict.ReclaimableCache},
			},
		},
		Suspects: 2300,
		States:   map[verdict.State]int{verdict.Leaking: 1, verdict.Steady: 40, verdict.Transient: 300},
		Withheld: 1,
		Tracked:  map[kmem.Allocator]int64{kmem.Slab: 12000, kmem.Kmalloc: 34000},
		Counters: map[kmem.Allocator]kmem.Counters{
			kmem.Slab:    {Allocs: 1_000_000, Frees: 988_000, UntrackedFrees: 150, RecursionMisses: 12, FreeMisses: 9, RecoveredFrees: 8, MissedFrees: 2},
			kmem.Kmalloc: {Allocs: 2_500_000, Frees: 2_466_000, UntrackedFrees: 420, Dropped: 7, RecursionMisses: 3},
		},
		Untraced: map[kmem.CacheID]string{
			{Allocator: kmem.Slab, Key: 0xffff888100a00000}: "maple_node",
			kmem.KmallocID(kmem.KmallocAccounted, 512):      "kmalloc-cg-512",
		},
	}
}

// frames is a stack as the symbolizer names its frames.
func frames(symbols ...string) (out []report.Frame) {
	for _, s := range symbols {
		out = append(out, report.SymbolFrame(s))
	}
	return out
}

func assertGoldenMetrics(t *testing.T, file string, actual pmetric.Metrics) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		// Timestamps are fixed by the test: keep them as they are.
		require.NoError(t, golden.WriteMetrics(t, path, actual, golden.SkipMetricTimestampNormalization()))
		return
	}
	expected, err := golden.ReadMetrics(path)
	require.NoError(t, err)
	// The golden writer sorts data points by attributes; the order of data
	// points within a metric carries no meaning.
	require.NoError(t, pmetrictest.CompareMetrics(expected, actual, pmetrictest.IgnoreMetricDataPointsOrder(), pmetrictest.IgnoreResourceMetricsOrder()))
}

func assertGoldenLogs(t *testing.T, file string, actual plog.Logs) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		require.NoError(t, golden.WriteLogs(t, path, actual))
		return
	}
	expected, err := golden.ReadLogs(path)
	require.NoError(t, err)
	require.NoError(t, plogtest.CompareLogs(expected, actual, plogtest.IgnoreResourceLogsOrder()))
}

// metricNames lists the names of the emitted metrics.
func metricNames(md pmetric.Metrics) []string {
	var names []string
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				names = append(names, m.Name())
			}
		}
	}
	return names
}

// logRecords lists the emitted log records.
func logRecords(ld plog.Logs) []plog.LogRecord {
	var out []plog.LogRecord
	for _, rl := range ld.ResourceLogs().All() {
		for _, sl := range rl.ScopeLogs().All() {
			for _, lr := range sl.LogRecords().All() {
				out = append(out, lr)
			}
		}
	}
	return out
}

func TestEmitMetrics(t *testing.T) {
	withoutOldestAge := metadata.NewDefaultMetricsBuilderConfig()
	withoutOldestAge.Metrics.KmemOutstandingOldestAge.Enabled = false

	tests := []struct {
		name        string
		config      metadata.MetricsBuilderConfig
		rep         report.Report
		golden      string
		wantMetrics []string
	}{
		{
			name:   "two groups",
			config: metadata.NewDefaultMetricsBuilderConfig(),
			rep:    twoGroupReport(),
			golden: "metrics_two_groups.yaml",
			wantMetrics: []string{
				"kmem.allocations", "kmem.frees",
				"kmem.outstanding.bytes", "kmem.outstanding.objects", "kmem.outstanding.oldest_age",
				"kmem.tracker.dropped", "kmem.tracker.objects", "kmem.tracker.scan.duration", "kmem.tracker.untracked_frees",
				"kmem.tracker.recursion_misses", "kmem.tracker.untraced_caches", "kmem.tracker.withheld_groups",
				"kmem.tracker.stack_errors", "kmem.outstanding.growth",
				"kmem.tracker.free_recursion_misses", "kmem.tracker.recovered_frees", "kmem.tracker.missed_frees",
				"kmem.groups",
			},
		},
		{
			name:   "metric disabled",
			config: withoutOldestAge,
			rep:    twoGroupReport(),
			golden: "metrics_oldest_age_disabled.yaml",
			wantMetrics: []string{
				"kmem.allocations", "kmem.frees",
				"kmem.outstanding.bytes", "kmem.outstanding.objects",
				"kmem.tracker.dropped", "kmem.tracker.objects", "kmem.tracker.scan.duration", "kmem.tracker.untracked_frees",
				"kmem.tracker.recursion_misses", "kmem.tracker.untraced_caches", "kmem.tracker.withheld_groups",
				"kmem.tracker.stack_errors", "kmem.outstanding.growth",
				"kmem.tracker.free_recursion_misses", "kmem.tracker.recovered_frees", "kmem.tracker.missed_frees",
				"kmem.groups",
			},
		},
		{
			// Nothing old enough yet, and only kmalloc tracked: no group
			// metrics, and the tracker's health for kmalloc alone.
			name:   "no suspects",
			config: metadata.NewDefaultMetricsBuilderConfig(),
			rep: report.Report{
				Tracked:  map[kmem.Allocator]int64{kmem.Kmalloc: 0},
				Counters: map[kmem.Allocator]kmem.Counters{kmem.Kmalloc: {Allocs: 10, Frees: 10}},
			},
			golden: "metrics_no_suspects.yaml",
			wantMetrics: []string{
				"kmem.allocations", "kmem.frees",
				"kmem.tracker.dropped", "kmem.tracker.objects", "kmem.tracker.scan.duration", "kmem.tracker.untracked_frees",
				"kmem.tracker.recursion_misses", "kmem.tracker.withheld_groups", "kmem.tracker.stack_errors",
				"kmem.tracker.free_recursion_misses", "kmem.tracker.recovered_frees", "kmem.tracker.missed_frees",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEmitter(tt.config, metadata.DefaultLogsBuilderConfig(), false)
			md := e.EmitMetrics(tt.rep, scanDuration, scanTime)
			assert.ElementsMatch(t, tt.wantMetrics, metricNames(md))
			assertGoldenMetrics(t, tt.golden, md)
		})
	}
}

func TestEmitLogs(t *testing.T) {
	tests := []struct {
		name             string
		includeAddresses bool
		golden           string
		wantAddresses    []string // kmem.call_site.address per record; nil when absent
	}{
		{
			name:   "without addresses",
			golden: "logs_two_groups.yaml",
		},
		{
			name:             "with addresses",
			includeAddresses: true,
			golden:           "logs_two_groups_with_addresses.yaml",
			wantAddresses:    []string{"0xffffffff81a2b3c4", "0xffffffffc0a01234"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEmitter(metadata.NewDefaultMetricsBuilderConfig(), metadata.DefaultLogsBuilderConfig(), tt.includeAddresses)
			ld := e.EmitLogs(context.Background(), twoGroupReport().Groups, false, scanTime)

			// plogtest does not compare event names: check them here, with
			// what emit.go adds to the generated records.
			records := logRecords(ld)
			require.Len(t, records, 2)
			// The first group leaks and has a stack; the second does neither.
			wantSeverity := []plog.SeverityNumber{plog.SeverityNumberWarn, plog.SeverityNumberInfo}
			for i, lr := range records {
				assert.Equal(t, "kmem.leak.suspect", lr.EventName())
				assert.Equal(t, wantSeverity[i], lr.SeverityNumber())
				assert.Equal(t, strings.ToUpper(wantSeverity[i].String()), lr.SeverityText())
				_, hasStack := lr.Attributes().Get("code.stacktrace")
				assert.Equal(t, i == 0, hasStack, "record %d code.stacktrace", i)
				_, hasSince := lr.Attributes().Get("kmem.leak.since")
				assert.Equal(t, i == 0, hasSince, "record %d kmem.leak.since", i)
				assert.Equal(t, scanTime, lr.Timestamp())
				assert.Equal(t, scanTime, lr.ObservedTimestamp())
				addr, ok := lr.Attributes().Get("kmem.call_site.address")
				if tt.wantAddresses == nil {
					assert.False(t, ok, "record %d has kmem.call_site.address", i)
				} else {
					require.True(t, ok, "record %d has no kmem.call_site.address", i)
					assert.Equal(t, tt.wantAddresses[i], addr.Str())
				}
			}
			assertGoldenLogs(t, tt.golden, ld)
		})
	}
}

func TestEmitLogsEventDisabled(t *testing.T) {
	lbc := metadata.DefaultLogsBuilderConfig()
	lbc.Events.KmemLeakSuspect.Enabled = false
	e := newTestEmitter(metadata.NewDefaultMetricsBuilderConfig(), lbc, true)

	ld := e.EmitLogs(context.Background(), twoGroupReport().Groups, false, scanTime)

	assert.Zero(t, ld.LogRecordCount())
}

// The builders are reused scan after scan: a second emit must carry only
// the second scan.
func TestEmitTwice(t *testing.T) {
	e := newTestEmitter(metadata.NewDefaultMetricsBuilderConfig(), metadata.DefaultLogsBuilderConfig(), false)
	first := twoGroupReport()
	second := twoGroupReport()
	second.Groups = second.Groups[1:]

	e.EmitMetrics(first, scanDuration, scanTime)
	e.EmitLogs(context.Background(), first.Groups, false, scanTime)
	md := e.EmitMetrics(second, scanDuration, scanTime)
	ld := e.EmitLogs(context.Background(), second.Groups, false, scanTime)

	assert.Equal(t, 1, ld.LogRecordCount())
	// One point per group in each of the four group metrics, one per
	// allocator in each of the ten tracker metrics, one per untraced
	// cache, one per verdict state, one withheld count, one scan duration.
	assert.Equal(t, 1*4+2*10+2+4+1+1, md.DataPointCount())
}

func BenchmarkEmit(b *testing.B) {
	rep := twoGroupReport()
	rep.Groups = make([]report.Group, 50)
	for i := range rep.Groups {
		rep.Groups[i] = report.Group{
			Allocator:   kmem.Allocators[i%len(kmem.Allocators)],
			Cache:       fmt.Sprintf("kmalloc-%d", 8<<(i%10)),
			CallSite:    0xffffffff81000000 + uint64(i)<<8,
			CallSiteSym: fmt.Sprintf("func_%d+0x%x", i, i*4),
			Objects:     int64(1000 - i),
			Bytes:       int64(1000-i) * 64,
			OldestAge:   time.Duration(i) * time.Second,
		}
	}
	e := newTestEmitter(metadata.NewDefaultMetricsBuilderConfig(), metadata.DefaultLogsBuilderConfig(), true)
	ctx := context.Background()

	b.ReportAllocs()
	for b.Loop() {
		e.EmitMetrics(rep, scanDuration, scanTime)
		e.EmitLogs(ctx, rep.Groups, false, scanTime)
	}
}

// Groups that differ only in what the stack hash leaves out (offsets,
// addresses) are one series: their points are summed, not averaged by
// the builder.
func TestEmitMetricsSumsGroupsThatHashAlike(t *testing.T) {
	e := newTestEmitter(metadata.NewDefaultMetricsBuilderConfig(), metadata.DefaultLogsBuilderConfig(), false)
	group := func(stack []report.Frame, objects int64, oldest time.Duration, perMinute float64) report.Group {
		return report.Group{Allocator: kmem.Kmalloc, Cache: "kmalloc-cg-1k", CallSiteSym: "alloc_pipe_info+0x2b",
			Frames: stack, StackHash: "ba6ca1f1488d0263", Objects: objects, Bytes: objects * 1024, OldestAge: oldest,
			Verdict: verdict.Verdict{State: verdict.Growing, PerMinute: perMinute}}
	}
	md := e.EmitMetrics(report.Report{Groups: []report.Group{
		group(frames("alloc_pipe_info+0x2b", "do_pipe2+0x4f"), 10, time.Minute, 2),
		group(frames("alloc_pipe_info+0x2b", "do_pipe2+0x51"), 5, 2*time.Minute, 1),
	}}, scanDuration, scanTime)

	want := map[string]float64{
		"kmem.outstanding.objects": 15, "kmem.outstanding.bytes": 15 * 1024,
		"kmem.outstanding.oldest_age": 120, "kmem.outstanding.growth": 3,
	}
	got := map[string]float64{}
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				if _, ok := want[m.Name()]; !ok {
					continue
				}
				require.Equal(t, 1, m.Gauge().DataPoints().Len(), "%s: one point", m.Name())
				dp := m.Gauge().DataPoints().At(0)
				got[m.Name()] = dp.DoubleValue() + float64(dp.IntValue())
			}
		}
	}
	assert.Equal(t, want, got)
}

// A group of a cache SLUB merged others into names them all in
// kmem.cache.merged, kmem.cache staying the name slabinfo lists; a group of
// an unmerged cache has no such attribute.
func TestEmitLogsMergedCacheNames(t *testing.T) {
	e := newTestEmitter(metadata.NewDefaultMetricsBuilderConfig(), metadata.DefaultLogsBuilderConfig(), false)
	bind := report.Group{Allocator: kmem.Slab, Cache: "eventpoll_epi", CallSiteSym: "inet_bind2_bucket_create+0x2c",
		MergedNames: []string{"eventpoll_epi", "fib6_node", "tcp_bind2_bucket", "tcp_bind_bucket"}, Objects: 400, Bytes: 400 * 128,
		Verdict: verdict.Verdict{State: verdict.Leaking, Report: true}}
	dentry := report.Group{Allocator: kmem.Slab, Cache: "dentry", CallSiteSym: "d_alloc+0x1e", Objects: 5, Bytes: 5 * 192,
		Verdict: verdict.Verdict{State: verdict.Steady}}
	records := logRecords(e.EmitLogs(context.Background(), []report.Group{bind, dentry}, false, scanTime))
	require.Len(t, records, 2)
	cache, _ := records[0].Attributes().Get("kmem.cache")
	assert.Equal(t, "eventpoll_epi", cache.Str())
	merged, ok := records[0].Attributes().Get("kmem.cache.merged")
	require.True(t, ok)
	assert.Equal(t, []any{"eventpoll_epi", "fib6_node", "tcp_bind2_bucket", "tcp_bind_bucket"}, merged.Slice().AsRaw())
	_, ok = records[1].Attributes().Get("kmem.cache.merged")
	assert.False(t, ok, "dentry merged nothing")
}
