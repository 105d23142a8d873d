// Package staleness ends the metric series a scan stops reporting.
//
// A group of objects leaves the report when its objects are freed, when
// its verdict changes (kmem.verdict is one of its attributes) or when it
// falls out of top_n. Without a word on it, a backend such as Prometheus
// keeps answering with the group's last value for its lookback (5 minutes):
// a freed leak still alerts, and a group that moved from growing to
// leaking counts twice in every sum. The OTLP data model's answer is a
// point flagged "no recorded value", which the Prometheus exporters turn
// into a staleness marker.
package staleness

import (
	"hash/maphash"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// Marker remembers the series of the last batch it saw.
type Marker struct {
	last *pmetric.Metrics // nil until the first Mark
}

// Mark adds to md, at time now, a no-recorded-value point for every gauge
// or sum series of the previous batch that md lacks, under that series'
// resource, scope and metric. Series are told apart by resource, scope,
// metric name and point attributes.
func (m *Marker) Mark(md pmetric.Metrics, now pcommon.Timestamp) {
	current := index(md)
	last := m.last
	m.last = new(pmetric.NewMetrics())
	md.CopyTo(*m.last)
	if last == nil {
		return
	}
	for _, rm := range last.ResourceMetrics().All() {
		rk := attributesHash(rm.Resource().Attributes())
		for _, sm := range rm.ScopeMetrics().All() {
			sk := scopeOf(rk, sm.Scope())
			for _, metric := range sm.Metrics().All() {
				mk := metricID{sk, metric.Name()}
				for _, dp := range points(metric).All() {
					if _, ok := current.points[seriesID{mk, attributesHash(dp.Attributes())}]; ok {
						continue
					}
					stale := current.metric(md, rm, sm, metric).AppendEmpty()
					dp.Attributes().CopyTo(stale.Attributes())
					stale.SetStartTimestamp(dp.StartTimestamp())
					stale.SetTimestamp(now)
					stale.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))
				}
			}
		}
	}
}

// End returns a batch that ends, at time now, every gauge or sum series of
// the previous batch: the last word of a receiver that stops.
func (m *Marker) End(now pcommon.Timestamp) pmetric.Metrics {
	md := pmetric.NewMetrics()
	m.Mark(md, now)
	return md
}

// Series are told apart by hashes of their attribute sets: a collision
// (one in 2^64) costs a staleness marker.
type (
	scopeID struct {
		resource      uint64
		name, version string
		attributes    uint64
	}
	metricID struct {
		scope scopeID
		name  string
	}
	seriesID struct {
		metric     metricID
		attributes uint64
	}
)

func scopeOf(resource uint64, s pcommon.InstrumentationScope) scopeID {
	return scopeID{resource, s.Name(), s.Version(), attributesHash(s.Attributes())}
}

// batch indexes a batch's resources, scopes, metrics and series.
type batch struct {
	resources map[uint64]pmetric.ResourceMetrics
	scopes    map[scopeID]pmetric.ScopeMetrics
	metrics   map[metricID]pmetric.Metric
	points    map[seriesID]struct{}
}

func index(md pmetric.Metrics) *batch {
	b := &batch{
		resources: map[uint64]pmetric.ResourceMetrics{},
		scopes:    map[scopeID]pmetric.ScopeMetrics{},
		metrics:   map[metricID]pmetric.Metric{},
		points:    map[seriesID]struct{}{},
	}
	for _, rm := range md.ResourceMetrics().All() {
		rk := attributesHash(rm.Resource().Attributes())
		b.resources[rk] = rm
		for _, sm := range rm.ScopeMetrics().All() {
			sk := scopeOf(rk, sm.Scope())
			b.scopes[sk] = sm
			for _, metric := range sm.Metrics().All() {
				mk := metricID{sk, metric.Name()}
				b.metrics[mk] = metric
				for _, dp := range points(metric).All() {
					b.points[seriesID{mk, attributesHash(dp.Attributes())}] = struct{}{}
				}
			}
		}
	}
	return b
}

// metric returns the data points of md's metric like the given one, in a
// resource and scope like the given ones, creating what md lacks.
func (b *batch) metric(md pmetric.Metrics, rm pmetric.ResourceMetrics, sm pmetric.ScopeMetrics, like pmetric.Metric) pmetric.NumberDataPointSlice {
	rk := attributesHash(rm.Resource().Attributes())
	r, ok := b.resources[rk]
	if !ok {
		r = md.ResourceMetrics().AppendEmpty()
		rm.Resource().CopyTo(r.Resource())
		r.SetSchemaUrl(rm.SchemaUrl())
		b.resources[rk] = r
	}
	sk := scopeOf(rk, sm.Scope())
	s, ok := b.scopes[sk]
	if !ok {
		s = r.ScopeMetrics().AppendEmpty()
		sm.Scope().CopyTo(s.Scope())
		s.SetSchemaUrl(sm.SchemaUrl())
		b.scopes[sk] = s
	}
	mk := metricID{sk, like.Name()}
	metric, ok := b.metrics[mk]
	if !ok {
		metric = s.Metrics().AppendEmpty()
		metric.SetName(like.Name())
		metric.SetDescription(like.Description())
		metric.SetUnit(like.Unit())
		switch like.Type() {
		case pmetric.MetricTypeGauge:
			metric.SetEmptyGauge()
		case pmetric.MetricTypeSum:
			sum := metric.SetEmptySum()
			sum.SetAggregationTemporality(like.Sum().AggregationTemporality())
			sum.SetIsMonotonic(like.Sum().IsMonotonic())
		}
		b.metrics[mk] = metric
	}
	return points(metric)
}

// points are a gauge's or a sum's data points; the receiver makes no other
// kind of metric, and other kinds get an empty slice (never marked).
func points(m pmetric.Metric) pmetric.NumberDataPointSlice {
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		return m.Gauge().DataPoints()
	case pmetric.MetricTypeSum:
		return m.Sum().DataPoints()
	}
	return pmetric.NewNumberDataPointSlice()
}

var seed = maphash.MakeSeed()

// attributesHash is the same for equal attribute sets in any order: the
// sum of their pairs' hashes.
func attributesHash(attrs pcommon.Map) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	var sum uint64
	for k, v := range attrs.All() {
		h.Reset()
		h.WriteString(k)
		h.WriteByte(0)
		h.WriteString(v.AsString())
		sum += h.Sum64()
	}
	return sum
}
