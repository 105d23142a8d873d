//go:build linux && (amd64 || arm64)

package tracker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/bpf"
)

// The maps a restart adopts, pinned under Options.PinDir: the objects (the
// live tables and the young area), what their records name (the slab
// caches, the stacks), the counters, and the process exits no scan has read
// yet. The rest are made again: the stack call sites and the kmalloc skip
// table are the scans' decisions, which the next scans make again, and the
// others hold nothing that outlives an event.
var pinnedMaps = []string{
	bpf.KmemleakMapLive, bpf.KmemleakMapLivePages, bpf.KmemleakMapLivePercpu, bpf.KmemleakMapYoung,
	bpf.KmemleakMapCaches, bpf.KmemleakMapStacks, bpf.KmemleakMapStats, bpf.KmemleakMapExits,
}

// stateName is the pinned map that says whose the other pins are: their
// shape and when the probes last wrote them. It is pinned last and removed
// first, so that where it is, every map it describes is pinned too.
const stateName = "state"

// pinFormat is the version of pinState and of the directory's layout:
// pins of another format are never adopted.
const pinFormat = 1

// shapeParts name what must be the same for a collector to adopt another's
// tables, in the order of shape's hashes: what the records mean and how
// the tables are sized.
var shapeParts = [...]string{
	"the probes' record layout",
	"allocators or max_tracked_objects (the live tables' sizes)",
	"the young area's size (the machine's CPUs)",
	"stack_traces or stack_depth (the stack map)",
	"sample_rate",
	"min_size or max_size",
	"attribution",
	"the probes' clock (jiffies or nanoseconds)",
}

// shape is one hash per part of shapeParts.
type shape [len(shapeParts)]uint64

// pinState is the value of the state map.
type pinState struct {
	Format uint32
	_      uint32
	// AliveNs is when the probes were last known to run, on
	// CLOCK_MONOTONIC: the last scan, or their detaching at Close.
	AliveNs uint64
	Shape   shape
}

// shapeOf hashes each part of the shape: layout is the probes' record
// layout (recordLayout, from the object before configure sized its maps),
// the rest comes from the configured maps and the options.
func shapeOf(layout string, m *bpf.KmemleakMapSpecs, opts Options, jiffies bool) shape {
	return shape{
		hash(layout),
		hash(m.Live.MaxEntries, m.LivePages.MaxEntries, m.LivePercpu.MaxEntries),
		hash(m.Young.MaxEntries),
		hash(m.Stacks.MaxEntries, m.Stacks.ValueSize),
		hash(max(opts.SampleRate, 1)),
		hash(opts.MinSize, opts.MaxSize),
		hash(opts.Attribution),
		hash(jiffies),
	}
}

func hash(values ...any) uint64 {
	h := fnv.New64a()
	_, _ = fmt.Fprint(h, values...) // a hash's Write never fails
	return h.Sum64()
}

// recordLayout describes the pinned maps as the object defines them: kind,
// key and value sizes, flags, and every field of their keys and values with
// its offset, so that a probe that moves a field makes older pins foreign.
func recordLayout(spec *ebpf.CollectionSpec) string {
	var b strings.Builder
	for _, name := range pinnedMaps {
		m := spec.Maps[name]
		if m == nil {
			fmt.Fprintf(&b, "%s missing;", name)
			continue
		}
		fmt.Fprintf(&b, "%s %v %d %d %#x ", name, m.Type, m.KeySize, m.ValueSize, m.Flags)
		writeType(&b, m.Key, 0)
		b.WriteString(" ")
		writeType(&b, m.Value, 0)
		b.WriteString(";")
	}
	return b.String()
}

// writeType writes a BTF type's layout; nested types deeper than the
// probes' records nest are left out.
func writeType(b *strings.Builder, t btf.Type, depth int) {
	if t == nil || depth > 8 {
		return
	}
	switch t := btf.UnderlyingType(t).(type) {
	case *btf.Struct:
		writeMembers(b, "struct", t.Size, t.Members, depth)
	case *btf.Union:
		writeMembers(b, "union", t.Size, t.Members, depth)
	case *btf.Array:
		fmt.Fprintf(b, "[%d]", t.Nelems)
		writeType(b, t.Type, depth+1)
	case *btf.Int:
		fmt.Fprintf(b, "int%d/%v", t.Size, t.Encoding)
	case *btf.Enum:
		fmt.Fprintf(b, "enum%d{", t.Size)
		for _, v := range t.Values {
			fmt.Fprintf(b, "%s=%d,", v.Name, v.Value)
		}
		b.WriteString("}")
	default:
		fmt.Fprintf(b, "%T", t)
	}
}

func writeMembers(b *strings.Builder, kind string, size uint32, members []btf.Member, depth int) {
	fmt.Fprintf(b, "%s%d{", kind, size)
	for _, m := range members {
		fmt.Fprintf(b, "%s@%d/%d:", m.Name, m.Offset, m.BitfieldSize)
		writeType(b, m.Type, depth+1)
		b.WriteString(",")
	}
	b.WriteString("}")
}

