//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
	"github.com/kmemleak/kmemleakreceiver/internal/metadatatest"
)

func settingsWithLogs(id component.ID) (receiver.Settings, *observer.ObservedLogs) {
	core, logs := observer.New(zap.InfoLevel)
	set := receivertest.NewNopSettings(metadata.Type)
	set.ID = id
	set.Logger = zap.New(core)
	return set, logs
}

func TestIntegrationSecondReceiverIsRefused(t *testing.T) {
	kerneltest.RequireBPF(t)
	f := NewFactory()
	firstSet := receivertest.NewNopSettings(metadata.Type)
	firstSet.ID = component.NewID(metadata.Type)
	first, err := f.CreateMetrics(context.Background(), firstSet, testConfig(), consumertest.NewNop())
	require.NoError(t, err)
	set := receivertest.NewNopSettings(metadata.Type)
	set.ID = component.MustNewIDWithName("kmemleak", "second")
	second, err := f.CreateMetrics(context.Background(), set, testConfig(), consumertest.NewNop())
	require.NoError(t, err)

	require.NoError(t, first.Start(context.Background(), componenttest.NewNopHost()))
	err = second.Start(context.Background(), componenttest.NewNopHost())
	require.Error(t, err)
	assert.Contains(t, err.Error(), `receiver "kmemleak" already tracks the kernel allocators in this collector`)
	assert.Contains(t, err.Error(), `"kmemleak/second"`)
	require.NoError(t, second.Shutdown(context.Background()))
	require.NoError(t, first.Shutdown(context.Background()))

	// Once the first is gone, a new receiver may take over.
	third, err := f.CreateMetrics(context.Background(), set, testConfig(), consumertest.NewNop())
	require.NoError(t, err)
	require.NoError(t, third.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, third.Shutdown(context.Background()))
}

func TestIntegrationStartShutdownCyclesLeaveNothingBehind(t *testing.T) {
	kerneltest.RequireBPF(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	progsBefore, mapsBefore, fdsBefore := bpfProgramIDs(t), bpfMapIDs(t), openFDs(t)

	f := NewFactory()
	for i := range 50 {
		cfg := testConfig()
		cfg.InitialDelay = time.Duration(i%5) * 20 * time.Millisecond // some cycles stop mid-scan or before the first
		m, err := f.CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, consumertest.NewNop())
		require.NoError(t, err)
		require.NoError(t, m.Start(context.Background(), componenttest.NewNopHost()))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		require.NoError(t, m.Shutdown(ctx), "cycle %d", i)
		cancel()
		require.Less(t, time.Since(start), 2*time.Second, "cycle %d: Shutdown took too long", i)
	}

	assert.Equal(t, fdsBefore, openFDs(t), "file descriptors left open")
	assert.Eventually(t, func() bool {
		return len(added(progsBefore, bpfProgramIDs(t))) == 0 && len(added(mapsBefore, bpfMapIDs(t))) == 0
	}, 10*time.Second, 50*time.Millisecond, "BPF programs or maps left behind")
}

// added lists the IDs in after that were not in before. (IDs in before may
// be gone: the kernel frees programs of earlier tests after an RCU grace
// period.)
func added[T comparable](before, after []T) []T {
	var out []T
	for _, id := range after {
		if !slices.Contains(before, id) {
			out = append(out, id)
		}
	}
	return out
}

// A map too small for the machine: the kernel goes on, drops are counted,
// the log warns at most once a scan, and every event says it is incomplete.
func TestIntegrationFullMapIsReportedNotHidden(t *testing.T) {
	kerneltest.RequireBPF(t)
	cfg := testConfig()
	cfg.MaxTrackedObjects = minTrackedObjects
	set, logs := settingsWithLogs(component.NewID(metadata.Type))
	p := startReceiverWith(t, set, cfg)
	sinkM, sinkL := p.metrics, p.logs

	kerneltest.OpenPipes(t, heldPipes) // 8,000 objects or more for a map of 1,024
	require.Eventually(t, func() bool { return sinkL.LogRecordCount() > 0 }, 15*time.Second, 100*time.Millisecond)

	var dropped int64
	for _, rm := range lastMetrics(t, sinkM).ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, metric := range sm.Metrics().All() {
				if metric.Name() == "kmem.tracker.dropped" {
					for _, dp := range metric.Sum().DataPoints().All() {
						dropped += dp.IntValue()
					}
				}
			}
		}
	}
	assert.Positive(t, dropped, "kmem.tracker.dropped")
	scans := len(sinkM.AllMetrics())
	warnings := logs.FilterMessageSnippet("live table is full").Len()
	assert.Positive(t, warnings)
	assert.LessOrEqual(t, warnings, scans, "more than one full-map warning a scan")
	for lr := range logRecords(sinkL.AllLogs()) {
		incomplete, ok := lr.Attributes().Get("kmem.incomplete")
		assert.True(t, ok && incomplete.Bool(), "an event of a full tracker does not say it is incomplete")
	}
}

