//go:build linux && (amd64 || arm64)

package tracker

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

// fakeKernel is a kernel shape: which tracepoints each mode finds, whether
// kprobes exist, and the kallsyms they would hook.
type fakeKernel struct {
	missing map[kmem.Mode]map[string]string // mode -> event -> why it cannot attach
	symbols string                          // testdata kallsyms; "" for no kprobes
}

func (k fakeKernel) tracepoint(m kmem.Mode, _, event string) error {
	if why, ok := k.missing[m][event]; ok {
		return errors.New(why)
	}
	return nil
}

func (k fakeKernel) kprobes() error {
	if k.symbols == "" {
		return errors.New("the kernel has no kprobes")
	}
	return nil
}

func (k fakeKernel) kallsyms() (io.ReadCloser, error) {
	return os.Open(filepath.Join("testdata", k.symbols))
}

func (fakeKernel) params(fn string) ([]string, error) { return fakeParams(fn) }

var (
	// Linux 6.18 here: every tracepoint in every mode, no kprobes.
	linux6_18 = fakeKernel{}
	// Debian's 6.12: kprobes, the _noprof names.
	linux6_12 = fakeKernel{symbols: "kallsyms-6.12"}
	// 5.15: kmem_cache_alloc passes no cache to BTF programs, the classic
	// record has one; the old names for kprobes; no tracefs mounted.
	linux5_15 = fakeKernel{symbols: "kallsyms-5.15", missing: map[kmem.Mode]map[string]string{
		kmem.ModeTPBTF:      {"kmem_cache_alloc": "kmem:kmem_cache_alloc passes no kmem_cache before Linux 6.1"},
		kmem.ModeRawTP:      {"kmem_cache_alloc": "kmem:kmem_cache_alloc passes no kmem_cache before Linux 6.1"},
		kmem.ModeTracepoint: {"kmem_cache_alloc": "tracefs is not mounted", "kmalloc": "tracefs is not mounted", "mm_page_alloc": "tracefs is not mounted", "percpu_alloc_percpu": "tracefs is not mounted"},
	}}
)

// describeChoices lists each choice as its programs and where they go.
func describeChoices(choices [][]attachment) []string {
	var out []string
	for _, todo := range choices {
		var parts []string
		for _, at := range todo {
			parts = append(parts, at.program.Name+"@"+at.String())
		}
		out = append(out, strings.Join(parts, " "))
	}
	return out
}

func TestPlanTracepointModes(t *testing.T) {
	pl := testPlan(t)
	want := map[kmem.Allocator]map[kmem.Mode]string{
		kmem.Slab: {
			kmem.ModeTPBTF:      "btf_slab_alloc@kmem:kmem_cache_alloc btf_slab_free@kmem:kmem_cache_free btf_slab_free_bk@kmem:kmem_cache_free",
			kmem.ModeRawTP:      "raw_slab_alloc@kmem:kmem_cache_alloc raw_slab_free@kmem:kmem_cache_free raw_slab_free_bk@kmem:kmem_cache_free",
			kmem.ModeTracepoint: "tp_slab_alloc@kmem:kmem_cache_alloc tp_slab_free@kmem:kmem_cache_free",
		},
		kmem.Kmalloc: {
			kmem.ModeTPBTF:      "btf_kmalloc_alloc@kmem:kmalloc btf_kmalloc_free@kmem:kfree btf_kmalloc_free_bk@kmem:kfree",
			kmem.ModeRawTP:      "raw_kmalloc_alloc@kmem:kmalloc raw_kmalloc_free@kmem:kfree raw_kmalloc_free_bk@kmem:kfree",
			kmem.ModeTracepoint: "tp_kmalloc_alloc@kmem:kmalloc tp_kmalloc_free@kmem:kfree",
		},
		kmem.Page: {
			kmem.ModeTPBTF:      "btf_page_alloc@kmem:mm_page_alloc btf_page_free@kmem:mm_page_free btf_page_free_bk@kmem:mm_page_free",
			kmem.ModeRawTP:      "raw_page_alloc@kmem:mm_page_alloc raw_page_free@kmem:mm_page_free raw_page_free_bk@kmem:mm_page_free",
			kmem.ModeTracepoint: "tp_page_alloc@kmem:mm_page_alloc tp_page_free@kmem:mm_page_free",
		},
		// No backup free program: free_percpu() fires the tracepoint with
		// interrupts off, so no free can land inside the primary.
		kmem.Percpu: {
			kmem.ModeTPBTF:      "btf_percpu_alloc@percpu:percpu_alloc_percpu btf_percpu_free@percpu:percpu_free_percpu",
			kmem.ModeRawTP:      "raw_percpu_alloc@percpu:percpu_alloc_percpu raw_percpu_free@percpu:percpu_free_percpu",
			kmem.ModeTracepoint: "tp_percpu_alloc@percpu:percpu_alloc_percpu tp_percpu_free@percpu:percpu_free_percpu",
		},
	}
	for _, a := range kmem.Allocators {
		for _, m := range []kmem.Mode{kmem.ModeTPBTF, kmem.ModeRawTP, kmem.ModeTracepoint} {
			t.Run(fmt.Sprintf("%s/%s", a, m), func(t *testing.T) {
				choices, err := pl.choices(a, m, linux6_18)
				require.NoError(t, err)
				assert.Equal(t, []string{want[a][m]}, describeChoices(choices))
				// The free program's recursion misses are the lost frees.
				for i, at := range choices[0] {
					assert.Equal(t, i == 1, at.primaryFree, "%s", at.program.Name)
				}
			})
		}
	}
}

