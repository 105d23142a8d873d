//go:build linux && (amd64 || arm64)

package tracker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/slabinfo"
)

// runningKernel answers the plan's questions from the running kernel: its
// BTF, tracefs, sysfs and kallsyms. Each check names what is missing where
// the kernel's own error would not.
type runningKernel struct {
	btf *btf.Spec
}

func newRunningKernel() (*runningKernel, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("reading kernel BTF: %w", err)
	}
	return &runningKernel{btf: spec}, nil
}

// tracepoint turns the kernel's terse errors for a missing tracepoint or
// an unmounted tracefs into a message that says what to do.
func (k *runningKernel) tracepoint(m kmem.Mode, group, event string) error {
	if m == kmem.ModeTracepoint {
		events := tracefsEvents()
		if events == "" {
			return errors.New("tracefs is not mounted (mount it with: mount -t tracefs tracefs /sys/kernel/tracing)")
		}
		if _, err := os.Stat(events + "/" + group + "/" + event); err != nil {
			return fmt.Errorf("the kernel has no tracepoint %s:%s", group, event)
		}
		return nil
	}
	var fn *btf.Typedef
	if err := k.btf.TypeByName("btf_trace_"+event, &fn); err != nil {
		return fmt.Errorf("the kernel has no tracepoint %s:%s (no btf_trace_%s in its BTF)", group, event, event)
	}
	if event == "kmem_cache_alloc" && !hasCacheArg(fn) {
		// The program would take bytes_req for the cache, and load.
		return errors.New("kmem:kmem_cache_alloc passes no kmem_cache before Linux 6.1")
	}
	return nil
}

// hasCacheArg reports whether a kmem_cache_alloc tracepoint's third
// argument (after the context) is a struct kmem_cache pointer: Linux 6.1
// added it where bytes_req was.
func hasCacheArg(trace *btf.Typedef) bool {
	ptr, ok := trace.Type.(*btf.Pointer)
	if !ok {
		return false
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	if !ok || len(proto.Params) < 4 {
		return false
	}
	arg, ok := btf.UnderlyingType(proto.Params[3].Type).(*btf.Pointer)
	if !ok {
		return false
	}
	s, ok := btf.UnderlyingType(arg.Target).(*btf.Struct)
	return ok && s.Name == "kmem_cache"
}

func tracefsEvents() string {
	for _, dir := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(dir + "/kmem"); err == nil {
			return dir
		}
	}
	return ""
}

// kprobes names the missing kernel option: without it, attaching a kprobe
// fails with a bare "file does not exist".
func (*runningKernel) kprobes() error {
	for _, path := range []string{"/sys/bus/event_source/devices/kprobe", "/sys/kernel/tracing/kprobe_events", "/sys/kernel/debug/tracing/kprobe_events"} {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
	}
	return errors.New("the kernel has no kprobes (built without CONFIG_KPROBES: no /sys/bus/event_source/devices/kprobe, no kprobe_events in tracefs)")
}

func (*runningKernel) kallsyms() (io.ReadCloser, error) { return os.Open("/proc/kallsyms") }

// params lists a kernel function's parameter names from its BTF.
func (k *runningKernel) params(name string) ([]string, error) {
	var fn *btf.Func
	if err := k.btf.TypeByName(name, &fn); err != nil {
		return nil, fmt.Errorf("no BTF for the function: %w", err)
	}
	proto, ok := fn.Type.(*btf.FuncProto)
	if !ok {
		return nil, fmt.Errorf("BTF type of the function is %T", fn.Type)
	}
	names := make([]string, len(proto.Params))
	for i, p := range proto.Params {
		names[i] = p.Name
	}
	return names, nil
}

// pageSize is the page size the probes are built for: page allocations'
// bytes and the largest kmalloc cache (PAGE_SIZE and KMALLOC_MAX_CACHE_SIZE
// in bpf/) follow from it. arm64 kernels can have 16 or 64 KiB pages.
const pageSize = 4096

