package staleness

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// series is one point of a test batch.
type series struct {
	owner   string // process.pid of the resource; "" for the host's
	metric  string
	verdict string // kmem.verdict; "" for none
	value   int64
}

const scope = "github.com/kmemleak/kmemleakreceiver"

// scanOf builds a scan's metrics the way the emitter lays them out: one
// resource per owner, kmem.groups a sum, everything else a gauge.
func scanOf(ts pcommon.Timestamp, ss ...series) pmetric.Metrics {
	md := pmetric.NewMetrics()
	resources := map[string]pmetric.ScopeMetrics{}
	for _, p := range ss {
		sm, ok := resources[p.owner]
		if !ok {
			rm := md.ResourceMetrics().AppendEmpty()
			rm.Resource().Attributes().PutStr("host.name", "node-1")
			if p.owner != "" {
				rm.Resource().Attributes().PutStr("process.pid", p.owner)
			}
			sm = rm.ScopeMetrics().AppendEmpty()
			sm.Scope().SetName(scope)
			sm.Scope().SetVersion("0.1.0")
			resources[p.owner] = sm
		}
		var m pmetric.Metric
		for _, existing := range sm.Metrics().All() {
			if existing.Name() == p.metric {
				m = existing
			}
		}
		if m == (pmetric.Metric{}) {
			m = sm.Metrics().AppendEmpty()
			m.SetName(p.metric)
			m.SetUnit("{object}")
			m.SetDescription("the " + p.metric)
			if p.metric == "kmem.allocations" {
				sum := m.SetEmptySum()
				sum.SetIsMonotonic(true)
				sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
			} else {
				m.SetEmptyGauge()
			}
		}
		dp := points(m).AppendEmpty()
		dp.SetStartTimestamp(1)
		dp.SetTimestamp(ts)
		dp.SetIntValue(p.value)
		// Attributes in an order that differs between batches must not matter.
		if ts%2 == 0 {
			dp.Attributes().PutStr("kmem.call_site", "alloc_pipe_info+0x4a")
		}
		if p.verdict != "" {
			dp.Attributes().PutStr("kmem.verdict", p.verdict)
		}
		if ts%2 == 1 {
			dp.Attributes().PutStr("kmem.call_site", "alloc_pipe_info+0x4a")
		}
	}
	return md
}

// stalePoint is a no-recorded-value point found in a batch.
type stalePoint struct {
	resource map[string]any
	scope    string
	metric   pmetric.Metric
	point    pmetric.NumberDataPoint
}

func stalePoints(md pmetric.Metrics) []stalePoint {
	var found []stalePoint
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				for _, dp := range points(m).All() {
					if dp.Flags().NoRecordedValue() {
						found = append(found, stalePoint{rm.Resource().Attributes().AsRaw(), sm.Scope().Name() + "@" + sm.Scope().Version(), m, dp})
					}
				}
			}
		}
	}
	return found
}

func TestFirstBatchIsLeftAlone(t *testing.T) {
	var m Marker
	md := scanOf(1, series{metric: "kmem.outstanding.objects", verdict: "leaking", value: 5})
	want := pmetric.NewMetrics()
	md.CopyTo(want)
	m.Mark(md, 2)
	assert.Equal(t, want, md)
}

func TestAVerdictChangeEndsTheOldSeries(t *testing.T) {
	var m Marker
	m.Mark(scanOf(1, series{owner: "42", metric: "kmem.outstanding.objects", verdict: "growing", value: 5}), 1)
	md := scanOf(2, series{owner: "42", metric: "kmem.outstanding.objects", verdict: "leaking", value: 9})
	m.Mark(md, 2)

	stale := stalePoints(md)
	require.Len(t, stale, 1)
	assert.Equal(t, map[string]any{"host.name": "node-1", "process.pid": "42"}, stale[0].resource)
	assert.Equal(t, map[string]any{"kmem.verdict": "growing", "kmem.call_site": "alloc_pipe_info+0x4a"}, stale[0].point.Attributes().AsRaw())
	assert.Equal(t, pcommon.Timestamp(2), stale[0].point.Timestamp())
	assert.Equal(t, 1, md.ResourceMetrics().Len(), "the stale point joins the owner's resource")
	assert.Equal(t, 2, md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Gauge().DataPoints().Len(),
		"and its metric: one live point, one stale")
}

