//go:build linux

package tracker

import (
	"errors"
	"fmt"
	"io"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kmemleak/kmemleakreceiver/bpf"
)

// Group is the slab and kmalloc objects that share a call site, a cache, a
// size and a stack, as the in-kernel aggregation counts them: what the
// report groups by, and what the truth check counts per cache, without the
// objects themselves.
type Group struct {
	CallSite     uint64
	Cache        uint64
	Bytes        uint32
	StackID      int32
	StackSkipped bool
	Allocator    Allocator
	Objects      uint64 // every live object
	BeforeCutoff uint64 // allocated before the cutoff
	Aged         uint64 // allocated before agedBefore: leak suspects
	AgedBytes    uint64
	OldestNs     uint64 // the earliest allocation
}

// An Aggregator sums the live map per group in the kernel, with a BPF map
// iterator (bpf/aggregate.bpf.c), so that a pass copies groups out of the
// kernel instead of every object.
type Aggregator struct {
	objs bpf.AggregateObjects
	iter *link.Iter
	keys []bpf.AggregateGroupKey
	vals []bpf.AggregateGroup
}

// NewAggregator loads the iterator onto the tracker's slab and kmalloc
// live map.
func (t *Tracker) NewAggregator() (*Aggregator, error) {
	a := &Aggregator{keys: make([]bpf.AggregateGroupKey, scanBatch), vals: make([]bpf.AggregateGroup, scanBatch)}
	if err := bpf.LoadAggregateObjects(&a.objs, nil); err != nil {
		return nil, fmt.Errorf("loading the aggregation iterator: %w", explainPermission(err))
	}
	var err error
	if a.iter, err = link.AttachIter(link.IterOptions{Program: a.objs.Aggregate, Map: t.live}); err != nil {
		a.objs.Close()
		return nil, fmt.Errorf("attaching the aggregation iterator to the live map: %w", err)
	}
	return a, nil
}

// Aggregate makes one pass over the live map and appends its groups to
// groups: objects allocated before cutoff count in BeforeCutoff, those
// before agedBefore in Aged. The map keeps changing while it is walked, as
// it does under Scan.
func (a *Aggregator) Aggregate(cutoff, agedBefore uint64, groups []Group) ([]Group, error) {
	if err := errors.Join(a.objs.Cutoff.Set(cutoff), a.objs.AgedBefore.Set(agedBefore), a.objs.Overflow.Set(uint64(0))); err != nil {
		return groups, fmt.Errorf("setting the aggregation's bounds: %w", err)
	}
	r, err := a.iter.Open()
	if err != nil {
		return groups, fmt.Errorf("starting the aggregation: %w", err)
	}
	_, err = io.Copy(io.Discard, r)
	r.Close()
	if err != nil {
		return groups, fmt.Errorf("aggregating the live map: %w", err)
	}
	var overflow uint64
	if err := a.objs.Overflow.Get(&overflow); err != nil {
		return groups, err
	}
	groups, err = a.drain(groups)
	if err == nil && overflow > 0 {
		err = fmt.Errorf("%d objects in more groups than the aggregation holds (%d)", overflow, a.objs.Groups.MaxEntries())
	}
	return groups, err
}

// drain moves the groups out of the kernel, leaving the map empty for the
// next pass.
func (a *Aggregator) drain(groups []Group) ([]Group, error) {
	var cursor ebpf.MapBatchCursor
	for {
		n, err := a.objs.Groups.BatchLookupAndDelete(&cursor, a.keys, a.vals, nil)
		for i := range n {
			k, v := &a.keys[i], &a.vals[i]
			groups = append(groups, Group{
				CallSite: k.CallSite, Cache: k.Cache, Bytes: k.Bytes, StackID: k.StackId,
				StackSkipped: k.StackSkipped != 0, Allocator: Allocator(k.Allocator),
				Objects: v.Objects, BeforeCutoff: v.BeforeCutoff, Aged: v.Aged, AgedBytes: v.AgedBytes, OldestNs: v.OldestNs,
			})
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return groups, nil
		}
		if err != nil {
			return groups, fmt.Errorf("reading the aggregated groups: %w", err)
		}
	}
}

// Close detaches and unloads the iterator.
func (a *Aggregator) Close() error {
	return errors.Join(a.iter.Close(), a.objs.Close())
}