func checkPageSize(size int) error {
	if size != pageSize {
		return fmt.Errorf("the kernel uses %d KiB pages: the probes are built for 4 KiB pages, and would misreport page sizes and kmalloc caches", size/1024)
	}
	return nil
}

// checkKernelRelease refuses kernels older than 5.12: the live table is
// claimed and published with BPF atomic operations on map values
// (compare-and-swap, exchange), which the verifier accepts from 5.12 on.
// release is uname's, e.g. "6.1.0-56-amd64".
func checkKernelRelease(release string) error {
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return fmt.Errorf("cannot read the kernel version from %q: %w", release, err)
	}
	if major < 5 || major == 5 && minor < 12 {
		return fmt.Errorf("kernel %s is older than Linux 5.12: the probes' live table needs BPF atomic operations on map values (compare-and-swap), which arrived in 5.12", release)
	}
	return nil
}

// slabCachesDir is where SLUB lists its caches, readable by anyone.
const slabCachesDir = "/sys/kernel/slab"

// kmallocMinSize is the size of the kernel's smallest kmalloc cache, which
// the kprobe mode needs to tell a request's cache from its size: 8, except
// where kmalloc is aligned for DMA (arm64 before Linux 6.5: 128, as
// ARCH_DMA_MINALIGN; or the cache line size where the kernel cannot bounce
// small buffers). It is the smallest kmalloc-N among the caches SLUB lists
// in sysfs, else in slabinfo (root only); 8 if neither can be read.
func kmallocMinSize(sysfsDir, slabinfoPath string) uint32 {
	has := func(string) bool { return false }
	if entries, err := os.ReadDir(sysfsDir); err == nil {
		names := map[string]bool{}
		for _, e := range entries {
			names[e.Name()] = true
		}
		has = func(name string) bool { return names[name] }
	} else if counts, err := slabinfo.Read(slabinfoPath); err == nil {
		has = func(name string) bool { _, ok := counts[name]; return ok }
	}
	for size := uint32(8); size <= 256; size *= 2 {
		if has(fmt.Sprintf("kmalloc-%d", size)) {
			return size
		}
	}
	return 8
}

// Capability numbers from linux/capability.h.
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// CheckPrivileges names the missing capability up front; the kernel's EPERM
// from bpf(2) does not say which one it wanted. Open does not call it: its
// callers do, before anything else they load (the receiver before its
// holder iterators), so that a user without them hears of nothing else.
func CheckPrivileges() error {
	eff, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("reading the process capabilities: %w", err)
	}
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	if has(capSysAdmin) {
		return nil
	}
	var missing []string
	if !has(capBPF) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(capPerfmon) {
		missing = append(missing, "CAP_PERFMON")
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("missing %s: loading allocator probes needs CAP_BPF and CAP_PERFMON (or root); run the collector as root or grant them, e.g. `setcap cap_bpf,cap_perfmon+ep otelcol-kmemleak`", strings.Join(missing, " and "))
}

func effectiveCaps() (uint64, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff line in /proc/self/status")
}

// VoidArgRefused is how Start explains that the kernel refuses tp_btf
// programs that read a tracepoint's void * argument, such as the object of
// kmem_cache_alloc.
const VoidArgRefused = "this kernel's verifier refuses tp_btf programs that read a void * tracepoint argument (Linux 6.1 and 6.12 do, 6.18 does not); raw_tp runs the same programs with untyped arguments"

// explainLoad says what a verifier refusal means for the user.
func explainLoad(m kmem.Mode, err error) error {
	if m == kmem.ModeTPBTF && strings.Contains(err.Error(), "type UNKNOWN is not a struct") {
		return fmt.Errorf("%s: %w", VoidArgRefused, err)
	}
	return explainPermission(err)
}

func explainPermission(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w (the kernel refused: check CAP_BPF/CAP_PERFMON, kernel.unprivileged_bpf_disabled, and lockdown)", err)
	}
	return err
}
