//go:build linux && (amd64 || arm64)

package tracker

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/bpf"
	"github.com/kmemleak/kmemleakreceiver/internal/jiffies"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/livetable"
	"github.com/kmemleak/kmemleakreceiver/internal/slabinfo"
)

// Tracker owns everything Open put into the kernel; Close releases it.
type Tracker struct {
	maps bpf.KmemleakMaps
	// The same maps by their names in the object, for the loads of the
	// programs that share them, the data sections included.
	byName   map[string]*ebpf.Map
	sections []*ebpf.Map            // .rodata and .bss, closed with the rest
	tables   []*livetable.Mapped    // the live tables of the allocators attached, mapped
	live     *livetable.Mapped      // the slab and kmalloc table, if attached
	young    *livetable.MappedYoung // the young area in front of live, if attached
	attached map[kmem.Allocator]*attached
	bulkFree *ebpf.Program // on kmem_cache_free_bulk, where the kernel has kprobes
	// Else on the workqueue, where the kfree_rcu batches are freed.
	rcuBatches *ebpf.Program
	// With attribution: the programs that tell interrupt context and
	// follow process exits, and the latter alone.
	attribution []*ebpf.Program
	exits       *ebpf.Program
	links       []link.Link
	pins        *pins // nil unless the maps are pinned (pin_linux.go)

	scan    scanState    // read_linux.go
	control controlState // control_linux.go
}

// attached is what one allocator runs in the kernel.
type attached struct {
	mode     kmem.Mode
	programs []*ebpf.Program
	// The program whose recursion misses are lost frees.
	primaryFree *ebpf.Program
}

// Open checks what the kernel allows, loads the maps, and attaches each
// allocator's programs in the first mode that works. The caller checks the
// process's capabilities first, with CheckPrivileges.
func Open(opts Options) (_ *Tracker, err error) {
	if err := checkEnvironment(); err != nil {
		return nil, err
	}
	spec, specs, err := loadSpecs()
	if err != nil {
		return nil, err
	}
	layout := recordLayout(spec) // before configure sizes the maps
	pl := newPlan(&specs.KmemleakProgramSpecs)
	clock, err := readClock(specs)
	if err != nil {
		opts.Logger.Info("Allocation times in nanoseconds, at a cost per allocation: jiffies could not be mapped onto the monotonic clock", zap.Error(err))
	}
	kernel, err := newRunningKernel()
	if err != nil {
		return nil, err
	}
	// kallsyms is read for the kfree_rcu batches only where the bulk-free
	// kprobe cannot replace them.
	var rcuBatches map[string]uint64
	rcuErr := errors.New("not looked for: the kernel has kprobes")
	if !opts.IgnoreBulkFrees && kernel.kprobes() != nil {
		rcuBatches, rcuErr = findRCUBatchFunctions(kernel)
	}
	var preempt preemptCount
	if opts.Attribution && runtime.GOARCH == "amd64" {
		if preempt, err = preemptCountOf(specs); err != nil {
			opts.Logger.Info("Telling softirqs and interrupts by programs on the irq tracepoints, two runs each: the preempt count could not be found", zap.Error(err))
		}
	}
	live, err := configure(specs, pl, opts, clock, rcuBatches, preempt)
	if err != nil {
		return nil, err
	}
	t := &Tracker{attached: map[kmem.Allocator]*attached{}}
	defer func() {
		if err != nil {
			// The error returned says what failed; this only cleans up,
			// leaving pinned what a collector before pinned.
			if t.pins != nil && !t.pins.kept {
				_ = t.pins.unpin()
			}
			_ = t.Close()
		}
	}()
	if opts.PinDir != "" {
		if t.pins, err = t.openPins(opts, shapeOf(layout, &specs.KmemleakMapSpecs, opts, clock != nil)); err != nil {
			return nil, err
		}
	}
	if err := t.createMaps(spec); err != nil {
		return nil, err
	}
	l := &loader{spec: spec, cache: btf.NewCache(), maps: t.byName}
	if err := t.attachAll(l, pl, kernel, opts); err != nil {
		return nil, err
	}
	if !opts.IgnoreBulkFrees {
		t.hookBulkFrees(l, pl, kernel, rcuErr, opts.Logger)
	}
	if opts.Attribution {
		if err := t.attachAttribution(l, attributionPrograms(&specs.KmemleakProgramSpecs, runtime.GOARCH == "arm64" || preempt.known())); err != nil {
			return nil, err
		}
	}
	if err := t.mapTables(live); err != nil {
		return nil, err
	}
	t.scan = newScanState(opts, clock)
	if at := t.attached[kmem.Kmalloc]; at != nil && at.mode != kmem.ModeKprobe {
		// The kprobes name a request's cache from its size; the
		// tracepoints report the cache's slab size.
		t.scan.kmallocSizes = readKmallocSizes(slabCachesDir)
	}
	t.control = controlState{stackSites: map[uint64]bool{}}
	return t, nil
}

