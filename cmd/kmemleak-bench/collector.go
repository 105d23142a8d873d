//go:build linux && (amd64 || arm64)

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
)

// collector is the receiver running in a child process.
type collector struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

// startCollector runs the child and waits until it is ready.
func startCollector(args ...string) (*collector, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{childArg}, args...)...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the receiver: %w", err)
	}
	c := &collector{cmd: cmd, stdin: stdin, lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	if line, err := c.next(time.Minute); err != nil || line != childReady {
		_ = c.Close() // what it printed says what failed
		return nil, fmt.Errorf("the receiver did not start: %q %v", line, err)
	}
	return c, nil
}

// next returns the child's next line.
func (c *collector) next(timeout time.Duration) (string, error) {
	select {
	case line, ok := <-c.lines:
		if !ok {
			return "", errors.New("the receiver exited")
		}
		return line, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("no word from the receiver in %v", timeout)
	}
}

// nextScan waits for the next scan and returns its duration in seconds.
// nextScan waits for the receiver's next scan and returns its duration in
// seconds and the receiver's live heap in MiB.
func (c *collector) nextScan(timeout time.Duration) (seconds, heapMiB float64, err error) {
	line, err := c.next(timeout)
	if err != nil {
		return 0, 0, err
	}
	v, ok := strings.CutPrefix(line, childScan+" ")
	if _, err := fmt.Sscan(v, &seconds, &heapMiB); !ok || err != nil {
		return 0, 0, fmt.Errorf("unexpected line from the receiver: %q", line)
	}
	return seconds, heapMiB / (1 << 20), nil
}

func (c *collector) Close() error {
	// Its stdin closed, the child shuts the receiver down and exits.
	return errors.Join(c.stdin.Close(), c.cmd.Wait())
}

func (c *collector) pid() int { return c.cmd.Process.Pid }

// rssMiB is the process's resident set: all of it (VmRSS), or its anonymous
// part (RssAnon), the process's own memory, without the pages of mappings
// such as the live table the kernel allocated.
func rssMiB(pid int, field string) (float64, error) {
	v := procField(fmt.Sprintf("/proc/%d/status", pid), field)
	kib, err := strconv.ParseFloat(strings.TrimSuffix(v, " kB"), 64)
	if err != nil {
		return 0, fmt.Errorf("reading %s of %d: %q", field, pid, v)
	}
	return kib / 1024, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// architecture Linux exposes to user space.
const clockTicks = 100

// cpuSeconds is the user plus system time of every thread of the process.
func cpuSeconds(pid int) (float64, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after it; utime and stime are fields 14 and 15 of the line.
	_, rest, _ := strings.Cut(string(stat), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (utime + stime) / clockTicks, nil
}

// bpfMap is a BPF map a process holds and the memory the kernel charges
// for it.
type bpfMap struct {
	name       string
	maxEntries uint32
	memlockMiB float64
}

// bpfMaps lists the maps the process holds open, from its fdinfo.
func bpfMaps(pid int) ([]bpfMap, error) {
	held, err := heldBPF(pid, "map_id")
	if err != nil {
		return nil, err
	}
	var maps []bpfMap
	for _, h := range held {
		memlock, err := strconv.ParseFloat(procField(h.fdinfo, "memlock"), 64)
		if err != nil {
			continue // closed meanwhile
		}
		m := bpfMap{name: fmt.Sprintf("map %d", h.id), memlockMiB: memlock / (1 << 20)}
		if em, err := ebpf.NewMapFromID(ebpf.MapID(h.id)); err == nil {
			if info, err := em.Info(); err == nil {
				m.name, m.maxEntries = info.Name, info.MaxEntries
			}
			_ = em.Close() // only read from
		}
		maps = append(maps, m)
	}
	return maps, nil
}

// heldObject is a BPF object a process holds open, and the fdinfo of one
// of the descriptors that hold it.
type heldObject struct {
	id     uint32
	fdinfo string
}

// heldBPF lists the BPF objects of one kind a process holds open, each
// once, by the fdinfo field that gives their ID (map_id, prog_id): a
// program is also held through its links.
func heldBPF(pid int, idField string) ([]heldObject, error) {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	seen := map[uint32]bool{}
	var held []heldObject
	for _, e := range entries {
		path := dir + "/" + e.Name()
		id, err := strconv.ParseUint(procField(path, idField), 10, 32)
		if err != nil || seen[uint32(id)] {
			continue // not of that kind, closed meanwhile, or seen
		}
		seen[uint32(id)] = true
		held = append(held, heldObject{uint32(id), path})
	}
	return held, nil
}
