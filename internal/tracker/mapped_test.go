//go:build linux && (amd64 || arm64)

package tracker

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

// The live tables and the young area are mapped into the process, and
// Close unmaps them at once: a mapping left for the garbage collector to
// unmap would keep its map, its BTF and its file allocated for a random
// while (objects the probes of a receiver track, and saw vanish in the
// middle of a test).
func TestIntegrationCloseUnmapsTheLiveTables(t *testing.T) {
	kerneltest.RequireBPF(t)
	tr, err := Open(Options{
		Allocators: kmem.Allocators, Mode: kmem.ModeAuto, MaxObjects: 1 << 16, MaxSize: ^uint32(0),
		Stacks: StackOptions{Depth: 1}, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	require.NoError(t, err)
	assert.Len(t, bpfMappings(t), 4, "one mapping per live table (objects, pages, percpu) and the young area")
	require.NoError(t, tr.Close())
	assert.Empty(t, bpfMappings(t))
}

func bpfMappings(t *testing.T) []string {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	require.NoError(t, err)
	var out []string
	for _, l := range strings.Split(string(maps), "\n") {
		if strings.Contains(l, "bpf-map") {
			out = append(out, l)
		}
	}
	return out
}