// errNotBPFFS says the pin directory is not on a bpf filesystem.
var errNotBPFFS = errors.New("the pin directory is not on a bpf filesystem")

// unusableDir says why the pin directory cannot be used at all (not on
// bpffs, or not this process's to write): a machine without a bpf
// filesystem, or a collector run unprivileged, still runs, unpinned.
type unusableDir struct{ err error }

func (u unusableDir) Error() string { return u.err.Error() }
func (u unusableDir) Unwrap() error { return u.err }

// onBPFFS checks that dir is, or would be made, on a bpf filesystem: the
// directory's own, or that of its nearest parent that exists.
func onBPFFS(dir string) error {
	for {
		var fs unix.Statfs_t
		err := unix.Statfs(dir, &fs)
		if errors.Is(err, unix.ENOENT) && dir != filepath.Dir(dir) {
			dir = filepath.Dir(dir)
			continue
		}
		if err != nil {
			return fmt.Errorf("checking the pin directory: %w", err)
		}
		if fs.Type != unix.BPF_FS_MAGIC {
			return errNotBPFFS
		}
		return nil
	}
}

// pins is this process's hold on the pin directory.
type pins struct {
	dir   string
	lock  *os.File // the directory, flocked for as long as this process uses it
	shape shape
	// adopted are the pinned maps of the collector before, by name; nil
	// for a clean start. createMaps uses them in place of new maps, then
	// pin closes them.
	adopted map[string]*ebpf.Map
	// kept says the maps are the collector before's, and gap how long
	// before this start its probes last wrote them.
	kept  bool
	gap   time.Duration
	state *ebpf.Map // nil until pin
}

// openPins takes the pin directory and decides whether its maps are
// adopted: when they have the shape want and the probes wrote them less
// than maxGap ago (every free in between went unseen, each a phantom
// object). Otherwise it empties the directory and logs why at INFO.
func openPins(dir string, want shape, maxGap time.Duration, log *zap.Logger) (*pins, error) {
	if err := onBPFFS(dir); err != nil {
		return nil, unusableDir{err}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, unusableDir{fmt.Errorf("creating the pin directory: %w", err)}
	}
	lock, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return nil, unusableDir{fmt.Errorf("opening the pin directory: %w", err)}
	}
	// The lock goes with the process, however it ends: a collector killed
	// leaves the directory free for the next.
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = lock.Close() // the lock's error is the one to return
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errors.New("another collector uses the pin directory: give each its own")
		}
		return nil, fmt.Errorf("locking the pin directory: %w", err)
	}
	p := &pins{dir: dir, lock: lock, shape: want}
	why := p.adopt(maxGap)
	if why == "" {
		log.Info("Adopting the pinned live tables of the collector before", zap.String("directory", dir), zap.Duration("unwatched_for_at_most", p.gap))
		return p, nil
	}
	log.Info("Starting with empty live tables: nothing pinned is adopted", zap.String("directory", dir), zap.String("reason", why))
	if err := p.clear(); err != nil {
		_ = p.close() // the clearing's error is the one to return
		return nil, err
	}
	return p, nil
}

// adopt loads the pinned maps if they can be adopted, or says why not.
func (p *pins) adopt(maxGap time.Duration) string {
	state, err := ebpf.LoadPinnedMap(p.path(stateName), nil)
	if errors.Is(err, os.ErrNotExist) {
		return "no tables are pinned"
	}
	if err != nil {
		return fmt.Sprintf("the pinned state cannot be read: %v", err)
	}
	var s pinState
	err = state.Lookup(uint32(0), &s)
	_ = state.Close() // read only: closing loses nothing
	if err != nil || s.Format != pinFormat {
		return fmt.Sprintf("the pins are of another format than %d (%v)", pinFormat, err)
	}
	var changed []string
	for i, h := range p.shape {
		if s.Shape[i] != h {
			changed = append(changed, shapeParts[i])
		}
	}
	if len(changed) > 0 {
		return "the tables' shape changed: " + strings.Join(changed, "; ")
	}
	now, err := MonotonicNow()
	if err != nil {
		return fmt.Sprintf("reading the clock: %v", err)
	}
	p.gap = time.Duration(now - min(s.AliveNs, now)) //nolint:gosec // G115: nanoseconds since boot fit
	if p.gap > maxGap {
		return fmt.Sprintf("the probes last wrote the tables %v ago, more than pinning.max_gap (%v): the frees since went unseen", p.gap.Round(time.Second), maxGap)
	}
	p.adopted = map[string]*ebpf.Map{}
	for _, name := range pinnedMaps {
		m, err := ebpf.LoadPinnedMap(p.path(name), nil)
		if err != nil {
			p.closeAdopted()
			return fmt.Sprintf("the pinned map %s cannot be loaded: %v", name, err)
		}
		p.adopted[name] = m
	}
	p.kept = true
	return ""
}

