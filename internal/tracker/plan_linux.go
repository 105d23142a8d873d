//go:build linux && (amd64 || arm64)

package tracker

import (
	"fmt"
	"io"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kmemleak/kmemleakreceiver/bpf"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/ksym"
)

// attachment is one program on one tracepoint (group:event, e.g.
// kmem:kfree), or on one kernel function (symbol) in kprobe mode.
type attachment struct {
	program      *ebpf.ProgramSpec
	mode         kmem.Mode // how it attaches: a tracepoint mode, or kprobe
	group, event string
	symbol       string
	ret          bool   // a kretprobe
	cookie       uint64 // for bpf_get_attach_cookie
	// primaryFree marks the program whose recursion misses are lost frees
	// (kmem.Counters.FreeMisses).
	primaryFree bool
}

func (at attachment) String() string {
	switch {
	case at.ret:
		return "kretprobe " + at.symbol
	case at.symbol != "":
		return "kprobe " + at.symbol
	}
	return at.group + ":" + at.event
}

// kernel is what the plan asks of the running kernel (features_linux.go;
// a fake in the tests).
type kernel interface {
	// tracepoint says why a program of mode m cannot attach to group:event,
	// or returns nil.
	tracepoint(m kmem.Mode, group, event string) error
	// kprobes says why kprobes cannot attach, or returns nil.
	kprobes() error
	kallsyms() (io.ReadCloser, error)
	// params lists a kernel function's parameter names.
	params(fn string) ([]string, error)
}

// plan picks the programs of the BPF object for each allocator and mode.
type plan struct {
	progs       *bpf.KmemleakProgramSpecs
	tracepoints map[kmem.Allocator]map[kmem.Mode][]attachment
}

func newPlan(p *bpf.KmemleakProgramSpecs) *plan {
	return &plan{progs: p, tracepoints: map[kmem.Allocator]map[kmem.Mode][]attachment{
		kmem.Slab: tracepointModes("kmem", "kmem_cache_alloc", "kmem_cache_free",
			[]*ebpf.ProgramSpec{p.BtfSlabAlloc, p.BtfSlabFree, p.BtfSlabFreeBk},
			[]*ebpf.ProgramSpec{p.RawSlabAlloc, p.RawSlabFree, p.RawSlabFreeBk},
			[]*ebpf.ProgramSpec{p.TpSlabAlloc, p.TpSlabFree}),
		kmem.Kmalloc: tracepointModes("kmem", "kmalloc", "kfree",
			[]*ebpf.ProgramSpec{p.BtfKmallocAlloc, p.BtfKmallocFree, p.BtfKmallocFreeBk},
			[]*ebpf.ProgramSpec{p.RawKmallocAlloc, p.RawKmallocFree, p.RawKmallocFreeBk},
			[]*ebpf.ProgramSpec{p.TpKmallocAlloc, p.TpKmallocFree}),
		kmem.Page: tracepointModes("kmem", "mm_page_alloc", "mm_page_free",
			[]*ebpf.ProgramSpec{p.BtfPageAlloc, p.BtfPageFree, p.BtfPageFreeBk},
			[]*ebpf.ProgramSpec{p.RawPageAlloc, p.RawPageFree, p.RawPageFreeBk},
			[]*ebpf.ProgramSpec{p.TpPageAlloc, p.TpPageFree}),
		// free_percpu() fires its tracepoint with interrupts off: no free
		// can land inside the free program, and it needs no backup.
		kmem.Percpu: tracepointModes("percpu", "percpu_alloc_percpu", "percpu_free_percpu",
			[]*ebpf.ProgramSpec{p.BtfPercpuAlloc, p.BtfPercpuFree},
			[]*ebpf.ProgramSpec{p.RawPercpuAlloc, p.RawPercpuFree},
			[]*ebpf.ProgramSpec{p.TpPercpuAlloc, p.TpPercpuFree}),
	}}
}

// tracepointModes lists an allocator's programs in each tracepoint mode,
// in attach order: alloc, free, and the backup free program (free_backup in
// the BPF code), which must run after the primary on the tracepoint, where
// an interrupt can land inside the free program. Classic tracepoints get no
// backup program (see the BPF code).
func tracepointModes(group, alloc, free string, btf, raw, tp []*ebpf.ProgramSpec) map[kmem.Mode][]attachment {
	list := func(m kmem.Mode, progs []*ebpf.ProgramSpec) []attachment {
		events := []string{alloc, free, free}
		out := make([]attachment, len(progs))
		for i, p := range progs {
			out[i] = attachment{program: p, mode: m, group: group, event: events[i], primaryFree: i == 1}
		}
		return out
	}
	return map[kmem.Mode][]attachment{kmem.ModeTPBTF: list(kmem.ModeTPBTF, btf), kmem.ModeRawTP: list(kmem.ModeRawTP, raw), kmem.ModeTracepoint: list(kmem.ModeTracepoint, tp)}
}