// A mode the kernel cannot offer fails with the kernel's reason, and only
// for the allocators it concerns.
func TestPlanRefusals(t *testing.T) {
	pl := testPlan(t)
	tests := []struct {
		kernel  fakeKernel
		a       kmem.Allocator
		m       kmem.Mode
		wantErr string
	}{
		{linux5_15, kmem.Slab, kmem.ModeTPBTF, "passes no kmem_cache before Linux 6.1"},
		{linux5_15, kmem.Slab, kmem.ModeRawTP, "passes no kmem_cache before Linux 6.1"},
		{linux5_15, kmem.Kmalloc, kmem.ModeTPBTF, ""},
		{linux5_15, kmem.Page, kmem.ModeTracepoint, "tracefs is not mounted"},
		{linux5_15, kmem.Percpu, kmem.ModeTracepoint, "tracefs is not mounted"},
		{linux6_18, kmem.Slab, kmem.ModeKprobe, "the kernel has no kprobes; use a tracepoint mode (attach: auto)"},
		{linux6_18, kmem.Kmalloc, kmem.ModeKprobe, "the kernel has no kprobes; use a tracepoint mode (attach: auto)"},
		{linux6_12, kmem.Page, kmem.ModeKprobe, "the page allocator has no kprobe hooks"},
		{linux6_12, kmem.Percpu, kmem.ModeKprobe, "the percpu allocator has no kprobe hooks"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s/%s", tt.kernel.symbols, tt.a, tt.m), func(t *testing.T) {
			_, err := pl.choices(tt.a, tt.m, tt.kernel)
			if tt.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tt.wantErr)
		})
	}
}

// The kprobe mode offers its frees from the raw tracepoints first, with
// their backup program, and the kprobe on the free function second.
func TestPlanKprobeModeTakesRawFreesFirst(t *testing.T) {
	pl := testPlan(t)
	for _, kernel := range []fakeKernel{linux6_12, linux5_15} {
		for a, frees := range map[kmem.Allocator][2]string{
			kmem.Slab:    {"raw_slab_free_any@:kmem_cache_free raw_slab_free_bk@:kmem_cache_free", "kp_slab_free@kprobe kmem_cache_free"},
			kmem.Kmalloc: {"raw_kmalloc_free@:kfree raw_kmalloc_free_bk@:kfree", "kp_kmalloc_free@kprobe kfree"},
		} {
			t.Run(kernel.symbols+"/"+a.String(), func(t *testing.T) {
				choices, err := pl.choices(a, kmem.ModeKprobe, kernel)
				require.NoError(t, err)
				got := describeChoices(choices)
				require.Len(t, got, 2)
				assert.True(t, strings.HasSuffix(got[0], " "+frees[0]), "first choice %q", got[0])
				assert.True(t, strings.HasSuffix(got[1], " "+frees[1]), "second choice %q", got[1])
				assert.Equal(t, strings.TrimSuffix(got[0], frees[0]), strings.TrimSuffix(got[1], frees[1]), "the allocation probes differ")
				assert.True(t, choices[0][len(choices[0])-2].primaryFree)
			})
		}
	}
}

// The live map of each allocator is the one its programs insert into.
func TestPlanLiveMaps(t *testing.T) {
	pl, m := testPlan(t), testMapSpecs(t)
	for a, want := range map[kmem.Allocator]string{kmem.Slab: m.Live.Name, kmem.Kmalloc: m.Live.Name, kmem.Page: m.LivePages.Name, kmem.Percpu: m.LivePercpu.Name} {
		got, err := pl.liveMap(a, m)
		require.NoError(t, err, "%s", a)
		assert.Equal(t, want, got.Name, "%s", a)
	}
}
