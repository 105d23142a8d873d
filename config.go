package kmemleakreceiver

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"slices"
	"time"

	"go.opentelemetry.io/collector/component"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
	"github.com/kmemleak/kmemleakreceiver/internal/scan"
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
	"github.com/kmemleak/kmemleakreceiver/internal/verdict"
)

// Bounds of max_tracked_objects. The live table is preallocated in kernel
// memory for it, about 81 bytes per object of room in each table in use
// (848-byte buckets of 15 objects, filled to 70% at most: see
// livetable.Buckets), so the upper bound keeps a typo from pinning
// gigabytes (1.3 GiB a table at most); the lower bound keeps the map useful
// at all.
const (
	minTrackedObjects = 1024
	maxTrackedObjects = 16 << 20
	// Beyond it, a leak of thousands of objects leaves a handful in the map.
	maxSampleRate = 1 << 16
	// A group's history takes up to about 10 KB: 200 MB at most.
	maxVerdictGroups = 20_000
)

// Config is the receiver's YAML under `receivers: kmemleak:`.
type Config struct {
	// CollectionInterval is the time between scans of the live table.
	CollectionInterval time.Duration `mapstructure:"collection_interval"`
	// InitialDelay postpones the first scan after Start.
	InitialDelay time.Duration `mapstructure:"initial_delay"`
	// MinAge is how old a live object must be to count as a leak suspect.
	MinAge time.Duration `mapstructure:"min_age"`
	// Allocators are the kernel allocators to track: slab, kmalloc, page,
	// percpu.
	Allocators []string `mapstructure:"allocators"`
	// Attach is how the probes attach: auto, tp_btf, raw_tp, tracepoint or
	// kprobe (slab and kmalloc only).
	Attach string `mapstructure:"attach"`
	// MaxTrackedObjects sizes the kernel's live table; allocations
	// beyond it are counted as dropped, never block the kernel.
	MaxTrackedObjects int `mapstructure:"max_tracked_objects"`
	// SampleRate tracks 1 in SampleRate objects, picked by a hash of the
	// address in the probes; counts and bytes are scaled back up by it.
	SampleRate int `mapstructure:"sample_rate"`
	// TopN is how many suspect groups (by bytes) each scan reports.
	TopN int `mapstructure:"top_n"`
	// IncludeAddresses adds raw kernel addresses to events. Off by default:
	// they defeat KASLR.
	IncludeAddresses bool `mapstructure:"include_addresses"`
	// StackTraces says which allocations get a kernel stack: adaptive (those
	// from call sites a scan found suspect, plus a 1 in StackSampleRate
	// sample), always, or off. A stack costs ten times the tracking itself.
	StackTraces string `mapstructure:"stack_traces"`
	// StackDepth is the number of frames kept per stack.
	StackDepth int `mapstructure:"stack_depth"`
	// StackSampleRate, in adaptive mode, also takes the stack of 1 in N
	// allocations; 0 takes none.
	StackSampleRate int `mapstructure:"stack_sample_rate"`
	// MinSize and MaxSize bound the sizes of the allocations tracked, in
	// bytes, in the probes; MaxSize 0 means no bound.
	MinSize int `mapstructure:"min_size"`
	MaxSize int `mapstructure:"max_size"`
	// Caches filters the slab caches tracked by name (glob patterns).
	Caches CacheFilter `mapstructure:"caches"`
	// Verdict tunes how each group's history becomes its verdict.
	Verdict VerdictConfig `mapstructure:"verdict"`
	// ReportInterval is how often a leak is logged again while it lasts;
	// it is also logged when found and when its rate doubles or halves.
	ReportInterval time.Duration `mapstructure:"report_interval"`
	// Attribution records who allocated each object (process, cgroup,
	// container, or interrupt context) and splits groups by it.
	Attribution bool `mapstructure:"attribution"`
	// ProfileInterval is how often the profiles of in-use kernel memory
	// are built, from the scan then due, for a profiles pipeline.
	ProfileInterval time.Duration `mapstructure:"profile_interval"`
	// CgroupRoot is where the cgroup v2 hierarchy whose paths are reported
	// is mounted; empty finds it in /proc/self/mountinfo. In a container,
	// the host's hierarchy mounted in.
	CgroupRoot string `mapstructure:"cgroup_root"`
	// Pinning keeps the live tables in bpffs across restarts.
	Pinning PinningConfig `mapstructure:"pinning"`
	// Storage names the storage extension (file_storage) that keeps the
	// verdict histories across restarts; none keeps nothing.
	Storage *component.ID `mapstructure:"storage"`

	metadata.MetricsBuilderConfig `mapstructure:",squash"`
	Events                        metadata.EventsConfig `mapstructure:"events"`

	// trackOwnProcess tracks the receiver's own allocations too: for tests
	// that allocate what they check from the receiver's process.
	trackOwnProcess bool

	// Prevent unkeyed literal initialization.
	_ struct{}
}

