//go:build linux && (amd64 || arm64)

package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// scan is one scan's metrics: the call sites given leaking, the rest
// steady.
func scan(leaking []string, steady ...string) pmetric.Metrics {
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("kmem.outstanding.objects")
	points := m.SetEmptyGauge().DataPoints()
	add := func(site, verdict string) {
		dp := points.AppendEmpty()
		dp.Attributes().PutStr("kmem.call_site", site)
		dp.Attributes().PutStr("kmem.cache", "kmalloc-64")
		dp.Attributes().PutStr("kmem.verdict", verdict)
	}
	for _, s := range leaking {
		add(s, "leaking")
	}
	for _, s := range steady {
		add(s, "steady")
	}
	return md
}

// A run of 4 minutes judges the 20/min leak only: found in time (2
// minutes in) and nothing else leaking passes; a call site that is no
// planted leak fails it, and so does the leak not found.
func TestJudge(t *testing.T) {
	start := time.Now().Add(-2 * time.Minute) // the scans below come 2 minutes in
	pass := newRecorder()
	require.NoError(t, pass.consumeMetrics(context.Background(), scan([]string{"newque+0x2f"}, "d_alloc+0x1e")))
	assert.NoError(t, pass.judge(start, 4*time.Minute))

	fp := newRecorder()
	require.NoError(t, fp.consumeMetrics(context.Background(), scan([]string{"newque+0x2f", "copy_process+0x1a0"})))
	assert.ErrorContains(t, fp.judge(start, 4*time.Minute), "1 false positives")

	missed := newRecorder()
	require.NoError(t, missed.consumeMetrics(context.Background(), scan(nil, "newque+0x2f")))
	assert.ErrorContains(t, missed.judge(start, 4*time.Minute), "0 of 1 leaks found")
}

// leakEvent is one leak event at callSite, its stack the frames given.
func leakEvent(callSite string, frames ...string) plog.Logs {
	ld := plog.NewLogs()
	lr := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords().AppendEmpty()
	lr.Attributes().PutStr("kmem.call_site", callSite)
	lr.Attributes().PutStr("kmem.cache", "kmalloc-64")
	lr.Attributes().PutStr("kmem.verdict.reason", "still rising")
	lr.Attributes().PutStr("code.stacktrace", strings.Join(frames, "\n"))
	return ld
}

// A call site shared by every open file, called leaking because the
// eventfd leak's files accumulate there, is that leak (its stack passes
// through do_eventfd); the same site with a stack of its own is not.
func TestJudgeFollowsTheLeaksStack(t *testing.T) {
	start := time.Now().Add(-2 * time.Minute) // the scans below come 2 minutes in
	leaking := []string{"newque+0x2f", "newary+0x4b", "key_alloc+0x1", "do_eventfd+0x40", "alloc_empty_file+0x3c"}
	through := newRecorder()
	require.NoError(t, through.consumeMetrics(context.Background(), scan(leaking)))
	require.NoError(t, through.consumeLogs(context.Background(), leakEvent("alloc_empty_file+0x3c",
		"alloc_empty_file+0x3c", "alloc_file_pseudo+0xa4", "do_eventfd+0xb7", "__x64_sys_eventfd2+0x10")))
	assert.NoError(t, through.judge(start, 6*time.Minute))

	own := newRecorder()
	require.NoError(t, own.consumeMetrics(context.Background(), scan(leaking)))
	require.NoError(t, own.consumeLogs(context.Background(), leakEvent("alloc_empty_file+0x3c",
		"alloc_empty_file+0x3c", "path_openat+0x4d", "do_sys_openat2+0x8b")))
	assert.ErrorContains(t, own.judge(start, 6*time.Minute), "1 false positives")
}
