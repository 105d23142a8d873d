package report

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

type mapSymbolizer map[uint64]string

func (m mapSymbolizer) Symbolize(addr uint64) string {
	if name, ok := m[addr]; ok {
		return name
	}
	return "unknown"
}

func TestDescribeStackSkipsTheAllocatorFrames(t *testing.T) {
	sym := mapSymbolizer{
		1: "kmem_cache_alloc_lru_noprof+0x38e",
		2: "__kmalloc_cache_noprof+0x1a2",
		3: "__d_alloc+0x2d",
		4: "d_alloc_pseudo+0xa",
		5: "do_pipe2+0x4d",
		6: "__x64_sys_pipe2+0x14",
		7: "__slab_alloc.isra.0+0x2b",
		8: "__traceiter_kmalloc+0x2e",
		9: "e1000_alloc_rx_buffers+0x80 [e1000]",
	}
	tests := []struct {
		name      string
		frames    []uint64
		wantSite  string
		wantStack string
	}{
		{"allocator frames on top", []uint64{8, 1, 3, 4, 5, 6}, "__d_alloc+0x2d", "__d_alloc+0x2d\nd_alloc_pseudo+0xa\ndo_pipe2+0x4d\n__x64_sys_pipe2+0x14"},
		{"no allocator frame", []uint64{3, 4}, "__d_alloc+0x2d", "__d_alloc+0x2d\nd_alloc_pseudo+0xa"},
		{"module frame", []uint64{2, 9, 5}, "e1000_alloc_rx_buffers+0x80 [e1000]", "e1000_alloc_rx_buffers+0x80 [e1000]\ndo_pipe2+0x4d"},
		{"only allocator frames: keep the last", []uint64{8, 1, 2}, "__kmalloc_cache_noprof+0x1a2", "__kmalloc_cache_noprof+0x1a2"},
		{"unknown frames are kept", []uint64{1, 42, 5}, "unknown", "unknown\ndo_pipe2+0x4d"},
		{"empty", nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			site, stack := describeStack(tt.frames, sym)
			assert.Equal(t, tt.wantSite, site)
			assert.Equal(t, tt.wantStack, stack)
		})
	}
}

func TestIsAllocatorFrame(t *testing.T) {
	for frame, want := range map[string]bool{
		"kmem_cache_alloc_noprof+0x227":      true,
		"kmem_cache_alloc_node_noprof+0x1":   true,
		"__kmalloc_node_track_caller+0x10":   true,
		"kmalloc_trace+0x20":                 true,
		"kvmalloc_node_noprof+0x40":          true,
		"__traceiter_kmem_cache_alloc+0x3a":  true,
		"bpf_prog_6deef7357e7b4530_btf_slab": true,
		"alloc_pipe_info+0xd7":               false,
		"sk_prot_alloc+0x3c":                 false,
		"kmem_cache_free+0x10":               false,
	} {
		assert.Equal(t, want, isAllocatorFrame(frame), frame)
	}
}
