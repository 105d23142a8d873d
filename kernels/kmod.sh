#!/usr/bin/env bash
# Builds kernels/kmltest, the modules of the VM tests (kmltest.ko, which
# leaks on purpose, and kmlpad.ko, which moves it), against Debian's
# headers for a kernel package, into a directory:
#
#   kernels/kmod.sh <kernel image package> <out dir>
#
# e.g. kernels/kmod.sh linux-image-6.1.0-56-amd64 _build/kmod-6.1.0-56-amd64.
# The headers (linux-headers-<version>, its -common and linux-kbuild
# packages) are downloaded and unpacked into a temporary directory, never
# installed. The module is built with gcc-12, as Debian 12 built these
# kernels, and its vermagic is checked against a module of the kernel
# package itself, so that a module the kernel would refuse fails here.
# x86-64 kernels only (see the arm64 case below). Needs gcc-12, make and
# modinfo (kmod).
set -euo pipefail
cd "$(dirname "$0")/.."

pkg=$1
outdir=$2
case $pkg in
linux-image-*-amd64 | linux-image-*-amd64-unsigned) ;;
*)
	# arm64 would need a cross gcc-12 and the arm64 headers package with
	# the amd64 linux-kbuild: not done yet.
	echo "kmod.sh: $pkg: only x86-64 kernel packages are supported" >&2
	exit 2
	;;
esac
headers=${pkg/linux-image-/linux-headers-}
headers=${headers%-unsigned}
release=${headers#linux-headers-}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd_work() { (cd "$work" && "$@"); }
# A fresh machine may have no package lists yet.
cd_work apt-get download "$headers" >/dev/null 2>&1 || { apt-get update -qq && cd_work apt-get download "$headers"; }
# The headers depend on their -common package (the sources' headers and
# Makefile) and linux-kbuild (fixdep, modpost and the other host tools).
deps=$(dpkg-deb -f "$work"/"${headers}"_*.deb Depends | tr ',|' '\n\n' | sed 's/(.*//; s/ //g' | grep -E '^linux-(headers|kbuild)-' | sort -u)
# shellcheck disable=SC2086 # one word per package
cd_work apt-get download $deps >/dev/null 2>&1
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
kdir="$work/root/usr/src/$headers"
# The package's Makefile includes its -common's at /usr/src: point it at
# the unpacked one instead.
sed -i "s|include /usr/src/|include $work/root/usr/src/|" "$kdir/Makefile"
# 6.12's headers carry vmlinux, for the module's BTF, which pahole would
# make: the tests need none, and without vmlinux kbuild skips it.
rm -f "$kdir/vmlinux"

cp -r kernels/kmltest "$work/src"
make -s -C "$kdir" M="$work/src" modules

# The vermagic of a module Debian built for the kernel.
cd_work apt-get download "$pkg" >/dev/null 2>&1
dpkg-deb --fsys-tarfile "$work"/"${pkg}"_*.deb | tar -x -C "$work" --wildcards '*/kernel/fs/nls/nls_ascii.ko*'
want=$(modinfo -F vermagic "$(find "$work/lib" -name 'nls_ascii.ko*' | head -1)")
mkdir -p "$outdir"
for ko in kmltest.ko kmlpad.ko; do
	got=$(modinfo -F vermagic "$work/src/$ko")
	if [ "$got" != "$want" ]; then
		echo "kmod.sh: $ko's vermagic '$got' is not the kernel's '$want'" >&2
		exit 1
	fi
	cp "$work/src/$ko" "$outdir/"
done
echo "kmod.sh: $outdir/kmltest.ko and kmlpad.ko for $release, vermagic $want"
