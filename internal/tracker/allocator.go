// Package tracker loads the eBPF allocation trackers into the kernel, picks
// how to attach them, and copies the live-object map out on each scan.
package tracker

import (
	"fmt"
	"strings"
)

// Allocator is a kernel allocator the probes can follow. The values are the
// ones the BPF programs store (enum allocator in bpf/kmemleak.bpf.c).
type Allocator uint32

const (
	Slab    Allocator = 0 // kmem_cache_alloc / kmem_cache_free
	Kmalloc Allocator = 1 // kmalloc / kfree
)

// Allocators lists every allocator, in the order they are attached.
var Allocators = []Allocator{Slab, Kmalloc}

func (a Allocator) String() string {
	switch a {
	case Slab:
		return "slab"
	case Kmalloc:
		return "kmalloc"
	}
	return fmt.Sprintf("allocator(%d)", uint32(a))
}

// ParseAllocator maps a configured name to its Allocator.
func ParseAllocator(name string) (Allocator, error) {
	for _, a := range Allocators {
		if a.String() == name {
			return a, nil
		}
	}
	return 0, fmt.Errorf("unknown allocator %q (known: %s)", name, joinNames(Allocators))
}

// Mode is how a program is attached to its tracepoint.
type Mode string

const (
	ModeAuto       Mode = "auto"       // the cheapest mode the kernel accepts
	ModeTPBTF      Mode = "tp_btf"     // BTF-typed tracepoint: cheapest, needs kernel BTF (5.5+)
	ModeRawTP      Mode = "raw_tp"     // raw tracepoint: untyped arguments (4.17+)
	ModeTracepoint Mode = "tracepoint" // classic perf tracepoint: needs tracefs, the slowest
)

// AttachModes are the concrete modes in the order `auto` tries them.
var AttachModes = []Mode{ModeTPBTF, ModeRawTP, ModeTracepoint}

// ParseMode validates a configured attach mode.
func ParseMode(name string) (Mode, error) {
	m := Mode(name)
	if m == ModeAuto {
		return m, nil
	}
	for _, known := range AttachModes {
		if m == known {
			return m, nil
		}
	}
	return "", fmt.Errorf("unknown attach mode %q (known: auto, %s)", name, joinNames(AttachModes))
}

func joinNames[T any](items []T) string {
	names := make([]string, len(items))
	for i, it := range items {
		names[i] = fmt.Sprint(it)
	}
	return strings.Join(names, ", ")
}
