//go:build linux

package owner

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/workload"
)

// fakeProc writes /proc/<pid>/comm and stat for a process that started
// startTicks clock ticks after boot.
func fakeProc(t *testing.T, proc string, pid uint32, comm string, startTicks uint64) {
	t.Helper()
	dir := filepath.Join(proc, strconv.Itoa(int(pid)))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "comm"), []byte(comm+"\n"), 0o644))
	// A comm with a space and a parenthesis, as a process can name itself.
	stat := strconv.Itoa(int(pid)) + " (" + comm + ") x) S 1 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 " +
		strconv.FormatUint(startTicks, 10) + " 1000 100 18446744073709551615\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644))
}

func newTestResolver(t *testing.T) (*Resolver, string, string) {
	t.Helper()
	proc, cgroups := t.TempDir(), t.TempDir()
	r := NewResolver(proc, cgroups)
	r.bootToMono = func() uint64 { return 0 }
	return r, proc, cgroups
}

const tick = uint64(10_000_000) // a USER_HZ tick in nanoseconds

func inode(t *testing.T, path string) uint32 {
	t.Helper()
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(path, &st))
	return uint32(st.Ino)
}

func TestDescribeNamesLiveAndExitedProcesses(t *testing.T) {
	r, proc, _ := newTestResolver(t)
	fakeProc(t, proc, 100, "nginx", 5000)
	reused := r.Begin([]kmem.Exit{{Tgid: 200, Name: "cron-job", StartNs: 10 * tick, ExitNs: 90 * tick}})
	assert.Empty(t, reused, "no process has pid 200 now")

	assert.Equal(t, Owner{Context: kmem.InTask, Pid: 100, Name: "nginx"}, r.Describe(kmem.Owner{Context: kmem.InTask, Tgid: 100}))
	assert.Equal(t, Owner{Context: kmem.InTask, Pid: 200, Name: "cron-job", Exited: true}, r.Describe(kmem.Owner{Context: kmem.InTask, Tgid: 200}))
	assert.Equal(t, Owner{Context: kmem.InKthread, Pid: 300}, r.Describe(kmem.Owner{Context: kmem.InKthread, Tgid: 300}),
		"a process never seen has no name")
	assert.Equal(t, Owner{Context: kmem.InSoftirq}, r.Describe(kmem.Owner{Context: kmem.InSoftirq}))
	assert.Equal(t, Owner{}, r.Describe(kmem.Owner{}), "no attribution")

	// The exited process keeps its name while it has objects, and only
	// then.
	r.End(func(yield func(kmem.Owner) bool) { yield(kmem.Owner{Tgid: 200}) })
	r.Begin(nil)
	assert.Equal(t, "cron-job", r.Describe(kmem.Owner{Tgid: 200, Context: kmem.InTask}).Name)
	r.End(func(func(kmem.Owner) bool) {}) // no owner at all
	r.Begin(nil)
	assert.Empty(t, r.Describe(kmem.Owner{Tgid: 200, Context: kmem.InTask}).Name)
}

func TestReusedPidIsToldApart(t *testing.T) {
	r, proc, _ := newTestResolver(t)
	// pid 100 held by "worker", which started at tick 5000, after "old"
	// (ticks 100 to 4000) ended.
	fakeProc(t, proc, 100, "worker", 5000)
	// pid 101: the process that ended is the one /proc shows (a thread of
	// it ended, or it is a zombie): not reused.
	fakeProc(t, proc, 101, "same", 700)
	reused := r.Begin([]kmem.Exit{
		{Tgid: 100, Name: "old", StartNs: 100 * tick, ExitNs: 4000 * tick},
		{Tgid: 101, Name: "same", StartNs: 700*tick + tick/2, ExitNs: 800 * tick},
	})
	require.Equal(t, map[uint32]uint64{100: 4000*tick + stampSlack}, reused)

	assert.Equal(t, Owner{Context: kmem.InTask, Pid: 100, Name: "old", Exited: true},
		r.Describe(kmem.Owner{Context: kmem.InTask, Tgid: 100, Earlier: true}))
	assert.Equal(t, Owner{Context: kmem.InTask, Pid: 100, Name: "worker"},
		r.Describe(kmem.Owner{Context: kmem.InTask, Tgid: 100}))

	// The snapshot splits pid 100's objects at the boundary.
	var snap kmem.Snapshot
	snap.Begin(kmem.Ages{Now: 10000 * tick})
	snap.Reused = reused
	for _, at := range []uint64{200, 3999, 4000, 5001, 6000, 7000} {
		snap.Add(&kmem.Object{AllocNs: at * tick, CallSite: 1, Bytes: 8, StackID: -1, Owner: kmem.Owner{Tgid: 100}})
	}
	byOwner := map[kmem.Owner]int64{}
	for key, tally := range snap.Groups() {
		byOwner[key.Owner] += tally.Objects
	}
	assert.Equal(t, map[kmem.Owner]int64{{Tgid: 100, Earlier: true}: 3, {Tgid: 100}: 3}, byOwner)
}

