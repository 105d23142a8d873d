package report

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/ksym"
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
			stack := describeStack(tt.frames, sym)
			site := ""
			if len(stack) > 0 {
				site = stack[0].Symbol
			}
			assert.Equal(t, tt.wantSite, site)
			assert.Equal(t, tt.wantStack, stackText(stack))
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
		"pcpu_alloc+0x3c8":                   true,
		"__alloc_percpu_gfp+0x1c":            true,
		"bpf_map_alloc_percpu+0x64":          false,
		"alloc_pipe_info+0xd7":               false,
		"sk_prot_alloc+0x3c":                 false,
		"kmem_cache_free+0x10":               false,
	} {
		assert.Equal(t, want, isAllocatorFrame(SymbolFrame(frame)), frame)
	}
}

type fakeStacks map[int32][]uint64

func (f fakeStacks) Stack(id int32) ([]uint64, error) {
	frames, ok := f[id]
	if !ok {
		return nil, errors.New("no such stack")
	}
	return frames, nil
}

func withStack(obj kmem.Object, id int32, skipped bool) kmem.Object {
	obj.StackID, obj.StackSkipped = id, skipped
	return obj
}

func TestBuildGroupsByStack(t *testing.T) {
	sym := mapSymbolizer{
		10: "kmem_cache_alloc_lru_noprof+0x38e",
		11: "__d_alloc+0x2d",
		12: "d_alloc_pseudo+0xa",
		13: "do_pipe2+0x4d",
		14: "__sys_socketpair+0x147",
		15: "__kmalloc_cache_noprof+0x10",
	}
	stacks := fakeStacks{
		1: {10, 11, 12, 13}, // pipe2, through the allocator's own frame
		2: {10, 11, 12, 14}, // socketpair
		3: {15, 11, 12, 13}, // pipe2 through another allocator frame: same group as 1
		4: {12, 13},         // taken without its innermost frame, the call site
	}
	const site = 11
	snap := newSnapshot(
		withStack(slabObj(dentryKey, site, 192, time.Minute), 1, false),
		withStack(slabObj(dentryKey, site, 192, time.Minute), 1, false),
		withStack(slabObj(dentryKey, site, 192, time.Minute), 2, false),
		withStack(slabObj(dentryKey, site, 192, time.Minute), 3, false),
		withStack(slabObj(dentryKey, site, 192, time.Minute), 4, true),
		withStack(slabObj(dentryKey, site, 192, time.Minute), -1, false), // no stack
		withStack(slabObj(dentryKey, site, 192, time.Minute), 99, false), // pruned meanwhile
	)

	rep := Build(snap, Options{Stacks: stacks}, sym)

	byStack := map[string]int64{}
	for _, g := range rep.Groups {
		assert.Equal(t, "__d_alloc+0x2d", g.CallSiteSym)
		byStack[g.StackText()] += g.Objects
	}
	assert.Equal(t, map[string]int64{
		"__d_alloc+0x2d\nd_alloc_pseudo+0xa\ndo_pipe2+0x4d":          4, // stacks 1, 3 and the skipped 4
		"__d_alloc+0x2d\nd_alloc_pseudo+0xa\n__sys_socketpair+0x147": 1,
		"": 2, // no stack, or one the map lost: grouped by call site
	}, byStack)
}

// bootStack is a stack of one boot, as the probes read it: each frame is a
// function of that boot's kallsyms at an offset.
func bootStack(t *testing.T, kallsyms string, frames ...ksymFrame) (ksym.Symbolizer, []uint64) {
	t.Helper()
	syms, err := ksym.New(kallsyms, "testdata/no-modules-file")
	require.NoError(t, err)
	text, err := os.ReadFile(kallsyms)
	require.NoError(t, err)
	starts := map[string]uint64{}
	for line := range strings.Lines(string(text)) {
		var addr uint64
		var kind, fn string
		_, err := fmt.Sscanf(line, "%x %s %s", &addr, &kind, &fn)
		require.NoError(t, err)
		starts[fn] = addr
	}
	addrs := make([]uint64, len(frames))
	for i, f := range frames {
		addr, ok := starts[f.fn]
		require.True(t, ok, "%s is not in %s", f.fn, kallsyms)
		addrs[i] = addr + f.off
	}
	return ksym.Symbolizer{Symbols: syms}, addrs
}

