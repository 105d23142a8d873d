// Package tracker loads the eBPF allocation trackers into the kernel, picks
// how to attach them, reads the live tables on each scan and writes
// what user space decides back into the probes' maps.
package tracker

import (
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

// StackOptions say which allocations get a stack and how deep.
type StackOptions struct {
	Mode       kmem.StackMode
	Depth      int
	SampleRate uint32 // adaptive mode: also 1 in SampleRate allocations; 0: none
}

// Options configure Open.
type Options struct {
	Allocators []kmem.Allocator
	Mode       kmem.Mode
	MaxObjects uint32
	// SampleRate tracks 1 in SampleRate objects, picked by address; 0 and
	// 1 track every one.
	SampleRate uint32
	Stacks     StackOptions
	// Allocations outside [MinSize, MaxSize] bytes are not tracked.
	MinSize, MaxSize uint32
	// IgnoreTgid is a process whose allocations are not tracked: the
	// receiver's own. 0 ignores none.
	IgnoreTgid uint32
	// Attribution records who allocated each object (kmem.Owner), and
	// which processes exit (Tracker.Exits).
	Attribution bool
	// IgnoreBulkFrees leaves kmem_cache_free_bulk unhooked even where the
	// kernel has kprobes: only to measure what the hook buys.
	IgnoreBulkFrees bool
	// YoungSlots sizes the young area in front of the slab and kmalloc
	// live table; 0 sizes it for the machine (livetable.YoungSlots). Only
	// for tests, which make it small to have objects moved out of it all
	// the time.
	YoungSlots uint32
	// PinDir is the bpffs directory where the maps a restart needs stay
	// pinned (pin_linux.go), and where Open adopts those a collector
	// before left, if they have the same shape and its probes wrote them
	// less than MaxGap ago; "" pins nothing.
	PinDir string
	MaxGap time.Duration
	Logger *zap.Logger
}

// TakesStacks reports whether any allocation takes a stack: page
// allocations always do, since their tracepoint names no call site, and
// percpu ones, since theirs can name the percpu allocator's own wrapper.
func (o Options) TakesStacks() bool {
	return o.Stacks.Mode != kmem.StacksOff || slices.Contains(o.Allocators, kmem.Page) || slices.Contains(o.Allocators, kmem.Percpu)
}

// StackMapEntries sizes the stack map for maxObjects tracked objects: far
// fewer distinct stacks than live objects exist, and the kernel allocates
// the whole map up front (depth x 8 bytes each), so one entry per 8
// tracked objects.
func StackMapEntries(maxObjects uint32) uint32 {
	return min(max(maxObjects/8, 1024), 1<<17)
}
