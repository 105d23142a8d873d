// Package cgroups counts the cgroups the kernel keeps, and tells the call
// sites that make their structures. A cgroup's structures (its struct
// cgroup and kernfs files, each controller's state, its pressure and
// shrinker state, its memory's list_lru heads) live as long as it does,
// dying included; a container host makes cgroups all day, from processes
// (runc, systemd) that exit at once, and their structures outlive their
// allocators as a leak's do.
package cgroups

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// makers are functions on whose path a cgroup's structures are made: its
// creation (the mkdir in a cgroup filesystem), a controller enabled on it,
// and what memory cgroups add as they are first charged.
var makers = []string{
	"cgroup_mkdir", "cgroup_create", "css_create", "cgroup_apply_control_enable",
	"psi_cgroup_alloc", "alloc_shrinker_info", "memcg_list_lru_alloc",
}

// ForAllocator reports whether a call site's structures belong to the cgroup
// of the task that allocates them: a memory cgroup's list_lru heads, one
// per cgroup and list_lru (a filesystem's dentries and inodes, ...), made
// the first time its tasks put an object on that list and freed when the
// cgroup goes offline. A cgroup whose tasks run is online: while the
// allocators live, such structures are bounded by the cgroup's reach,
// whether or not the count of cgroups rises.
func ForAllocator(callSite string) bool {
	return callSite == "memcg_list_lru_alloc"
}

// Made reports whether functions, a call site's and then its callers',
// are those of a cgroup's making. A controller's own state is allocated by
// its css_alloc and css_online callbacks, found by name.
func Made(functions []string) bool {
	return slices.ContainsFunc(functions, func(f string) bool {
		return slices.Contains(makers, f) || strings.HasSuffix(f, "_css_alloc") || strings.HasSuffix(f, "_css_online")
	})
}

// Count reads /proc/cgroups: the cgroups of every hierarchy, each hierarchy
// once (cgroup v2's controllers all share hierarchy 0), dying cgroups
// included until the kernel frees them.
func Count(r io.Reader) (int64, error) {
	seen := map[string]bool{}
	var n int64
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 4 {
			return 0, fmt.Errorf("cgroups: a line of /proc/cgroups is not subsys_name, hierarchy, num_cgroups, enabled: %q", line)
		}
		if seen[fields[1]] || fields[3] != "1" {
			continue
		}
		count, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cgroups: num_cgroups of %s: %w", fields[0], err)
		}
		seen[fields[1]] = true
		n += count
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("cgroups: reading /proc/cgroups: %w", err)
	}
	return n, nil
}
