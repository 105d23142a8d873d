//go:build linux && (amd64 || arm64)

package tracker

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmemleak/kmemleakreceiver/bpf"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

// kernelParams are the parameter lists of the allocation functions, as the
// BTF of each kernel has them (5.15, and 6.12 with CONFIG_SLAB_BUCKETS).
var kernelParams = map[string][]string{
	"kmem_cache_alloc":                   {"s", "gfpflags"},
	"kmem_cache_alloc_node":              {"s", "gfpflags", "node"},
	"kmem_cache_alloc_trace":             {"s", "gfpflags", "size"},
	"kmem_cache_alloc_node_trace":        {"s", "gfpflags", "node", "size"},
	"__kmalloc":                          {"size", "flags"},
	"__kmalloc_node":                     {"size", "flags", "node"},
	"__kmalloc_track_caller":             {"size", "flags", "caller"},
	"__kmalloc_node_track_caller":        {"size", "flags", "node", "caller"},
	"kmalloc_order":                      {"size", "flags", "order"},
	"kmem_cache_alloc_noprof":            {"s", "gfpflags"},
	"kmem_cache_alloc_lru_noprof":        {"s", "lru", "gfpflags"},
	"kmem_cache_alloc_node_noprof":       {"s", "gfpflags", "node"},
	"__kmalloc_noprof":                   {"size", "flags"},
	"__kmalloc_node_noprof":              {"size", "b", "flags", "node"},
	"__kmalloc_cache_noprof":             {"s", "gfpflags", "size"},
	"__kmalloc_cache_node_noprof":        {"s", "gfpflags", "node", "size"},
	"__kmalloc_node_track_caller_noprof": {"size", "b", "flags", "node", "caller"},
	"__kmalloc_large_noprof":             {"size", "flags"},
	"__kmalloc_large_node_noprof":        {"size", "flags", "node"},
}

func fakeParams(fn string) ([]string, error) {
	p, ok := kernelParams[fn]
	if !ok {
		return nil, fmt.Errorf("no BTF for %s", fn)
	}
	return p, nil
}

// hooked lists each attachment as "kind symbol cookie".
func hooked(t *testing.T, a kmem.Allocator, kallsyms string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", kallsyms))
	require.NoError(t, err)
	defer f.Close()
	todo, err := testPlan(t).kprobeAttachments(a, f, fakeParams)
	require.NoError(t, err)
	var out []string
	for _, at := range todo {
		out = append(out, fmt.Sprintf("%s %s %#x", at.program.Name, at, at.cookie))
	}
	return out
}

// testSpecs parses the embedded BPF object: it needs no privilege.
func testSpecs(t *testing.T) *bpf.KmemleakSpecs {
	t.Helper()
	spec, err := bpf.LoadKmemleak()
	require.NoError(t, err)
	var specs bpf.KmemleakSpecs
	require.NoError(t, spec.Assign(&specs))
	return &specs
}

// testPlan is the plan of the embedded BPF object.
func testPlan(t *testing.T) *plan { return newPlan(&testSpecs(t).KmemleakProgramSpecs) }

// testMapSpecs are the maps of the embedded BPF object.
func testMapSpecs(t *testing.T) *bpf.KmemleakMapSpecs { return &testSpecs(t).KmemleakMapSpecs }

func TestKprobeAttachmentsOnLinux5_15(t *testing.T) {
	// Pre-6.10 names; kmem_cache_alloc_lru only in a module, which is no
	// allocator; kmalloc_order_trace calls kmalloc_order, so only that.
	assert.Equal(t, []string{
		"kp_alloc_entry kprobe kmem_cache_alloc 0x201",
		"kp_alloc_return kretprobe kmem_cache_alloc 0x0",
		"kp_alloc_entry kprobe kmem_cache_alloc_node 0x201",
		"kp_alloc_return kretprobe kmem_cache_alloc_node 0x0",
		"kp_slab_free kprobe kmem_cache_free 0x0",
	}, hooked(t, kmem.Slab, "kallsyms-5.15"))
	assert.Equal(t, []string{
		"kp_alloc_entry kprobe __kmalloc 0x1210",
		"kp_alloc_return kretprobe __kmalloc 0x0",
		"kp_alloc_entry kprobe __kmalloc_node 0x1210",
		"kp_alloc_return kretprobe __kmalloc_node 0x0",
		"kp_alloc_entry kprobe kmem_cache_alloc_trace 0x1231",
		"kp_alloc_return kretprobe kmem_cache_alloc_trace 0x0",
		"kp_alloc_entry kprobe kmem_cache_alloc_node_trace 0x1241",
		"kp_alloc_return kretprobe kmem_cache_alloc_node_trace 0x0",
		"kp_alloc_entry kprobe __kmalloc_node_track_caller 0x1210",
		"kp_alloc_return kretprobe __kmalloc_node_track_caller 0x0",
		"kp_alloc_entry kprobe __kmalloc_track_caller 0x1210",
		"kp_alloc_return kretprobe __kmalloc_track_caller 0x0",
		"kp_alloc_entry kprobe kmalloc_order 0x1210",
		"kp_alloc_return kretprobe kmalloc_order 0x0",
		"kp_kmalloc_free kprobe kfree 0x0",
	}, hooked(t, kmem.Kmalloc, "kallsyms-5.15"))
}

