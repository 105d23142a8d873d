// Package otlp turns a scan's report into pdata through mdatagen's
// generated builders: the metrics, the leak-suspect events, and a
// resource per owner.
package otlp

import (
	"cmp"
	"context"
	"iter"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
	"github.com/kmemleak/kmemleakreceiver/internal/report"
	"github.com/kmemleak/kmemleakreceiver/internal/verdict"
)

// Emitter turns reports into pdata through the generated builders, which
// apply the user's metrics:, events: and resource_attributes: settings.
type Emitter struct {
	Metrics          *metadata.MetricsBuilder
	Logs             *metadata.LogsBuilder
	Resource         pcommon.Resource
	IncludeAddresses bool
	StacksOn         bool // report the stack map's fill
	// OwnerResource is the resource of an owner's groups: Resource and the
	// owner's process, cgroup and container. Groups without an owner are
	// Resource's.
	OwnerResource func(owner.Owner) pcommon.Resource
}

// EmitMetrics records one scan: the reported groups, the probes' counters
// and the tracker's health.
func (e *Emitter) EmitMetrics(rep report.Report, scanDuration time.Duration, now pcommon.Timestamp) pmetric.Metrics {
	mb := e.Metrics
	for o, groups := range byOwner(byCallSite(rep.Groups)) {
		for _, g := range groups {
			alloc, state, by := allocatorAttribute(g.Allocator), verdictAttribute(g.Verdict.State), explainedByAttribute(g.Verdict.ExplainedBy)
			mb.RecordKmemOutstandingObjectsDataPoint(now, g.Objects, alloc, g.Cache, g.CallSiteSym, g.StackHash, state, by)
			mb.RecordKmemOutstandingBytesDataPoint(now, g.Bytes, alloc, g.Cache, g.CallSiteSym, g.StackHash, state, by)
			mb.RecordKmemOutstandingOldestAgeDataPoint(now, g.OldestAge.Seconds(), alloc, g.Cache, g.CallSiteSym, g.StackHash, state, by)
			mb.RecordKmemOutstandingGrowthDataPoint(now, g.Verdict.PerMinute, alloc, g.Cache, g.CallSiteSym, g.StackHash, state, by)
		}
		if o.Attributed() {
			mb.EmitForResource(metadata.WithResource(e.OwnerResource(o)))
		}
	}
	if rep.States != nil {
		for _, st := range verdict.States {
			mb.RecordKmemGroupsDataPoint(now, int64(rep.States[st]), verdictAttribute(st))
		}
	}
	for _, a := range kmem.Allocators {
		c, ok := rep.Counters[a]
		if !ok {
			continue
		}
		alloc := allocatorAttribute(a)
		mb.RecordKmemAllocationsDataPoint(now, count(c.Allocs), alloc)
		mb.RecordKmemFreesDataPoint(now, count(c.Frees), alloc)
		mb.RecordKmemTrackerDroppedDataPoint(now, count(c.Dropped), alloc)
		mb.RecordKmemTrackerUntrackedFreesDataPoint(now, count(c.UntrackedFrees), alloc)
		mb.RecordKmemTrackerObjectsDataPoint(now, rep.Tracked[a], alloc)
		mb.RecordKmemTrackerRecursionMissesDataPoint(now, count(c.RecursionMisses), alloc)
		mb.RecordKmemTrackerFreeRecursionMissesDataPoint(now, count(c.FreeMisses), alloc)
		mb.RecordKmemTrackerRecoveredFreesDataPoint(now, count(c.RecoveredFrees), alloc)
		mb.RecordKmemTrackerMissedFreesDataPoint(now, count(c.MissedFrees), alloc)
		mb.RecordKmemTrackerStackErrorsDataPoint(now, count(c.StackErrors), alloc)
	}
	if e.StacksOn {
		mb.RecordKmemTrackerStacksDataPoint(now, int64(rep.Stacks))
	}
	for _, id := range slices.SortedFunc(maps.Keys(rep.Untraced), compareCacheIDs) {
		mb.RecordKmemTrackerUntracedCachesDataPoint(now, 1, allocatorAttribute(id.Allocator), rep.Untraced[id])
	}
	mb.RecordKmemTrackerWithheldGroupsDataPoint(now, rep.Withheld)
	mb.RecordKmemTrackerScanDurationDataPoint(now, scanDuration.Seconds())
	return mb.Emit(metadata.WithResource(e.Resource))
}

// EmitLogs records one kmem.leak.suspect event per group given: the
// caller picks which of a report's groups deserve one (their verdicts).
// incomplete marks them all as lower bounds (the tracker dropped objects).
func (e *Emitter) EmitLogs(ctx context.Context, groups []report.Group, incomplete bool, now pcommon.Timestamp) plog.Logs {
	for o, groups := range byOwner(groups) {
		for _, g := range groups {
			e.recordEvent(ctx, g, incomplete, now)
		}
		if o.Attributed() {
			e.Logs.EmitForResource(metadata.WithLogsResource(e.OwnerResource(o)))
		}
	}
	logs := e.Logs.Emit(metadata.WithLogsResource(e.Resource))
	completeRecords(logs, now)
	return logs
}

