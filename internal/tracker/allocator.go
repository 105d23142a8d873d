// Package tracker loads the eBPF allocation trackers into the kernel, picks
// how to attach them, and copies the live-object map out on each scan.
package tracker

import (
	"fmt"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// Allocator is a kernel allocator the probes can follow. The values are the
// ones the BPF programs store (enum allocator in bpf/kmemleak.bpf.c).
type Allocator uint32

const (
	Slab    Allocator = 0 // kmem_cache_alloc / kmem_cache_free
	Kmalloc Allocator = 1 // kmalloc / kfree
	Page    Allocator = 2 // mm_page_alloc / mm_page_free
	Percpu  Allocator = 3 // percpu_alloc_percpu / percpu_free_percpu
)

// Allocators lists every allocator, in the order they are attached.
var Allocators = []Allocator{Slab, Kmalloc, Page, Percpu}

var allocatorNames = []string{Slab: "slab", Kmalloc: "kmalloc", Page: "page", Percpu: "percpu"}

func (a Allocator) String() string {
	if int(a) < len(allocatorNames) {
		return allocatorNames[a]
	}
	return fmt.Sprintf("allocator(%d)", uint32(a))
}

// Slabs reports whether a allocates from slab caches, whose objects share
// one key space and which the kernel counts in /proc/slabinfo.
func (a Allocator) Slabs() bool { return a == Slab || a == Kmalloc }

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
	ModeTracepoint Mode = "tracepoint" // classic perf tracepoint: needs tracefs
	// ModeKprobe hooks the allocator functions, found by name in kallsyms,
	// as samples/bpf/tracex4 did: for kernels whose tracepoints cannot be
	// used. Needs CONFIG_KPROBES; slab and kmalloc only.
	ModeKprobe Mode = "kprobe"
)

// AttachModes are the concrete modes in the order `auto` tries them.
var AttachModes = []Mode{ModeTPBTF, ModeRawTP, ModeTracepoint, ModeKprobe}

// KprobeAllocators are the allocators the kprobe mode can follow.
var KprobeAllocators = []Allocator{Slab, Kmalloc}

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

// StackMode says which allocations get a kernel stack (enum stack_mode in
// the BPF code).
type StackMode uint32

const (
	StacksOff      StackMode = 0
	StacksAdaptive StackMode = 1 // allocations from suspect call sites, and a sample
	StacksAlways   StackMode = 2
)

var stackModeNames = map[StackMode]string{StacksOff: "off", StacksAdaptive: "adaptive", StacksAlways: "always"}

func (m StackMode) String() string { return stackModeNames[m] }

// ParseStackMode maps a configured stack_traces value to its StackMode.
func ParseStackMode(name string) (StackMode, error) {
	for m, n := range stackModeNames {
		if n == name {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown stack_traces %q (known: adaptive, always, off)", name)
}

// MaxStackDepth is the deepest kernel stack BPF can capture.
const MaxStackDepth = 127

// StackOptions say which allocations get a stack and how deep.
type StackOptions struct {
	Mode       StackMode
	Depth      int
	SampleRate uint32 // adaptive mode: also 1 in SampleRate allocations; 0: none
}

// Options configure Open.
type Options struct {
	Allocators []Allocator
	Mode       Mode
	MaxObjects uint32
	// SampleRate tracks 1 in SampleRate objects, picked by address; 0 and
	// 1 track every one.
	SampleRate uint32
	Stacks     StackOptions
	// Allocations outside [MinSize, MaxSize] bytes are not tracked.
	MinSize, MaxSize uint32
	// IgnoreBulkFrees leaves kmem_cache_free_bulk unhooked even where the
	// kernel has kprobes: only to measure what the hook buys.
	IgnoreBulkFrees bool
	Logger          *zap.Logger
}

// TakesStacks reports whether any allocation takes a stack: page
// allocations always do, since their tracepoint names no call site.
func (o Options) TakesStacks() bool {
	return o.Stacks.Mode != StacksOff || slices.Contains(o.Allocators, Page)
}