// failingMetrics fails its first failures pushes, then keeps what it gets.
type failingMetrics struct {
	failures atomic.Int64
	calls    atomic.Int64
	sink     consumertest.MetricsSink
}

func (f *failingMetrics) consume(ctx context.Context, md pmetric.Metrics) error {
	if f.calls.Add(1) <= f.failures.Load() {
		return errors.New("exporter down")
	}
	return f.sink.ConsumeMetrics(ctx, md)
}

func TestIntegrationConsumerErrorsDoNotStopScansOrFloodTheLog(t *testing.T) {
	kerneltest.RequireBPF(t)
	cfg := testConfig()
	set, logs := settingsWithLogs(component.NewID(metadata.Type))
	fm := &failingMetrics{}
	fm.failures.Store(8)
	next, err := consumer.NewMetrics(fm.consume)
	require.NoError(t, err)
	m, err := NewFactory().CreateMetrics(context.Background(), set, cfg, next)
	require.NoError(t, err)
	require.NoError(t, m.Start(context.Background(), componenttest.NewNopHost()))
	t.Cleanup(func() { require.NoError(t, m.Shutdown(context.Background())) })

	require.Eventually(t, func() bool { return fm.sink.DataPointCount() > 0 }, 15*time.Second, 50*time.Millisecond,
		"no push got through after the exporter came back")
	assert.Equal(t, 1, logs.FilterMessageSnippet("Passing metrics to the next consumer failed").Len(),
		"8 failed pushes in a few seconds: one log line")
	// The first push that got through carries the scan it was made for.
	first := fm.sink.AllMetrics()[0]
	ts := first.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0)
	var at time.Time
	switch ts.Type() {
	case pmetric.MetricTypeGauge:
		at = ts.Gauge().DataPoints().At(0).Timestamp().AsTime()
	case pmetric.MetricTypeSum:
		at = ts.Sum().DataPoints().At(0).Timestamp().AsTime()
	}
	assert.WithinDuration(t, time.Now(), at, 5*time.Second, "the first successful push carries old data")
}

// blockingMetrics blocks every push until released, ignoring cancellation
// if told to.
type blockingMetrics struct {
	ignoreCancel bool
	release      chan struct{}
	entered      sync.Once
	inside       chan struct{}
}

func (b *blockingMetrics) consume(ctx context.Context, _ pmetric.Metrics) error {
	b.entered.Do(func() { close(b.inside) })
	if b.ignoreCancel {
		<-b.release
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-b.release:
		return nil
	}
}

func TestIntegrationShutdownWhileAConsumerBlocks(t *testing.T) {
	kerneltest.RequireBPF(t)
	for _, ignoreCancel := range []bool{false, true} {
		name := "consumer honours cancellation"
		if ignoreCancel {
			name = "consumer ignores cancellation"
		}
		t.Run(name, func(t *testing.T) {
			progsBefore := bpfProgramIDs(t)
			b := &blockingMetrics{ignoreCancel: ignoreCancel, release: make(chan struct{}), inside: make(chan struct{})}
			next, err := consumer.NewMetrics(b.consume)
			require.NoError(t, err)
			m, err := NewFactory().CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), testConfig(), next)
			require.NoError(t, err)
			require.NoError(t, m.Start(context.Background(), componenttest.NewNopHost()))
			<-b.inside

			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			start := time.Now()
			err = m.Shutdown(ctx)
			took := time.Since(start)
			assert.Less(t, took, 2500*time.Millisecond, "Shutdown hung")
			if ignoreCancel {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "did not stop in time")
			} else {
				require.NoError(t, err)
			}
			close(b.release) // the stuck consumer returns; the probes must go then
			assert.Eventually(t, func() bool { return len(added(progsBefore, bpfProgramIDs(t))) == 0 }, 10*time.Second, 50*time.Millisecond,
				"probes left loaded after a blocked Shutdown")
		})
	}
}