func TestAnOwnerThatLeftGetsItsResourceBack(t *testing.T) {
	var m Marker
	m.Mark(scanOf(1,
		series{metric: "kmem.allocations", value: 100},
		series{owner: "42", metric: "kmem.outstanding.objects", verdict: "leaking", value: 5},
	), 1)
	md := scanOf(3, series{metric: "kmem.allocations", value: 120})
	m.Mark(md, 3)

	stale := stalePoints(md)
	require.Len(t, stale, 1)
	assert.Equal(t, map[string]any{"host.name": "node-1", "process.pid": "42"}, stale[0].resource)
	assert.Equal(t, scope+"@0.1.0", stale[0].scope)
	assert.Equal(t, "kmem.outstanding.objects", stale[0].metric.Name())
	assert.Equal(t, "{object}", stale[0].metric.Unit())
	assert.Equal(t, "the kmem.outstanding.objects", stale[0].metric.Description())
	assert.Equal(t, pmetric.MetricTypeGauge, stale[0].metric.Type())
	assert.Equal(t, 2, md.ResourceMetrics().Len())
}

func TestAnEndedSumKeepsItsTemporalityAndStart(t *testing.T) {
	var m Marker
	m.Mark(scanOf(1,
		series{metric: "kmem.allocations", verdict: "slab", value: 100},
		series{metric: "kmem.outstanding.objects", verdict: "leaking", value: 5},
	), 1)
	md := scanOf(3, series{metric: "kmem.outstanding.objects", verdict: "leaking", value: 6})
	m.Mark(md, 3)

	stale := stalePoints(md)
	require.Len(t, stale, 1)
	sum := stale[0].metric
	require.Equal(t, pmetric.MetricTypeSum, sum.Type())
	assert.True(t, sum.Sum().IsMonotonic())
	assert.Equal(t, pmetric.AggregationTemporalityCumulative, sum.Sum().AggregationTemporality())
	assert.Equal(t, pcommon.Timestamp(1), stale[0].point.StartTimestamp())
	assert.Equal(t, pcommon.Timestamp(3), stale[0].point.Timestamp())
}

func TestASeriesIsEndedOnce(t *testing.T) {
	var m Marker
	growing := series{metric: "kmem.outstanding.objects", verdict: "growing", value: 5}
	other := series{metric: "kmem.outstanding.objects", verdict: "steady", value: 7}
	m.Mark(scanOf(1, growing, other), 1)
	md := scanOf(2, other)
	m.Mark(md, 2)
	require.Len(t, stalePoints(md), 1)

	md = scanOf(3, other)
	m.Mark(md, 3)
	assert.Empty(t, stalePoints(md), "ended in the batch before")

	md = scanOf(4, growing, other)
	m.Mark(md, 4)
	assert.Empty(t, stalePoints(md), "back: nothing to end")
	md = scanOf(5, other)
	m.Mark(md, 5)
	assert.Len(t, stalePoints(md), 1, "gone again")
}

func TestUnchangedSeriesAreNotEnded(t *testing.T) {
	var m Marker
	s := []series{
		{metric: "kmem.allocations", value: 100},
		{owner: "42", metric: "kmem.outstanding.objects", verdict: "leaking", value: 5},
		{owner: "43", metric: "kmem.outstanding.objects", verdict: "leaking", value: 5},
	}
	for ts := pcommon.Timestamp(1); ts < 5; ts++ {
		md := scanOf(ts, s...)
		m.Mark(md, ts)
		assert.Empty(t, stalePoints(md))
	}
}

// A scan at the most series the report makes with top_n 500 (8 x top_n
// groups per outstanding metric, four of them, 16000 points), a tenth of
// them replaced from one scan to the next.
// A receiver that stops ends every series of its last scan, and nothing
// else.
func TestEndEndsEverySeries(t *testing.T) {
	var m Marker
	assert.Zero(t, m.End(1).DataPointCount(), "nothing was reported: nothing to end")
	m.Mark(scanOf(1,
		series{owner: "42", metric: "kmem.outstanding.objects", verdict: "leaking", value: 5},
		series{metric: "kmem.allocations", value: 100}), 1)
	md := m.End(2)
	assert.Equal(t, 2, md.DataPointCount())
	assert.Len(t, stalePoints(md), 2)
}

func BenchmarkMark(b *testing.B) {
	scans := make([][]series, 2)
	for i := range 4000 {
		for _, metric := range []string{"kmem.outstanding.objects", "kmem.outstanding.bytes", "kmem.outstanding.oldest_age", "kmem.outstanding.growth"} {
			for scan := range scans {
				verdict := "steady"
				if i%10 == 0 && scan == 1 {
					verdict = "leaking"
				}
				scans[scan] = append(scans[scan], series{owner: strconv.Itoa(i % 300), metric: metric, verdict: verdict + strconv.Itoa(i), value: int64(i)})
			}
		}
	}
	batches := []pmetric.Metrics{scanOf(2, scans[0]...), scanOf(4, scans[1]...)}
	var m Marker
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		md := pmetric.NewMetrics()
		batches[i%2].CopyTo(md)
		b.StartTimer()
		m.Mark(md, pcommon.Timestamp(i))
	}
}
