// The kernel's types for the architecture being built: bpf2go defines
// __TARGET_ARCH_<arch> for each -target, and struct pt_regs, which the
// kprobe programs read, differs between architectures. CO-RE relocates
// field offsets, not which struct bpf_tracing.h casts the registers to.
//
// vmlinux_x86.h is dumped from an x86-64 machine's /sys/kernel/btf/vmlinux
// (make generate on one), vmlinux_arm64.h from Debian's arm64 kernel package
// (make vmlinux-arm64: kernels/vmlinux.sh).

#if defined(__TARGET_ARCH_x86)
#include "vmlinux_x86.h"
#elif defined(__TARGET_ARCH_arm64)
#include "vmlinux_arm64.h"
#else
#error "no kernel types for this architecture: add a vmlinux_<arch>.h (see kernels/vmlinux.sh)"
#endif
