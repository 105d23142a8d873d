//go:build linux && (amd64 || arm64)

package tracker

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckPageSize(t *testing.T) {
	assert.NoError(t, checkPageSize(4096))
	// Debian's linux-image-*-arm64-16k kernels.
	assert.EqualError(t, checkPageSize(16384), "the kernel uses 16 KiB pages: the probes are built for 4 KiB pages, and would misreport page sizes and kmalloc caches")
	assert.Error(t, checkPageSize(65536))
}

func TestCheckKernelRelease(t *testing.T) {
	for _, ok := range []string{"5.12.0", "6.1.0-56-amd64", "6.12.107+deb12-arm64", "6.18.44-fc-v1045", "7.0"} {
		assert.NoError(t, checkKernelRelease(ok), ok)
	}
	assert.EqualError(t, checkKernelRelease("5.10.0-30-amd64"),
		"kernel 5.10.0-30-amd64 is older than Linux 5.12: the probes' live table needs BPF atomic operations on map values (compare-and-swap), which arrived in 5.12")
	assert.Error(t, checkKernelRelease("4.19.0"))
	assert.ErrorContains(t, checkKernelRelease("weird"), "cannot read the kernel version")
}

func TestKmallocMinSize(t *testing.T) {
	sysfs := func(t *testing.T, caches ...string) string {
		dir := t.TempDir()
		for _, c := range caches {
			require.NoError(t, os.Mkdir(filepath.Join(dir, c), 0o755))
		}
		return dir
	}
	slabinfo := func(t *testing.T, caches ...string) string {
		text := "slabinfo - version: 2.1\n# name <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n"
		for _, c := range caches {
			text += c + " 10 10 128 32 1 : tunables 0 0 0 : slabdata 1 1 0\n"
		}
		path := filepath.Join(t.TempDir(), "slabinfo")
		require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
		return path
	}
	missing := filepath.Join(t.TempDir(), "missing")

	// x86-64, and arm64 from 6.5: kmalloc-8 and up.
	assert.Equal(t, uint32(8), kmallocMinSize(sysfs(t, "kmalloc-16", "kmalloc-8", "kmalloc-96", "kmalloc-cg-8", "dentry"), missing))
	// arm64 before 6.5 (Debian's 6.1): aligned for DMA, kmalloc-128 first;
	// the other families' names do not count.
	assert.Equal(t, uint32(128), kmallocMinSize(sysfs(t, "kmalloc-rcl-8", "kmalloc-128", "kmalloc-256", "kmalloc-8k"), missing))
	// No SLUB sysfs: slabinfo says.
	assert.Equal(t, uint32(128), kmallocMinSize(missing, slabinfo(t, "kmalloc-128", "kmalloc-256")))
	// Neither: kmalloc's own minimum.
	assert.Equal(t, uint32(8), kmallocMinSize(missing, missing))
}
