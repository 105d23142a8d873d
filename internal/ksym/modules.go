package ksym

import (
	"bytes"
	"cmp"
	"slices"
	"sort"
	"strconv"
)

// loadedModules are the core memory ranges of the loaded modules, from
// /proc/modules: a module's text lies in its range, and no other module's
// live text does.
//
// They are needed because kallsyms names freed module text: once a
// module's init functions have run and their memory is freed, ftrace keeps
// listing them ("T" symbols of the module, after every module's own) until
// the module is unloaded, so that traces of init code can still be named.
// The next module loaded can take that memory, and its functions then share
// addresses with the stale names, or lie just past one. On Debian's 6.1,
// kmltest loaded after kmlpad (kernels/kmltest) had kmltest_leak_one
// (t [kmltest]) at the address kallsyms still gave kmlpad_init
// (T [kmlpad]), and the global symbol won: the leak was named
// kmlpad_init+0x1d [kmlpad]. On 6.12, kmltest_keep_recent+0x1c came out
// as kmlpad_init+0x1c [kmlpad].
type loadedModules struct {
	byName map[string]moduleRange
	// sorted by start; maxEnd[i] is the greatest end of sorted[:i+1].
	sorted []moduleRange
	maxEnd []uint64
}

type moduleRange struct{ start, end uint64 }

// parseModules reads /proc/modules lines ("name size refcount deps state
// addr [taint]"). Modules whose address is hidden (0, kptr_restrict) or
// whose line does not parse are left out: their symbols are kept as they
// are.
func parseModules(data []byte) loadedModules {
	m := loadedModules{byName: map[string]moduleRange{}}
	for line := range bytes.Lines(data) {
		f := bytes.Fields(line)
		if len(f) < 6 {
			continue
		}
		size, err := strconv.ParseUint(string(f[1]), 10, 64)
		if err != nil {
			continue
		}
		addr, err := strconv.ParseUint(string(f[5]), 0, 64)
		if err != nil || addr == 0 || addr+size < addr {
			continue
		}
		r := moduleRange{addr, addr + size}
		m.byName[string(f[0])] = r
		m.sorted = append(m.sorted, r)
	}
	slices.SortFunc(m.sorted, func(a, b moduleRange) int { return cmp.Compare(a.start, b.start) })
	var end uint64
	for _, r := range m.sorted {
		end = max(end, r.end)
		m.maxEnd = append(m.maxEnd, end)
	}
	return m
}

// stale reports whether a symbol of module at addr names memory another
// module holds now: the module is loaded, and addr is outside its range
// and inside another's. Symbols of modules not listed (the [bpf] and
// [__builtin__*] pseudo-modules, or a module loaded after /proc/modules
// was read) are never stale; nor are names of freed init text that no
// module has taken, which still name the objects that init code allocated.
func (m loadedModules) stale(module []byte, addr uint64) bool {
	own, loaded := m.byName[string(module)]
	if !loaded || (own.start <= addr && addr < own.end) {
		return false
	}
	// The ranges that start at or below addr; one of them holds it if the
	// greatest end among them is past it.
	i := sort.Search(len(m.sorted), func(i int) bool { return m.sorted[i].start > addr })
	return i > 0 && m.maxEnd[i-1] > addr
}
