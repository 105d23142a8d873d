//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
)

// Shutdown's last batch ends every series of the last scan.
func TestEndSeriesEndsTheLastScansSeries(t *testing.T) {
	sink := new(consumertest.MetricsSink)
	r, _ := receiverAfterAScan(t, sink)
	r.endSeries(context.Background())
	require.Len(t, sink.AllMetrics(), 1)
	md := sink.AllMetrics()[0]
	assert.Equal(t, 1, md.DataPointCount())
	dp := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Gauge().DataPoints().At(0)
	assert.True(t, dp.Flags().NoRecordedValue())
}

// A consumer that blocks does not hold Shutdown past its deadline.
func TestEndSeriesDoesNotWaitForABlockedConsumer(t *testing.T) {
	unblock := make(chan struct{})
	defer close(unblock)
	blocked, err := consumer.NewMetrics(func(context.Context, pmetric.Metrics) error {
		<-unblock // ignores its context, as the worst consumer does
		return nil
	})
	require.NoError(t, err)
	r, logs := receiverAfterAScan(t, blocked)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	r.endSeries(ctx)
	assert.Less(t, time.Since(start), time.Second)
	assert.Equal(t, 1, logs.FilterMessageSnippet("Ending the series at shutdown took too long").Len(), "%v", logs.All())
}

// receiverAfterAScan is a receiver whose scan loop reported one series.
func receiverAfterAScan(t *testing.T, next consumer.Metrics) (*kmemleakReceiver, *observer.ObservedLogs) {
	t.Helper()
	set, logs := settingsWithLogs(component.NewID(metadata.Type))
	r, err := newReceiver(createDefaultConfig(), set, func() {})
	require.NoError(t, err)
	r.metrics = next
	md := pmetric.NewMetrics()
	dp := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty().SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetIntValue(1)
	r.stale.Mark(md, 1)
	return r, logs
}
