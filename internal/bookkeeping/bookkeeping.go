// Package bookkeeping names the call sites where the kernel's allocators
// allocate for themselves: the per-slab vectors of accounted caches, SLUB's
// sheaves, vmalloc's area descriptors. Their count follows how much memory
// the allocators manage for everyone else, so they rise whenever any cache
// does; a leak that makes them rise is seen at its own call site.
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
}

// Of reports what a call site's function allocates for its allocator, or
// "" when it is not an allocator's own.
func Of(function string) string { return sites[function] }
