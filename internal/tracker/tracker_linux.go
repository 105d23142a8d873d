//go:build linux

package tracker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/bpf"
)

// Options configure Open.
type Options struct {
	Allocators []Allocator
	Mode       Mode
	MaxObjects uint32
	Logger     *zap.Logger
}

// Tracker owns everything Open put into the kernel; Close releases it.
type Tracker struct {
	live       *ebpf.Map
	cacheNames *ebpf.Map
	stats      *ebpf.Map
	programs   []*ebpf.Program
	links      []link.Link
	modes      map[Allocator]Mode

	// Reused across scans so a scan of a million objects does not allocate.
	keys []uint64
	vals []bpf.KmemleakObject
}

// scanBatch is the number of entries one BPF_MAP_LOOKUP_BATCH call copies:
// large enough that syscalls are a small part of a scan, small enough that
// the buffers stay in the hundreds of KiB.
const scanBatch = 8192

// hook names the two programs and tracepoints that follow one allocator.
type hook struct {
	allocProg, freeProg   map[Mode]string
	allocEvent, freeEvent string // kmem:<event>
}

var hooks = map[Allocator]hook{
	Slab: {
		allocProg:  map[Mode]string{ModeTPBTF: "btf_slab_alloc", ModeRawTP: "raw_slab_alloc", ModeTracepoint: "tp_slab_alloc"},
		freeProg:   map[Mode]string{ModeTPBTF: "btf_slab_free", ModeRawTP: "raw_slab_free", ModeTracepoint: "tp_slab_free"},
		allocEvent: "kmem_cache_alloc",
		freeEvent:  "kmem_cache_free",
	},
	Kmalloc: {
		allocProg:  map[Mode]string{ModeTPBTF: "btf_kmalloc", ModeRawTP: "raw_kmalloc", ModeTracepoint: "tp_kmalloc"},
		freeProg:   map[Mode]string{ModeTPBTF: "btf_kfree", ModeRawTP: "raw_kfree", ModeTracepoint: "tp_kfree"},
		allocEvent: "kmalloc",
		freeEvent:  "kfree",
	},
}

// Open checks what the kernel and the process allow, loads the maps, and
// attaches each allocator's programs in the first mode that works.
func Open(opts Options) (*Tracker, error) {
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return nil, fmt.Errorf("kernel BTF is missing (%w): the probes are CO-RE and need a kernel built with CONFIG_DEBUG_INFO_BTF=y", err)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising RLIMIT_MEMLOCK for BPF maps: %w", err)
	}

	spec, err := bpf.LoadKmemleak()
	if err != nil {
		return nil, fmt.Errorf("parsing the embedded BPF object: %w", err)
	}
	spec.Maps["live"].MaxEntries = opts.MaxObjects

	t := &Tracker{modes: map[Allocator]Mode{}}
	if err := t.createMaps(spec); err != nil {
		t.Close()
		return nil, err
	}
	cache := btf.NewCache()
	for _, a := range opts.Allocators {
		if err := t.attach(spec, cache, a, opts.Mode, opts.Logger); err != nil {
			t.Close()
			return nil, err
		}
	}
	t.keys = make([]uint64, scanBatch)
	t.vals = make([]bpf.KmemleakObject, scanBatch)
	return t, nil
}

func (t *Tracker) createMaps(spec *ebpf.CollectionSpec) error {
	for name, dst := range map[string]**ebpf.Map{"live": &t.live, "cache_names": &t.cacheNames, "stats": &t.stats} {
		m, err := ebpf.NewMap(spec.Maps[name])
		if err != nil {
			return fmt.Errorf("creating BPF map %s: %w", name, explainPermission(err))
		}
		*dst = m
	}
	return nil
}

// attach tries the requested mode, or every mode in order for auto, and
// keeps the first whose two programs both load and attach.
func (t *Tracker) attach(spec *ebpf.CollectionSpec, cache *btf.Cache, a Allocator, want Mode, log *zap.Logger) error {
	modes := []Mode{want}
	if want == ModeAuto {
		modes = AttachModes
	}
	var failures []string
	for _, m := range modes {
		err := t.attachMode(spec, cache, a, m)
		if err == nil {
			t.modes[a] = m
			log.Info("Attached allocator probes", zap.Stringer("allocator", a), zap.String("mode", string(m)), zap.Strings("skipped_modes", failures))
			return nil
		}
		failures = append(failures, fmt.Sprintf("%s: %v", m, err))
	}
	return fmt.Errorf("attaching %s allocator probes failed in every mode tried: %s", a, strings.Join(failures, "; "))
}

func (t *Tracker) attachMode(spec *ebpf.CollectionSpec, cache *btf.Cache, a Allocator, m Mode) error {
	h := hooks[a]
	for _, event := range []string{h.allocEvent, h.freeEvent} {
		if err := checkTracepoint(m, event); err != nil {
			return err
		}
	}

	s := spec.Copy()
	names := []string{h.allocProg[m], h.freeProg[m]}
	s.Programs = map[string]*ebpf.ProgramSpec{names[0]: s.Programs[names[0]], names[1]: s.Programs[names[1]]}
	coll, err := ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{
		MapReplacements: map[string]*ebpf.Map{"live": t.live, "cache_names": t.cacheNames, "stats": t.stats},
		Cache:           cache,
	})
	if err != nil {
		return fmt.Errorf("loading: %w", explainPermission(err))
	}
	defer coll.Close()

	var progs []*ebpf.Program
	var links []link.Link
	for i, event := range []string{h.allocEvent, h.freeEvent} {
		prog := coll.DetachProgram(names[i])
		progs = append(progs, prog)
		l, err := attachProgram(prog, m, event)
		if err != nil {
			closeAll(links, progs)
			return fmt.Errorf("attaching to kmem:%s: %w", event, explainPermission(err))
		}
		links = append(links, l)
	}
	t.programs = append(t.programs, progs...)
	t.links = append(t.links, links...)
	return nil
}