func createDefaultConfig() *Config {
	return &Config{
		CollectionInterval: 10 * time.Second,
		InitialDelay:       time.Second,
		MinAge:             30 * time.Second,
		Allocators:         []string{kmem.Slab.String(), kmem.Kmalloc.String()},
		Attach:             string(kmem.ModeAuto),
		MaxTrackedObjects:  1_000_000,
		SampleRate:         1,
		TopN:               50,
		StackTraces:        kmem.StacksAdaptive.String(),
		StackDepth:         32,
		Verdict: VerdictConfig{
			Window:      30 * time.Minute,
			Persist:     time.Minute,
			MaxGroups:   2000,
			EventStates: []string{verdict.Leaking.String()},
		},
		ReportInterval:  10 * time.Minute,
		Attribution:     true,
		ProfileInterval: time.Minute,
		Pinning: PinningConfig{
			Directory:  "/sys/fs/bpf/kmemleak",
			OnShutdown: keepPins,
			MaxGap:     5 * time.Minute,
		},
		MetricsBuilderConfig: metadata.NewDefaultMetricsBuilderConfig(),
		Events:               metadata.DefaultEventsConfig(),
	}
}

// VerdictConfig is the receiver's `verdict:` block.
type VerdictConfig struct {
	// Window is how far back a group's trend looks.
	Window time.Duration `mapstructure:"window"`
	// Persist is how old a group's oldest object must be before the group
	// can be called leaking: what rises and falls back within it never is.
	Persist time.Duration `mapstructure:"persist"`
	// MaxGroups bounds the groups followed at once (each keeps at most a
	// few hundred samples).
	MaxGroups int `mapstructure:"max_groups"`
	// EventStates are the verdicts that get kmem.leak.suspect events.
	EventStates []string `mapstructure:"event_states"`
}

// PinningConfig is the receiver's `pinning:` block: the live tables,
// counters and stacks stay pinned in bpffs while the collector restarts,
// and the next one adopts them.
type PinningConfig struct {
	// Directory is where the maps are pinned, on a bpf filesystem; ""
	// pins nothing, and every start begins with empty tables.
	Directory string `mapstructure:"directory"`
	// OnShutdown says what a Shutdown means, which the collector cannot
	// tell by itself: keep (a restart: the next collector adopts the
	// tables) or release (stopped for good: nothing is left pinned).
	OnShutdown string `mapstructure:"on_shutdown"`
	// MaxGap is how long the tables may go unwatched and still be
	// adopted: every free meanwhile goes unseen and leaves a phantom.
	MaxGap time.Duration `mapstructure:"max_gap"`
}

// What pinning.on_shutdown accepts.
const (
	keepPins    = "keep"
	releasePins = "release"
)

func (p PinningConfig) validate() []error {
	var errs []error
	if p.Directory != "" && !path.IsAbs(p.Directory) {
		errs = append(errs, fmt.Errorf("pinning.directory must be an absolute path on a bpf filesystem, or \"\" to pin nothing, got %q", p.Directory))
	}
	if p.OnShutdown != keepPins && p.OnShutdown != releasePins {
		errs = append(errs, fmt.Errorf("pinning.on_shutdown must be keep (a restart follows) or release (stopped for good), got %q", p.OnShutdown))
	}
	if p.MaxGap <= 0 {
		errs = append(errs, fmt.Errorf("pinning.max_gap must be positive, got %v", p.MaxGap))
	}
	return errs
}

// minWindowScans is the fewest scans a verdict window must hold: a leak
// verdict rests on at least 9 (package verdict).
const minWindowScans = 10

func (v VerdictConfig) validate(interval time.Duration) []error {
	var errs []error
	if v.Window < minWindowScans*interval {
		errs = append(errs, fmt.Errorf("verdict.window must hold at least %d scans (%d x collection_interval = %v), got %v",
			minWindowScans, minWindowScans, minWindowScans*interval, v.Window))
	}
	if v.Persist <= 0 || v.Persist >= v.Window {
		errs = append(errs, fmt.Errorf("verdict.persist must be positive and shorter than verdict.window (%v), got %v", v.Window, v.Persist))
	}
	if v.MaxGroups < 1 || v.MaxGroups > maxVerdictGroups {
		errs = append(errs, fmt.Errorf("verdict.max_groups must be between 1 and %d, got %d", maxVerdictGroups, v.MaxGroups))
	}
	for _, name := range v.EventStates {
		if _, ok := verdict.ParseState(name); !ok {
			errs = append(errs, fmt.Errorf("verdict.event_states: unknown verdict %q (leaking, growing, steady, transient)", name))
		}
	}
	return errs
}