func (e *Emitter) recordEvent(ctx context.Context, g report.Group, incomplete bool, now pcommon.Timestamp) {
	var opts []metadata.EventAttributeOption
	if stack := g.StackText(); stack != "" {
		opts = append(opts, metadata.WithCodeStacktraceEventAttribute(stack))
	}
	if e.IncludeAddresses {
		opts = append(opts, metadata.WithKmemCallSiteAddressEventAttribute("0x"+strconv.FormatUint(g.CallSite, 16)))
	}
	if len(g.MergedNames) > 0 {
		names := make([]any, len(g.MergedNames))
		for i, n := range g.MergedNames {
			names[i] = n
		}
		opts = append(opts, metadata.WithKmemCacheMergedEventAttribute(names))
	}
	v := g.Verdict
	if v.State == verdict.Leaking {
		opts = append(opts, metadata.WithKmemLeakSinceEventAttribute(v.Since.UTC().Format(time.RFC3339)))
	}
	if v.Reason != "" {
		opts = append(opts, metadata.WithKmemVerdictReasonEventAttribute(v.Reason))
	}
	e.Logs.RecordKmemLeakSuspectEvent(ctx, now, allocatorAttribute(g.Allocator), g.Cache, g.CallSiteSym, g.StackHash,
		verdictAttribute(v.State), g.Objects, g.Bytes, g.OldestAge.Seconds(), v.PerMinute, v.BytesPerMinute,
		explainedByAttribute(v.ExplainedBy), incomplete, opts...)
}

// byOwner splits groups by owner, in the order the owners first come,
// each owner's groups in their order: the groups without one last, for
// they go with the receiver's own resource.
func byOwner(groups []report.Group) iter.Seq2[owner.Owner, []report.Group] {
	return func(yield func(owner.Owner, []report.Group) bool) {
		index := map[owner.Owner]int{}
		var owners []owner.Owner
		var parts [][]report.Group
		for _, g := range groups {
			i, ok := index[g.Owner]
			if !ok {
				i = len(parts)
				index[g.Owner] = i
				owners = append(owners, g.Owner)
				parts = append(parts, nil)
			}
			parts[i] = append(parts[i], g)
		}
		if i, ok := index[owner.Owner{}]; ok {
			unowned := parts[i]
			owners = append(slices.Delete(owners, i, i+1), owner.Owner{})
			parts = append(slices.Delete(parts, i, i+1), unowned)
		}
		for i, o := range owners {
			if !yield(o, parts[i]) {
				return
			}
		}
	}
}

// byCallSite sums the groups of one call site, stack hash and verdict: two
// stacks that differ only in offsets or addresses hash alike, and two
// points with equal attributes would be averaged, not added, by the
// builder.
func byCallSite(groups []report.Group) []report.Group {
	type site struct {
		allocator                  kmem.Allocator
		cache, callSite, stackHash string
		state                      verdict.State
		owner                      owner.Owner
	}
	index := map[site]int{}
	var out []report.Group
	for _, g := range groups {
		k := site{g.Allocator, g.Cache, g.CallSiteSym, g.StackHash, g.Verdict.State, g.Owner}
		i, ok := index[k]
		if !ok {
			index[k] = len(out)
			g.Frames = nil
			out = append(out, g)
			continue
		}
		out[i].Add(g)
		out[i].Verdict.PerMinute += g.Verdict.PerMinute
	}
	return out
}

// completeRecords sets what the generated builder leaves empty: the
// severity, which backends filter on (WARN for a leak, INFO otherwise),
// and the observed time.
func completeRecords(logs plog.Logs, now pcommon.Timestamp) {
	for _, rl := range logs.ResourceLogs().All() {
		for _, sl := range rl.ScopeLogs().All() {
			for _, lr := range sl.LogRecords().All() {
				lr.SetSeverityNumber(plog.SeverityNumberInfo)
				lr.SetSeverityText("INFO")
				if state, ok := lr.Attributes().Get("kmem.verdict"); ok && state.Str() == verdict.Leaking.String() {
					lr.SetSeverityNumber(plog.SeverityNumberWarn)
					lr.SetSeverityText("WARN")
				}
				lr.SetObservedTimestamp(now)
			}
		}
	}
}

func compareCacheIDs(a, b kmem.CacheID) int {
	return cmp.Or(cmp.Compare(a.Allocator, b.Allocator), cmp.Compare(a.Key, b.Key))
}

func allocatorAttribute(a kmem.Allocator) metadata.AttributeKmemAllocator {
	return metadata.MapAttributeKmemAllocator[a.String()]
}

func explainedByAttribute(e verdict.Explanation) metadata.AttributeKmemGrowthExplainedBy {
	return metadata.MapAttributeKmemGrowthExplainedBy[e.String()]
}

func verdictAttribute(s verdict.State) metadata.AttributeKmemVerdict {
	return metadata.MapAttributeKmemVerdict[s.String()]
}

// SetOwner sets an owner's resource attributes (owner.Owner.Attributes):
// what ran the allocations, and for a task or kernel thread its process,
// cgroup, container and pod, as far as they are known. The semantic
// conventions' names, for contrib's k8sattributes processor to find the
// pod by container.id or k8s.pod.uid.
func SetOwner(rb *metadata.ResourceBuilder, o owner.Owner) {
	for _, kv := range o.Attributes() {
		switch kv[0] {
		case "kmem.context":
			rb.SetKmemContext(kv[1])
		case "process.pid":
			rb.SetProcessPid(int64(o.Pid)) // an integer here, not the pair's decimal text
		case "process.executable.name":
			rb.SetProcessExecutableName(kv[1])
		case "process.linux.cgroup":
			rb.SetProcessLinuxCgroup(kv[1])
		case "container.id":
			rb.SetContainerID(kv[1])
		case "k8s.pod.uid":
			rb.SetK8sPodUID(kv[1])
		}
	}
}

// count is a counter the probes keep in 64 bits as the int64 of a metric;
// one would take centuries of allocations to pass 2^63, and then stays
// there rather than turn negative.
func count(n uint64) int64 { return int64(min(n, math.MaxInt64)) }