// choices lists what allocator a can attach in mode m on kernel k, best
// first, or why it cannot.
func (pl *plan) choices(a kmem.Allocator, m kmem.Mode, k kernel) ([][]attachment, error) {
	if m != kmem.ModeKprobe {
		todo := pl.tracepoints[a][m]
		for _, at := range todo {
			if err := k.tracepoint(m, at.group, at.event); err != nil {
				return nil, err
			}
		}
		return [][]attachment{todo}, nil
	}
	if err := k.kprobes(); err != nil {
		return nil, fmt.Errorf("%w; use a tracepoint mode (attach: auto)", err)
	}
	kallsyms, err := k.kallsyms()
	if err != nil {
		return nil, fmt.Errorf("reading kernel symbols to find the functions to hook: %w", err)
	}
	defer kallsyms.Close() //nolint:errcheck // read only: closing loses nothing
	todo, err := pl.kprobeAttachments(a, kallsyms, k.params)
	if err != nil {
		return nil, err
	}
	return [][]attachment{pl.withRawFrees(a, todo), todo}, nil
}

// withRawFrees replaces the kprobe on the free function by the free
// programs of the raw tracepoints, where the kernel has them (the free
// tracepoints' object argument is the second in every version). Their
// recursion guard is per program and a backup program catches what the
// first misses, where kprobes share one guard per CPU: a softirq that lands
// while any of our kprobes runs has all its frees skipped, and lost frees
// are phantom leaks. A lost allocation is only an object not tracked.
func (pl *plan) withRawFrees(a kmem.Allocator, todo []attachment) []attachment {
	raw := map[kmem.Allocator][]attachment{
		kmem.Slab: {
			{program: pl.progs.RawSlabFreeAny, mode: kmem.ModeRawTP, event: "kmem_cache_free", primaryFree: true},
			{program: pl.progs.RawSlabFreeBk, mode: kmem.ModeRawTP, event: "kmem_cache_free"},
		},
		kmem.Kmalloc: {
			{program: pl.progs.RawKmallocFree, mode: kmem.ModeRawTP, event: "kfree", primaryFree: true},
			{program: pl.progs.RawKmallocFreeBk, mode: kmem.ModeRawTP, event: "kfree"},
		},
	}
	out := slices.DeleteFunc(slices.Clone(todo), func(at attachment) bool { return at.primaryFree })
	return append(out, raw[a]...)
}

// bulkFree frees arrays of objects without a free tracepoint, in every
// kernel version; kfree_bulk, which kfree_rcu batches end in, is an inline
// call of it.
func (pl *plan) bulkFree() attachment {
	return attachment{program: pl.progs.KpFreeBulk, mode: kmem.ModeKprobe, symbol: "kmem_cache_free_bulk"}
}

// rcuBatches reads the kfree_rcu batches as the workqueue frees them, for
// kernels without kprobes (see rcu_batch_free).
func (pl *plan) rcuBatches() attachment {
	return attachment{program: pl.progs.RcuBatchFree, mode: kmem.ModeTPBTF, group: "workqueue", event: "workqueue_execute_start"}
}

// rcuBatchFunctions are the functions whose work frees the kfree_rcu
// batches.
var rcuBatchFunctions = []string{"kfree_rcu_monitor", "kfree_rcu_work"}

// findRCUBatchFunctions returns the addresses of rcuBatchFunctions, or nil
// when kallsyms lacks one or hides its address.
func findRCUBatchFunctions(k kernel) (map[string]uint64, error) {
	kallsyms, err := k.kallsyms()
	if err != nil {
		return nil, err
	}
	defer kallsyms.Close() //nolint:errcheck // read only: closing loses nothing
	found, err := ksym.FindFunctions(kallsyms, rcuBatchFunctions)
	if err != nil {
		return nil, err
	}
	for _, fn := range rcuBatchFunctions {
		if found[fn] == 0 {
			return nil, fmt.Errorf("kallsyms has no address for %s (kernel.kptr_restrict, or another kernel version)", fn)
		}
	}
	return found, nil
}

// liveMaps are the object's maps of live objects, one per key space.
func (*plan) liveMaps(m *bpf.KmemleakMapSpecs) []*ebpf.MapSpec {
	return []*ebpf.MapSpec{m.Live, m.LivePages, m.LivePercpu}
}

// liveMap returns the live map allocator a's objects go to. The BPF code
// decides (live_map_of): the loader reads its decision from the maps the
// allocation program refers to, to size and scan that map.
func (pl *plan) liveMap(a kmem.Allocator, m *bpf.KmemleakMapSpecs) (*ebpf.MapSpec, error) {
	alloc := pl.tracepoints[a][kmem.ModeTPBTF][0].program
	var found []*ebpf.MapSpec
	for _, live := range pl.liveMaps(m) {
		if slices.ContainsFunc(alloc.Instructions, func(ins asm.Instruction) bool {
			return ins.IsLoadFromMap() && ins.Reference() == live.Name
		}) {
			found = append(found, live)
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("the %s allocation program %s refers to %d live maps, not one", a, alloc.Name, len(found))
	}
	return found[0], nil
}