// Objects allocated before the probes attached are never suspects: the
// tracker never saw them; their frees count as untracked frees.
func TestIntegrationObjectsFromBeforeStartAreNotReported(t *testing.T) {
	kerneltest.RequireBPF(t)
	pipes := kerneltest.OpenPipes(t, heldPipes)
	p := startReceiver(t, testConfig())
	time.Sleep(testConfig().MinAge + 2*testConfig().CollectionInterval)
	got := suspectsByFunction(lastMetrics(t, p.metrics))
	assert.Less(t, got["alloc_pipe_info"], int64(heldPipes/20), "pipes opened before Start reported as suspects")

	before := untrackedFrees(lastMetrics(t, p.metrics))
	kerneltest.ClosePipes(pipes)
	time.Sleep(2 * testConfig().CollectionInterval)
	assert.GreaterOrEqual(t, untrackedFrees(lastMetrics(t, p.metrics))-before, int64(2*heldPipes),
		"frees of objects from before Start not counted as untracked")
}

func untrackedFrees(md pmetric.Metrics) (n int64) {
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				if m.Name() == "kmem.tracker.untracked_frees" {
					for _, dp := range m.Sum().DataPoints().All() {
						n += dp.IntValue()
					}
				}
			}
		}
	}
	return n
}

// Without usable kernel symbols the receiver goes on: one warning, call
// sites named "unknown", and raw addresses only when the user asked.
func TestIntegrationUnusableKallsymsDegrades(t *testing.T) {
	kerneltest.RequireBPF(t)
	for name, content := range map[string]string{
		"kptr_restrict zeros": "0000000000000000 T _stext\n0000000000000000 t alloc_pipe_info\n",
		"truncated":           "ffffffff8100",
		"corrupt":             "\x00\x01garbage\nnot kallsyms at all\n",
	} {
		for _, includeAddresses := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, include_addresses %t", name, includeAddresses), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "kallsyms")
				require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
				saved := kallsymsPath
				kallsymsPath = path
				t.Cleanup(func() { kallsymsPath = saved })

				cfg := testConfig()
				cfg.IncludeAddresses = includeAddresses
				set, logs := settingsWithLogs(component.NewID(metadata.Type))
				sink := new(consumertest.MetricsSink)
				m, err := NewFactory().CreateMetrics(context.Background(), set, cfg, sink)
				require.NoError(t, err)
				require.NoError(t, m.Start(context.Background(), componenttest.NewNopHost()))
				t.Cleanup(func() { require.NoError(t, m.Shutdown(context.Background())) })
				kerneltest.OpenPipes(t, 100)
				require.Eventually(t, func() bool { return len(suspectsByFunction(lastMetrics(t, sink))) > 0 }, 10*time.Second, 50*time.Millisecond)
				time.Sleep(2 * cfg.CollectionInterval)

				assert.Equal(t, 1, logs.FilterMessageSnippet("Kernel symbols are unavailable").Len(), "one warning")
				for site := range suspectsByFunction(lastMetrics(t, sink)) {
					if includeAddresses {
						assert.True(t, strings.HasPrefix(site, "0x"), "call site %q is not a raw address", site)
					} else {
						assert.Equal(t, "unknown", site, "a raw address left the receiver without include_addresses")
					}
				}
			})
		}
	}
}

// The receiver's own metrics reach the collector's telemetry: scans, their
// duration, events and drops.
func TestIntegrationSelfTelemetry(t *testing.T) {
	kerneltest.RequireBPF(t)
	tt := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tt.Shutdown(context.Background())) })
	cfg := testConfig()
	cfg.MaxTrackedObjects = minTrackedObjects // so that drops happen
	sinkL := startReceiverWith(t, metadatatest.NewSettings(tt), cfg).logs
	kerneltest.OpenPipes(t, heldPipes)
	require.Eventually(t, func() bool { return sinkL.LogRecordCount() > 0 }, 15*time.Second, 100*time.Millisecond)
	time.Sleep(cfg.CollectionInterval)

	sum := func(name string) int64 {
		got, err := tt.GetMetric(name)
		require.NoError(t, err, name)
		var n int64
		for _, dp := range got.Data.(metricdata.Sum[int64]).DataPoints {
			n += dp.Value
		}
		return n
	}
	assert.Positive(t, sum("otelcol_kmemleak_objects_scanned"))
	assert.Positive(t, sum("otelcol_kmemleak_objects_dropped"))
	assert.GreaterOrEqual(t, sum("otelcol_kmemleak_events_emitted"), int64(sinkL.LogRecordCount()))
	duration, err := tt.GetMetric("otelcol_kmemleak_scan_duration")
	require.NoError(t, err)
	assert.Positive(t, duration.Data.(metricdata.Histogram[float64]).DataPoints[0].Count)
}
