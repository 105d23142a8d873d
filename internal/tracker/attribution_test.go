//go:build linux && (amd64 || arm64)

package tracker

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/ksym"
	"github.com/kmemleak/kmemleakreceiver/internal/livetable"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
)

func openAttributing(t *testing.T) *Tracker {
	t.Helper()
	tr, err := Open(Options{
		Allocators: []kmem.Allocator{kmem.Slab, kmem.Kmalloc}, Mode: kmem.ModeAuto, MaxObjects: 1 << 18, MaxSize: ^uint32(0),
		Stacks: StackOptions{Depth: 1}, Attribution: true, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	require.NoError(t, err)
	t.Cleanup(func() { tr.Close() })
	return tr
}

// ownersAt returns the owners of the live objects allocated in a function
// whose name contains fn, with how many objects each has.
func ownersAt(t *testing.T, tr *Tracker, fn string) map[kmem.Owner]int {
	t.Helper()
	sym, err := ksym.New("/proc/kallsyms", "/proc/modules")
	require.NoError(t, err)
	out := map[kmem.Owner]int{}
	walkTracked(tr, func(o *livetable.Object) {
		var obj kmem.Object
		if s, ok := sym.Resolve(o.CallSite); ok && strings.Contains(s.Name, fn) && (&scanState{}).decode(o.Key, &o.KmemleakObject, &obj) {
			out[obj.Owner]++
		}
	})
	return out
}

// ownCgroupInode is the inode number of this process's cgroup v2 directory.
func ownCgroupInode(t *testing.T) uint32 {
	t.Helper()
	root, err := owner.CgroupRoot("/proc/self/mountinfo")
	require.NoError(t, err)
	if root == "" {
		t.Skip("no cgroup v2 hierarchy is mounted")
	}
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(filepath.Join(root, kerneltest.OwnCgroup(t)), &st))
	return uint32(st.Ino)
}

func TestIntegrationAttributionRecordsTheTaskAndItsCgroup(t *testing.T) {
	kerneltest.RequireBPF(t)
	tr := openAttributing(t)
	kerneltest.OpenPipes(t, 100)
	owners := ownersAt(t, tr, "alloc_pipe_info")
	want := kmem.Owner{Context: kmem.InTask, Tgid: uint32(os.Getpid()), Cgroup: ownCgroupInode(t)}
	assert.GreaterOrEqual(t, owners[want], 100, "owners of the pipes: %v", owners)
}

func TestIntegrationAttributionRecordsProcessExits(t *testing.T) {
	kerneltest.RequireBPF(t)
	tr := openAttributing(t)
	cmd := exec.Command("sleep", "0.05")
	require.NoError(t, cmd.Run())
	exits, err := tr.Exits()
	require.NoError(t, err)
	var found []kmem.Exit
	for _, e := range exits {
		if e.Tgid == uint32(cmd.Process.Pid) {
			found = append(found, e)
		}
	}
	require.Len(t, found, 1, "exits: %v", exits)
	assert.Equal(t, "sleep", found[0].Name)
	assert.Greater(t, found[0].ExitNs, found[0].StartNs+uint64(40e6), "sleep 0.05 lived 50 ms")
	again, err := tr.Exits()
	require.NoError(t, err)
	for _, e := range again {
		assert.NotEqual(t, uint32(cmd.Process.Pid), e.Tgid, "an exit is returned once")
	}
}

// Loopback TCP: each accepted socket is cloned from the listener in the
// softirq that receives the handshake's last ACK, on whatever task that
// softirq ran; the connecting sockets (and the listener) are made by the
// test's own system calls. All of them come from sk_prot_alloc.
func TestIntegrationAttributionTellsSoftirqs(t *testing.T) {
	kerneltest.RequireBPF(t)
	tr := openAttributing(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	const n = 50
	kerneltest.Connect(t, ln, n)
	socks := ownersAt(t, tr, "sk_prot_alloc")
	t.Logf("owners of sockets: %v", socks)
	var ours int
	for o, count := range socks {
		if o.Tgid == uint32(os.Getpid()) {
			ours += count
		}
	}
	assert.GreaterOrEqual(t, socks[kmem.Owner{Context: kmem.InSoftirq}], n, "the accepted sockets were not seen made in softirq context")
	assert.GreaterOrEqual(t, ours, n+1, "the connecting sockets and the listener are the test's")
	assert.Less(t, ours, 2*n, "the accepted sockets were charged to the test process")
}
