//go:build linux

// Package kerneltest is what the tests that load the probes share: the
// check that they can load here, and the workloads whose allocations they
// look for.
package kerneltest

import (
	"os"
	"testing"

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
