//go:build linux && (amd64 || arm64)

package tracker

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/kmemleak/kmemleakreceiver/bpf"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/ksym"
)

// kprobeAllocFunctions are, per allocator, the kernel functions that return
// a new object, each under every name it has had, newest first: Linux 6.10
// added _noprof to them (memory allocation profiling), 6.1 and 6.11 renamed
// the kmalloc entry points. A kernel has at most one name of each; the
// kprobe mode hooks those it has.
var kprobeAllocFunctions = map[kmem.Allocator][][]string{
	kmem.Slab: {
		{"kmem_cache_alloc_noprof", "kmem_cache_alloc"},
		{"kmem_cache_alloc_lru_noprof", "kmem_cache_alloc_lru"},
		{"kmem_cache_alloc_node_noprof", "kmem_cache_alloc_node"},
	},
	kmem.Kmalloc: {
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

// kprobeFree is the kernel function that frees one object of allocator
// a, the one its free tracepoint is in, with the BPF program for it.
func (pl *plan) kprobeFree(a kmem.Allocator) (attachment, bool) {
	switch a {
	case kmem.Slab:
		return attachment{program: pl.progs.KpSlabFree, mode: kmem.ModeKprobe, symbol: "kmem_cache_free", primaryFree: true}, true
	case kmem.Kmalloc:
		return attachment{program: pl.progs.KpKmallocFree, mode: kmem.ModeKprobe, symbol: "kfree", primaryFree: true}, true
	}
	return attachment{}, false
}

// Parameter names of the allocation functions, as the kernel's BTF has them.
var (
	cacheParams = []string{"s", "cachep", "cache"}
	sizeParams  = []string{"size"}
	gfpParams   = []string{"flags", "gfpflags", "gfp", "gfp_flags"}
)

// kprobeCookie packs where an allocation function's arguments are, for
// kp_alloc_entry (enum kprobe_cookie in bpf/kmemleak.h).
func kprobeCookie(a kmem.Allocator, params []string) (uint64, error) {
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
	case max(cache, size, gfp) > uint64(bpf.KmemleakKprobeCookieKPROBE_ARGS):
		return 0, fmt.Errorf("an argument the probe needs is beyond the first %d, which it reads (parameters %s)", bpf.KmemleakKprobeCookieKPROBE_ARGS, strings.Join(params, ", "))
	case a == kmem.Slab && cache == 0:
		return 0, fmt.Errorf("no kmem_cache parameter (parameters %s)", strings.Join(params, ", "))
	case a == kmem.Kmalloc && (cache == 0 && size == 0 || gfp == 0):
		return 0, fmt.Errorf("no cache or size, or no gfp parameter (parameters %s)", strings.Join(params, ", "))
	}
	return cache<<bpf.KmemleakKprobeCookieCOOKIE_CACHE_SHIFT |
		size<<bpf.KmemleakKprobeCookieCOOKIE_SIZE_SHIFT |
		gfp<<bpf.KmemleakKprobeCookieCOOKIE_GFP_SHIFT |
		uint64(bpfAllocators[a])<<bpf.KmemleakKprobeCookieCOOKIE_ALLOCATOR_SHIFT, nil
}

// kprobeAttachments resolves allocator a's kprobe hooks on this kernel: the
// allocation functions kallsyms lists, each with an entry and a return
// probe, and the free function. params returns a function's parameter
// names from the kernel's BTF.
func (pl *plan) kprobeAttachments(a kmem.Allocator, kallsyms io.Reader, params func(fn string) ([]string, error)) ([]attachment, error) {
	free, ok := pl.kprobeFree(a)
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
	if _, ok := found[free.symbol]; !ok {
		return nil, fmt.Errorf("kallsyms has no function %s", free.symbol)
	}
	var out []attachment
	var errs []error
	for _, names := range kprobeAllocFunctions[a] {
		i := slices.IndexFunc(names, func(n string) bool { _, ok := found[n]; return ok })
		if i < 0 {
			continue
		}
		fn := names[i]
		p, err := params(fn)
		if err == nil {
			var cookie uint64
			if cookie, err = kprobeCookie(a, p); err == nil {
				out = append(out,
					attachment{program: pl.progs.KpAllocEntry, mode: kmem.ModeKprobe, symbol: fn, cookie: cookie},
					attachment{program: pl.progs.KpAllocReturn, mode: kmem.ModeKprobe, symbol: fn, ret: true})
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
