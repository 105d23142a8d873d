//go:build linux

package tracker

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kmemleak/kmemleakreceiver/bpf"
)

// syntheticBase puts synthetic keys outside any kernel address range, so
// no probe ever frees or replaces them.
const syntheticBase = 0xffff000000000000

// FillSynthetic inserts n synthetic live objects into live, a live-object
// map (this package's, or one opened by ID from a running receiver), for
// benchmarks: slab objects of a cache the kernel does not name, so that the
// truth check leaves them alone, from 2000 call sites, all allocated at
// boot, so that every scan reports them as suspects.
func FillSynthetic(live *ebpf.Map, n int) error {
	keys := make([]uint64, n)
	vals := make([]bpf.KmemleakObject, n)
	for i := range keys {
		keys[i] = syntheticBase | uint64(i)<<6
		vals[i] = bpf.KmemleakObject{AllocNs: 1, CallSite: 0xffffffff81000000 + uint64(i%2000)<<4, Bytes: 64, StackId: -1}
	}
	if _, err := live.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("inserting %d synthetic objects: %w", n, err)
	}
	return nil
}

// FillSynthetic inserts n synthetic objects into the tracker's live map.
func (t *Tracker) FillSynthetic(n int) error { return FillSynthetic(t.live, n) }

// Counters reads the probes' counters without scanning the live map.
func (t *Tracker) Counters() (map[Allocator]Counters, error) { return t.counters() }

// ScanPerKey reads the live map the way samples/bpf/tracex4 does, one
// BPF_MAP_GET_NEXT_KEY and one BPF_MAP_LOOKUP_ELEM per entry, for
// comparison with Scan; it returns how many entries it read.
func (t *Tracker) ScanPerKey() (int, error) {
	entries := 0
	var key any // nil: the first key
	var next uint64
	var val bpf.KmemleakObject
	for {
		err := t.live.NextKey(key, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return entries, nil
		}
		if err != nil {
			return entries, fmt.Errorf("listing live objects: %w", err)
		}
		// An entry freed since NextKey returned it is skipped.
		if err := t.live.Lookup(next, &val); err == nil {
			entries++
		}
		key = next
	}
}

// AttachProgram attaches prog to kmem:event in mode m, as the tracker
// attaches its own programs, for the programs the bench compares with ours.
func AttachProgram(prog *ebpf.Program, m Mode, event string) (link.Link, error) {
	return attachProgram(prog, attachment{mode: m, group: "kmem", event: event})
}
