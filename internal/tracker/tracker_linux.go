//go:build linux

package tracker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
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

// Tracker owns everything Open put into the kernel; Close releases it.
type Tracker struct {
	maps     map[string]*ebpf.Map // every map of the BPF object, by name
	live     *ebpf.Map            // slab and kmalloc objects
	scanned  []*ebpf.Map          // the live maps of the allocators attached
	programs map[Allocator][]*ebpf.Program
	// The program of each allocator whose recursion misses are lost frees.
	primaryFree map[Allocator]*ebpf.Program
	bulkFree    *ebpf.Program // on kmem_cache_free_bulk, where the kernel has kprobes
	links       []link.Link
	modes       map[Allocator]Mode

	// Reused across scans so a scan of a million objects does not allocate.
	keys []uint64
	vals []bpf.KmemleakObject

	stacksOn     bool
	stackDepth   int
	unreferenced map[int32]bool  // stack ids no live object used at the last scan
	stackSites   map[uint64]bool // the contents of the stack_sites map
}

// scanBatch is the number of entries one BPF_MAP_LOOKUP_BATCH call copies:
// large enough that syscalls are a small part of a scan, small enough that
// the buffers stay in the hundreds of KiB.
const scanBatch = 8192

// attachment is one program on one tracepoint (group:event, e.g.
// kmem:kfree), or on one kernel function (symbol) in kprobe mode.
type attachment struct {
	program      string
	mode         Mode // how it attaches: a tracepoint mode, or kprobe
	group, event string
	symbol       string
	ret          bool   // a kretprobe
	cookie       uint64 // for bpf_get_attach_cookie
	// primaryFree marks the program whose recursion misses are lost frees
	// (Counters.FreeMisses).
	primaryFree bool
}

func (at attachment) String() string {
	switch {
	case at.ret:
		return "kretprobe " + at.symbol
	case at.symbol != "":
		return "kprobe " + at.symbol
	}
	return at.group + ":" + at.event
}

// programs lists, per allocator and mode, what to attach, in order: on a
// tracepoint, programs run in the order they were attached, and the backup
// free program (free_backup in the BPF code) must run after the primary.
var programs = map[Allocator]map[Mode][]attachment{
	Slab:    tracepointPrograms("slab", "kmem", "kmem_cache_alloc", "kmem_cache_free"),
	Kmalloc: tracepointPrograms("kmalloc", "kmem", "kmalloc", "kfree"),
	Page:    tracepointPrograms("page", "kmem", "mm_page_alloc", "mm_page_free"),
	Percpu:  tracepointPrograms("percpu", "percpu", "percpu_alloc_percpu", "percpu_free_percpu"),
}

// tracepointPrograms lists an allocator's programs in each tracepoint mode,
// named <mode>_<allocator>_{alloc,free,free_bk} in the BPF code. Classic
// tracepoints get no backup free program (see the BPF code).
func tracepointPrograms(name, group, alloc, free string) map[Mode][]attachment {
	list := func(prefix string, m Mode) []attachment {
		p := prefix + "_" + name
		return []attachment{
			{program: p + "_alloc", mode: m, group: group, event: alloc},
			{program: p + "_free", mode: m, group: group, event: free, primaryFree: true},
			{program: p + "_free_bk", mode: m, group: group, event: free},
		}
	}
	return map[Mode][]attachment{ModeTPBTF: list("btf", ModeTPBTF), ModeRawTP: list("raw", ModeRawTP), ModeTracepoint: list("tp", ModeTracepoint)[:2]}
}