func TestCgroupPathsAndContainers(t *testing.T) {
	r, _, root := newTestResolver(t)
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	rel := "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_0000_4111_8222_333344445555.slice/cri-containerd-" + id + ".scope"
	dir := filepath.Join(root, rel)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	ino := inode(t, dir)
	r.Begin(nil)

	got := r.Describe(kmem.Owner{Context: kmem.InTask, Tgid: 7, Cgroup: ino})
	assert.Equal(t, "/"+rel, got.Cgroup)
	assert.Equal(t, workload.Workload{ContainerID: id, Runtime: "containerd", PodUID: "1a2b3c4d-0000-4111-8222-333344445555"}, got.Workload)
	assert.Equal(t, "/", r.Describe(kmem.Owner{Context: kmem.InTask, Tgid: 7, Cgroup: inode(t, root)}).Cgroup)

	// A cgroup removed after it was seen keeps its path while objects
	// name it; one never seen has none.
	r.End(func(yield func(kmem.Owner) bool) { yield(kmem.Owner{Cgroup: ino}) })
	require.NoError(t, os.Remove(dir))
	r.Begin(nil)
	assert.Equal(t, "/"+rel, r.Describe(kmem.Owner{Context: kmem.InTask, Tgid: 7, Cgroup: ino}).Cgroup)
	assert.Empty(t, r.Describe(kmem.Owner{Context: kmem.InTask, Tgid: 7, Cgroup: ino + 1000}).Cgroup)
}

func TestCgroupRoot(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ mountinfo, want string }{
		"hybrid": {`25 1 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:6 - cgroup cgroup rw,xattr,name=systemd
`, "/sys/fs/cgroup/unified"},
		"unified": {`35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`, "/sys/fs/cgroup"},
		// A bind mount of a subtree (a container's view) names no root.
		"subtree only": {`40 30 0:30 /kubepods.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw
`, ""},
		"escaped": {`41 30 0:30 / /host/cgroup\040fs rw - cgroup2 cgroup2 rw
`, "/host/cgroup fs"},
		"none": {`22 1 0:21 / /proc rw - proc proc rw
`, ""},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			require.NoError(t, os.WriteFile(path, []byte(tc.mountinfo), 0o644))
			got, err := CgroupRoot(path)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestStartTicks(t *testing.T) {
	n, err := startTicks([]byte("42 (a) b (c)) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0\n"))
	require.NoError(t, err)
	assert.Equal(t, uint64(987654), n)
	_, err = startTicks([]byte("42 (short) S 1"))
	assert.Error(t, err)
}

func TestOwnerString(t *testing.T) {
	assert.Equal(t, "[softirq]", Owner{Context: kmem.InSoftirq}.String())
	assert.Equal(t, "[other]", Folded.String())
	assert.Equal(t, "nginx (pid 7, container 0123456789ab)",
		Owner{Pid: 7, Name: "nginx", Workload: workload.Workload{ContainerID: "0123456789abcdef"}}.String())
	assert.Equal(t, "? (pid 9, exited)", Owner{Pid: 9, Exited: true}.String())
}