func attachProgram(prog *ebpf.Program, m Mode, event string) (link.Link, error) {
	switch m {
	case ModeTPBTF:
		return link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	case ModeRawTP:
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: event, Program: prog})
	case ModeTracepoint:
		return link.Tracepoint("kmem", event, prog, nil)
	}
	return nil, fmt.Errorf("no attach mode %q", m)
}

// checkTracepoint turns the kernel's terse errors for a missing tracepoint
// or an unmounted tracefs into a message that says what to do.
func checkTracepoint(m Mode, event string) error {
	if m == ModeTracepoint {
		if tracefsEvents() == "" {
			return errors.New("tracefs is not mounted (mount it with: mount -t tracefs tracefs /sys/kernel/tracing)")
		}
		if _, err := os.Stat(tracefsEvents() + "/kmem/" + event); err != nil {
			return fmt.Errorf("the kernel has no tracepoint kmem:%s", event)
		}
		return nil
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("reading kernel BTF: %w", err)
	}
	var fn *btf.Typedef
	if err := spec.TypeByName("btf_trace_"+event, &fn); err != nil {
		return fmt.Errorf("the kernel has no tracepoint kmem:%s (no btf_trace_%s in its BTF)", event, event)
	}
	return nil
}

func tracefsEvents() string {
	for _, dir := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(dir + "/kmem"); err == nil {
			return dir
		}
	}
	return ""
}

func closeAll(links []link.Link, progs []*ebpf.Program) {
	for _, l := range links {
		l.Close()
	}
	for _, p := range progs {
		p.Close()
	}
}

// Modes reports the attach mode each allocator ended up with.
func (t *Tracker) Modes() map[Allocator]Mode { return t.modes }

// Scan copies the live-object map into snap, reusing its buffers. Objects
// come out in map order; the map keeps changing while it is read, so an
// object freed during the scan may still appear and a new one may not.
func (t *Tracker) Scan(snap *Snapshot) error {
	snap.Objects = snap.Objects[:0]
	var cursor ebpf.MapBatchCursor
	for {
		n, err := t.live.BatchLookup(&cursor, t.keys, t.vals, nil)
		for i := range n {
			v := &t.vals[i]
			snap.Objects = append(snap.Objects, Object{
				Address:   t.keys[i],
				AllocNs:   v.AllocNs,
				CallSite:  v.CallSite,
				Cache:     v.Cache,
				Bytes:     v.Bytes,
				Allocator: Allocator(v.Allocator),
			})
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("scanning live objects: %w", err)
		}
	}
	var err error
	if snap.Counters, err = t.counters(); err != nil {
		return err
	}
	if snap.CacheNames, err = t.readCacheNames(snap.CacheNames); err != nil {
		return err
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("reading CLOCK_MONOTONIC: %w", err)
	}
	snap.TakenNs = uint64(ts.Nano())
	return nil
}

func (t *Tracker) counters() (map[Allocator]Counters, error) {
	out := make(map[Allocator]Counters, len(t.modes))
	for a := range t.modes {
		var perCPU []bpf.KmemleakCounters
		if err := t.stats.Lookup(uint32(a), &perCPU); err != nil {
			return nil, fmt.Errorf("reading %s counters: %w", a, err)
		}
		var sum Counters
		for _, c := range perCPU {
			sum.Allocs += c.Allocs
			sum.Frees += c.Frees
			sum.UntrackedFrees += c.UntrackedFrees
			sum.Dropped += c.Dropped
		}
		out[a] = sum
	}
	return out, nil
}

// readCacheNames adds the caches the probes saw since the last scan; names
// never change for a key, so known ones are not read again.
func (t *Tracker) readCacheNames(known map[uint64]string) (map[uint64]string, error) {
	if known == nil {
		known = map[uint64]string{}
	}
	var key uint64
	var val bpf.KmemleakCacheName
	it := t.cacheNames.Iterate()
	for it.Next(&key, &val) {
		if _, ok := known[key]; ok {
			continue
		}
		name := make([]byte, 0, len(val.Name))
		for _, c := range val.Name {
			if c == 0 {
				break
			}
			name = append(name, byte(c))
		}
		known[key] = string(name)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading cache names: %w", err)
	}
	return known, nil
}

// Close detaches and unloads everything; safe to call more than once.
func (t *Tracker) Close() error {
	closeAll(t.links, t.programs)
	t.links, t.programs = nil, nil
	var errs []error
	for _, m := range []**ebpf.Map{&t.live, &t.cacheNames, &t.stats} {
		if *m != nil {
			errs = append(errs, (*m).Close())
			*m = nil
		}
	}
	return errors.Join(errs...)
}

// Capability numbers from linux/capability.h.
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// checkPrivileges names the missing capability up front; the kernel's EPERM
// from bpf(2) does not say which one it wanted.
func checkPrivileges() error {
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

func explainPermission(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w (the kernel refused: check CAP_BPF/CAP_PERFMON, kernel.unprivileged_bpf_disabled, and lockdown)", err)
	}
	return err
}
