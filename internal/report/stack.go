package report

import (
	"fmt"
	"hash/fnv"
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

func isAllocatorFrame(frame string) bool {
	fn, _, _ := strings.Cut(frame, "+")
	for _, p := range allocatorFramePrefixes {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	for _, s := range allocatorFrameSuffixes {
		if strings.HasSuffix(fn, s) {
			return true
		}
	}
	return false
}

// describeStack symbolizes a stack and drops the allocator's frames from
// its top. The first frame left is the code that asked for memory: the
// call site the group is named after. The stack text has one frame a line,
// from that frame outwards.
func describeStack(frames []uint64, sym Symbolizer) (callSite, text string) {
	names := make([]string, len(frames))
	for i, f := range frames {
		names[i] = sym.Symbolize(f)
	}
	first := 0
	for first < len(names)-1 && isAllocatorFrame(names[first]) {
		first++
	}
	if len(names) == 0 {
		return "", ""
	}
	return names[first], strings.Join(names[first:], "\n")
}

// Frame is one frame of a stack text, as the symbolizer writes it:
// function+0xoffset [module].
type Frame struct {
	Function string // "?" when no symbol names the frame
	Offset   uint64
	Module   string // "" for the kernel's own text
}

// Frames splits a stack text (one frame a line, as describeStack writes
// it, or a call site alone) into its frames.
func Frames(text string) []Frame {
	var out []Frame
	for line := range strings.SplitSeq(text, "\n") {
		fn, rest, _ := strings.Cut(line, "+")
		f := Frame{Function: fn}
		if fn == "unknown" || strings.HasPrefix(fn, "0x") {
			f.Function = "?"
		}
		off, module, _ := strings.Cut(rest, " [")
		f.Offset, _ = strconv.ParseUint(strings.TrimPrefix(off, "0x"), 16, 64)
		f.Module = strings.TrimSuffix(module, "]")
		out = append(out, f)
	}
	return out
}

// stackHash fingerprints a stack text across hosts and boots: FNV-1a over
// each frame's function and module, without the offset, which builds
// change, or addresses, which KASLR does.
func stackHash(text string) string {
	h := fnv.New64a()
	for _, f := range Frames(text) {
		h.Write([]byte(f.Function))
		if f.Module != "" {
			h.Write([]byte(" [" + f.Module + "]"))
		}
		h.Write([]byte{'\n'})
	}
	return fmt.Sprintf("%016x", h.Sum64())
}
