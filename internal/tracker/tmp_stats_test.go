//go:build linux && (amd64 || arm64)

package tracker

import (
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

func TestTmpProgramCosts(t *testing.T) {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	for _, rate := range []uint32{1, 100} {
		tr, err := Open(Options{Allocators: []kmem.Allocator{kmem.Slab, kmem.Kmalloc}, Mode: kmem.ModeTPBTF, MaxObjects: 1_000_000, SampleRate: rate, MaxSize: ^uint32(0), Stacks: StackOptions{Depth: 32}, IgnoreTgid: 1 << 30, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for range 200000 {
			var p [2]int
			unix.Pipe(p[:])
			unix.Close(p[0])
			unix.Close(p[1])
			fd, _ := unix.Open("/dev/null", unix.O_RDONLY, 0)
			unix.Close(fd)
		}
		fmt.Println("rate", rate, "loop", time.Since(start))
		for a, at := range tr.attached {
			for _, p := range at.programs {
				s, _ := p.Stats()
				info, _ := p.Info()
				if s.RunCount > 0 {
					fmt.Printf("  %s %-24s runs %9d  %6.1f ns/run\n", a, info.Name, s.RunCount, float64(s.Runtime.Nanoseconds())/float64(s.RunCount))
				}
			}
		}
		tr.Close()
	}
}
