//go:build linux && (amd64 || arm64)

package main

import (
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A workload is a loop of syscalls that allocate and free kernel objects.
type workload func(iterations int) error

// mixedLoop cycles through open/close of /dev/null, socket/close and
// pipe/close: one pair an iteration. Raw syscalls, with no Go allocation
// and no scheduler hand-off, so what is timed is the kernel's work.
func mixedLoop(iterations int) error {
	devNull, err := unix.BytePtrFromString("/dev/null")
	if err != nil {
		return err
	}
	var pipe [2]int32
	for i := range iterations {
		var errno unix.Errno
		switch i % 3 {
		case 0:
			errno = openClose(devNull)
		case 1:
			errno = socketClose()
		case 2:
			errno = pipeClose(&pipe)
		}
		if errno != 0 {
			return fmt.Errorf("iteration %d: %w", i, errno)
		}
	}
	return nil
}

// pipeLoop is pipe/close alone.
func pipeLoop(iterations int) error {
	var pipe [2]int32
	for i := range iterations {
		if errno := pipeClose(&pipe); errno != 0 {
			return fmt.Errorf("iteration %d: %w", i, errno)
		}
	}
	return nil
}

// atFDCWD is AT_FDCWD (-100) as the syscall argument it becomes.
var atFDCWD = func() uintptr { fd := int64(unix.AT_FDCWD); return uintptr(fd) }()

func openClose(path *byte) unix.Errno {
	fd, _, errno := unix.RawSyscall6(unix.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(path)), unix.O_RDONLY|unix.O_CLOEXEC, 0, 0, 0) //nolint:gosec // G103: a raw system call, so that the measured loop allocates nothing in Go
	if errno != 0 {
		return errno
	}
	return closeFD(fd)
}

func socketClose() unix.Errno {
	fd, _, errno := unix.RawSyscall(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if errno != 0 {
		return errno
	}
	return closeFD(fd)
}

func pipeClose(fds *[2]int32) unix.Errno {
	if _, _, errno := unix.RawSyscall(unix.SYS_PIPE2, uintptr(unsafe.Pointer(fds)), unix.O_CLOEXEC, 0); errno != 0 { //nolint:gosec // G103: as in openClose
		return errno
	}
	if errno := closeFD(uintptr(fds[0])); errno != 0 {
		return errno
	}
	return closeFD(uintptr(fds[1]))
}

func closeFD(fd uintptr) unix.Errno {
	_, _, errno := unix.RawSyscall(unix.SYS_CLOSE, fd, 0, 0)
	return errno
}

// pinned runs f on an OS thread of its own bound to cpu, and returns how
// long f took.
func pinned(cpu int, f func() error) (time.Duration, error) {
	type result struct {
		took time.Duration
		err  error
	}
	done := make(chan result)
	go func() {
		// The thread is not unlocked: it exits with the goroutine, so
		// its CPU binding never leaks to other goroutines.
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			done <- result{err: fmt.Errorf("pinning to CPU %d: %w", cpu, err)}
			return
		}
		start := time.Now()
		err := f()
		done <- result{time.Since(start), err}
	}()
	r := <-done
	return r.took, r.err
}
