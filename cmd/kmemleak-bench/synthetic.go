//go:build linux && (amd64 || arm64)

package main

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/kmemleak/kmemleakreceiver/bpf"
	"github.com/kmemleak/kmemleakreceiver/internal/livetable"
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

// liveTable maps the receiver's slab and kmalloc live table into this
// process: the one of the process's receiver, sized for maxObjects.
func liveTable(maxObjects uint32) (*livetable.Mapped, error) {
	var found *ebpf.Map
	for id := ebpf.MapID(0); ; {
		var err error
		if id, err = ebpf.MapGetNextID(id); err != nil {
			break
		}
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		if info, err := m.Info(); err == nil && info.Name == bpf.KmemleakMapLive && m.MaxEntries() == livetable.Buckets(maxObjects) {
			if found != nil {
				_ = found.Close() // only looked at
			}
			found = m
			continue
		}
		_ = m.Close() // only looked at
	}
	if found == nil {
		return nil, errors.New("the receiver's live table was not found")
	}
	defer func() { _ = found.Close() }() // the mapping outlives the descriptor
	return livetable.Map(found)
}

// syntheticBase puts synthetic keys outside any kernel address range, so
// no probe ever frees or replaces them.
const syntheticBase = 0xffff000000000000

// syntheticObject is the i-th synthetic live object: a slab object of a
// cache the kernel does not name, so that the truth check leaves it alone,
// from one of 2000 call sites, allocated at allocTime (in the probes'
// clock), at boot, so that every scan reports it as a suspect, by one of
// 300 processes in 30 cgroups (6000 groups with attribution).
func syntheticObject(i int, allocTime uint64) (uint64, bpf.KmemleakObject) {
	return syntheticBase | uint64(i)<<6, bpf.KmemleakObject{
		AllocTime: allocTime, CallSite: 0xffffffff81000000 + uint64(i%2000)<<4, Bytes: 64, StackId: -1,
		Tgid: 1_000_000 + uint32(i%300), Cgroup: 1 + uint32(i%30),
		Allocator: uint8(bpf.KmemleakAllocatorALLOCATOR_SLAB), Context: uint8(bpf.KmemleakRunContextCONTEXT_TASK),
	}
}

// fillSynthetic inserts n synthetic objects into a live table, as the
// probes would, in their clock.
func fillSynthetic(live *livetable.Mapped, n int) error {
	// A second after boot, in jiffies where the probes stamp jiffies.
	bootTime := uint64(1e9)
	if clock, _ := tracker.ProbeClock(); clock != nil {
		bootTime = clock.At(bootTime)
	}
	for i := range n {
		key, obj := syntheticObject(i, bootTime)
		if !live.Insert(key, &obj) {
			return fmt.Errorf("no room for synthetic object %d of %d in the live table", i, n)
		}
	}
	return nil
}

// hashMap is a hash map of the n synthetic objects, keyed by address as
// samples/bpf/tracex4 (and this receiver before its live table) kept them:
// what the per-key reads and the do-nothing iterator walk.
func hashMap(n int) (*ebpf.Map, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Type: ebpf.Hash, KeySize: 8, ValueSize: uint32(unsafe.Sizeof(bpf.KmemleakObject{})), MaxEntries: uint32(n),
	})
	if err != nil {
		return nil, fmt.Errorf("creating a hash map of %d objects: %w", n, err)
	}
	keys := make([]uint64, n)
	vals := make([]bpf.KmemleakObject, n)
	for i := range n {
		keys[i], vals[i] = syntheticObject(i, 1)
	}
	if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
		_ = m.Close() // the insert error is the one to return
		return nil, fmt.Errorf("inserting %d synthetic objects into a hash map: %w", n, err)
	}
	return m, nil
}

// scanPerKey reads a hash map the way samples/bpf/tracex4 does, one
// BPF_MAP_GET_NEXT_KEY and one BPF_MAP_LOOKUP_ELEM per entry; it returns
// how many entries it read.
func scanPerKey(live *ebpf.Map) (int, error) {
	entries := 0
	var key any // nil: the first key
	var next uint64
	var val bpf.KmemleakObject
	for {
		err := live.NextKey(key, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return entries, nil
		}
		if err != nil {
			return entries, fmt.Errorf("listing live objects: %w", err)
		}
		// An entry freed since NextKey returned it is skipped.
		if err := live.Lookup(next, &val); err == nil {
			entries++
		}
		key = next
	}
}
