//go:build linux

package owner

import (
	"bytes"
	"errors"
	"io/fs"
	"iter"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/mountinfo"
	"github.com/kmemleak/kmemleakreceiver/internal/workload"
)

// stampSlack is how much later than its allocation the probes may stamp an
// object: allocation times count from the end of their jiffy, at HZ 100
// or more, and up to two ticks late.
const stampSlack = uint64(20 * time.Millisecond)

// startSlack is how far apart two readings of one process's start time
// can be: /proc gives it in clock ticks (USER_HZ, 100 a second).
const startSlack = uint64(20 * time.Millisecond)

// Resolver names owners from /proc and the cgroup v2 hierarchy. A scan
// calls Begin, Describe for its groups' owners, then End; not safe for
// concurrent use.
type Resolver struct {
	proc       string // procfs, /proc
	cgroupRoot string // the cgroup v2 hierarchy's mount; "" when none
	// bootToMono converts CLOCK_BOOTTIME to CLOCK_MONOTONIC: what is
	// subtracted (the time the machine was suspended).
	bootToMono func() uint64

	exits map[uint32]kmem.Exit // the latest end of each tgid that has objects
	// The cgroup directories by inode number, as the last walk found them,
	// and the inodes it did not find (cgroups removed before it).
	paths  map[uint32]string
	absent map[uint32]bool
	// Per scan: the comm of each tgid's current process ("" when none),
	// and whether the hierarchy was walked.
	comms  map[uint32]string
	walked bool
	parsed map[string]workload.Workload
}

// NewResolver reads processes from proc and cgroups from cgroupRoot (""
// when the machine has no cgroup v2 hierarchy).
func NewResolver(proc, cgroupRoot string) *Resolver {
	return &Resolver{
		proc: proc, cgroupRoot: cgroupRoot, bootToMono: bootToMono,
		exits: map[uint32]kmem.Exit{}, paths: map[uint32]string{}, absent: map[uint32]bool{},
		parsed: map[string]workload.Workload{},
	}
}

// Begin starts a scan with the processes that exited since the last one.
// It returns the tgids a new process took after one with objects ended,
// with when the earlier one ended: kmem.Snapshot.Reused.
func (r *Resolver) Begin(exits []kmem.Exit) map[uint32]uint64 {
	for _, e := range exits {
		r.exits[e.Tgid] = e
	}
	r.comms, r.walked = map[uint32]string{}, false
	var reused map[uint32]uint64
	for tgid, e := range r.exits {
		start, ok := r.startNs(tgid)
		if !ok || absDiff(start, e.StartNs) <= startSlack {
			continue // no process has the pid now, or the one that ended has
		}
		if reused == nil {
			reused = map[uint32]uint64{}
		}
		reused[tgid] = e.ExitNs + stampSlack
	}
	return reused
}

// Describe names an owner the probes recorded.
func (r *Resolver) Describe(o kmem.Owner) Owner {
	if o == (kmem.Owner{}) {
		return Owner{}
	}
	if o.Context.Interrupt() {
		return Owner{Context: o.Context}
	}
	out := Owner{Context: o.Context, Pid: o.Tgid}
	exit, ended := r.exits[o.Tgid]
	if comm := r.comm(o.Tgid); comm != "" && !o.Earlier {
		out.Name = comm
	} else if ended {
		out.Name, out.Exited = exit.Name, true
	}
	out.Cgroup = r.cgroupPath(o.Cgroup)
	if out.Cgroup != "" {
		w, ok := r.parsed[out.Cgroup]
		if !ok {
			w = workload.Parse(out.Cgroup)
			r.parsed[out.Cgroup] = w
		}
		out.Workload = w
	}
	return out
}

