package reclaim

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReclaimable(t *testing.T) {
	c := NewCaches("testdata/slab")
	assert.True(t, c.Reclaimable("dentry"))
	assert.True(t, c.Reclaimable(":a-0000192"), "an alias of a merged cache")
	assert.False(t, c.Reclaimable("pid"))
	assert.False(t, c.Reclaimable("kmalloc-64"), "no entry")
	assert.True(t, c.Reclaimable("kmalloc-rcl-64"), "no entry, but the name says it")
	assert.False(t, c.Reclaimable("lsm_inode_cache"), "the flag says no")
	assert.Equal(t, "inodes' security blobs", Companion([]string{"security_inode_alloc"}))
	assert.Equal(t, "inodes' cached symlink targets", Companion([]string{"kmemdup_nul", "ext4_cache_fast_symlink", "ext4_symlink"}))
	assert.Empty(t, Companion([]string{"kmemdup_nul", "kernfs_new_node"}), "a copier's caller speaks for it")
	assert.Empty(t, Companion([]string{"alloc_pipe_info", "security_inode_alloc"}), "only a copier's caller")
	assert.Empty(t, Companion(nil))
}

func TestReadVMStat(t *testing.T) {
	c, err := ReadVMStat("testdata/vmstat")
	require.NoError(t, err)
	assert.Equal(t, Counters{SlabsScanned: 4567, DropSlab: 2}, c)

	bad := filepath.Join(t.TempDir(), "vmstat")
	require.NoError(t, os.WriteFile(bad, []byte("slabs_scanned x\n"), 0o600))
	_, err = ReadVMStat(bad)
	assert.ErrorContains(t, err, "slabs_scanned")
	require.NoError(t, os.WriteFile(bad, []byte("nr_free_pages 1\n"), 0o600))
	_, err = ReadVMStat(bad)
	assert.ErrorContains(t, err, "no slabs_scanned")
	_, err = ReadVMStat(filepath.Join(t.TempDir(), "none"))
	assert.Error(t, err)
}

// This kernel's own: dentries are reclaimed, pids are not.
func TestReclaimableHere(t *testing.T) {
	if _, err := os.Stat(SlabDir); err != nil {
		t.Skip("no", SlabDir)
	}
	c := NewCaches(SlabDir)
	assert.True(t, c.Reclaimable("dentry"))
	assert.False(t, c.Reclaimable("pid"))
	_, err := ReadVMStat(VMStatPath)
	assert.NoError(t, err)
}
