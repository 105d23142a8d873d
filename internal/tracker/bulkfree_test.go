//go:build linux && (amd64 || arm64)

package tracker

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/ksym"
)

// timerfd contexts are freed with kfree_rcu, whose batches end in
// kfree_bulk: on Linux 6.1 no free tracepoint fires for them. With
// kmem_cache_free_bulk hooked, closed timerfds vanish from the tracker;
// without, they stay as phantoms.
func TestIntegrationBulkFreeHookSeesKfreeRCU(t *testing.T) {
	kerneltest.RequireBPF(t)
	if !kerneltest.HasKprobes() {
		t.Skip("needs kprobes to hook kmem_cache_free_bulk, and this kernel has none (CONFIG_KPROBES off); " +
			"here kfree_rcu's frees show in the kfree tracepoint (Linux 6.18 does), see TestIntegrationNoPhantomLeaksFromUntracedFrees")
	}
	sym, err := ksym.New("/proc/kallsyms", "/proc/modules")
	require.NoError(t, err)
	hooked := closedTimerfdsLeft(t, sym, false)
	unhooked := closedTimerfdsLeft(t, sym, true)
	t.Logf("of %d closed timerfds, %d contexts stay tracked with kmem_cache_free_bulk hooked, %d without", timerfds, hooked, unhooked)
	assert.LessOrEqual(t, hooked, int64(timerfds/20), "closed timerfds stay tracked with the hook")
	assert.GreaterOrEqual(t, unhooked, int64(timerfds/2), "the hook made no difference: does this kernel trace kfree_rcu's frees?")
}

const timerfds = 2000

// closedTimerfdsLeft opens and closes timerfds under a kmalloc tracker and
// counts the contexts it still holds once RCU has had time to free them.
func closedTimerfdsLeft(t *testing.T, sym *ksym.Symbolizer, ignoreBulkFrees bool) (left int64) {
	tr, err := Open(Options{
		Allocators: []kmem.Allocator{kmem.Kmalloc}, Mode: kmem.ModeAuto, MaxObjects: 1 << 20, MaxSize: ^uint32(0),
		Stacks: StackOptions{Depth: 1}, IgnoreBulkFrees: ignoreBulkFrees, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	require.NoError(t, err)
	defer tr.Close()
	require.Equal(t, !ignoreBulkFrees, tr.FollowsBulkFrees())

	fds := make([]int, timerfds)
	for i := range fds {
		fds[i], err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
		require.NoError(t, err)
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	// kfree_rcu batches for up to 5 s, then waits a grace period.
	time.Sleep(10 * time.Second)

	for key, g := range scan(t, tr).Groups() {
		if s, ok := sym.Resolve(key.CallSite); ok && strings.Contains(s.Name, "timerfd_create") {
			left += g.Objects
		}
	}
	return left
}
