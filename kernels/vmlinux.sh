#!/usr/bin/env bash
# Writes the C header of a Debian kernel package's types (its BTF, dumped
# by bpftool), for building the probes for an architecture this machine
# does not run: `make vmlinux-arm64` makes bpf/vmlinux_arm64.h with it.
#
#   kernels/vmlinux.sh <kernel package> <header>
#
# The BTF is cut out of the package's vmlinuz by kernels/btfcut.go. Needs
# bpftool, and the package's architecture known to dpkg (added here).
set -euo pipefail
cd "$(dirname "$0")/.."

pkg=$1
out=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

arch=${pkg##*-}
[ "$arch" = unsigned ] && { arch=${pkg%-unsigned}; arch=${arch##*-}; }
if [ "$arch" != "$(dpkg --print-architecture)" ] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
	dpkg --add-architecture "$arch"
	apt-get update -qq
fi
(cd "$work" && { apt-get download "$pkg:$arch" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "$pkg:$arch"; }; } && dpkg-deb -x ./*.deb kernel)
go run kernels/btfcut.go "$work"/kernel/boot/vmlinuz-* "$work/vmlinux.btf"
bpftool btf dump file "$work/vmlinux.btf" format c > "$work/vmlinux.h"
for s in kmem_cache pt_regs; do
	grep -q "^struct $s {" "$work/vmlinux.h" || { echo "no struct $s in the dump of $pkg" >&2; exit 1; }
done
mv "$work/vmlinux.h" "$out"
