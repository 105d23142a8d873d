package report

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
)

// StackSource reads the kernel stacks the probes took, innermost frame
// first.
type StackSource interface {
	Stack(id int32) ([]uint64, error)
}

// allocatorFramePrefixes and allocatorFrameSuffixes name the frames at the
// top of an allocation's stack that belong to the allocator or to the
// tracing that took the stack, not to the code that asked for memory.
var (
	allocatorFramePrefixes = []string{
		"kmem_cache_alloc", "__kmem_cache_alloc", "__kmalloc", "kmalloc", "__do_kmalloc", "slab_alloc",
		// the page allocator's, Linux 5.x to 6.18
		"__alloc_pages", "alloc_pages", "__alloc_frozen_pages", "alloc_frozen_pages", "__folio_alloc",
		"folio_alloc", "vma_alloc_folio", "get_page_from_freelist", "__get_free_pages", "get_zeroed_page",
		// the percpu allocator's: without tail calls (kernels with frame
		// pointers, as every arm64 one) its wrappers are frames of their own
		"pcpu_alloc", "__alloc_percpu", "__alloc_reserved_percpu",
		"__traceiter_", "__bpf_trace_", "bpf_trace_run", "bpf_prog_", "bpf_trampoline_",
	}
	allocatorFrameSuffixes = []string{"_noprof"}
)

func isAllocatorFrame(f Frame) bool {
	for _, p := range allocatorFramePrefixes {
		if strings.HasPrefix(f.Function, p) {
			return true
		}
	}
	for _, s := range allocatorFrameSuffixes {
		if strings.HasSuffix(f.Function, s) {
			return true
		}
	}
	return false
}

// describeStack symbolizes a stack and drops the allocator's frames from
// its top. The first frame left is the code that asked for memory: the
// call site the group is named after.
func describeStack(addrs []uint64, sym Symbolizer) []Frame {
	if len(addrs) == 0 {
		return nil
	}
	frames := make([]Frame, len(addrs))
	for i, a := range addrs {
		frames[i] = SymbolFrame(sym.Symbolize(a))
	}
	first := 0
	for first < len(frames)-1 && isAllocatorFrame(frames[first]) {
		first++
	}
	return frames[first:]
}

// Frame is one frame of a stack: the symbolizer's name for it, and that
// name's parts, which fingerprints and profiles use.
type Frame struct {
	// Symbol is the name as the symbolizer wrote it, function+0xoffset
	// [module], or "unknown" or the address when no symbol names the frame:
	// what stack texts show.
	Symbol   string
	Function string // "?" when no symbol names the frame
	Offset   uint64
	Module   string // "" for the kernel's own text
}

// SymbolFrame is the frame a symbolizer's name stands for: a stack's frame,
// or a call site alone.
func SymbolFrame(symbol string) Frame {
	fn, rest, _ := strings.Cut(symbol, "+")
	f := Frame{Symbol: symbol, Function: fn}
	if fn == "unknown" || strings.HasPrefix(fn, "0x") {
		f.Function = "?"
	}
	off, module, _ := strings.Cut(rest, " [")
	f.Offset, _ = strconv.ParseUint(strings.TrimPrefix(off, "0x"), 16, 64)
	f.Module = strings.TrimSuffix(module, "]")
	return f
}

// stackText is frames one a line, as the kernel's backtraces write them.
func stackText(frames []Frame) string {
	var b strings.Builder
	for i, f := range frames {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(f.Symbol)
	}
	return b.String()
}

// compareStacks orders stacks as their texts would order, without writing
// them: a symbol has no byte below the newline that joins them.
func compareStacks(a, b []Frame) int {
	return slices.CompareFunc(a, b, func(x, y Frame) int { return cmp.Compare(x.Symbol, y.Symbol) })
}

// stackHash fingerprints a stack across hosts and boots: FNV-1a over each
// frame's function and module, without the offset, which builds change, or
// addresses, which KASLR does.
func stackHash(frames []Frame) string {
	h := fnv.New64a()
	for _, f := range frames {
		h.Write([]byte(f.Function))
		if f.Module != "" {
			h.Write([]byte(" [" + f.Module + "]"))
		}
		h.Write([]byte{'\n'})
	}
	return fmt.Sprintf("%016x", h.Sum64())
}
