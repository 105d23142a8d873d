//go:build linux && (amd64 || arm64)

package tracker

import (
	"os"
	"path/filepath"
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
	hooked := phantomsLeft(t, sym, kmem.Kmalloc, false, openAndCloseTimerfds, "timerfd_create")
	unhooked := phantomsLeft(t, sym, kmem.Kmalloc, true, openAndCloseTimerfds, "timerfd_create")
	t.Logf("of %d closed timerfds, %d contexts stay tracked with kmem_cache_free_bulk hooked, %d without", rcuFreed, hooked, unhooked)
	assert.LessOrEqual(t, hooked, int64(rcuFreed/20), "closed timerfds stay tracked with the hook")
	assert.GreaterOrEqual(t, unhooked, int64(rcuFreed/2), "the hook made no difference: does this kernel trace kfree_rcu's frees?")
}

// A file lease's fasync entry, a slab object, is freed with kfree_rcu
// when the lease is released, and no free tracepoint fires for it on Linux
// 6.18 either: where the kernel has no kprobes, the tracker reads the
// batches as the workqueue frees them (rcu_batch_free), and released
// leases leave nothing behind.
func TestIntegrationReleasedLeasesLeaveNoPhantoms(t *testing.T) {
	kerneltest.RequireBPF(t)
	sym, err := ksym.New("/proc/kallsyms", "/proc/modules")
	require.NoError(t, err)
	leases := func(t *testing.T) { takeAndReleaseLeases(t, filepath.Join(t.TempDir(), "leased")) }
	followed := phantomsLeft(t, sym, kmem.Slab, false, leases, "fcntl_setlease")
	unfollowed := phantomsLeft(t, sym, kmem.Slab, true, leases, "fcntl_setlease")
	t.Logf("of %d leases taken and released, %d fasync entries stay tracked following the kfree_rcu batches, %d without", rcuFreed, followed, unfollowed)
	assert.LessOrEqual(t, followed, int64(rcuFreed/20), "released leases stay tracked")
	assert.GreaterOrEqual(t, unfollowed, int64(rcuFreed/2), "following the batches made no difference: does this kernel trace kfree_rcu's frees?")
}

// rcuFreed is how many objects each workload has freed with kfree_rcu.
const rcuFreed = 2000

func openAndCloseTimerfds(t *testing.T) {
	fds := make([]int, rcuFreed)
	for i := range fds {
		var err error
		fds[i], err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
		require.NoError(t, err)
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// takeAndReleaseLeases takes a read lease on a file and releases it, which
// allocates an fasync entry and frees it with kfree_rcu.
func takeAndReleaseLeases(t *testing.T, path string) {
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	for range rcuFreed {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_RDLCK)
		require.NoError(t, err, "taking a read lease")
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK)
		require.NoError(t, err, "releasing the lease")
		unix.Close(fd)
	}
}

// phantomsLeft runs a workload that frees its objects with kfree_rcu under
// a tracker of allocator a, and counts the objects allocated at callSite
// it still holds once RCU has had time to free them.
func phantomsLeft(t *testing.T, sym *ksym.Kallsyms, a kmem.Allocator, ignoreBulkFrees bool, workload func(*testing.T), callSite string) (left int64) {
	tr, err := Open(Options{
		Allocators: []kmem.Allocator{a}, Mode: kmem.ModeAuto, MaxObjects: 1 << 20, MaxSize: ^uint32(0),
		Stacks: StackOptions{Depth: 1}, IgnoreBulkFrees: ignoreBulkFrees, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	require.NoError(t, err)
	defer tr.Close()
	require.Equal(t, !ignoreBulkFrees, tr.FollowsRCUBatches())

	workload(t)
	// kfree_rcu batches for up to 5 s, then waits a grace period.
	time.Sleep(10 * time.Second)

	for key, g := range scan(t, tr).Groups() {
		if s, ok := sym.Resolve(key.CallSite); ok && strings.Contains(s.Name, callSite) {
			left += g.Objects
		}
	}
	return left
}
