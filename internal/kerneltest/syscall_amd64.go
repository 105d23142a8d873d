//go:build linux

package kerneltest

// SyscallEntry is in the name of a frame every kernel stack taken in a
// system call passes through.
const SyscallEntry = "entry_SYSCALL_64"
