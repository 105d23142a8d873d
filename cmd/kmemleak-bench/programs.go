//go:build linux && (amd64 || arm64)

package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/livetable"
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

// The kmem tracepoints our probes use, and the slab pair tracex4 uses.
var (
	allEvents  = []string{"kmem_cache_alloc", "kmem_cache_free", "kmalloc", "kfree"}
	slabEvents = allEvents[:2]
)

// hooked is a program of bench.bpf.c and the tracepoint it goes on.
type hooked struct {
	program func(*benchProgramSpecs) *ebpf.ProgramSpec
	event   string
}

// progSet is a comparison program of bench.bpf.c on the kmem tracepoints.
type progSet struct {
	mode  kmem.Mode
	progs []hooked
	// The maps its programs use: no other large map is created.
	maps func(*benchMapSpecs) []*ebpf.MapSpec
	// configure sizes them, where the programs do not.
	configure func(*benchSpecs) error
}

// onEach hooks one program onto every event.
func onEach(program func(*benchProgramSpecs) *ebpf.ProgramSpec, events []string) []hooked {
	out := make([]hooked, len(events))
	for i, e := range events {
		out[i] = hooked{program, e}
	}
	return out
}

var (
	emptyBTF = progSet{mode: kmem.ModeTPBTF, progs: []hooked{
		{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.EmptyBtfSlabAlloc }, "kmem_cache_alloc"},
		{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.EmptyBtfSlabFree }, "kmem_cache_free"},
		{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.EmptyBtfKmalloc }, "kmalloc"},
		{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.EmptyBtfKfree }, "kfree"}}}
	emptyRaw = progSet{mode: kmem.ModeRawTP, progs: onEach(func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.EmptyRaw }, allEvents)}
	emptyTP  = progSet{mode: kmem.ModeTracepoint, progs: onEach(func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.EmptyTp }, allEvents)}
	floorBTF = progSet{mode: kmem.ModeTPBTF, maps: func(m *benchMapSpecs) []*ebpf.MapSpec { return []*ebpf.MapSpec{m.FloorMap} }, progs: []hooked{
		{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.FloorSlabAlloc }, "kmem_cache_alloc"},
		{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.FloorSlabFree }, "kmem_cache_free"},
		{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.FloorKmalloc }, "kmalloc"},
		{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.FloorKfree }, "kfree"}}}
	tracex4 = progSet{mode: kmem.ModeTracepoint, maps: func(m *benchMapSpecs) []*ebpf.MapSpec { return []*ebpf.MapSpec{m.MyMap} }, progs: []hooked{
		{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.Tracex4Alloc }, "kmem_cache_alloc"},
		{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.Tracex4Free }, "kmem_cache_free"}}}
)

// tableBTF is the bare insert/delete pair on our live table, sized for
// maxObjects as the probes size theirs.
func tableBTF(maxObjects int) progSet {
	return progSet{mode: kmem.ModeTPBTF,
		maps: func(m *benchMapSpecs) []*ebpf.MapSpec { return []*ebpf.MapSpec{m.FloorTable} },
		configure: func(s *benchSpecs) error {
			s.FloorTable.MaxEntries = livetable.Buckets(uint32(maxObjects))
			return s.FloorTableBuckets.Set(s.FloorTable.MaxEntries)
		},
		progs: []hooked{
			{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.TableSlabAlloc }, "kmem_cache_alloc"},
			{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.TableSlabFree }, "kmem_cache_free"},
			{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.TableKmalloc }, "kmalloc"},
			{func(p *benchProgramSpecs) *ebpf.ProgramSpec { return p.TableKfree }, "kfree"}}}
}

// attachedSet is a loaded and attached progSet.
type attachedSet struct {
	coll  *ebpf.Collection
	links []link.Link
}

func (s progSet) attach() (*attachedSet, error) {
	spec, specs, err := loadBenchSpecs()
	if err != nil {
		return nil, err
	}
	if s.configure != nil {
		if err := s.configure(specs); err != nil {
			return nil, fmt.Errorf("configuring the bench programs: %w", err)
		}
	}
	var progs []*ebpf.ProgramSpec
	for _, p := range s.progs {
		progs = append(progs, p.program(&specs.benchProgramSpecs))
	}
	var maps []*ebpf.MapSpec
	if s.maps != nil {
		maps = s.maps(&specs.benchMapSpecs)
	}
	coll, err := loadOnly(spec, progs, maps)
	if err != nil {
		return nil, err
	}
	a := &attachedSet{coll: coll}
	for i, p := range s.progs {
		l, err := tracker.AttachTracepoint(coll.Programs[progs[i].Name], s.mode, "kmem", p.event)
		if err != nil {
			_ = a.Close() // the attach error is the one to return
			return nil, fmt.Errorf("attaching %s to kmem:%s: %w", progs[i].Name, p.event, err)
		}
		a.links = append(a.links, l)
	}
	return a, nil
}

// loadBenchSpecs parses bench.bpf.c and its typed parts.
func loadBenchSpecs() (*ebpf.CollectionSpec, *benchSpecs, error) {
	spec, err := loadBench()
	if err != nil {
		return nil, nil, fmt.Errorf("parsing the bench BPF object: %w", err)
	}
	var specs benchSpecs
	if err := spec.Assign(&specs); err != nil {
		return nil, nil, fmt.Errorf("parsing the bench BPF object: %w", err)
	}
	return spec, &specs, nil
}

// loadOnly loads the given programs and maps of bench.bpf.c, and no other
// large map.
func loadOnly(spec *ebpf.CollectionSpec, programs []*ebpf.ProgramSpec, maps []*ebpf.MapSpec) (*ebpf.Collection, error) {
	keep := spec.Copy()
	keep.Programs = map[string]*ebpf.ProgramSpec{}
	keep.Maps = map[string]*ebpf.MapSpec{}
	for _, p := range programs {
		keep.Programs[p.Name] = p
	}
	for _, m := range maps {
		keep.Maps[m.Name] = m
	}
	// The global variables' maps (.bss and the like): small, and every
	// program's variables need them.
	for name, m := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			keep.Maps[name] = m
		}
	}
	coll, err := ebpf.NewCollection(keep)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", programs[0].Name, err)
	}
	return coll, nil
}

func (a *attachedSet) Close() error {
	var errs []error
	for _, l := range a.links {
		errs = append(errs, l.Close())
	}
	a.coll.Close()
	return errors.Join(errs...)
}
