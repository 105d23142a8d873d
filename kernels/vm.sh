#!/usr/bin/env bash
# Boots another kernel under qemu (software emulation: with KVM the guest
# hangs at boot on these machines) and runs the privileged tests in it: the
# test binaries of the receiver and of internal/tracker, statically built,
# are the initramfs's only programs besides busybox, and the results come
# back over the serial console.
#
#   kernels/vm.sh [kernel package] [go test -run pattern]
#
# The kernel comes from Debian's packages (linux-image-6.1.0-56-amd64, the
# linux-image-amd64 of Debian 12, by default). Needs qemu-system-x86,
# busybox-static and cpio; for an arm64 kernel (a package name ending in
# -arm64 or -arm64-unsigned), qemu-system-arm instead, and Debian's arm64
# packages (dpkg --add-architecture arm64), whose busybox it takes.
#
# With KMEMLEAK_MODULES naming a directory of kernels/kmltest's modules
# built for the kernel (kernels/kmod.sh), they go into the initramfs and
# the tests that load them (TestIntegrationKernelModule...) get their
# directory as KMEMLEAK_TEST_MODULES.
#
# With KMEMLEAK_COLLECTOR naming an otelcol-kmemleak built for the kernel's
# architecture, the VM also starts it on examples/config.yaml and checks
# that it attaches the probes, exports a scan and stops cleanly.
#
# VM_APPEND is added to the kernel's command line: slub_debug=U for the
# oracle (TestIntegrationAllocTracesOracle reads what it records in
# debugfs, which the VM mounts), slab_nomerge, ...
#
# Exit status: 0 when the tests passed, 1 when a test failed, 2 when the
# harness did: the kernel did not boot, oopsed or panicked (the console
# says which test was running), or the run timed out. Nothing is retried.
set -euo pipefail
cd "$(dirname "$0")/.."

pkg=${1:-linux-image-6.1.0-56-amd64}
tests=${2:-Integration(HeldPipes|ShutdownReleases|SecondReceiver)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

arch=amd64
qemu=(qemu-system-x86_64 -cpu max)
console=ttyS0
case $pkg in *-arm64 | *-arm64-unsigned)
	arch=arm64
	# pauth-impdef: QEMU's own pointer-authentication hash, much faster to
	# emulate than the architected one; the kernel signs every return.
	qemu=(qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on)
	console=ttyAMA0
	dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64 && apt-get update -qq; }
	;;
esac

