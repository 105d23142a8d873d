//go:build linux

package kerneltest

// SyscallEntry is in the name of a frame every kernel stack taken in a
// system call passes through (el0_svc, do_el0_svc).
const SyscallEntry = "el0_svc"