// Open checks what the kernel and the process allow, loads the maps, and
// attaches each allocator's programs in the first mode that works.
func Open(opts Options) (*Tracker, error) {
	if err := CheckPrivileges(); err != nil {
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
	if err := configure(spec, opts); err != nil {
		return nil, err
	}

	t := &Tracker{
		maps:        map[string]*ebpf.Map{},
		programs:    map[Allocator][]*ebpf.Program{},
		primaryFree: map[Allocator]*ebpf.Program{},
		modes:       map[Allocator]Mode{},
		stacksOn:    opts.TakesStacks(),
		stackDepth:  opts.Stacks.Depth,
		stackSites:  map[uint64]bool{},
	}
	if err := t.createMaps(spec); err != nil {
		t.Close()
		return nil, err
	}
	cache := btf.NewCache()
	// An allocator the kernel gives no way to follow is left out with a
	// warning, as long as another one is followed.
	var errs []error
	for _, a := range opts.Allocators {
		if err := t.attach(spec, cache, a, opts.Mode, opts.Logger); err != nil {
			errs = append(errs, err)
		}
	}
	if len(t.modes) == 0 {
		t.Close()
		return nil, errors.Join(errs...)
	}
	for _, err := range errs {
		opts.Logger.Warn("Not tracking an allocator the kernel offers no way to follow", zap.Error(err))
	}
	if !opts.IgnoreBulkFrees {
		t.hookBulkFrees(spec, cache, opts.Logger)
	}
	t.scanned = t.scannedMaps()
	t.keys = make([]uint64, scanBatch)
	t.vals = make([]bpf.KmemleakObject, scanBatch)
	return t, nil
}

// configure writes the options into the object's constants and sizes the
// stack map.
func configure(spec *ebpf.CollectionSpec, opts Options) error {
	consts := map[string]uint32{
		"stack_mode":        uint32(opts.Stacks.Mode),
		"stack_sample_rate": opts.Stacks.SampleRate,
		"min_size":          opts.MinSize,
		"max_size":          opts.MaxSize,
		"sample_rate":       max(opts.SampleRate, 1),
	}
	for name, v := range consts {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	stacks := spec.Maps["stacks"]
	stacks.ValueSize = uint32(8 * opts.Stacks.Depth)
	stacks.MaxEntries = StackMapEntries(opts)
	for name, size := range liveMapEntries(opts) {
		spec.Maps[name].MaxEntries = size
	}
	return nil
}

// maxPercpuObjects bounds the percpu map: percpu memory is a few MiB in
// all, so a kernel holds tens of thousands of percpu objects, not millions.
const maxPercpuObjects = 1 << 16

// liveMapEntries sizes the live maps, max_tracked_objects each (percpu's
// at most maxPercpuObjects); a map no allocator uses is created at its
// smallest.
func liveMapEntries(opts Options) map[string]uint32 {
	out := map[string]uint32{"live": 1, "live_pages": 1, "live_percpu": 1}
	for _, a := range opts.Allocators {
		size := opts.MaxObjects
		if a == Percpu {
			size = min(size, maxPercpuObjects)
		}
		out[liveMapOf[a]] = size
	}
	return out
}

// liveMapOf names the live map each allocator's objects go to
// (live_map_of() in the BPF code).
var liveMapOf = map[Allocator]string{Slab: "live", Kmalloc: "live", Page: "live_pages", Percpu: "live_percpu"}

// StackMapEntries sizes the stack map: far fewer distinct stacks than live
// objects exist, and the kernel allocates the whole map up front (depth x 8
// bytes each), so one entry per 8 tracked objects. With no stacks taken
// the map is still created, at its smallest.
func StackMapEntries(opts Options) uint32 {
	if !opts.TakesStacks() {
		return 1
	}
	return min(max(opts.MaxObjects/8, 1024), 1<<17)
}

func (t *Tracker) createMaps(spec *ebpf.CollectionSpec) error {
	for name, ms := range spec.Maps {
		// .rodata holds the load-time constants: each program load makes its
		// own copy, and nothing is shared through it.
		if strings.HasPrefix(name, ".") {
			continue
		}
		m, err := ebpf.NewMap(ms)
		if err != nil {
			return fmt.Errorf("creating BPF map %s: %w", name, explainPermission(err))
		}
		t.maps[name] = m
	}
	t.live = t.maps["live"]
	return nil
}

// scannedMaps returns the live maps of the allocators attached, each once.
func (t *Tracker) scannedMaps() []*ebpf.Map {
	var out []*ebpf.Map
	for _, a := range Allocators {
		if _, on := t.modes[a]; on && !slices.Contains(out, t.maps[liveMapOf[a]]) {
			out = append(out, t.maps[liveMapOf[a]])
		}
	}
	return out
}

// attach tries the requested mode, or every mode in order for auto, and
// keeps the first whose programs all load and attach.
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
	choices, err := attachments(a, m)
	if err != nil {
		return err
	}
	var errs []error
	for _, todo := range choices {
		progs, links, err := t.load(spec, cache, todo)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		t.keep(a, todo, progs, links)
		return nil
	}
	return errors.Join(errs...)
}

// keep records what an allocator attached, for counters and Close.
func (t *Tracker) keep(a Allocator, todo []attachment, progs map[string]*ebpf.Program, links []link.Link) {
	for _, at := range todo {
		if !slices.Contains(t.programs[a], progs[at.program]) {
			t.programs[a] = append(t.programs[a], progs[at.program])
		}
		if at.primaryFree {
			t.primaryFree[a] = progs[at.program]
		}
	}
	t.links = append(t.links, links...)
}

// hookBulkFrees follows the frees no tracepoint shows, where the kernel has
// kprobes. Without it, nothing is lost but coverage: the truth check finds
// the caches freed in bulk and stops tracking them.
func (t *Tracker) hookBulkFrees(spec *ebpf.CollectionSpec, cache *btf.Cache, log *zap.Logger) {
	_, slab := t.modes[Slab]
	_, kmalloc := t.modes[Kmalloc]
	if !slab && !kmalloc {
		return
	}
	err := checkKprobes()
	if err == nil {
		var progs map[string]*ebpf.Program
		var links []link.Link
		if progs, links, err = t.load(spec, cache, []attachment{bulkFree}); err == nil {
			t.bulkFree = progs[bulkFree.program]
			t.links = append(t.links, links...)
			log.Info("Following bulk frees, which no tracepoint shows", zap.String("function", bulkFree.symbol))
			return
		}
	}
	log.Info("Not following bulk frees: caches freed in bulk will be found by the truth check and untracked",
		zap.String("function", bulkFree.symbol), zap.Error(err))
}

// FollowsBulkFrees reports whether the frees of kmem_cache_free_bulk are
// tracked.
func (t *Tracker) FollowsBulkFrees() bool { return t.bulkFree != nil }

// attachments lists what allocator a can attach in mode m on this kernel,
// best first, or why it cannot.
func attachments(a Allocator, m Mode) ([][]attachment, error) {
	if m != ModeKprobe {
		todo := programs[a][m]
		for _, at := range todo {
			if err := checkTracepoint(m, at.group, at.event); err != nil {
				return nil, err
			}
		}
		return [][]attachment{todo}, nil
	}
	if err := checkKprobes(); err != nil {
		return nil, fmt.Errorf("%w; use a tracepoint mode (attach: auto)", err)
	}
	kallsyms, err := os.Open("/proc/kallsyms")
	if err != nil {
		return nil, fmt.Errorf("reading kernel symbols to find the functions to hook: %w", err)
	}
	defer kallsyms.Close()
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("reading kernel BTF: %w", err)
	}
	todo, err := kprobeAttachments(a, kallsyms, func(name string) ([]string, error) { return paramNames(kernel, name) })
	if err != nil {
		return nil, err
	}
	return [][]attachment{withRawFrees(a, todo), todo}, nil
}

