// Package bookkeeping names the call sites where the kernel's allocators
// allocate for themselves: the per-slab vectors of accounted caches, SLUB's
// sheaves, vmalloc's area descriptors. Their count follows how much memory
// the allocators manage for everyone else, so they rise whenever any cache
// does; a leak that makes them rise is seen at its own call site. And the
// caches of freed objects that sit between an allocator and its users
// (the block layer's per-CPU bio caches): their objects stay allocated
// while they wait to be handed out again.
package bookkeeping

// sites are the allocators' own call sites, by function, with what they
// allocate.
var sites = map[string]string{
	// A slab's vector of per-object extensions (memcg, allocation
	// profiling), one per slab of an accounted cache: Linux 6.10 on.
	"alloc_slab_obj_exts": "per-slab extension vectors",
	// The same before 6.10.
	"memcg_alloc_slab_cgroups": "per-slab cgroup vectors",
	// SLUB's per-CPU sheaves of free objects (Linux 6.18 on).
	"alloc_empty_sheaf":   "SLUB sheaves",
	"__alloc_empty_sheaf": "SLUB sheaves",
	// vmalloc's descriptor of each area it hands out (task stacks, BPF,
	// modules), kept in pools for reuse.
	"alloc_vmap_area": "vmalloc area descriptors",
	// A bio set's per-CPU cache keeps up to 256 freed bios a CPU and hands
	// them out again without the slab allocator: each stays allocated
	// from the slab's point of view, as old as its first allocation
	// (bpftrace on Linux 6.18 counted 508 live bios on 2 CPUs, in bursts
	// of writeback, none older elsewhere). Suite run 13 called the bios of
	// an fsync'ed log leaking at 1 a minute as the caches filled.
	"bio_alloc_bioset": "per-CPU caches of freed bios, up to 256 a CPU",
}

// Of reports what a call site's function allocates for its allocator, or
// "" when it is not an allocator's own.
func Of(function string) string { return sites[function] }