// loadSpecs parses the embedded BPF object, whole and typed.
func loadSpecs() (*ebpf.CollectionSpec, *bpf.KmemleakSpecs, error) {
	spec, err := bpf.LoadKmemleak()
	if err != nil {
		return nil, nil, fmt.Errorf("parsing the embedded BPF object: %w", err)
	}
	var specs bpf.KmemleakSpecs
	if err := spec.Assign(&specs); err != nil {
		return nil, nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	return spec, &specs, nil
}

// checkEnvironment names what the kernel lacks before anything is loaded.
func checkEnvironment() error {
	if err := checkPageSize(os.Getpagesize()); err != nil {
		return err
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("reading the kernel version: %w", err)
	}
	if err := checkKernelRelease(unix.ByteSliceToString(uts.Release[:])); err != nil {
		return err
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return fmt.Errorf("kernel BTF is missing (%w): the probes are CO-RE and need a kernel built with CONFIG_DEBUG_INFO_BTF=y", err)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raising RLIMIT_MEMLOCK for BPF maps: %w", err)
	}
	return nil
}

// configure writes the options into the object's constants and sizes its
// maps. It returns the live map of each allocator.
func configure(specs *bpf.KmemleakSpecs, pl *plan, opts Options, clock *jiffies.Clock, rcuBatches map[string]uint64, preempt preemptCount) (map[kmem.Allocator]*ebpf.MapSpec, error) {
	v := &specs.KmemleakVariableSpecs
	if err := errors.Join(
		v.KfreeRcuMonitorFn.Set(rcuBatches["kfree_rcu_monitor"]),
		v.KfreeRcuWorkFn.Set(rcuBatches["kfree_rcu_work"]),
		v.TimeInJiffies.Set(clock != nil),
		v.StackTraces.Set(bpfStackModes[opts.Stacks.Mode]),
		v.StackSampleRate.Set(opts.Stacks.SampleRate),
		v.MinSize.Set(opts.MinSize),
		v.MaxSize.Set(opts.MaxSize),
		v.SampleBelow.Set(uint64(1<<32)/uint64(max(opts.SampleRate, 1))),
		v.IgnoreTgid.Set(opts.IgnoreTgid),
		v.Attribution.Set(opts.Attribution),
		v.KmallocMinSize.Set(kmallocMinSize(slabCachesDir, slabinfo.Path)),
		v.PreemptCountOffset.Set(preempt.count),
		v.RunqueuesOffset.Set(preempt.runqueues),
	); err != nil {
		return nil, fmt.Errorf("setting the probes' constants: %w", err)
	}
	m := &specs.KmemleakMapSpecs
	m.Stacks.ValueSize = uint32(8 * min(max(opts.Stacks.Depth, 1), kmem.MaxStackDepth))
	// With no stacks taken the map is still created, at its smallest.
	m.Stacks.MaxEntries = 1
	if opts.TakesStacks() {
		m.Stacks.MaxEntries = StackMapEntries(opts.MaxObjects)
	}
	// A live table no allocator uses is created at its smallest too.
	for _, live := range pl.liveMaps(m) {
		live.MaxEntries = 1
	}
	buckets := map[string]*ebpf.VariableSpec{m.Live.Name: v.LiveBuckets, m.LivePages.Name: v.LivePagesBuckets, m.LivePercpu.Name: v.LivePercpuBuckets}
	live := map[kmem.Allocator]*ebpf.MapSpec{}
	for _, a := range opts.Allocators {
		spec, err := pl.liveMap(a, m)
		if err != nil {
			return nil, err
		}
		objects := opts.MaxObjects
		if a == kmem.Percpu {
			objects = min(objects, maxPercpuObjects)
		}
		spec.MaxEntries = livetable.Buckets(objects)
		if err := buckets[spec.Name].Set(spec.MaxEntries); err != nil {
			return nil, fmt.Errorf("sizing the live table %s: %w", spec.Name, err)
		}
		live[a] = spec
	}
	// The young area serves the live table of slab and kmalloc objects.
	m.Young.MaxEntries = 1
	if live[kmem.Slab] != nil || live[kmem.Kmalloc] != nil {
		slots, err := youngSlots(opts.YoungSlots)
		if err != nil {
			return nil, err
		}
		m.Young.MaxEntries = slots
	}
	if err := v.YoungSlots.Set(m.Young.MaxEntries); err != nil {
		return nil, fmt.Errorf("sizing the young area: %w", err)
	}
	return live, nil
}

// youngSlots is the size of the young area: want, or where want is 0 the
// machine's (livetable.YoungSlots), by the CPUs it can ever have.
func youngSlots(want uint32) (uint32, error) {
	if want != 0 {
		return want, nil
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return 0, fmt.Errorf("sizing the young area: %w", err)
	}
	return livetable.YoungSlots(cpus), nil
}

// maxPercpuObjects bounds the percpu map: percpu memory is a few MiB in
// all, so a kernel holds tens of thousands of percpu objects, not millions.
const maxPercpuObjects = 1 << 16

// createMaps creates every map of the object once: the programs of all
// allocators share them. The data sections are made here too, the
// constants written in by hand, for a load that made its own would leave
// them mapped into this process: cilium/ebpf maps a collection's data
// sections for its Variables, and neither Collection.Close nor Map.Close
// unmaps them, only the garbage collector does. Until then each load's
// sections, their BTF and files stayed allocated, objects the probes
// tracked and saw go at a random moment.
func (t *Tracker) createMaps(spec *ebpf.CollectionSpec) error {
	only := spec.Copy()
	only.Programs = nil
	if err := writeConstants(only); err != nil {
		return err
	}
	only.Variables = nil
	var opts ebpf.CollectionOptions
	if t.pins != nil {
		opts.MapReplacements = t.pins.adopted
	}
	coll, err := ebpf.NewCollectionWithOptions(only, opts)
	if err != nil {
		return fmt.Errorf("creating the BPF maps: %w", explainPermission(err))
	}
	defer coll.Close()
	t.byName = maps.Clone(coll.Maps)
	for name := range t.byName {
		if strings.HasPrefix(name, ".") {
			t.sections = append(t.sections, coll.DetachMap(name))
		}
	}
	if err := coll.Assign(&t.maps); err != nil {
		return err
	}
	if t.pins == nil {
		return nil
	}
	return t.pinMaps()
}

// writeConstants writes the values set on the variables into their data
// sections' contents.
func writeConstants(spec *ebpf.CollectionSpec) error {
	for _, v := range spec.Variables {
		section := spec.Maps[v.SectionName]
		if v.Value == nil || section == nil || len(section.Contents) != 1 {
			continue
		}
		data, ok := section.Contents[0].Value.([]byte)
		if !ok || int(v.Offset)+len(v.Value) > len(data) {
			return fmt.Errorf("writing the constant %s into %s: no room at offset %d", v.Name, v.SectionName, v.Offset)
		}
		data = slices.Clone(data)
		copy(data[v.Offset:], v.Value)
		section.Contents[0].Value = data
	}
	return nil
}

// mapTables maps the live tables of the allocators attached, each once.
func (t *Tracker) mapTables(live map[kmem.Allocator]*ebpf.MapSpec) error {
	byMap := map[*ebpf.Map]*livetable.Mapped{}
	for _, a := range kmem.Allocators {
		if _, on := t.attached[a]; !on {
			continue
		}
		m := t.byName[live[a].Name]
		tab := byMap[m]
		if tab == nil {
			var err error
			if tab, err = livetable.Map(m); err != nil {
				return err
			}
			byMap[m] = tab
			t.tables = append(t.tables, tab)
		}
		if a == kmem.Slab || a == kmem.Kmalloc {
			t.live = tab
		}
	}
	if t.live == nil {
		return nil
	}
	young, err := livetable.MapYoung(t.maps.Young)
	if err != nil {
		return err
	}
	t.young = young
	return nil
}

// attachAll attaches every allocator it can. An allocator the kernel gives
// no way to follow is left out with a warning, as long as another one is
// followed.
func (t *Tracker) attachAll(l *loader, pl *plan, k kernel, opts Options) error {
	var errs []error
	for _, a := range opts.Allocators {
		if err := t.attach(l, pl, k, a, opts.Mode, opts.Logger); err != nil {
			errs = append(errs, err)
		}
	}
	if len(t.attached) == 0 {
		return errors.Join(errs...)
	}
	for _, err := range errs {
		opts.Logger.Warn("Not tracking an allocator the kernel offers no way to follow", zap.Error(err))
	}
	return nil
}

// attach tries the requested mode, or every mode in order for auto, and
// keeps the first whose programs all load and attach.
func (t *Tracker) attach(l *loader, pl *plan, k kernel, a kmem.Allocator, want kmem.Mode, log *zap.Logger) error {
	modes := []kmem.Mode{want}
	if want == kmem.ModeAuto {
		modes = kmem.AttachModes
	}
	var failures []string
	for _, m := range modes {
		err := t.attachMode(l, pl, k, a, m)
		if err == nil {
			log.Info("Attached allocator probes", zap.Stringer("allocator", a), zap.String("mode", string(m)), zap.Strings("skipped_modes", failures))
			return nil
		}
		failures = append(failures, fmt.Sprintf("%s: %v", m, err))
	}
	return fmt.Errorf("attaching %s allocator probes failed in every mode tried: %s", a, strings.Join(failures, "; "))
}

func (t *Tracker) attachMode(l *loader, pl *plan, k kernel, a kmem.Allocator, m kmem.Mode) error {
	choices, err := pl.choices(a, m, k)
	if err != nil {
		return err
	}
	var errs []error
	for _, todo := range choices {
		progs, links, err := l.load(todo)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		t.keep(a, m, todo, progs, links)
		return nil
	}
	return errors.Join(errs...)
}

// keep records what an allocator attached, for counters and Close.
func (t *Tracker) keep(a kmem.Allocator, m kmem.Mode, todo []attachment, progs map[*ebpf.ProgramSpec]*ebpf.Program, links []link.Link) {
	at := &attached{mode: m}
	for _, p := range todo {
		if !slices.Contains(at.programs, progs[p.program]) {
			at.programs = append(at.programs, progs[p.program])
		}
		if p.primaryFree {
			at.primaryFree = progs[p.program]
		}
	}
	t.attached[a] = at
	t.links = append(t.links, links...)
}

// hookBulkFrees follows the frees no tracepoint shows: every bulk free
// where the kernel has kprobes, else the kfree_rcu batches where their
// functions were found (rcuErr says why not). Without either, nothing is
// lost but coverage: the truth check finds the caches freed in bulk and
// stops tracking them.
func (t *Tracker) hookBulkFrees(l *loader, pl *plan, k kernel, rcuErr error, log *zap.Logger) {
	_, slab := t.attached[kmem.Slab]
	_, kmalloc := t.attached[kmem.Kmalloc]
	if !slab && !kmalloc {
		return
	}
	hook := pl.bulkFree()
	err := k.kprobes()
	if err == nil {
		if t.bulkFree, err = t.loadOne(l, hook); err == nil {
			log.Info("Following bulk frees, which no tracepoint shows", zap.String("function", hook.symbol))
			return
		}
	}
	batches := pl.rcuBatches()
	if rcuErr == nil {
		if t.rcuBatches, rcuErr = t.loadOne(l, batches); rcuErr == nil {
			log.Info("Following kfree_rcu batches as the workqueue frees them; other bulk frees will be found by the truth check and their caches untracked",
				zap.String("function", hook.symbol), zap.NamedError("kprobe_error", err))
			return
		}
	}
	log.Info("Not following bulk frees: caches freed in bulk will be found by the truth check and untracked",
		zap.String("function", hook.symbol), zap.Error(err), zap.NamedError("kfree_rcu_batches_error", rcuErr))
}

// loadOne loads and attaches one program that is not an allocator's.
func (t *Tracker) loadOne(l *loader, at attachment) (*ebpf.Program, error) {
	progs, links, err := l.load([]attachment{at})
	if err != nil {
		return nil, err
	}
	t.links = append(t.links, links...)
	return progs[at.program], nil
}

// attachAttribution attaches what attribution needs besides the
// allocation probes (attributionPrograms).
func (t *Tracker) attachAttribution(l *loader, todo []attachment) error {
	loaded, links, err := l.load(todo)
	if err != nil {
		return fmt.Errorf("attribution: %w (attribution: false turns it off)", err)
	}
	for _, at := range todo {
		t.attribution = append(t.attribution, loaded[at.program])
		if at.event == "sched_process_exit" {
			t.exits = loaded[at.program]
		}
	}
	t.links = append(t.links, links...)
	return nil
}

// attributionPrograms are the programs attribution attaches: the one that
// records the processes that end and, where the probes cannot read the
// preempt count (preemptCount), the four that tell softirqs and interrupt
// handlers by flags, exits first (see the probes).
func attributionPrograms(progs *bpf.KmemleakProgramSpecs, readsPreemptCount bool) []attachment {
	exits := attachment{program: progs.ProcessExit, mode: kmem.ModeRawTP, group: "sched", event: "sched_process_exit"}
	if readsPreemptCount {
		return []attachment{exits}
	}
	return []attachment{
		{program: progs.SoftirqExit, mode: kmem.ModeRawTP, group: "irq", event: "softirq_exit"},
		{program: progs.HardirqExit, mode: kmem.ModeRawTP, group: "irq", event: "irq_handler_exit"},
		{program: progs.SoftirqEntry, mode: kmem.ModeRawTP, group: "irq", event: "softirq_entry"},
		{program: progs.HardirqEntry, mode: kmem.ModeRawTP, group: "irq", event: "irq_handler_entry"},
		exits,
	}
}

// FollowsBulkFrees reports whether the frees of kmem_cache_free_bulk are
// tracked.
func (t *Tracker) FollowsBulkFrees() bool { return t.bulkFree != nil }

// FollowsRCUBatches reports whether the kfree_rcu batches' frees are
// tracked: by the bulk-free hook, or read from the batches.
func (t *Tracker) FollowsRCUBatches() bool { return t.bulkFree != nil || t.rcuBatches != nil }

// Modes reports the attach mode each allocator ended up with.
func (t *Tracker) Modes() map[kmem.Allocator]kmem.Mode {
	out := make(map[kmem.Allocator]kmem.Mode, len(t.attached))
	for a, at := range t.attached {
		out[a] = at.mode
	}
	return out
}

// loader loads programs of the object against the maps the tracker made.
type loader struct {
	spec  *ebpf.CollectionSpec
	cache *btf.Cache
	maps  map[string]*ebpf.Map
}

// load loads the programs todo names, once each, and attaches them in
// order.
func (l *loader) load(todo []attachment) (map[*ebpf.ProgramSpec]*ebpf.Program, []link.Link, error) {
	s := l.spec.Copy()
	// The data sections are replaced by the tracker's (see createMaps):
	// without Variables the load maps nothing into this process.
	s.Variables = nil
	s.Programs = map[string]*ebpf.ProgramSpec{}
	for _, at := range todo {
		s.Programs[at.program.Name] = at.program
	}
	coll, err := ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{MapReplacements: l.maps, Cache: l.cache})
	if err != nil {
		return nil, nil, fmt.Errorf("loading: %w", explainLoad(todo[0].mode, err))
	}
	defer coll.Close()

	progs := map[*ebpf.ProgramSpec]*ebpf.Program{}
	var links []link.Link
	for _, at := range todo {
		if progs[at.program] == nil {
			progs[at.program] = coll.DetachProgram(at.program.Name)
		}
		lk, err := attachProgram(progs[at.program], at)
		if err != nil {
			_ = closeAll(links, slices.Collect(maps.Values(progs))) // the attach error is the one to return
			return nil, nil, fmt.Errorf("attaching to %s: %w", at, explainPermission(err))
		}
		links = append(links, lk)
	}
	return progs, links, nil
}

