// Package damon tells DAMON's monitoring regions from a leak. DAMON, the
// kernel's data access monitor, runs kdamond threads that a platform
// starts through its sysfs interface (proactive reclaim, free page
// reporting) or its modules; each splits the memory it watches into
// regions, splitting and merging them as it learns, up to max_nr_regions
// per monitored target. Its regions rise for as long as it refines its
// view: in the 2-hour suite run, kdamond.0 on this machine's host-set
// kdamond (paddr, 1,024 to 8,192 regions) was called leaking at 13.6
// regions a minute.
package damon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Made reports whether a call site, by its function, is DAMON's: every
// structure DAMON allocates (regions, targets, schemes) is allocated in
// its core, whose functions are damon_*.
func Made(callSite string) bool { return strings.HasPrefix(callSite, "damon_") }

// Kdamonds is where DAMON's sysfs interface lists its kdamonds.
const Kdamonds = "/sys/kernel/mm/damon/admin/kdamonds"

// Bound is the most regions the kdamonds under dir that are on may keep:
// for each context, max_nr_regions for each of its targets. 0 without
// DAMON's sysfs interface (a kernel without CONFIG_DAMON_SYSFS, or none
// started through it).
func Bound(dir string) (int64, error) {
	contexts, err := filepath.Glob(filepath.Join(dir, "[0-9]*", "contexts", "[0-9]*"))
	if err != nil {
		return 0, err
	}
	var bound int64
	for _, ctx := range contexts {
		kdamond := filepath.Dir(filepath.Dir(ctx))
		state, err := os.ReadFile(filepath.Join(kdamond, "state"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // stopped and removed meanwhile
		}
		if err != nil {
			return 0, err
		}
		if strings.TrimSpace(string(state)) != "on" {
			continue
		}
		regions, err := readInt(filepath.Join(ctx, "monitoring_attrs", "nr_regions", "max"))
		if err != nil {
			return 0, err
		}
		targets, err := readInt(filepath.Join(ctx, "targets", "nr_targets"))
		if err != nil {
			return 0, err
		}
		bound += regions * targets
	}
	return bound, nil
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("damon: %s: %w", path, err)
	}
	return n, nil
}
