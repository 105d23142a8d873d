//go:build linux && (amd64 || arm64)

package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