// rawFrees follow the frees of the kprobe mode's allocators on raw
// tracepoints where the kernel has them (the free tracepoints' object
// argument is the second in every version). Their recursion guard is per
// program and a backup program catches what the first misses, where
// kprobes share one guard per CPU: a softirq that lands while any of our
// kprobes runs has all its frees skipped, and lost frees are phantom leaks.
// A lost allocation is only an object not tracked.
var rawFrees = map[Allocator][]attachment{
	Slab: {
		{program: "raw_slab_free_any", mode: ModeRawTP, event: "kmem_cache_free", primaryFree: true},
		{program: "raw_slab_free_bk", mode: ModeRawTP, event: "kmem_cache_free"},
	},
	Kmalloc: {
		{program: "raw_kmalloc_free", mode: ModeRawTP, event: "kfree", primaryFree: true},
		{program: "raw_kmalloc_free_bk", mode: ModeRawTP, event: "kfree"},
	},
}

// withRawFrees replaces the kprobe on the free function by rawFrees.
func withRawFrees(a Allocator, todo []attachment) []attachment {
	out := slices.DeleteFunc(slices.Clone(todo), func(at attachment) bool { return at.primaryFree })
	return append(out, rawFrees[a]...)
}

// paramNames lists a kernel function's parameter names from its BTF.
func paramNames(kernel *btf.Spec, name string) ([]string, error) {
	var fn *btf.Func
	if err := kernel.TypeByName(name, &fn); err != nil {
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

// checkKprobes names the missing kernel option: without it, attaching a
// kprobe fails with a bare "file does not exist".
func checkKprobes() error {
	for _, path := range []string{"/sys/bus/event_source/devices/kprobe", "/sys/kernel/tracing/kprobe_events", "/sys/kernel/debug/tracing/kprobe_events"} {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
	}
	return errors.New("the kernel has no kprobes (built without CONFIG_KPROBES: no /sys/bus/event_source/devices/kprobe, no kprobe_events in tracefs)")
}

// load loads the programs todo names, once each, and attaches them in
// order; it returns the programs by name.
func (t *Tracker) load(spec *ebpf.CollectionSpec, cache *btf.Cache, todo []attachment) (map[string]*ebpf.Program, []link.Link, error) {
	s := spec.Copy()
	s.Programs = map[string]*ebpf.ProgramSpec{}
	for _, at := range todo {
		s.Programs[at.program] = spec.Programs[at.program]
	}
	coll, err := ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{MapReplacements: t.maps, Cache: cache})
	if err != nil {
		return nil, nil, fmt.Errorf("loading: %w", explainLoad(todo[0].mode, err))
	}
	defer coll.Close()

	progs := map[string]*ebpf.Program{}
	var links []link.Link
	for _, at := range todo {
		if progs[at.program] == nil {
			progs[at.program] = coll.DetachProgram(at.program)
		}
		l, err := attachProgram(progs[at.program], at)
		if err != nil {
			closeAll(links, slices.Collect(maps.Values(progs)))
			return nil, nil, fmt.Errorf("attaching to %s: %w", at, explainPermission(err))
		}
		links = append(links, l)
	}
	return progs, links, nil
}

func attachProgram(prog *ebpf.Program, at attachment) (link.Link, error) {
	switch {
	case at.mode == ModeTPBTF:
		return link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	case at.mode == ModeRawTP:
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: at.event, Program: prog})
	case at.mode == ModeTracepoint:
		return link.Tracepoint(at.group, at.event, prog, nil)
	case at.ret:
		return link.Kretprobe(at.symbol, prog, nil)
	default:
		return link.Kprobe(at.symbol, prog, &link.KprobeOptions{Cookie: at.cookie})
	}
}

