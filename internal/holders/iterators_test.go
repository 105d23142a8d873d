//go:build linux && (amd64 || arm64)

package holders

import (
	"context"
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

// The iterators list this process, with its name and start, and the
// objects of the pipes it opens as its files.
func TestIntegrationHoldersListThisProcess(t *testing.T) {
	kerneltest.RequireBPF(t)
	it, err := Open()
	require.NoError(t, err)
	defer it.Close()
	count := func() (byTask, asFile int, p kmem.Process) {
		holds, err := it.Read()
		require.NoError(t, err)
		for _, h := range holds.Objects {
			if h.Tgid != uint32(os.Getpid()) {
				continue
			}
			switch h.Hold {
			case kmem.HeldByTask:
				byTask++
			case kmem.HeldAsFile:
				asFile++
			}
		}
		return byTask, asFile, holds.Processes[uint32(os.Getpid())]
	}
	byTask, before, p := count()
	assert.Greater(t, byTask, 20, "a Go process's task structures and mappings")
	comm, err := os.ReadFile("/proc/self/comm")
	require.NoError(t, err)
	assert.Equal(t, string(comm[:len(comm)-1]), p.Name)
	now, err := tracker.MonotonicNow()
	require.NoError(t, err)
	assert.Less(t, p.StartNs, now)

	pipes := kerneltest.OpenPipes(t, 100)
	defer kerneltest.ClosePipes(pipes)
	_, after, _ := count()
	// Per pipe: two files and their security blobs, the dentry and inode
	// they share, the pipe and its ring of buffers.
	t.Logf("held by 100 pipes: %d", after-before)
	assert.GreaterOrEqual(t, after-before, 800)
}

// A bound TCP socket holds its port's buckets (inet_bind_bucket, and
// inet_bind2_bucket where the kernel has it), which a bound UDP socket does
// not: a service's listening socket explains them.
func TestIntegrationHoldersListTheBucketsOfBoundPorts(t *testing.T) {
	kerneltest.RequireBPF(t)
	it, err := Open()
	require.NoError(t, err)
	defer it.Close()
	held := func() int {
		holds, err := it.Read()
		require.NoError(t, err)
		n := 0
		for _, h := range holds.Objects {
			if h.Tgid == uint32(os.Getpid()) && h.Hold == kmem.HeldAsFile {
				n++
			}
		}
		return n
	}
	const sockets = 20
	before := held()
	// Go listens with MPTCP by default, whose port is its subflow's.
	var tcpOnly net.ListenConfig
	tcpOnly.SetMultipathTCP(false)
	for range sockets {
		l, err := tcpOnly.Listen(context.Background(), "tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
	}
	tcp := held() - before
	before = held()
	for range sockets {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		defer c.Close()
	}
	udp := held() - before
	t.Logf("held by %d bound sockets: TCP %d, UDP %d", sockets, tcp, udp)
	assert.GreaterOrEqual(t, tcp-udp, sockets, "a bound TCP socket's port buckets are not listed")
}
