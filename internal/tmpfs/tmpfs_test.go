//go:build linux

package tmpfs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/mountinfo"
)

// A tmpfs mounted twice counts once; its files count, other filesystems'
// do not.
func TestFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	require.NoError(t, unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	mounts := []mountinfo.Mount{
		{Device: "0:99", Point: dir, FSType: "tmpfs"},
		{Device: "0:99", Point: dir, FSType: "tmpfs"},
		{Device: "8:1", Point: "/", FSType: "ext4"},
	}
	before, err := Files(mounts)
	require.NoError(t, err)
	for i := range 5 {
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), nil, 0o600))
	}
	after, err := Files(mounts)
	require.NoError(t, err)
	assert.Equal(t, int64(5), after-before)

	_, err = Files([]mountinfo.Mount{{Device: "0:98", Point: filepath.Join(dir, "none"), FSType: "tmpfs"}})
	assert.ErrorContains(t, err, "statfs")
}

func TestFilesHere(t *testing.T) {
	mounts, err := mountinfo.Read(mountinfo.Path)
	require.NoError(t, err)
	_, err = Files(mounts)
	assert.NoError(t, err)
}