// checkTracepoint turns the kernel's terse errors for a missing tracepoint
// or an unmounted tracefs into a message that says what to do.
func checkTracepoint(m Mode, group, event string) error {
	if m == ModeTracepoint {
		if tracefsEvents() == "" {
			return errors.New("tracefs is not mounted (mount it with: mount -t tracefs tracefs /sys/kernel/tracing)")
		}
		if _, err := os.Stat(tracefsEvents() + "/" + group + "/" + event); err != nil {
			return fmt.Errorf("the kernel has no tracepoint %s:%s", group, event)
		}
		return nil
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("reading kernel BTF: %w", err)
	}
	var fn *btf.Typedef
	if err := spec.TypeByName("btf_trace_"+event, &fn); err != nil {
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
	for _, m := range t.scanned {
		if err := t.scanMap(m, snap); err != nil {
			return err
		}
	}
	var err error
	if snap.Counters, err = t.counters(); err != nil {
		return err
	}
	if err := t.readCaches(snap); err != nil {
		return err
	}
	if t.stacksOn {
		if snap.Stacks, err = t.pruneStacks(snap.Objects); err != nil {
			return err
		}
	}
	snap.TakenNs, err = MonotonicNow()
	return err
}

func (t *Tracker) scanMap(m *ebpf.Map, snap *Snapshot) error {
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, t.keys, t.vals, nil)
		for i := range n {
			v := &t.vals[i]
			snap.Objects = append(snap.Objects, Object{
				Address:      t.keys[i],
				AllocNs:      v.AllocNs,
				CallSite:     v.CallSite,
				Cache:        v.Cache,
				Bytes:        v.Bytes,
				StackID:      v.StackId,
				StackSkipped: v.StackSkipped != 0,
				Allocator:    Allocator(v.Allocator),
			})
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("scanning live objects (map %s): %w", m, err)
		}
	}
}