# A fresh machine may have no package lists yet.
(cd "$work" && { apt-get download "$pkg" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "$pkg"; }; } && dpkg-deb -x ./*.deb kernel)
vmlinuz=$(ls "$work"/kernel/boot/vmlinuz-*)

root="$work/initramfs"
mkdir -p "$root"/{bin,proc,sys,dev,tmp}
busybox=/bin/busybox
if [ "$arch" != amd64 ]; then
	(cd "$work" && apt-get download "busybox-static:$arch" >/dev/null && dpkg-deb -x busybox-static_*.deb busybox)
	busybox="$work/busybox/bin/busybox"
fi
cp "$busybox" "$root/bin/busybox"
for cmd in sh mount poweroff cat echo true ip grep seq sleep insmod rmmod taskset; do ln -s busybox "$root/bin/$cmd"; done
CGO_ENABLED=0 GOARCH=$arch go test -c -o "$root/receiver.test" .
CGO_ENABLED=0 GOARCH=$arch go test -c -o "$root/tracker.test" ./internal/tracker
CGO_ENABLED=0 GOARCH=$arch go test -c -o "$root/holders.test" ./internal/holders
if [ -n "${KMEMLEAK_MODULES:-}" ]; then
	mkdir "$root/modules"
	cp "$KMEMLEAK_MODULES"/kmltest.ko "$KMEMLEAK_MODULES"/kmlpad.ko "$root/modules/" ||
		{ echo "vm.sh: HARNESS FAILURE: no kmltest.ko and kmlpad.ko in $KMEMLEAK_MODULES (kernels/kmod.sh makes them)" >&2 && exit 2; }
fi
if [ -n "${KMEMLEAK_COLLECTOR:-}" ]; then
	cp "$KMEMLEAK_COLLECTOR" "$root/otelcol-kmemleak"
	cp examples/config.yaml "$root/collector.yaml"
	# The collector's own telemetry listens on localhost:8888.
	mkdir -p "$root/etc" && echo '127.0.0.1 localhost' > "$root/etc/hosts"
fi
cat > "$root/init" <<INIT
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
# Attribution's cgroup paths, and the cgroups its test makes.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t devtmpfs dev /dev
mount -t tracefs tracefs /sys/kernel/tracing
# Where the receiver pins its tables across restarts (pinning.directory).
mount -t bpf bpf /sys/fs/bpf
# slub_debug=U's records of who allocated each live object (the oracle).
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmp /tmp
ip link set lo up
ulimit -n 65536
# The tests find insmod, rmmod and taskset on PATH.
export PATH=/bin
[ -d /modules ] && export KMEMLEAK_TEST_MODULES=/modules
echo "kernel: \$(cat /proc/sys/kernel/osrelease)"
status=0
for t in /receiver.test /tracker.test /holders.test; do
	TMPDIR=/tmp \$t -test.run '$tests' -test.v -test.count=1 || status=1
done
if [ -x /otelcol-kmemleak ]; then
	/otelcol-kmemleak --config /collector.yaml >/tmp/collector.log 2>&1 &
	pid=\$!
	# The debug exporter (verbosity: basic) logs a count of each export.
	for i in \$(seq 120); do grep -q '"data points"' /tmp/collector.log && break; sleep 1; done
	kill \$pid
	wait \$pid
	code=\$?
	grep -E '	(warn|error)	|Attached allocator probes|live tables|Everything is ready|	Scan	|Shutdown complete' /tmp/collector.log
	grep -q '"data points"' /tmp/collector.log && echo "collector: exported a scan" || status=1
	echo "collector: exit status \$code after SIGTERM"
	[ \$code = 0 ] || status=1
fi
echo "vm-test-exit: \$status"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 > "$work/initrd.gz")

# One host thread runs both vCPUs (thread=single). With a thread per vCPU
# (multi, qemu 7.2's default for x86 guests) a vCPU can run a stale
# translation of kernel text another vCPU has just patched: attaching or
# detaching a tracepoint flips its static key through a temporary int3
# (text_poke_bp), and the 6.12 guest oopsed on that int3 after the kernel
# had written the final jump and synced every CPU ("Oops: int3" at
# kfree+0x36 and kmem_cache_free+0xaf, the jump already in memory); the 6.1
# guest once called address 0 from mas_destroy into kmem_cache_free_bulk,
# whose entry the bulk-free kprobe's ftrace trampoline had just been patched
# in or out of. With multi, TestIntegrationAttachDetachUnderFreeLoad (60
# cycles) crashed 6.12 within 30 s and 6.1 in one run of two; with single,
# none in 180 cycles on 6.12 and 120 on 6.1, nor in 300 on a real CPU
# (6.18, without kprobes).
# VM_TCG_THREAD=multi brings the crashes back.
# An oops or a soft lockup panics, and a panic powers the VM off at once
# (panic=-1 with -no-reboot), instead of waiting out the timeout.
status=0
timeout 1800 "${qemu[@]}" -accel tcg,thread=${VM_TCG_THREAD:-single} -smp 2 -m 2048 \
	-kernel "$vmlinuz" -initrd "$work/initrd.gz" \
	-append "console=$console panic=-1 oops=panic softlockup_panic=1 quiet ${VM_APPEND:-}" -nographic -no-reboot | tee "$work/console.log" |
	grep -vE '^=== (RUN|PAUSE|CONT)' || status=$?
if grep -q '^vm-test-exit: 0' "$work/console.log"; then
	exit 0
fi
if grep -q '^vm-test-exit: ' "$work/console.log"; then
	echo "vm.sh: tests failed on $pkg" >&2
	exit 1
fi
crash=$(grep -nE 'Oops|Kernel panic|BUG:|general protection fault|Call Trace' "$work/console.log" | head -1 | cut -d: -f1)
if [ -n "$crash" ]; then
	running=$(head -n "$crash" "$work/console.log" | grep -E '^=== (RUN|CONT)' | tail -1 | sed 's/^=== [A-Z]* *//')
	echo "vm.sh: HARNESS FAILURE: the $pkg kernel crashed while ${running:-no test} was running:" >&2
	sed -n "$((crash > 5 ? crash - 5 : 1)),$((crash + 40))p" "$work/console.log" >&2
elif [ "${status:-0}" -eq 124 ]; then
	echo "vm.sh: HARNESS FAILURE: $pkg did not finish within 30 minutes" >&2
elif ! grep -q '^kernel: ' "$work/console.log"; then
	echo "vm.sh: HARNESS FAILURE: $pkg did not boot to the tests; console tail:" >&2
	tail -20 "$work/console.log" >&2
else
	echo "vm.sh: HARNESS FAILURE: $pkg stopped before the tests ended (qemu exit $status); console tail:" >&2
	tail -20 "$work/console.log" >&2
fi
exit 2
