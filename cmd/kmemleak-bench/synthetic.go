//go:build linux && (amd64 || arm64)

package main

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/kmemleak/kmemleakreceiver/bpf"
)

// liveMap opens the receiver's slab and kmalloc live-object map: the
// newest map of its name and of that size.
func liveMap(maxEntries uint32) (*ebpf.Map, error) {
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
		if info, err := m.Info(); err == nil && info.Name == bpf.KmemleakMapLive && m.MaxEntries() == maxEntries {
			if found != nil {
				found.Close()
			}
			found = m
			continue
		}
		m.Close()
	}
	if found == nil {
		return nil, errors.New("the receiver's live map was not found")
	}
	return found, nil
}

// syntheticBase puts synthetic keys outside any kernel address range, so
// no probe ever frees or replaces them.
const syntheticBase = 0xffff000000000000

// fillSynthetic inserts n synthetic live objects into a live map: slab
// objects of a cache the kernel does not name, so that the truth check
// leaves them alone, from 2000 call sites, all allocated at boot, so that
// every scan reports them as suspects.
func fillSynthetic(live *ebpf.Map, n int) error {
	keys := make([]uint64, n)
	vals := make([]bpf.KmemleakObject, n)
	for i := range keys {
		keys[i] = syntheticBase | uint64(i)<<6
		vals[i] = bpf.KmemleakObject{
			AllocNs: 1, CallSite: 0xffffffff81000000 + uint64(i%2000)<<4, Bytes: 64, StackId: -1,
			Allocator: uint16(bpf.KmemleakAllocatorALLOCATOR_SLAB),
		}
	}
	if _, err := live.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("inserting %d synthetic objects: %w", n, err)
	}
	return nil
}

// scanPerKey reads a live map the way samples/bpf/tracex4 does, one
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
