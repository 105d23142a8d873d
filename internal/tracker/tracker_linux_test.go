//go:build linux

package tracker

import (
	"os"
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

func TestProbeScratch(t *testing.T) {
	for _, mode := range AttachModes {
		t.Run(string(mode), func(t *testing.T) {
			tr, err := Open(Options{Allocators: Allocators, Mode: mode, MaxObjects: 1 << 20, Logger: zap.NewExample()})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			var fds [][2]int
			for range 2000 {
				var p [2]int
				if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
					t.Fatal(err)
				}
				fds = append(fds, p)
			}
			var s Snapshot
			if err := tr.Scan(&s); err != nil {
				t.Fatal(err)
			}
			counts := map[[2]uint64]int{}
			for _, o := range s.Objects {
				counts[[2]uint64{o.CallSite, uint64(o.Allocator)}]++
			}
			for k, c := range counts {
				if c >= 1900 {
					t.Logf("callsite %x alloc %d count %d", k[0], k[1], c)
				}
			}
			t.Logf("objects %d counters %+v caches %d", len(s.Objects), s.Counters, len(s.CacheNames))
			for _, p := range fds {
				unix.Close(p[0])
				unix.Close(p[1])
			}
			_ = os.Stdout
		})
	}
}
