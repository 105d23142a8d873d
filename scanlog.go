//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/kmemleak/kmemleakreceiver/internal/report"
	"github.com/kmemleak/kmemleakreceiver/internal/scan"
	"github.com/kmemleak/kmemleakreceiver/internal/verdict"
)

// logScan writes what a scan found to the collector's log: a WARN line per
// call site that turned leaking, then the scan's one INFO line.
func logScan(log *zap.Logger, res scan.Result) {
	for _, s := range res.Sites {
		if s.Verdict.Began {
			warnLeak(log, s)
		}
	}
	summarize(log, res.Report, res.Sites)
}

// warnLeak is the one line in the collector's log for a new leak.
func warnLeak(log *zap.Logger, g report.Group) {
	fields := []zap.Field{
		zap.String("call_site", g.CallSiteSym), zap.Stringer("allocator", g.Allocator), zap.String("cache", g.Cache),
		zap.String("objects_per_min", fmt.Sprintf("%.1f", g.Verdict.PerMinute)),
		zap.String("bytes_per_min", fmt.Sprintf("%.0f", g.Verdict.BytesPerMinute)),
		zap.Time("since", g.Verdict.Since), zap.Int64("objects", g.Objects), zap.Int64("bytes", g.Bytes),
		zap.String("reason", g.Verdict.Reason),
	}
	if g.MergedNames != nil {
		fields = append(fields, zap.Strings("merged_caches", g.MergedNames))
	}
	if g.Owner.Attributed() {
		fields = append(fields, zap.Stringer("largest_owner", g.Owner))
	}
	if stack := g.StackText(); stack != "" {
		fields = append(fields, zap.String("stack", stack))
	}
	log.Warn("Kernel memory leak", fields...)
}

// summaryGroups is how many of the largest growing and other groups a
// scan's summary names.
const summaryGroups = 3

// summarize is the one line a scan writes to the collector's log; sites
// are the report's groups by call site, largest first.
func summarize(log *zap.Logger, rep report.Report, sites []report.Group) {
	var tracked int64
	for _, n := range rep.Tracked {
		tracked += n
	}
	var leaks, growing, largest []string
	for _, g := range sites {
		switch {
		case g.Verdict.State == verdict.Leaking:
			leaks = append(leaks, fmt.Sprintf("%s (%s) %+.1f/min: %s", g.CallSiteSym, g.Cache, g.Verdict.PerMinute, g.Verdict.Reason))
		case g.Verdict.State == verdict.Growing:
			if len(growing) < summaryGroups {
				growing = append(growing, fmt.Sprintf("%s (%s) %+.1f/min: %s", g.CallSiteSym, g.Cache, g.Verdict.PerMinute, g.Verdict.Reason))
			}
		case len(largest) < summaryGroups:
			largest = append(largest, fmt.Sprintf("%s (%s) %d objects, %s", g.CallSiteSym, g.Cache, g.Objects, byteSize(g.Bytes)))
		}
	}
	log.Info("Scan",
		zap.Int64("live_objects", tracked), zap.Int64("aged_objects", rep.Suspects),
		zap.Int("leaking", rep.States[verdict.Leaking]), zap.Int("growing", rep.States[verdict.Growing]),
		zap.Int("steady", rep.States[verdict.Steady]), zap.Int("transient", rep.States[verdict.Transient]),
		zap.Strings("leaks", leaks), zap.Strings("largest_growing", growing), zap.Strings("largest_long_lived", largest))
}

// byteSize writes n bytes for a person: 512 B, 12.3 KiB, 4.0 MiB.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	value, prefix := float64(n)/unit, 0
	for value >= unit && prefix < 3 {
		value /= unit
		prefix++
	}
	return fmt.Sprintf("%.1f %ciB", value, "KMGT"[prefix])
}
