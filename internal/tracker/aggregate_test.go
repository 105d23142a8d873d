//go:build linux

package tracker

import (
	"os"
	"testing"

	"go.uber.org/zap"
)

func TestAggregateCountsSyntheticObjects(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to load the probes")
	}
	tr, err := Open(Options{
		Allocators: []Allocator{Slab, Kmalloc}, Mode: ModeAuto, MaxObjects: 1 << 16,
		Stacks: StackOptions{Depth: 32}, MaxSize: ^uint32(0), Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	const n = 10_000 // 5 objects at each of 2000 call sites
	if err := tr.FillSynthetic(n); err != nil {
		t.Fatal(err)
	}
	agg, err := tr.NewAggregator()
	if err != nil {
		t.Fatal(err)
	}
	defer agg.Close()
	now, err := MonotonicNow()
	if err != nil {
		t.Fatal(err)
	}
	for pass := range 2 { // the second pass starts from an empty groups map
		groups, err := agg.Aggregate(now, 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		synthetic := 0
		for _, g := range groups {
			if g.Cache != 0 || g.Allocator != Slab || g.OldestNs != 1 {
				continue
			}
			synthetic++
			want := Group{CallSite: g.CallSite, Bytes: 64, StackID: -1, Objects: 5, BeforeCutoff: 5, Aged: 5, AgedBytes: 320, OldestNs: 1}
			if g != want {
				t.Fatalf("pass %d: group %+v, want %+v", pass, g, want)
			}
		}
		if synthetic != 2000 {
			t.Errorf("pass %d: %d synthetic groups, want 2000", pass, synthetic)
		}
	}
}
