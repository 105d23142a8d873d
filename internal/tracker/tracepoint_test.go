//go:build linux && (amd64 || arm64)

package tracker

import (
	"testing"

	"github.com/cilium/ebpf/btf"
	"github.com/stretchr/testify/assert"
)

// traceTypedef builds a btf_trace_<event> typedef as the kernel's BTF has
// it: a pointer to a function of the context and the tracepoint's arguments.
func traceTypedef(args ...btf.Type) *btf.Typedef {
	params := []btf.FuncParam{{Type: &btf.Pointer{Target: &btf.Void{}}}}
	for _, a := range args {
		params = append(params, btf.FuncParam{Type: a})
	}
	return &btf.Typedef{Name: "btf_trace_kmem_cache_alloc", Type: &btf.Pointer{Target: &btf.FuncProto{Params: params}}}
}

func TestHasCacheArg(t *testing.T) {
	ulong := &btf.Int{Name: "long unsigned int", Size: 8}
	sizeT := &btf.Typedef{Name: "size_t", Type: ulong}
	voidPtr := &btf.Pointer{Target: &btf.Void{}}
	cache := &btf.Pointer{Target: &btf.Struct{Name: "kmem_cache"}}
	gfp := &btf.Typedef{Name: "gfp_t", Type: &btf.Int{Name: "unsigned int", Size: 4}}

	// Linux 6.1+: (call_site, ptr, s, gfp_flags, node)
	assert.True(t, hasCacheArg(traceTypedef(ulong, voidPtr, cache, gfp, &btf.Int{Name: "int", Size: 4})))
	// Linux 5.x: (call_site, ptr, bytes_req, bytes_alloc, gfp_flags)
	assert.False(t, hasCacheArg(traceTypedef(ulong, voidPtr, sizeT, sizeT, gfp)))
	assert.False(t, hasCacheArg(traceTypedef(ulong, voidPtr)))
	assert.False(t, hasCacheArg(&btf.Typedef{Name: "btf_trace_kmem_cache_alloc", Type: ulong}))
}