// MonotonicNow reads the clock of Object.AllocNs (bpf_ktime_get_ns).
func MonotonicNow() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("reading CLOCK_MONOTONIC: %w", err)
	}
	return uint64(ts.Nano()), nil
}

func (t *Tracker) counters() (map[Allocator]Counters, error) {
	out := make(map[Allocator]Counters, len(t.modes))
	for a := range t.modes {
		var perCPU []bpf.KmemleakCounters
		if err := t.maps["stats"].Lookup(uint32(a), &perCPU); err != nil {
			return nil, fmt.Errorf("reading %s counters: %w", a, err)
		}
		var sum Counters
		for _, c := range perCPU {
			sum.Allocs += c.Allocs
			sum.Frees += c.Frees
			sum.UntrackedFrees += c.UntrackedFrees
			sum.Dropped += c.Dropped
			sum.StackErrors += c.StackErrors
			sum.RecoveredFrees += c.RecoveredFrees
		}
		for _, p := range t.programs[a] {
			stats, err := p.Stats()
			if err != nil {
				return nil, fmt.Errorf("reading %s program statistics: %w", a, err)
			}
			sum.RecursionMisses += stats.RecursionMisses
			if p == t.primaryFree[a] {
				sum.FreeMisses = stats.RecursionMisses
			}
		}
		out[a] = sum
	}
	return out, nil
}

// readCaches reads the slab caches the probes have seen: a few hundred
// entries. Names never change for a key, so known ones are not copied again.
func (t *Tracker) readCaches(snap *Snapshot) error {
	if snap.CacheNames == nil {
		snap.CacheNames = map[uint64]string{}
		snap.Freed = map[uint64]bool{}
	}
	var key uint64
	var val bpf.KmemleakCacheInfo
	it := t.maps["caches"].Iterate()
	for it.Next(&key, &val) {
		if _, ok := snap.CacheNames[key]; !ok {
			snap.CacheNames[key] = cString(val.Name[:])
		}
		if val.Freed != 0 {
			snap.Freed[key] = true
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading slab caches: %w", err)
	}
	return nil
}

func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

// Skip stops tracking a cache (its frees go unseen, or the configuration
// filters it out) and deletes the given entries of it, its live objects in
// the last snapshot, from the live map.
func (t *Tracker) Skip(id CacheID, addrs []uint64) error {
	switch id.Allocator {
	case Slab:
		m := t.maps["caches"]
		var info bpf.KmemleakCacheInfo
		if err := m.Lookup(id.Key, &info); err != nil {
			return fmt.Errorf("looking up slab cache %#x: %w", id.Key, err)
		}
		info.Skip = 1
		if err := m.Update(id.Key, &info, ebpf.UpdateExist); err != nil {
			return fmt.Errorf("marking slab cache %#x skipped: %w", id.Key, err)
		}
	case Kmalloc:
		if id.Key == KmallocLargeKey {
			return errors.New("kmalloc-large is no slab cache and cannot be skipped")
		}
		if err := t.maps["kmalloc_skip"].Update(uint32(id.Key), uint32(1), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("marking kmalloc slot %d skipped: %w", id.Key, err)
		}
	default:
		return fmt.Errorf("cannot skip a cache of %s", id.Allocator)
	}
	return t.Delete(addrs)
}

// Delete removes slab and kmalloc objects from the live map. The kernel
// stops a batch at the first missing key, an entry freed meanwhile: it is
// skipped.
func (t *Tracker) Delete(addrs []uint64) error {
	for len(addrs) > 0 {
		n, err := t.live.BatchDelete(addrs, nil)
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			addrs = addrs[n+1:]
		case err != nil:
			return fmt.Errorf("deleting %d live-map entries: %w", len(addrs), err)
		default:
			addrs = nil
		}
	}
	return nil
}

