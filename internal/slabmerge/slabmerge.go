// Package slabmerge says which slab cache names SLUB merged into one cache.
// SLUB merges a new cache into an existing one of the same size and flags:
// the kmem_cache keeps the first one's name, which is the name the probes
// read and /proc/slabinfo lists, so inet_bind2_bucket_create's objects
// show up in eventpoll_epi. In /sys/kernel/slab every name of a mergeable
// cache is a symlink to one directory named by its size and flags
// (eventpoll_epi, fib6_node, tcp_bind2_bucket and tcp_bind_bucket ->
// :A-0000128), whose aliases file counts the names merged in.
package slabmerge

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
)

// Names finds the names that share a cache. It lists the directory only
// when a cache's count of aliases changed since it last did (a module that
// creates a cache loaded or unloaded), so asking once per cache a scan costs
// one small read.
type Names struct {
	dir   string
	known map[string]merged
}

type merged struct {
	aliases []byte // the aliases file when names was read
	names   []string
}

// New reads cache names from dir (/sys/kernel/slab).
func New(dir string) *Names {
	return &Names{dir: dir, known: map[string]merged{}}
}

// Of returns every name the cache called name is known by, sorted, name
// among them, when SLUB merged other caches into it; nil when it merged
// none, or sysfs cannot say (no such cache, as for the probes' slab-N, or
// no sysfs).
func (n *Names) Of(name string) []string {
	entry := filepath.Join(n.dir, name)
	aliases, err := os.ReadFile(filepath.Join(entry, "aliases"))
	if err != nil || bytes.Equal(bytes.TrimSpace(aliases), []byte("0")) {
		delete(n.known, name)
		return nil
	}
	if m, ok := n.known[name]; ok && bytes.Equal(m.aliases, aliases) {
		return m.names
	}
	names := n.sharing(entry)
	n.known[name] = merged{aliases: aliases, names: names}
	return names
}

// sharing lists the names whose symlinks point where entry's does.
func (n *Names) sharing(entry string) []string {
	target, err := os.Readlink(entry)
	if err != nil {
		return nil
	}
	entries, err := os.ReadDir(n.dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if e.Type()&os.ModeSymlink == 0 {
			continue
		}
		if t, err := os.Readlink(filepath.Join(n.dir, e.Name())); err == nil && t == target {
			names = append(names, e.Name())
		}
	}
	if len(names) < 2 {
		return nil
	}
	slices.Sort(names)
	return names
}
