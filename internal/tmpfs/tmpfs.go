//go:build linux

package tmpfs

import (
	"fmt"
	"math"

	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/mountinfo"
)

// Files is the inodes in use on every tmpfs of mounts, each filesystem
// once however many times it is mounted.
func Files(mounts []mountinfo.Mount) (int64, error) {
	var files int64
	seen := map[string]bool{}
	for _, m := range mounts {
		if m.FSType != "tmpfs" || seen[m.Device] {
			continue
		}
		seen[m.Device] = true
		var st unix.Statfs_t
		if err := unix.Statfs(m.Point, &st); err != nil {
			return 0, fmt.Errorf("statfs %s: %w", m.Point, err)
		}
		used := st.Files - min(st.Ffree, st.Files)
		files += int64(min(used, math.MaxInt64))
	}
	return files, nil
}