// Validate checks every field and names the one that is wrong.
func (cfg *Config) Validate() error {
	var errs []error
	if cfg.CollectionInterval <= 0 {
		errs = append(errs, fmt.Errorf("collection_interval must be positive, got %v", cfg.CollectionInterval))
	}
	if cfg.InitialDelay < 0 {
		errs = append(errs, fmt.Errorf("initial_delay must not be negative, got %v", cfg.InitialDelay))
	}
	if cfg.MinAge <= 0 {
		errs = append(errs, fmt.Errorf("min_age must be positive, got %v", cfg.MinAge))
	}
	errs = append(errs, cfg.validateAllocators()...)
	if cfg.MaxTrackedObjects < minTrackedObjects || cfg.MaxTrackedObjects > maxTrackedObjects {
		errs = append(errs, fmt.Errorf("max_tracked_objects must be between %d and %d, got %d", minTrackedObjects, maxTrackedObjects, cfg.MaxTrackedObjects))
	}
	if cfg.SampleRate < 1 || cfg.SampleRate > maxSampleRate {
		errs = append(errs, fmt.Errorf("sample_rate must be between 1 (every object) and %d, got %d", maxSampleRate, cfg.SampleRate))
	}
	if cfg.TopN < 1 {
		errs = append(errs, fmt.Errorf("top_n must be at least 1, got %d", cfg.TopN))
	}
	errs = append(errs, cfg.validateStacks()...)
	if cfg.MinSize < 0 || int64(cfg.MinSize) > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("min_size must be between 0 and %d bytes, got %d", uint32(math.MaxUint32), cfg.MinSize))
	}
	if cfg.MaxSize < 0 || int64(cfg.MaxSize) > math.MaxUint32 || (cfg.MaxSize > 0 && cfg.MaxSize < cfg.MinSize) {
		errs = append(errs, fmt.Errorf("max_size must be 0 (no bound) or between min_size (%d) and %d bytes, got %d", cfg.MinSize, uint32(math.MaxUint32), cfg.MaxSize))
	}
	if err := cfg.Caches.validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, cfg.Verdict.validate(cfg.CollectionInterval)...)
	errs = append(errs, cfg.Pinning.validate()...)
	if cfg.ReportInterval <= 0 {
		errs = append(errs, fmt.Errorf("report_interval must be positive, got %v", cfg.ReportInterval))
	}
	if cfg.ProfileInterval < cfg.CollectionInterval {
		errs = append(errs, fmt.Errorf("profile_interval must be at least collection_interval (%v): profiles are built from scans, got %v", cfg.CollectionInterval, cfg.ProfileInterval))
	}
	if cfg.CgroupRoot != "" && !path.IsAbs(cfg.CgroupRoot) {
		errs = append(errs, fmt.Errorf("cgroup_root must be an absolute path (where the cgroup v2 hierarchy is mounted), got %q", cfg.CgroupRoot))
	}
	return errors.Join(errs...)
}

// validateAllocators checks allocators, and attach against them.
func (cfg *Config) validateAllocators() []error {
	var errs []error
	if len(cfg.Allocators) == 0 {
		errs = append(errs, errors.New("allocators must name at least one allocator"))
	}
	seen := map[string]bool{}
	for _, name := range cfg.Allocators {
		if _, err := kmem.ParseAllocator(name); err != nil {
			errs = append(errs, fmt.Errorf("allocators: %w", err))
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("allocators: %q is listed twice", name))
		}
		seen[name] = true
	}
	if mode, err := kmem.ParseMode(cfg.Attach); err != nil {
		errs = append(errs, fmt.Errorf("attach: %w", err))
	} else if mode == kmem.ModeKprobe {
		for _, name := range cfg.Allocators {
			if a, err := kmem.ParseAllocator(name); err == nil && !slices.Contains(kmem.KprobeAllocators, a) {
				errs = append(errs, fmt.Errorf("attach: kprobe hooks only the slab and kmalloc allocators, and allocators lists %q: use attach: auto, or a tracepoint mode", name))
			}
		}
	}
	return errs
}

func (cfg *Config) validateStacks() []error {
	var errs []error
	if _, err := kmem.ParseStackMode(cfg.StackTraces); err != nil {
		errs = append(errs, fmt.Errorf("stack_traces: %w", err))
	}
	if cfg.StackDepth < 1 || cfg.StackDepth > kmem.MaxStackDepth {
		errs = append(errs, fmt.Errorf("stack_depth must be between 1 and %d, got %d", kmem.MaxStackDepth, cfg.StackDepth))
	}
	if cfg.StackSampleRate < 0 {
		errs = append(errs, fmt.Errorf("stack_sample_rate must not be negative (0 samples none), got %d", cfg.StackSampleRate))
	} else if int64(cfg.StackSampleRate) > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("stack_sample_rate must be at most %d, got %d", uint32(math.MaxUint32), cfg.StackSampleRate))
	}
	return errs
}