type ksymFrame struct {
	fn  string
	off uint64
}

// Two boots of one kernel, KASLR placing its text and its modules
// elsewhere in each (testdata/kallsyms_boot_a and _b): the same stack
// hashes alike in both, at other offsets in the same functions too (a
// rebuild moves them); another path does not.
func TestStackHashIsTheSameAcrossBoots(t *testing.T) {
	pipe := []ksymFrame{{"kmem_cache_alloc_noprof", 0x38}, {"nft_trans_alloc_gfp", 0x2b}, {"nf_tables_newrule", 0x120},
		{"alloc_pipe_info", 0x2b}, {"do_pipe2", 0x4f}, {"__x64_sys_pipe2", 0x18}, {"do_syscall_64", 0x9e}}
	hash := func(kallsyms string, frames []ksymFrame) string {
		sym, addrs := bootStack(t, kallsyms, frames...)
		stack := describeStack(addrs, sym)
		require.Contains(t, stackText(stack), "nft_trans_alloc_gfp+0x2b [nf_tables]")
		return stackHash(stack)
	}
	a := hash("testdata/kallsyms_boot_a", pipe)
	assert.Len(t, a, 16)
	assert.Equal(t, a, hash("testdata/kallsyms_boot_b", pipe), "one stack, two boots")

	moved := slices.Clone(pipe)
	moved[4].off = 0x61
	assert.Equal(t, a, hash("testdata/kallsyms_boot_b", moved), "the same functions at other offsets")

	socketpair := slices.Clone(pipe)
	socketpair[4].fn = "__sys_socketpair"
	assert.NotEqual(t, a, hash("testdata/kallsyms_boot_a", socketpair), "another path")
	assert.NotEqual(t, a, hash("testdata/kallsyms_boot_a", pipe[:len(pipe)-1]), "a frame fewer")
}

// A frame no symbol names hashes as "?", whether the collector shows its
// address (include_addresses) or not: the address differs at every boot.
func TestStackHashIgnoresUnnamedFramesAddresses(t *testing.T) {
	assert.Equal(t, stackHash(symbolFrames("alloc_pipe_info+0x2b", "unknown", "do_pipe2+0x4f")),
		stackHash(symbolFrames("alloc_pipe_info+0x2b", "0xffffffff9a5b2000", "do_pipe2+0x4f")))
	assert.NotEqual(t, stackHash(symbolFrames("alloc_pipe_info+0x2b")), stackHash(symbolFrames("alloc_pipe_info+0x2b [nf_tables]")),
		"the module is part of the frame")
}

func symbolFrames(symbols ...string) []Frame {
	out := make([]Frame, len(symbols))
	for i, s := range symbols {
		out[i] = SymbolFrame(s)
	}
	return out
}

func TestSymbolFrame(t *testing.T) {
	for symbol, want := range map[string]Frame{
		"alloc_pipe_info+0x2b":                 {Function: "alloc_pipe_info", Offset: 0x2b},
		"nft_trans_alloc_gfp+0x2b [nf_tables]": {Function: "nft_trans_alloc_gfp", Offset: 0x2b, Module: "nf_tables"},
		"unknown":                              {Function: "?"},
		"0xffffffff9a5b2000":                   {Function: "?"},
	} {
		want.Symbol = symbol
		assert.Equal(t, want, SymbolFrame(symbol))
	}
}

// Groups are ordered by their stacks as they were when stacks were text.
func TestCompareStacksIsTheTextsOrder(t *testing.T) {
	stacks := [][]string{
		nil, {"a+0x1"}, {"a+0x1", "b+0x2"}, {"a+0x1", "b+0x2 [m]"}, {"a+0x10"}, {"a+0x1 [m]"}, {"ab+0x1"}, {"unknown"},
	}
	for _, x := range stacks {
		for _, y := range stacks {
			want := strings.Compare(strings.Join(x, "\n"), strings.Join(y, "\n"))
			assert.Equal(t, want, compareStacks(symbolFrames(x...), symbolFrames(y...)), "%q %q", x, y)
		}
	}
}
