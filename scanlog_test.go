//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
	"github.com/kmemleak/kmemleakreceiver/internal/report"
	"github.com/kmemleak/kmemleakreceiver/internal/scan"
	"github.com/kmemleak/kmemleakreceiver/internal/verdict"
)

// scanned is a scan that found a leak (turned leaking now, by a process,
// with a stack), one that turned leaking before, a growing site and two
// long-lived ones: what internal/scan's tests find in their fake kernel.
func scanned(since time.Time) scan.Result {
	const reason = "keeps rising, and nothing that holds kernel memory explains it"
	leak := report.Group{Allocator: kmem.Kmalloc, Cache: "kmalloc-64", CallSiteSym: "kstrdup+0x31",
		Frames:  []report.Frame{report.SymbolFrame("kstrdup+0x31"), report.SymbolFrame("path_openat+0x3c")},
		Owner:   owner.Owner{Context: kmem.InTask, Pid: 10, Name: "proc10"},
		Objects: 60, Bytes: 60 * 64,
		Verdict: verdict.Verdict{State: verdict.Leaking, PerMinute: 36, BytesPerMinute: 2304, Since: since, Reason: reason, Began: true}}
	older := report.Group{Allocator: kmem.Slab, Cache: "filp", CallSiteSym: "alloc_empty_file+0x4b", Objects: 40, Bytes: 40 * 256,
		Verdict: verdict.Verdict{State: verdict.Leaking, PerMinute: 2, Since: since, Reason: "held by python3 (pid 812), its open files (100%)"}}
	growing := report.Group{Allocator: kmem.Slab, Cache: "dentry", CallSiteSym: "d_alloc+0x1e", Objects: 200, Bytes: 200 * 192,
		Verdict: verdict.Verdict{State: verdict.Growing, PerMinute: 36, Reason: "reclaimable cache, no reclaim seen"}}
	pool := report.Group{Allocator: kmem.Kmalloc, Cache: "kmalloc-512", CallSiteSym: "seq_buf_alloc+0x22", Objects: 30, Bytes: 30 * 512,
		Verdict: verdict.Verdict{State: verdict.Transient}}
	steady := report.Group{Allocator: kmem.Slab, Cache: "dentry", CallSiteSym: "d_alloc+0x1e", Objects: 20, Bytes: 20 * 192,
		Verdict: verdict.Verdict{State: verdict.Steady}}
	return scan.Result{
		Report: report.Report{
			Suspects: 350,
			Tracked:  map[kmem.Allocator]int64{kmem.Slab: 1000, kmem.Kmalloc: 500},
			States:   map[verdict.State]int{verdict.Leaking: 2, verdict.Growing: 1, verdict.Transient: 1, verdict.Steady: 1},
		},
		Sites: []report.Group{pool, leak, older, growing, steady},
	}
}

// A scan writes a WARN line per site that turned leaking, with its rate,
// its largest owner and its stack, then one INFO line that counts and
// names its sites.
func TestLogScan(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	since := time.Date(2025, time.March, 4, 10, 3, 24, 0, time.UTC)
	logScan(zap.New(core), scanned(since))

	entries := logs.All()
	require.Len(t, entries, 2, "the new leak's line and the scan's")
	warned, summary := entries[0], entries[1]
	assert.Equal(t, zapcore.WarnLevel, warned.Level)
	assert.Equal(t, "Kernel memory leak", warned.Message)
	assert.Equal(t, map[string]any{
		"call_site": "kstrdup+0x31", "allocator": "kmalloc", "cache": "kmalloc-64",
		"objects_per_min": "36.0", "bytes_per_min": "2304", "since": since, "objects": int64(60), "bytes": int64(3840),
		"reason":        "keeps rising, and nothing that holds kernel memory explains it",
		"largest_owner": "proc10 (pid 10)", "stack": "kstrdup+0x31\npath_openat+0x3c",
	}, warned.ContextMap())

	assert.Equal(t, zapcore.InfoLevel, summary.Level)
	assert.Equal(t, "Scan", summary.Message)
	assert.Equal(t, map[string]any{
		"live_objects": int64(1500), "aged_objects": int64(350),
		"leaking": int64(2), "growing": int64(1), "steady": int64(1), "transient": int64(1),
		"leaks": []any{
			"kstrdup+0x31 (kmalloc-64) +36.0/min: keeps rising, and nothing that holds kernel memory explains it",
			"alloc_empty_file+0x4b (filp) +2.0/min: held by python3 (pid 812), its open files (100%)",
		},
		"largest_growing":    []any{"d_alloc+0x1e (dentry) +36.0/min: reclaimable cache, no reclaim seen"},
		"largest_long_lived": []any{"seq_buf_alloc+0x22 (kmalloc-512) 30 objects, 15.0 KiB", "d_alloc+0x1e (dentry) 20 objects, 3.8 KiB"},
	}, summary.ContextMap())
}

// A leak without attribution or a stack has neither field.
func TestWarnLeakWithoutOwnerOrStack(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	res := scanned(time.Time{})
	leak := res.Sites[1]
	leak.Owner, leak.Frames = owner.Owner{}, nil
	warnLeak(zap.New(core), leak)

	require.Equal(t, 1, logs.Len())
	fields := logs.All()[0].ContextMap()
	assert.NotContains(t, fields, "largest_owner")
	assert.NotContains(t, fields, "stack")
}

// The summary names at most summaryGroups growing and long-lived sites,
// the largest first, and every leak.
func TestSummarizeNamesTheLargestSites(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	var sites []report.Group
	for i := range 5 {
		sites = append(sites,
			report.Group{CallSiteSym: "leak", Verdict: verdict.Verdict{State: verdict.Leaking}},
			report.Group{CallSiteSym: "growing", Verdict: verdict.Verdict{State: verdict.Growing}},
			report.Group{CallSiteSym: "steady", Objects: int64(5 - i), Verdict: verdict.Verdict{State: verdict.Steady}})
	}
	summarize(zap.New(core), report.Report{}, sites)

	fields := logs.All()[0].ContextMap()
	assert.Len(t, fields["leaks"], 5)
	assert.Len(t, fields["largest_growing"], summaryGroups)
	assert.Equal(t, []any{"steady () 5 objects, 0 B", "steady () 4 objects, 0 B", "steady () 3 objects, 0 B"}, fields["largest_long_lived"])
}

func TestByteSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 12_600: "12.3 KiB", 5 << 20: "5.0 MiB", 3 << 40: "3.0 TiB"} {
		assert.Equal(t, want, byteSize(n), "%d", n)
	}
}