func TestKprobeAttachmentsOnLinux6_12(t *testing.T) {
	// _noprof names; __pfx_ padding symbols, .cold parts and data symbols
	// are no functions to hook. With CONFIG_SLAB_BUCKETS the gfp flags of
	// __kmalloc_node_noprof are the third argument.
	assert.Equal(t, []string{
		"kp_alloc_entry kprobe kmem_cache_alloc_noprof 0x201",
		"kp_alloc_return kretprobe kmem_cache_alloc_noprof 0x0",
		"kp_alloc_entry kprobe kmem_cache_alloc_lru_noprof 0x301",
		"kp_alloc_return kretprobe kmem_cache_alloc_lru_noprof 0x0",
		"kp_alloc_entry kprobe kmem_cache_alloc_node_noprof 0x201",
		"kp_alloc_return kretprobe kmem_cache_alloc_node_noprof 0x0",
		"kp_slab_free kprobe kmem_cache_free 0x0",
	}, hooked(t, kmem.Slab, "kallsyms-6.12"))
	assert.Equal(t, []string{
		"kp_alloc_entry kprobe __kmalloc_noprof 0x1210",
		"kp_alloc_return kretprobe __kmalloc_noprof 0x0",
		"kp_alloc_entry kprobe __kmalloc_node_noprof 0x1310",
		"kp_alloc_return kretprobe __kmalloc_node_noprof 0x0",
		"kp_alloc_entry kprobe __kmalloc_cache_noprof 0x1231",
		"kp_alloc_return kretprobe __kmalloc_cache_noprof 0x0",
		"kp_alloc_entry kprobe __kmalloc_cache_node_noprof 0x1241",
		"kp_alloc_return kretprobe __kmalloc_cache_node_noprof 0x0",
		"kp_alloc_entry kprobe __kmalloc_node_track_caller_noprof 0x1310",
		"kp_alloc_return kretprobe __kmalloc_node_track_caller_noprof 0x0",
		"kp_alloc_entry kprobe __kmalloc_large_noprof 0x1210",
		"kp_alloc_return kretprobe __kmalloc_large_noprof 0x0",
		"kp_alloc_entry kprobe __kmalloc_large_node_noprof 0x1210",
		"kp_alloc_return kretprobe __kmalloc_large_node_noprof 0x0",
		"kp_kmalloc_free kprobe kfree 0x0",
	}, hooked(t, kmem.Kmalloc, "kallsyms-6.12"))
}

func TestKprobeAttachmentsRefuse(t *testing.T) {
	kallsyms := "ffffffff81000000 T kmem_cache_alloc\nffffffff81000100 T kfree\n"
	pl := testPlan(t)
	_, err := pl.kprobeAttachments(kmem.Page, nil, fakeParams)
	assert.ErrorContains(t, err, "the page allocator has no kprobe hooks")

	_, err = pl.kprobeAttachments(kmem.Slab, strings.NewReader(kallsyms), fakeParams)
	assert.EqualError(t, err, "kallsyms has no function kmem_cache_free")

	_, err = pl.kprobeAttachments(kmem.Kmalloc, strings.NewReader("ffffffff81000100 T kfree\n"), fakeParams)
	assert.ErrorContains(t, err, "kallsyms has none of the kmalloc allocation functions")

	// A function whose arguments cannot be found fails the mode, naming it:
	// its allocations would go unseen.
	_, err = pl.kprobeAttachments(kmem.Slab, strings.NewReader(kallsyms+"ffffffff81000200 T kmem_cache_free\n"),
		func(string) ([]string, error) { return []string{"gfpflags"}, nil })
	assert.EqualError(t, err, "kmem_cache_alloc: no kmem_cache parameter (parameters gfpflags)")
}

func TestKprobeCookie(t *testing.T) {
	c, err := kprobeCookie(kmem.Kmalloc, []string{"size", "b", "flags", "node", "caller"})
	require.NoError(t, err)
	assert.Equal(t, uint64(0x1310), c, "size 1st, gfp 3rd, kmalloc")
	_, err = kprobeCookie(kmem.Kmalloc, []string{"a", "b", "c", "d", "e", "size", "flags"})
	assert.ErrorContains(t, err, "beyond the first 5, which it reads")
	_, err = kprobeCookie(kmem.Kmalloc, []string{"size", "node"})
	assert.ErrorContains(t, err, "no gfp parameter")
}
