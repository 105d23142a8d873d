//go:build linux

package main

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

// The kmem tracepoints our probes use, and the slab pair tracex4 uses.
var (
	allEvents  = []string{"kmem_cache_alloc", "kmem_cache_free", "kmalloc", "kfree"}
	slabEvents = allEvents[:2]
)

// hooked is a program of bench.bpf.c and the tracepoint it goes on.
type hooked struct{ program, event string }

// progSet is a comparison program of bench.bpf.c on the kmem tracepoints.
type progSet struct {
	mode  tracker.Mode
	progs []hooked
	maps  []string // the maps its programs use: no other map is created
}

// onEach hooks one program onto every event.
func onEach(program string, events []string) []hooked {
	out := make([]hooked, len(events))
	for i, e := range events {
		out[i] = hooked{program, e}
	}
	return out
}

var (
	emptyBTF = progSet{mode: tracker.ModeTPBTF, progs: []hooked{
		{"empty_btf_slab_alloc", "kmem_cache_alloc"}, {"empty_btf_slab_free", "kmem_cache_free"},
		{"empty_btf_kmalloc", "kmalloc"}, {"empty_btf_kfree", "kfree"}}}
	emptyRaw = progSet{mode: tracker.ModeRawTP, progs: onEach("empty_raw", allEvents)}
	emptyTP  = progSet{mode: tracker.ModeTracepoint, progs: onEach("empty_tp", allEvents)}
	floorBTF = progSet{mode: tracker.ModeTPBTF, maps: []string{"floor_map"}, progs: []hooked{
		{"floor_slab_alloc", "kmem_cache_alloc"}, {"floor_slab_free", "kmem_cache_free"},
		{"floor_kmalloc", "kmalloc"}, {"floor_kfree", "kfree"}}}
	tracex4 = progSet{mode: tracker.ModeTracepoint, maps: []string{"my_map"}, progs: []hooked{
		{"tracex4_alloc", "kmem_cache_alloc"}, {"tracex4_free", "kmem_cache_free"}}}
)

// attachedSet is a loaded and attached progSet.
type attachedSet struct {
	coll  *ebpf.Collection
	links []link.Link
}

func (s progSet) attach() (*attachedSet, error) {
	var names []string
	for _, p := range s.progs {
		names = append(names, p.program)
	}
	coll, err := loadOnly(names, s.maps)
	if err != nil {
		return nil, err
	}
	a := &attachedSet{coll: coll}
	for _, p := range s.progs {
		l, err := tracker.AttachProgram(coll.Programs[p.program], s.mode, p.event)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("attaching %s to kmem:%s: %w", p.program, p.event, err)
		}
		a.links = append(a.links, l)
	}
	return a, nil
}

// loadOnly loads the named programs and maps of bench.bpf.c, and no other
// large map.
func loadOnly(programs, maps []string) (*ebpf.Collection, error) {
	spec, err := loadBench()
	if err != nil {
		return nil, fmt.Errorf("parsing the bench BPF object: %w", err)
	}
	keep := spec.Copy()
	keep.Programs = map[string]*ebpf.ProgramSpec{}
	keep.Maps = map[string]*ebpf.MapSpec{}
	for _, p := range programs {
		keep.Programs[p] = spec.Programs[p]
	}
	for _, m := range maps {
		keep.Maps[m] = spec.Maps[m]
	}
	// The global variables' map: small, and every program's variables need it.
	keep.Maps[".bss"] = spec.Maps[".bss"]
	coll, err := ebpf.NewCollection(keep)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", programs[0], err)
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
