//go:build linux && (amd64 || arm64)

package tracker

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// SLUB's sysfs directory with caches of these object and slab sizes.
func slabSysfs(t *testing.T, caches map[string][2]uint32) string {
	dir := t.TempDir()
	for name, sizes := range caches {
		require.NoError(t, os.Mkdir(filepath.Join(dir, name), 0o755))
		for i, file := range []string{"object_size", "slab_size"} {
			require.NoError(t, os.WriteFile(filepath.Join(dir, name, file), fmt.Appendf(nil, "%d\n", sizes[i]), 0o444))
		}
	}
	return dir
}

func TestKmallocSizes(t *testing.T) {
	// Without debug metadata every slab size is its object size: no table.
	plain := slabSysfs(t, map[string][2]uint32{"kmalloc-8": {8, 8}, "kmalloc-192": {192, 192}, "kmalloc-8k": {8192, 8192}})
	assert.Nil(t, readKmallocSizes(plain))

	// slub_debug=U, as Debian's 6.1 showed it: kmalloc-192 reported as
	// 264 bytes. Other families' names and other caches do not count.
	debug := readKmallocSizes(slabSysfs(t, map[string][2]uint32{
		"kmalloc-16": {16, 96}, "kmalloc-192": {192, 264}, "kmalloc-1k": {1024, 1160},
		"kmalloc-cg-64": {64, 136}, "dentry": {192, 344},
	}))
	require.NotNil(t, debug)
	for bytes, want := range map[uint32]uint32{96: 16, 264: 192, 1160: 1024, 136: 136, 344: 344, 192: 192, 8200: 8200, 97: 97} {
		assert.Equal(t, want, debug.objectSize(bytes), "reported as %d", bytes)
	}
	assert.Equal(t, uint32(264), debug.slabSize(192))
	assert.Equal(t, uint32(64), debug.slabSize(64), "no cache of that object size here")

	// A slab size two caches share (debug on some caches only): neither
	// is renamed.
	assert.Nil(t, readKmallocSizes(slabSysfs(t, map[string][2]uint32{"kmalloc-16": {16, 96}, "kmalloc-96": {96, 96}})))
	assert.Nil(t, readKmallocSizes(filepath.Join(t.TempDir(), "missing")))
}