func attachProgram(prog *ebpf.Program, at attachment) (link.Link, error) {
	switch {
	case at.mode != kmem.ModeKprobe:
		return AttachTracepoint(prog, at.mode, at.group, at.event)
	case at.ret:
		return link.Kretprobe(at.symbol, prog, nil)
	default:
		return link.Kprobe(at.symbol, prog, &link.KprobeOptions{Cookie: at.cookie})
	}
}

// AttachTracepoint attaches prog to the tracepoint group:event in a
// tracepoint mode, as the tracker attaches its own programs.
func AttachTracepoint(prog *ebpf.Program, m kmem.Mode, group, event string) (link.Link, error) {
	switch m {
	case kmem.ModeTPBTF:
		return link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	case kmem.ModeRawTP:
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: event, Program: prog})
	case kmem.ModeTracepoint:
		return link.Tracepoint(group, event, prog, nil)
	}
	return nil, fmt.Errorf("%s is no tracepoint mode", m)
}

func closeAll(links []link.Link, progs []*ebpf.Program) error {
	var errs []error
	for _, l := range links {
		errs = append(errs, l.Close())
	}
	for _, p := range progs {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

// Close detaches and unloads everything, and returns every error it met
// doing so; safe to call more than once.
func (t *Tracker) Close() error {
	ran := len(t.links) > 0
	errs := []error{closeAll(t.links, nil)}
	if t.pins != nil {
		// The probes stop here: what the next collector adopts is
		// unwatched from now.
		if ran {
			errs = append(errs, t.pins.detached())
		}
		errs = append(errs, t.pins.close())
		t.pins = nil
	}
	for _, at := range t.attached {
		errs = append(errs, closeAll(nil, at.programs))
	}
	for _, p := range []*ebpf.Program{t.bulkFree, t.rcuBatches} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	errs = append(errs, closeAll(nil, t.attribution))
	for _, m := range t.sections {
		errs = append(errs, m.Close())
	}
	for _, tab := range t.tables {
		errs = append(errs, tab.Close())
	}
	if t.young != nil {
		errs = append(errs, t.young.Close())
	}
	t.links, t.attached, t.bulkFree, t.rcuBatches, t.attribution, t.exits, t.byName, t.tables, t.live, t.young, t.sections = nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil
	errs = append(errs, t.maps.Close())
	t.maps = bpf.KmemleakMaps{}
	return errors.Join(errs...)
}
