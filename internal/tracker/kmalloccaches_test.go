//go:build linux && (amd64 || arm64)

package tracker

import (
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kmemleak/kmemleakreceiver/internal/churn"
	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/slabinfo"
)

// Every kmalloc cache the probes name is one the kernel has. The
// tracepoints report the size class; in kprobe mode the probe works it out
// from the requested size, which takes the kernel's smallest kmalloc cache
// (kmalloc-128 on arm64 before Linux 6.5, where kmalloc is aligned for DMA,
// and then no kmalloc-96 or kmalloc-192 either).
func TestIntegrationKmallocCachesExistInTheKernel(t *testing.T) {
	kerneltest.RequireBPF(t)
	kernel, err := slabinfo.Read(slabinfo.Path)
	require.NoError(t, err)
	for _, mode := range kmem.AttachModes {
		t.Run(string(mode), func(t *testing.T) {
			tr, err := Open(Options{
				Allocators: []kmem.Allocator{kmem.Kmalloc}, Mode: mode, MaxObjects: 1 << 18, MaxSize: ^uint32(0),
				Stacks: StackOptions{Depth: 1}, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
			})
			if err != nil {
				if strings.Contains(err.Error(), VoidArgRefused) || mode == kmem.ModeKprobe && !kerneltest.HasKprobes() {
					t.Skipf("attach: %s on this kernel: %v", mode, err)
				}
				require.NoError(t, err)
			}
			defer tr.Close()

			stop := make(chan struct{})
			done := make(chan error, 1)
			var rounds atomic.Int64
			go func() { done <- churn.Run(stop, &rounds) }()
			time.Sleep(2 * time.Second)
			close(stop)
			require.NoError(t, <-done)

			snap := scan(t, tr)
			named := map[string]int{}
			missing := map[string]int{}
			for key, g := range snap.Groups() {
				if key.Cache.IsKmallocLarge() {
					continue
				}
				name := snap.CacheName(key.Cache)
				named[name] += int(g.Objects)
				if _, ok := kernel[name]; !ok {
					missing[name] += int(g.Objects)
				}
			}
			t.Logf("%d churn rounds, %d objects in %d kmalloc caches", rounds.Load(), snap.Objects(), len(named))
			require.NotEmpty(t, named, "no kmalloc object tracked: the test shows nothing")
			assert.Empty(t, missing, "objects named after caches the kernel does not have (it has %v)", kmallocNames(kernel))
		})
	}
}

func kmallocNames(kernel map[string]int64) []string {
	var names []string
	for name := range kernel {
		if strings.Contains(name, "kmalloc") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}
