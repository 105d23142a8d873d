package tracker

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/kmemleak/kmemleakreceiver/internal/ksym"
)

// kprobeAllocFunctions are, per allocator, the kernel functions that return
// a new object, each under every name it has had, newest first: Linux 6.10
// added _noprof to them (memory allocation profiling), 6.1 and 6.11 renamed
// the kmalloc entry points. A kernel has at most one name of each; the
// kprobe mode hooks those it has.
var kprobeAllocFunctions = map[Allocator][][]string{
	Slab: {
		{"kmem_cache_alloc_noprof", "kmem_cache_alloc"},
		{"kmem_cache_alloc_lru_noprof", "kmem_cache_alloc_lru"},
		{"kmem_cache_alloc_node_noprof", "kmem_cache_alloc_node"},
	},
	Kmalloc: {
		{"__kmalloc_noprof", "__kmalloc"},
		{"__kmalloc_node_noprof", "__kmalloc_node"},
		{"__kmalloc_cache_noprof", "kmalloc_trace_noprof", "kmalloc_trace", "kmem_cache_alloc_trace"},
		{"__kmalloc_cache_node_noprof", "kmalloc_node_trace_noprof", "kmalloc_node_trace", "kmem_cache_alloc_node_trace"},
		{"__kmalloc_node_track_caller_noprof", "__kmalloc_node_track_caller"},
		{"__kmalloc_track_caller"},
		{"__kmalloc_large_noprof", "kmalloc_large_noprof", "kmalloc_large", "kmalloc_order"},
		{"__kmalloc_large_node_noprof", "kmalloc_large_node_noprof", "kmalloc_large_node"},
	},
}

// kprobeFreeFunctions free one object of each allocator: the functions the
// free tracepoints are in, with the BPF program for each.
var kprobeFreeFunctions = map[Allocator]attachment{
	Slab:    {program: "kp_slab_free", mode: ModeKprobe, symbol: "kmem_cache_free", primaryFree: true},
	Kmalloc: {program: "kp_kmalloc_free", mode: ModeKprobe, symbol: "kfree", primaryFree: true},
}

// bulkFree frees arrays of objects without a free tracepoint, in every
// kernel version; kfree_bulk, which kfree_rcu batches end in, is an inline
// call of it.
var bulkFree = attachment{program: "kp_free_bulk", mode: ModeKprobe, symbol: "kmem_cache_free_bulk"}

// Parameter names of the allocation functions, as the kernel's BTF has them.
var (
	cacheParams = []string{"s", "cachep", "cache"}
	sizeParams  = []string{"size"}
	gfpParams   = []string{"flags", "gfpflags", "gfp", "gfp_flags"}
)

// kprobeCookie packs where an allocation function's arguments are, for
// kp_alloc_entry (COOKIE_* in the BPF code): 1-based positions of the
// cache, the size and the gfp flags in 4-bit fields, 0 for none, and the
// allocator above them. The BPF code reads the first five arguments.
func kprobeCookie(a Allocator, params []string) (uint64, error) {
	position := func(names []string) uint64 {
		for i, p := range params {
			if slices.Contains(names, p) {
				return uint64(i + 1)
			}
		}
		return 0
	}
	cache, size, gfp := position(cacheParams), position(sizeParams), position(gfpParams)
	switch {
	case max(cache, size, gfp) > 5:
		return 0, fmt.Errorf("an argument the probe needs is beyond the fifth (parameters %s)", strings.Join(params, ", "))
	case a == Slab && cache == 0:
		return 0, fmt.Errorf("no kmem_cache parameter (parameters %s)", strings.Join(params, ", "))
	case a == Kmalloc && (cache == 0 && size == 0 || gfp == 0):
		return 0, fmt.Errorf("no cache or size, or no gfp parameter (parameters %s)", strings.Join(params, ", "))
	}
	return cache | size<<4 | gfp<<8 | uint64(a)<<12, nil
}

// kprobeAttachments resolves allocator a's kprobe hooks on this kernel: the
// allocation functions kallsyms lists, each with an entry and a return
// probe, and the free function. params returns a function's parameter
// names from the kernel's BTF.
func kprobeAttachments(a Allocator, kallsyms io.Reader, params func(fn string) ([]string, error)) ([]attachment, error) {
	free, ok := kprobeFreeFunctions[a]
	if !ok {
		return nil, fmt.Errorf("the %s allocator has no kprobe hooks (its tracepoints exist on every kernel with BTF): use a tracepoint mode", a)
	}
	var all []string
	for _, names := range kprobeAllocFunctions[a] {
		all = append(all, names...)
	}
	found, err := ksym.FindFunctions(kallsyms, append(all, free.symbol))
	if err != nil {
		return nil, err
	}
	if !found[free.symbol] {
		return nil, fmt.Errorf("kallsyms has no function %s", free.symbol)
	}
	var out []attachment
	var errs []error
	for _, names := range kprobeAllocFunctions[a] {
		i := slices.IndexFunc(names, func(n string) bool { return found[n] })
		if i < 0 {
			continue
		}
		fn := names[i]
		p, err := params(fn)
		if err == nil {
			var cookie uint64
			if cookie, err = kprobeCookie(a, p); err == nil {
				out = append(out,
					attachment{program: "kp_alloc_entry", mode: ModeKprobe, symbol: fn, cookie: cookie},
					attachment{program: "kp_alloc_return", mode: ModeKprobe, symbol: fn, ret: true})
				continue
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", fn, err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("kallsyms has none of the %s allocation functions (%s)", a, strings.Join(all, ", "))
	}
	return append(out, free), nil
}
