//go:build linux && (amd64 || arm64)

package tracker

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCheckPageSize(t *testing.T) {
	assert.NoError(t, checkPageSize(4096))
	// Debian's linux-image-*-arm64-16k kernels.
	assert.EqualError(t, checkPageSize(16384), "the kernel uses 16 KiB pages: the probes are built for 4 KiB pages, and would misreport page sizes and kmalloc caches")
	assert.Error(t, checkPageSize(65536))
}
