//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
)

// ownerSeries is what a scan reported of one owner (one resource): its
// attributes and its kmem.outstanding.objects by call-site function.
type ownerSeries struct {
	attrs      map[string]any
	byFunction map[string]int64
}

// byOwner reads a scan's outstanding objects per owner resource, keyed by
// kmem.context and process.pid ("task/1234", "softirq/0").
func byOwner(md pmetric.Metrics) map[string]ownerSeries {
	out := map[string]ownerSeries{}
	for _, rm := range md.ResourceMetrics().All() {
		attrs := rm.Resource().Attributes().AsRaw()
		ctx, ok := attrs["kmem.context"]
		if !ok {
			continue
		}
		pid, _ := attrs["process.pid"].(int64)
		key := fmt.Sprintf("%s/%d", ctx, pid)
		s, ok := out[key]
		if !ok {
			s = ownerSeries{attrs: attrs, byFunction: map[string]int64{}}
			out[key] = s
		}
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				if m.Name() != "kmem.outstanding.objects" {
					continue
				}
				for _, dp := range m.Gauge().DataPoints().All() {
					site, _ := dp.Attributes().Get("kmem.call_site")
					fn, _, _ := strings.Cut(site.Str(), "+")
					s.byFunction[fn] += dp.IntValue()
				}
			}
		}
	}
	return out
}

// The holder child: opens the pipes it is told to, says READY, then holds
// them until its stdin closes, or hands them to the parent over fd 3 and
// exits.
const holderEnv = "KMEMLEAK_TEST_HOLDER"

func runHolder(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv(holderEnv))
	require.NoError(t, err)
	var fds []int
	for range n {
		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], 0))
		fds = append(fds, p[0], p[1])
	}
	if os.Getenv("KMEMLEAK_TEST_HOLDER_HANDS_OVER") != "" {
		for chunk := range slices.Chunk(fds, 200) {
			require.NoError(t, unix.Sendmsg(3, []byte{0}, unix.UnixRights(chunk...), nil, 0))
		}
		fmt.Println("READY")
		return
	}
	fmt.Println("READY")
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// holder is a child process holding pipes.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	pid   int64
}

// startHolder runs the test binary as a holder of n pipes under the name
// name (a symlink: a process's comm is the name it was run by), in the
// cgroup cgroupFD if not -1; with handOver, over the socket, which it
// sends them to before it exits.
func startHolder(t *testing.T, dir, name string, n, cgroupFD int, handOver *os.File) *holder {
	t.Helper()
	bin := filepath.Join(dir, name)
	require.NoError(t, os.Symlink(os.Args[0], bin))
	cmd := exec.Command(bin, "-test.run=^TestIntegrationAttributionNamesProcessesCgroupsAndExits$")
	cmd.Env = append(os.Environ(), holderEnv+"="+strconv.Itoa(n))
	if handOver != nil {
		cmd.Env = append(cmd.Env, "KMEMLEAK_TEST_HOLDER_HANDS_OVER=1")
		cmd.ExtraFiles = []*os.File{handOver}
	}
	if cgroupFD >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgroupFD}
	}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	h := &holder{cmd: cmd, stdin: stdin, pid: int64(cmd.Process.Pid)}
	t.Cleanup(func() {
		h.stdin.Close()
		_ = h.cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "holder %s did not start", name)
	require.Equal(t, "READY\n", line)
	return h
}