// End finishes a scan: what is remembered of processes and cgroups that
// no live object names any more is forgotten.
func (r *Resolver) End(live iter.Seq[kmem.Owner]) {
	tgids, cgroups := map[uint32]bool{}, map[uint32]bool{}
	for o := range live {
		tgids[o.Tgid], cgroups[o.Cgroup] = true, true
	}
	for tgid := range r.exits {
		if !tgids[tgid] {
			delete(r.exits, tgid)
		}
	}
	for ino, path := range r.paths {
		if !cgroups[ino] {
			delete(r.paths, ino)
			delete(r.parsed, path)
		}
	}
	for ino := range r.absent {
		if !cgroups[ino] {
			delete(r.absent, ino)
		}
	}
}

// comm is the name of the process that has tgid now, or "".
func (r *Resolver) comm(tgid uint32) string {
	if c, ok := r.comms[tgid]; ok {
		return c
	}
	data, err := os.ReadFile(filepath.Join(r.proc, strconv.FormatUint(uint64(tgid), 10), "comm"))
	c := string(bytes.TrimSuffix(data, []byte("\n")))
	if err != nil {
		c = ""
	}
	r.comms[tgid] = c
	return c
}

// startNs is when the process that has tgid now started, CLOCK_MONOTONIC.
func (r *Resolver) startNs(tgid uint32) (uint64, bool) {
	data, err := os.ReadFile(filepath.Join(r.proc, strconv.FormatUint(uint64(tgid), 10), "stat"))
	if err != nil {
		return 0, false
	}
	ticks, err := startTicks(data)
	if err != nil {
		return 0, false
	}
	boot := ticks * uint64(time.Second) / userHZ
	return boot - min(r.bootToMono(), boot), true
}

// userHZ is the unit of /proc's times: USER_HZ, 100 on every Linux
// architecture the receiver runs on.
const userHZ = 100

// startTicks reads starttime, the 22nd field of /proc/<pid>/stat, counted
// after the command's closing parenthesis: the command may hold spaces
// and parentheses itself.
func startTicks(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command in /proc/<pid>/stat")
	}
	fields := strings.Fields(string(stat[i+1:]))
	const starttime = 22 - 3 // fields 1 (pid) and 2 (comm) come before
	if len(fields) <= starttime {
		return 0, errors.New("/proc/<pid>/stat is short")
	}
	return strconv.ParseUint(fields[starttime], 10, 64)
}

// cgroupPath is the path of the cgroup with the given inode number, or ""
// when it cannot be found. The hierarchy is walked at most once a scan,
// and only for an inode neither known nor missing from the last walk.
func (r *Resolver) cgroupPath(ino uint32) string {
	if p, ok := r.paths[ino]; ok || r.cgroupRoot == "" || r.absent[ino] {
		return p
	}
	if !r.walked {
		r.walked = true
		r.walk()
	}
	p, ok := r.paths[ino]
	if !ok {
		r.absent[ino] = true
	}
	return p
}

// walk maps every cgroup directory's inode number to its path. Removed
// cgroups keep the path they had.
func (r *Resolver) walk() {
	_ = filepath.WalkDir(r.cgroupRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil // a cgroup removed during the walk
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel, err := filepath.Rel(r.cgroupRoot, path)
		if err != nil {
			return nil
		}
		// The probes keep a cgroup id's low half (bpf/kmemleak.h).
		id := uint32(st.Ino & math.MaxUint32)
		r.paths[id] = filepath.Clean("/" + rel)
		delete(r.absent, id)
		return nil
	})
}

// CgroupRoot finds where the cgroup v2 hierarchy is mounted, from a
// mountinfo file (/proc/self/mountinfo): /sys/fs/cgroup on unified
// machines, /sys/fs/cgroup/unified on hybrid ones. "" when none is.
func CgroupRoot(path string) (string, error) {
	mounts, err := mountinfo.Read(path)
	for _, m := range mounts {
		if m.FSType == "cgroup2" && m.Root == "/" {
			return m.Point, nil
		}
	}
	return "", err
}

// bootToMono is CLOCK_BOOTTIME's lead over CLOCK_MONOTONIC: how long the
// machine has been suspended.
func bootToMono() uint64 {
	var boot, mono unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot) != nil || unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono) != nil {
		return 0
	}
	return uint64(max(boot.Nano()-mono.Nano(), 0))
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}
