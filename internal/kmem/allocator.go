// Package kmem is the receiver's vocabulary for kernel memory: the
// allocators it follows, how it attaches to them, the live objects a scan
// finds and the caches they come from. It knows nothing of BPF: the
// loader translates the probes' records into these types.
package kmem

import (
	"fmt"
	"strings"
)

// Allocator is a kernel allocator the probes can follow.
type Allocator uint32

// The allocators, by the tracepoints or functions they are followed at.
const (
	Slab    Allocator = iota // kmem_cache_alloc / kmem_cache_free
	Kmalloc                  // kmalloc / kfree
	Page                     // mm_page_alloc / mm_page_free
	Percpu                   // percpu_alloc_percpu / percpu_free_percpu
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

// The attach modes, by their configured names.
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

// StackMode says which allocations get a kernel stack.
type StackMode uint32

// The stack modes of stack_traces.
const (
	StacksOff      StackMode = iota // none
	StacksAdaptive                  // allocations from suspect call sites, and a sample
	StacksAlways                    // every allocation tracked
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
