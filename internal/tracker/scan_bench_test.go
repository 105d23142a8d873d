//go:build linux

package tracker

import (
	"os"
	"testing"

	"go.uber.org/zap"
)

// filledTracker opens a tracker whose live map holds n synthetic objects on
// top of what the kernel adds meanwhile, or skips without privileges.
func filledTracker(b *testing.B, n int) *Tracker {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root to load the probes")
	}
	tr, err := Open(Options{
		Allocators: []Allocator{Slab, Kmalloc}, Mode: ModeAuto, MaxObjects: uint32(n) + 1<<18,
		Stacks: StackOptions{Depth: 32}, MaxSize: ^uint32(0), Logger: zap.NewNop(),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tr.Close() })
	if err := tr.FillSynthetic(n); err != nil {
		b.Fatal(err)
	}
	return tr
}

func benchmarkScan(b *testing.B, n int) {
	tr := filledTracker(b, n)
	var snap Snapshot
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := tr.Scan(&snap); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(snap.Objects))*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// benchmarkPerKey reads the map the way samples/bpf/tracex4 does.
func benchmarkPerKey(b *testing.B, n int) {
	tr := filledTracker(b, n)
	b.ReportAllocs()
	b.ResetTimer()
	var entries int
	for b.Loop() {
		var err error
		if entries, err = tr.ScanPerKey(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(entries)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkScanBatch100k(b *testing.B)  { benchmarkScan(b, 100_000) }
func BenchmarkScanBatch1M(b *testing.B)    { benchmarkScan(b, 1_000_000) }
func BenchmarkScanPerKey100k(b *testing.B) { benchmarkPerKey(b, 100_000) }
func BenchmarkScanPerKey1M(b *testing.B)   { benchmarkPerKey(b, 1_000_000) }

// benchmarkAggregate sums the map per group in the kernel instead.
func benchmarkAggregate(b *testing.B, n int) {
	tr := filledTracker(b, n)
	agg, err := tr.NewAggregator()
	if err != nil {
		b.Fatal(err)
	}
	defer agg.Close()
	var groups []Group
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if groups, err = agg.Aggregate(2, 2, groups[:0]); err != nil {
			b.Fatal(err)
		}
	}
	var entries uint64
	for _, g := range groups {
		entries += g.Objects
	}
	b.ReportMetric(float64(entries)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkScanAggregate100k(b *testing.B) { benchmarkAggregate(b, 100_000) }
func BenchmarkScanAggregate1M(b *testing.B)   { benchmarkAggregate(b, 1_000_000) }
