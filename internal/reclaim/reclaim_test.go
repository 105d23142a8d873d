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
	assert.Equal(t, "inodes' security blobs", Companion("security_inode_alloc"))
	assert.Empty(t, Companion("alloc_pipe_info"))
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