// pin pins every map of pinnedMaps, unless they are the collector
// before's, then the state: written as alive at now for new maps, left as
// it is for adopted ones until their probes run again.
func (p *pins) pin(byName map[string]*ebpf.Map, now uint64) error {
	p.closeAdopted()
	if p.kept {
		state, err := ebpf.LoadPinnedMap(p.path(stateName), nil)
		if err != nil {
			return fmt.Errorf("loading the pinned state: %w", err)
		}
		p.state = state
		return nil
	}
	for _, name := range pinnedMaps {
		if err := byName[name].Pin(p.path(name)); err != nil {
			return fmt.Errorf("pinning %s: %w", name, err)
		}
	}
	size := uint32(binary.Size(pinState{})) //nolint:gosec // G115: a few dozen bytes
	state, err := ebpf.NewMap(&ebpf.MapSpec{Name: "kmemleak_state", Type: ebpf.Array, KeySize: 4, ValueSize: size, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("creating the pinned state: %w", err)
	}
	p.state = state
	if err := p.alive(now); err != nil {
		return err
	}
	if err := state.Pin(p.path(stateName)); err != nil {
		return fmt.Errorf("pinning the state: %w", err)
	}
	return nil
}

// alive records that the probes ran until now.
func (p *pins) alive(now uint64) error {
	if p.state == nil {
		return nil
	}
	return p.writeState(p.state, now)
}

func (p *pins) writeState(m *ebpf.Map, now uint64) error {
	s := pinState{Format: pinFormat, AliveNs: now, Shape: p.shape}
	if err := m.Update(uint32(0), &s, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing the pinned state: %w", err)
	}
	return nil
}

// clear removes every pin of the directory, the state first.
func (p *pins) clear() error {
	p.closeAdopted()
	if err := os.Remove(p.path(stateName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unpinning the state: %w", err)
	}
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return fmt.Errorf("emptying the pin directory: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(p.path(e.Name())); err != nil {
			return fmt.Errorf("emptying the pin directory: %w", err)
		}
	}
	return nil
}

// unpin removes every pin and the directory: the maps go when the last
// descriptor of them closes.
func (p *pins) unpin() error {
	if p.state != nil {
		_ = p.state.Close() // unpinned next: nothing is lost
		p.state = nil
	}
	if err := p.clear(); err != nil {
		return err
	}
	if err := os.Remove(p.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the pin directory: %w", err)
	}
	return nil
}

// close lets go of the directory, leaving its pins.
func (p *pins) close() error {
	p.closeAdopted()
	var errs []error
	if p.state != nil {
		errs = append(errs, p.state.Close())
		p.state = nil
	}
	errs = append(errs, p.lock.Close()) // closing the last descriptor drops the lock
	return errors.Join(errs...)
}

func (p *pins) closeAdopted() {
	for _, m := range p.adopted {
		_ = m.Close() // the collection holds its own clone of each
	}
	p.adopted = nil
}

func (p *pins) path(name string) string { return filepath.Join(p.dir, name) }

// openPins takes opts.PinDir for the maps of shape want. A directory that
// cannot be used costs the restarts their state, not the start: the probes
// run unpinned, and a warning says how to fix it.
func (t *Tracker) openPins(opts Options, want shape) (*pins, error) {
	p, err := openPins(opts.PinDir, want, opts.MaxGap, opts.Logger)
	var unusable unusableDir
	if errors.As(err, &unusable) {
		opts.Logger.Warn("Restarts will start from empty live tables: the pin directory cannot be used; mount a bpf filesystem there (mount -t bpf bpf /sys/fs/bpf, or the host's /sys/fs/bpf in a container) writable by the collector, or set pinning.directory to \"\"",
			zap.String("directory", opts.PinDir), zap.Error(err))
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pinning.directory %q: %w", opts.PinDir, err)
	}
	return p, nil
}

// pinMaps pins the maps Open created, or, where they are the collector
// before's, takes over its decisions: untracking is the scans' to make
// again, for the configuration may track a cache the one before left out.
func (t *Tracker) pinMaps() error {
	now, err := MonotonicNow()
	if err != nil {
		return err
	}
	if err := t.pins.pin(t.byName, now); err != nil {
		return fmt.Errorf("pinning.directory %q: %w", t.pins.dir, err)
	}
	if t.pins.kept {
		return t.trackEveryCache()
	}
	return nil
}

// Adopted reports whether Open took over the pinned tables of the
// collector before, and how long before Open its probes last ran.
func (t *Tracker) Adopted() (bool, time.Duration) {
	if t.pins == nil || !t.pins.kept {
		return false, 0
	}
	return true, t.pins.gap
}

// Unpin removes every pin, for a collector stopped for good rather than
// restarted: Close then frees the maps with their last descriptors, and
// nothing of the receiver is left in the kernel.
func (t *Tracker) Unpin() error {
	if t.pins == nil {
		return nil
	}
	return t.pins.unpin()
}

// detached records that the probes stopped now.
func (p *pins) detached() error {
	now, err := MonotonicNow()
	if err != nil {
		return err
	}
	return p.alive(now)
}