// CacheFilter picks slab caches by name with glob patterns (path.Match):
// a cache is tracked if it matches an include pattern, or there are none,
// and matches no exclude pattern.
type CacheFilter struct {
	Include []string `mapstructure:"include"`
	Exclude []string `mapstructure:"exclude"`
}

func (f CacheFilter) validate() error {
	var errs []error
	for field, patterns := range map[string][]string{"caches.include": f.Include, "caches.exclude": f.Exclude} {
		for _, p := range patterns {
			if _, err := path.Match(p, ""); err != nil {
				errs = append(errs, fmt.Errorf("%s: bad pattern %q: %w", field, p, err))
			}
		}
	}
	return errors.Join(errs...)
}

// IsZero reports whether the filter tracks every cache.
func (f CacheFilter) IsZero() bool { return len(f.Include) == 0 && len(f.Exclude) == 0 }

// Tracks reports whether the cache named name is tracked.
func (f CacheFilter) Tracks(name string) bool {
	return (len(f.Include) == 0 || matchesAny(f.Include, name)) && !matchesAny(f.Exclude, name)
}

func matchesAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// allocators returns the configured allocators; call only after Validate.
func (cfg *Config) allocators() []kmem.Allocator {
	out := make([]kmem.Allocator, 0, len(cfg.Allocators))
	for _, name := range cfg.Allocators {
		a, _ := kmem.ParseAllocator(name)
		out = append(out, a)
	}
	return out
}

// trackerOptions returns what the probes need; call only after Validate.
func (cfg *Config) trackerOptions() tracker.Options {
	mode, _ := kmem.ParseMode(cfg.Attach)
	stacks, _ := kmem.ParseStackMode(cfg.StackTraces)
	maxSize := uint32(math.MaxUint32)
	if cfg.MaxSize > 0 {
		maxSize = toUint32(cfg.MaxSize)
	}
	return tracker.Options{
		Allocators:  cfg.allocators(),
		Mode:        mode,
		MaxObjects:  toUint32(cfg.MaxTrackedObjects),
		SampleRate:  toUint32(cfg.SampleRate),
		Stacks:      tracker.StackOptions{Mode: stacks, Depth: cfg.StackDepth, SampleRate: toUint32(cfg.StackSampleRate)},
		MinSize:     toUint32(cfg.MinSize),
		MaxSize:     maxSize,
		IgnoreTgid:  cfg.ignoredProcess(),
		Attribution: cfg.Attribution,
		PinDir:      cfg.Pinning.Directory,
		MaxGap:      cfg.Pinning.MaxGap,
	}
}

// toUint32 is a field Validate has bounded, as the probes take it; the
// clamp only keeps a config that skipped Validate from wrapping around.
func toUint32(v int) uint32 {
	return uint32(min(max(int64(v), 0), math.MaxUint32))
}

// ignoredProcess is the process whose allocations the probes leave out:
// the receiver's, unless told to track it.
func (cfg *Config) ignoredProcess() uint32 {
	if cfg.trackOwnProcess {
		return 0
	}
	return uint32(os.Getpid()) //nolint:gosec // G115: pids are below 2^22 (PID_MAX_LIMIT)
}

// scanOptions returns what the scans need; call only after Validate.
func (cfg *Config) scanOptions(stacksOn bool) scan.Options {
	opts := scan.Options{
		MinAge:     cfg.MinAge,
		TopN:       cfg.TopN,
		SampleRate: cfg.SampleRate,
		Verdict: verdict.Options{
			Window:         cfg.Verdict.Window,
			Persist:        cfg.Verdict.Persist,
			ReportInterval: cfg.ReportInterval,
			MaxGroups:      cfg.Verdict.MaxGroups,
		},
		StacksOn:          stacksOn,
		AdaptiveStacks:    cfg.StackTraces == kmem.StacksAdaptive.String(),
		MaxTrackedObjects: cfg.MaxTrackedObjects,
	}
	for _, name := range cfg.Verdict.EventStates {
		st, _ := verdict.ParseState(name)
		opts.EventStates = append(opts.EventStates, st)
	}
	if !cfg.Caches.IsZero() {
		opts.Tracks = cfg.Caches.Tracks
	}
	return opts
}

func (cfg *Config) logsBuilderConfig() metadata.LogsBuilderConfig {
	return metadata.LogsBuilderConfig{Events: cfg.Events, ResourceAttributes: cfg.ResourceAttributes}
}
