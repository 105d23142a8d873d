//go:build linux && (amd64 || arm64)

package tracker

import (
	"github.com/kmemleak/kmemleakreceiver/bpf"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

// The probes' enums (bpf/kmemleak.h) by the domain's names for them: the
// numbers come from bpf2go, so the two sides cannot disagree on them.
var (
	bpfAllocators = map[kmem.Allocator]bpf.KmemleakAllocator{
		kmem.Slab:    bpf.KmemleakAllocatorALLOCATOR_SLAB,
		kmem.Kmalloc: bpf.KmemleakAllocatorALLOCATOR_KMALLOC,
		kmem.Page:    bpf.KmemleakAllocatorALLOCATOR_PAGE,
		kmem.Percpu:  bpf.KmemleakAllocatorALLOCATOR_PERCPU,
	}
	bpfStackModes = map[kmem.StackMode]bpf.KmemleakStackMode{
		kmem.StacksOff:      bpf.KmemleakStackModeSTACKS_OFF,
		kmem.StacksAdaptive: bpf.KmemleakStackModeSTACKS_ADAPTIVE,
		kmem.StacksAlways:   bpf.KmemleakStackModeSTACKS_ALWAYS,
	}
	bpfKmallocFamilies = map[kmem.KmallocFamily]bpf.KmemleakKmallocFamily{
		kmem.KmallocNormal:      bpf.KmemleakKmallocFamilyKMALLOC_FAMILY_NORMAL,
		kmem.KmallocDMA:         bpf.KmemleakKmallocFamilyKMALLOC_FAMILY_DMA,
		kmem.KmallocReclaimable: bpf.KmemleakKmallocFamilyKMALLOC_FAMILY_RECLAIM,
		kmem.KmallocAccounted:   bpf.KmemleakKmallocFamilyKMALLOC_FAMILY_CGROUP,
		kmem.KmallocLarge:       bpf.KmemleakKmallocFamilyKMALLOC_FAMILY_LARGE,
	}
	bpfContexts = map[kmem.Context]bpf.KmemleakRunContext{
		kmem.InTask:    bpf.KmemleakRunContextCONTEXT_TASK,
		kmem.InKthread: bpf.KmemleakRunContextCONTEXT_KTHREAD,
		kmem.InSoftirq: bpf.KmemleakRunContextCONTEXT_SOFTIRQ,
		kmem.InIRQ:     bpf.KmemleakRunContextCONTEXT_IRQ,
	}
)

// Decoding tables, indexed by the probes' values: a scan decodes millions
// of objects.
var (
	allocatorOf = invert(bpfAllocators, bpf.KmemleakAllocatorALLOCATOR_COUNT)
	familyOf    = invert(bpfKmallocFamilies, bpf.KmemleakKmallocFamilyKMALLOC_FAMILY_LARGE+1)
	contextOf   = invert(bpfContexts, bpf.KmemleakRunContextCONTEXT_IRQ+1)
)

func invert[D comparable, B ~uint32](m map[D]B, n B) []D {
	out := make([]D, n)
	for d, b := range m {
		out[b] = d
	}
	return out
}
