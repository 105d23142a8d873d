//go:build linux

package tracker

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"go.uber.org/zap"

	"github.com/kmemleak/kmemleakreceiver/bpf"
)

// filledTracker opens a tracker whose live map holds n synthetic objects on
// top of what the kernel adds meanwhile, or skips without privileges.
func filledTracker(b *testing.B, n int) *Tracker {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root to load the probes")
	}
	tr, err := Open(Options{
		Allocators: Allocators, Mode: ModeAuto, MaxObjects: uint32(n) + 1<<18,
		Stacks: StackOptions{Depth: 32}, MaxSize: ^uint32(0), Logger: zap.NewNop(),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tr.Close() })
	keys := make([]uint64, n)
	vals := make([]bpf.KmemleakObject, n)
	for i := range keys {
		keys[i] = 0xffff000000000000 | uint64(i)<<6 // outside any kernel address range
		vals[i] = bpf.KmemleakObject{AllocNs: 1, CallSite: uint64(i % 2000), Bytes: 64, StackId: -1}
	}
	if _, err := tr.live.BatchUpdate(keys, vals, nil); err != nil {
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

// benchmarkPerKey reads the map the way samples/bpf/tracex4 does: one
// BPF_MAP_GET_NEXT_KEY and one BPF_MAP_LOOKUP_ELEM per entry.
func benchmarkPerKey(b *testing.B, n int) {
	tr := filledTracker(b, n)
	b.ReportAllocs()
	b.ResetTimer()
	var entries int
	for b.Loop() {
		entries = 0
		var key any // nil: the first key
		var next uint64
		var val bpf.KmemleakObject
		for {
			err := tr.live.NextKey(key, &next)
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if err := tr.live.Lookup(next, &val); err == nil {
				entries++
			}
			key = next
		}
	}
	b.ReportMetric(float64(entries)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkScanBatch100k(b *testing.B)  { benchmarkScan(b, 100_000) }
func BenchmarkScanBatch1M(b *testing.B)    { benchmarkScan(b, 1_000_000) }
func BenchmarkScanPerKey100k(b *testing.B) { benchmarkPerKey(b, 100_000) }
func BenchmarkScanPerKey1M(b *testing.B)   { benchmarkPerKey(b, 1_000_000) }
