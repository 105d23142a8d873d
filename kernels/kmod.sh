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
# installed. The modules are built with gcc-12, as Debian 12 built these
# kernels (for arm64 kernels, Debian's cross gcc-12-aarch64-linux-gnu), and
# their vermagic is checked against a module of the kernel package itself,
# so that a module the kernel would refuse fails here. Runs on an x86-64
# Debian 12 host; needs make, modinfo (kmod), gcc-12 and, for arm64,
# gcc-12-aarch64-linux-gnu (make test-kernels installs them) and dpkg's
# arm64 architecture, added here as vm.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."

pkg=$1
outdir=$2
if [ "$(dpkg --print-architecture)" != amd64 ]; then
	echo "kmod.sh: builds on an x86-64 host only (it takes the amd64 linux-kbuild and the x86-64 hosted compilers)" >&2
	exit 2
fi
case $pkg in
linux-image-*-amd64 | linux-image-*-amd64-unsigned) arch=amd64 gnu=x86_64-linux-gnu ;;
linux-image-*-arm64 | linux-image-*-arm64-unsigned) arch=arm64 gnu=aarch64-linux-gnu ;;
*)
	echo "kmod.sh: $pkg: not an amd64 or arm64 kernel package" >&2
	exit 2
	;;
esac
if [ $arch = arm64 ]; then
	dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64 && apt-get update -qq; }
fi
headers=${pkg/linux-image-/linux-headers-}
headers=${headers%-unsigned}
release=${headers#linux-headers-}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd_work() { (cd "$work" && "$@"); }
# A fresh machine may have no package lists yet.
cd_work apt-get download "$headers:$arch" >/dev/null 2>&1 || { apt-get update -qq && cd_work apt-get download "$headers:$arch"; }
# The headers depend on their -common package (the sources' headers and
# Makefile, for every architecture) and linux-kbuild (fixdep, modpost and
# the other tools that run on the host: the host's architecture).
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
# The headers' .kernelvariables cross-compile with $(DEB_HOST_GNU_TYPE)-gcc-12
# when the Debian architectures say so.
make -s -C "$kdir" M="$work/src" DEB_BUILD_ARCH=amd64 DEB_HOST_ARCH=$arch DEB_HOST_GNU_TYPE=$gnu modules

# The vermagic of a module Debian built for the kernel.
cd_work apt-get download "$pkg:$arch" >/dev/null 2>&1
dpkg-deb --fsys-tarfile "$work"/"${pkg}"_*.deb | tar -x -C "$work" --wildcards '*/kernel/fs/nls/nls_ascii.ko*'
want=$(modinfo -F vermagic "$(find "$work/lib" -name 'nls_ascii.ko*' | head -1)")
for ko in kmltest.ko kmlpad.ko; do
	got=$(modinfo -F vermagic "$work/src/$ko")
	if [ "$got" != "$want" ]; then
		echo "kmod.sh: $ko's vermagic '$got' is not the kernel's '$want'" >&2
		exit 1
	fi
done
# kmltest.ko last: make takes it for the whole build.
mkdir -p "$outdir"
cp "$work/src/kmlpad.ko" "$outdir/"
cp "$work/src/kmltest.ko" "$outdir/"
echo "kmod.sh: $outdir/kmltest.ko and kmlpad.ko for $release, vermagic $want"
