//go:build linux

// Package kerneltest is what the tests that load the probes share: the
// check that they can load here, and the workloads whose allocations they
// look for.
package kerneltest

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequireBPF skips a test that loads probes where they cannot load, saying
// why.
func RequireBPF(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("integration test: needs root (CAP_BPF and CAP_PERFMON) to load eBPF programs")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skip("integration test: kernel BTF (/sys/kernel/btf/vmlinux) is missing")
	}
}

// HasKprobes reports whether kprobes can be attached here.
func HasKprobes() bool {
	_, err := os.Stat("/sys/bus/event_source/devices/kprobe")
	return err == nil
}

// OpenPipes opens n pipes, closed when the test ends if not before: each
// holds a pipe_inode_info and its buffer array (kmalloc) and two struct
// files (slab, filp).
func OpenPipes(t testing.TB, n int) [][2]int {
	t.Helper()
	pipes := make([][2]int, 0, n)
	t.Cleanup(func() { ClosePipes(pipes) })
	for range n {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatalf("pipe2: %v", err)
		}
		pipes = append(pipes, p)
	}
	return pipes
}

// ClosePipes closes the pipes OpenPipes opened; closing twice is harmless.
func ClosePipes(pipes [][2]int) {
	for i, p := range pipes {
		if p[0] >= 0 {
			unix.Close(p[0])
			unix.Close(p[1])
			pipes[i] = [2]int{-1, -1}
		}
	}
}

// Connect makes n loopback TCP connections to ln, both ends kept open until
// the test ends unless closed before: each accepted socket is made in the
// softirq that receives the handshake's last ACK, whatever task that
// softirq interrupted; the connecting ones by the test's system calls.
func Connect(t testing.TB, ln net.Listener, n int) []net.Conn {
	t.Helper()
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conns = append(conns, c)
		a, err := ln.Accept()
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		conns = append(conns, a)
	}
	return conns
}

// OwnCgroup is the test process's cgroup v2 path, from the hierarchy's
// root.
func OwnCgroup(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if path, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			return path
		}
	}
	t.Fatal("the test process is in no cgroup v2")
	return ""
}

// Cgroup creates a cgroup named name under the cgroup v2 root, for
// children started in it (SysProcAttr.UseCgroupFD), and returns its path
// from the root and an fd of it. It is removed once the test's children in
// it have exited: stop them in cleanups registered after this one.
func Cgroup(t testing.TB, root, name string) (string, int) {
	t.Helper()
	dir := filepath.Join(root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Close(fd)
		// A child's exit can take a moment to leave the cgroup.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			err := os.Remove(dir)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("removing the test's cgroup: %v", err)
				return
			}
		}
	})
	return "/" + name, fd
}