// pruneStacks deletes the stacks no live object has used for two scans in a
// row, so the stack map cannot fill up over days, and returns how many
// stacks are left. Two scans, not one: an object allocated while this scan
// read the map may use a stack this scan did not see referenced.
func (t *Tracker) pruneStacks(objects []Object) (int, error) {
	referenced := map[int32]bool{}
	for _, o := range objects {
		if o.StackID >= 0 {
			referenced[o.StackID] = true
		}
	}
	m := t.maps["stacks"]
	var ids, doomed []int32
	var key any // nil: the first key
	for {
		var next int32
		err := m.NextKey(key, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("listing stacks: %w", err)
		}
		ids = append(ids, next)
		key = next
	}
	unreferenced := map[int32]bool{}
	for _, id := range ids {
		switch {
		case referenced[id]:
		case t.unreferenced[id]:
			doomed = append(doomed, id)
		default:
			unreferenced[id] = true
		}
	}
	t.unreferenced = unreferenced
	for _, id := range doomed {
		if err := m.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, fmt.Errorf("deleting stack %d: %w", id, err)
		}
	}
	return len(ids) - len(doomed), nil
}

// Stack returns the kernel stack with the given id, innermost frame first.
func (t *Tracker) Stack(id int32) ([]uint64, error) {
	frames := make([]uint64, t.stackDepth)
	if err := t.maps["stacks"].Lookup(id, frames); err != nil {
		return nil, fmt.Errorf("reading stack %d: %w", id, err)
	}
	for i, f := range frames {
		if f == 0 {
			return frames[:i], nil
		}
	}
	return frames, nil
}

// SetStackSites makes sites the call sites whose allocations get a stack in
// adaptive mode. The map holds the first MaxEntries of them: callers pass
// the most important first.
func (t *Tracker) SetStackSites(sites []uint64) error {
	m := t.maps["stack_sites"]
	sites = sites[:min(len(sites), int(m.MaxEntries()))]
	want := make(map[uint64]bool, len(sites))
	for _, site := range sites {
		want[site] = true
		if !t.stackSites[site] {
			if err := m.Update(site, uint8(1), ebpf.UpdateAny); err != nil {
				return fmt.Errorf("adding stack call site: %w", err)
			}
		}
	}
	for site := range t.stackSites {
		if !want[site] {
			if err := m.Delete(site); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("removing stack call site: %w", err)
			}
		}
	}
	t.stackSites = want
	return nil
}

// Close detaches and unloads everything; safe to call more than once.
func (t *Tracker) Close() error {
	for _, l := range t.links {
		l.Close()
	}
	for _, progs := range t.programs {
		for _, p := range progs {
			p.Close()
		}
	}
	if t.bulkFree != nil {
		t.bulkFree.Close()
	}
	t.links, t.programs, t.primaryFree, t.bulkFree = nil, nil, nil, nil
	var errs []error
	for _, m := range t.maps {
		errs = append(errs, m.Close())
	}
	t.maps, t.live, t.scanned = nil, nil, nil
	return errors.Join(errs...)
}

// Capability numbers from linux/capability.h.
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// CheckPrivileges names the missing capability up front; the kernel's EPERM
// from bpf(2) does not say which one it wanted.
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
func explainLoad(m Mode, err error) error {
	if m == ModeTPBTF && strings.Contains(err.Error(), "type UNKNOWN is not a struct") {
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