// Two children in cgroups of their own, holding pipes, and a third in the
// test's cgroup that hands its pipes to the test and exits: each comes out
// as its own owner with its pid, name and cgroup, holding two objects per
// pipe at alloc_pipe_info (the pipe_inode_info and its buffers); the
// third keeps the name it had after it is gone.
func TestIntegrationAttributionNamesProcessesCgroupsAndExits(t *testing.T) {
	if os.Getenv(holderEnv) != "" {
		runHolder(t)
		return
	}
	kerneltest.RequireBPF(t)
	root, err := owner.CgroupRoot("/proc/self/mountinfo")
	require.NoError(t, err)
	if root == "" {
		t.Skip("no cgroup v2 hierarchy is mounted")
	}
	p := startReceiver(t, testConfig())

	dir := t.TempDir()
	pathA, fdA := kerneltest.Cgroup(t, root, fmt.Sprintf("kmemleak-test-%d-a", os.Getpid()))
	pathB, fdB := kerneltest.Cgroup(t, root, fmt.Sprintf("kmemleak-test-%d-b", os.Getpid()))
	socks, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	mine := os.NewFile(uintptr(socks[0]), "handover-parent")
	theirs := os.NewFile(uintptr(socks[1]), "handover-child")
	defer mine.Close()

	const nA, nB, nC = 300, 200, 100
	a := startHolder(t, dir, "holder-a", nA, fdA, nil)
	b := startHolder(t, dir, "holder-b", nB, fdB, nil)
	c := startHolder(t, dir, "holder-c", nC, -1, theirs)
	theirs.Close()
	require.NoError(t, c.cmd.Wait(), "holder-c hands its pipes over and exits")
	handed := receiveFDs(t, socks[0], 2*nC)
	defer func() {
		for _, fd := range handed {
			unix.Close(fd)
		}
	}()

	want := map[int64]struct {
		name, cgroup string
		pipes        int64
	}{
		a.pid: {"holder-a", pathA, nA},
		b.pid: {"holder-b", pathB, nB},
		c.pid: {"holder-c", kerneltest.OwnCgroup(t), nC},
	}
	md := waitForMetrics(t, p.metrics, "each holder's pipes are reported under its own process", func(md pmetric.Metrics) bool {
		owners := byOwner(md)
		for pid, w := range want {
			if owners[fmt.Sprintf("task/%d", pid)].byFunction["alloc_pipe_info"] != 2*w.pipes {
				return false
			}
		}
		return true
	})
	owners := byOwner(md)
	for pid, w := range want {
		s := owners[fmt.Sprintf("task/%d", pid)]
		assert.Equal(t, w.name, s.attrs["process.executable.name"], "pid %d", pid)
		assert.Equal(t, w.cgroup, s.attrs["process.linux.cgroup"], "pid %d", pid)
		assert.Equal(t, 2*w.pipes, s.byFunction["alloc_pipe_info"], "pid %d", pid)
		assert.NotContains(t, s.attrs, "container.id", "no container's cgroup")
	}
	mineNow := owners[fmt.Sprintf("task/%d", os.Getpid())].byFunction["alloc_pipe_info"]
	assert.Less(t, mineNow, int64(2*nC), "the handed-over pipes are holder-c's, not the test's that holds them")
}

// receiveFDs reads n file descriptors sent over the socket fd.
func receiveFDs(t *testing.T, fd, n int) []int {
	t.Helper()
	var fds []int
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(200*4))
	for len(fds) < n {
		_, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
		require.NoError(t, err)
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		require.NoError(t, err)
		for _, m := range msgs {
			got, err := unix.ParseUnixRights(&m)
			require.NoError(t, err)
			fds = append(fds, got...)
		}
	}
	return fds
}

// Loopback TCP: each accepted socket is cloned from the listener in the
// softirq that receives the handshake's last ACK; the receiver reports
// those under kmem.context softirq, not under the test's process, which
// made the connecting sockets.
func TestIntegrationAttributionSoftirqIsNotTheTestProcess(t *testing.T) {
	kerneltest.RequireBPF(t)
	p := startReceiver(t, testConfig())
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	const n = 200
	kerneltest.Connect(t, ln, n)
	self := fmt.Sprintf("task/%d", os.Getpid())
	md := waitForMetrics(t, p.metrics, "the accepted sockets are the softirq's", func(md pmetric.Metrics) bool {
		owners := byOwner(md)
		return owners["softirq/0"].byFunction["sk_prot_alloc"] >= n && owners[self].byFunction["sk_prot_alloc"] >= n
	})
	owners := byOwner(md)
	t.Logf("sockets: softirq %d, the test %d", owners["softirq/0"].byFunction["sk_prot_alloc"], owners[self].byFunction["sk_prot_alloc"])
	assert.Less(t, owners[self].byFunction["sk_prot_alloc"], int64(2*n), "the accepted sockets were charged to the test process")
	assert.NotContains(t, owners["softirq/0"].attrs, "process.pid")
}
