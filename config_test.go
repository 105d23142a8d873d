package kmemleakreceiver

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.yaml.in/yaml/v3"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
)

// disableAsUser turns a generated metric, event or resource attribute off
// the way YAML does: the generated configs also record, unexported, that
// the user set the toggle, so assigning Enabled = false would not compare
// equal to a loaded config.
func disableAsUser(t *testing.T, toggle confmap.Unmarshaler) {
	t.Helper()
	require.NoError(t, toggle.Unmarshal(confmap.NewFromStringMap(map[string]any{"enabled": false})))
}

func TestCreateDefaultConfig(t *testing.T) {
	cfg, ok := NewFactory().CreateDefaultConfig().(*Config)
	require.True(t, ok)

	assert.Equal(t, 10*time.Second, cfg.CollectionInterval)
	assert.Equal(t, time.Second, cfg.InitialDelay)
	assert.Equal(t, 30*time.Second, cfg.MinAge)
	assert.Equal(t, []string{"slab", "kmalloc"}, cfg.Allocators)
	assert.Equal(t, "auto", cfg.Attach)
	assert.Equal(t, 1_000_000, cfg.MaxTrackedObjects)
	assert.Equal(t, 1, cfg.SampleRate, "every object tracked unless asked")
	assert.Equal(t, 50, cfg.TopN)
	assert.False(t, cfg.IncludeAddresses, "raw kernel addresses defeat KASLR: off unless asked")
	assert.Equal(t, "adaptive", cfg.StackTraces, "stacks on every allocation cost ten times the tracking")
	assert.Equal(t, 32, cfg.StackDepth)
	assert.Zero(t, cfg.StackSampleRate)
	assert.Zero(t, cfg.MinSize)
	assert.Zero(t, cfg.MaxSize)
	assert.True(t, cfg.Caches.IsZero())
	assert.Equal(t, VerdictConfig{Window: 30 * time.Minute, Persist: time.Minute, MaxGroups: 2000, EventStates: []string{"leaking"}}, cfg.Verdict,
		"events for leaks only")
	assert.Equal(t, 10*time.Minute, cfg.ReportInterval)
	assert.True(t, cfg.Attribution, "attribution costs 1.01x tracking without it (BENCHMARKS.md): on")
	assert.Empty(t, cfg.CgroupRoot, "found in mountinfo")
	assert.Equal(t, time.Minute, cfg.ProfileInterval)
	assert.Equal(t, metadata.NewDefaultMetricsBuilderConfig(), cfg.MetricsBuilderConfig)
	assert.Equal(t, metadata.DefaultEventsConfig(), cfg.Events)
	assert.NoError(t, confmap.Validate(cfg))
}

func TestLoadConfig(t *testing.T) {
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)

	custom := createDefaultConfig()
	custom.CollectionInterval = time.Minute
	custom.InitialDelay = 5 * time.Second
	custom.MinAge = 5 * time.Minute
	custom.Allocators = []string{"kmalloc", "page", "percpu"}
	custom.Attach = "raw_tp"
	custom.MaxTrackedObjects = 250_000
	custom.SampleRate = 16
	custom.TopN = 10
	custom.IncludeAddresses = true
	custom.StackTraces = "always"
	custom.StackDepth = 64
	custom.StackSampleRate = 100
	custom.MinSize = 64
	custom.MaxSize = 4096
	custom.Caches = CacheFilter{Include: []string{"kmalloc-*", "dentry"}, Exclude: []string{"kmalloc-rcl-*"}}
	custom.Verdict = VerdictConfig{Window: 2 * time.Hour, Persist: 5 * time.Minute, MaxGroups: 500, EventStates: []string{"leaking", "growing"}}
	custom.ReportInterval = time.Hour
	custom.Attribution = false
	custom.CgroupRoot = "/host/sys/fs/cgroup"
	custom.ProfileInterval = 5 * time.Minute
	custom.Pinning = PinningConfig{Directory: "/sys/fs/bpf/kmemleak-node", OnShutdown: "release", MaxGap: time.Minute}
	storageID := component.MustNewIDWithName("file_storage", "kmemleak")
	custom.Storage = &storageID
	disableAsUser(t, &custom.Metrics.KmemTrackerScanDuration)
	disableAsUser(t, &custom.Events.KmemLeakSuspect)
	disableAsUser(t, &custom.ResourceAttributes.HostName)

	tests := []struct {
		id       component.ID
		expected *Config
	}{
		{
			id:       component.NewID(metadata.Type),
			expected: createDefaultConfig(),
		},
		{
			id:       component.NewIDWithName(metadata.Type, "custom"),
			expected: custom,
		},
	}
	for _, tt := range tests {
		t.Run(tt.id.String(), func(t *testing.T) {
			cfg := NewFactory().CreateDefaultConfig()
			sub, err := cm.Sub(tt.id.String())
			require.NoError(t, err)
			require.NoError(t, sub.Unmarshal(cfg))

			assert.NoError(t, confmap.Validate(cfg))
			assert.Equal(t, tt.expected, cfg)
		})
	}
}

func TestLoadedConfigReachesTheBuilders(t *testing.T) {
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)
	sub, err := cm.Sub(component.NewIDWithName(metadata.Type, "custom").String())
	require.NoError(t, err)
	cfg := createDefaultConfig()
	require.NoError(t, sub.Unmarshal(cfg))

	assert.Equal(t, []kmem.Allocator{kmem.Kmalloc, kmem.Page, kmem.Percpu}, cfg.allocators())
	assert.Equal(t, uint32(16), cfg.trackerOptions().SampleRate)
	lbc := cfg.logsBuilderConfig()
	assert.False(t, lbc.Events.KmemLeakSuspect.Enabled)
	// resource_attributes: applies to events as well as to metrics.
	assert.False(t, lbc.ResourceAttributes.HostName.Enabled)
	assert.True(t, lbc.ResourceAttributes.OsVersion.Enabled)
}

func TestUnmarshalRejects(t *testing.T) {
	tests := []struct {
		name    string
		raw     map[string]any
		wantErr string
	}{
		{
			name:    "misspelt field",
			raw:     map[string]any{"min_agee": "5s"},
			wantErr: "min_agee",
		},
		{
			name:    "unknown metric",
			raw:     map[string]any{"metrics": map[string]any{"kmem.leaks": map[string]any{"enabled": false}}},
			wantErr: "kmem.leaks",
		},
		{
			name:    "unknown event",
			raw:     map[string]any{"events": map[string]any{"kmem.leak": map[string]any{"enabled": false}}},
			wantErr: "kmem.leak",
		},
		{
			name:    "unknown resource attribute",
			raw:     map[string]any{"resource_attributes": map[string]any{"host.id": map[string]any{"enabled": true}}},
			wantErr: "host.id",
		},
		{
			name:    "duration without unit",
			raw:     map[string]any{"min_age": "thirty seconds"},
			wantErr: "min_age",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := createDefaultConfig()
			err := confmap.NewFromStringMap(tt.raw).Unmarshal(cfg)
			assert.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(*Config)
		wantErr string // empty: valid
	}{
		{
			name:    "collection_interval zero",
			modify:  func(c *Config) { c.CollectionInterval = 0 },
			wantErr: "collection_interval must be positive, got 0s",
		},
		{
			name:    "collection_interval negative",
			modify:  func(c *Config) { c.CollectionInterval = -time.Second },
			wantErr: "collection_interval must be positive, got -1s",
		},
		{
			name:    "initial_delay negative",
			modify:  func(c *Config) { c.InitialDelay = -time.Millisecond },
			wantErr: "initial_delay must not be negative, got -1ms",
		},
		{
			name:   "initial_delay zero",
			modify: func(c *Config) { c.InitialDelay = 0 },
		},
		{
			name:    "min_age zero",
			modify:  func(c *Config) { c.MinAge = 0 },
			wantErr: "min_age must be positive, got 0s",
		},
		{
			name:    "min_age negative",
			modify:  func(c *Config) { c.MinAge = -5 * time.Second },
			wantErr: "min_age must be positive, got -5s",
		},
		{
			name:    "allocators empty",
			modify:  func(c *Config) { c.Allocators = []string{} },
			wantErr: "allocators must name at least one allocator",
		},
		{
			name:    "allocators unset",
			modify:  func(c *Config) { c.Allocators = nil },
			wantErr: "allocators must name at least one allocator",
		},
		{
			name:    "allocators unknown",
			modify:  func(c *Config) { c.Allocators = []string{"slab", "pages"} },
			wantErr: `allocators: unknown allocator "pages" (known: slab, kmalloc, page, percpu)`,
		},
		{
			name:    "allocators duplicated",
			modify:  func(c *Config) { c.Allocators = []string{"kmalloc", "slab", "kmalloc"} },
			wantErr: `allocators: "kmalloc" is listed twice`,
		},
		{
			name:   "allocators one",
			modify: func(c *Config) { c.Allocators = []string{"slab"} },
		},
		{
			name:   "attach kprobe",
			modify: func(c *Config) { c.Attach = "kprobe" },
		},
		{
			name:    "attach kprobe with the page allocator",
			modify:  func(c *Config) { c.Attach = "kprobe"; c.Allocators = []string{"slab", "page"} },
			wantErr: `attach: kprobe hooks only the slab and kmalloc allocators, and allocators lists "page": use attach: auto, or a tracepoint mode`,
		},
		{
			name:    "attach fentry",
			modify:  func(c *Config) { c.Attach = "fentry" },
			wantErr: `attach: unknown attach mode "fentry" (known: auto, tp_btf, raw_tp, tracepoint, kprobe)`,
		},
		{
			name:    "attach empty",
			modify:  func(c *Config) { c.Attach = "" },
			wantErr: `attach: unknown attach mode ""`,
		},
		{
			name:   "attach tracepoint",
			modify: func(c *Config) { c.Attach = "tracepoint" },
		},
		{
			name:    "max_tracked_objects below min",
			modify:  func(c *Config) { c.MaxTrackedObjects = 1023 },
			wantErr: "max_tracked_objects must be between 1024 and 16777216, got 1023",
		},
		{
			name:    "max_tracked_objects zero",
			modify:  func(c *Config) { c.MaxTrackedObjects = 0 },
			wantErr: "max_tracked_objects must be between 1024 and 16777216, got 0",
		},
		{
			name:    "max_tracked_objects above max",
			modify:  func(c *Config) { c.MaxTrackedObjects = 16<<20 + 1 },
			wantErr: "max_tracked_objects must be between 1024 and 16777216, got 16777217",
		},
		{
			name:   "max_tracked_objects at min",
			modify: func(c *Config) { c.MaxTrackedObjects = 1024 },
		},
		{
			name:   "max_tracked_objects at max",
			modify: func(c *Config) { c.MaxTrackedObjects = 16 << 20 },
		},
		{
			name:    "sample_rate zero",
			modify:  func(c *Config) { c.SampleRate = 0 },
			wantErr: "sample_rate must be between 1 (every object) and 65536, got 0",
		},
		{
			name:    "sample_rate above max",
			modify:  func(c *Config) { c.SampleRate = 1<<16 + 1 },
			wantErr: "sample_rate must be between 1 (every object) and 65536, got 65537",
		},
		{
			name:   "sample_rate at max",
			modify: func(c *Config) { c.SampleRate = 1 << 16 },
		},
		{
			name:    "top_n zero",
			modify:  func(c *Config) { c.TopN = 0 },
			wantErr: "top_n must be at least 1, got 0",
		},
		{
			name:    "top_n negative",
			modify:  func(c *Config) { c.TopN = -3 },
			wantErr: "top_n must be at least 1, got -3",
		},
		{
			name:   "top_n one",
			modify: func(c *Config) { c.TopN = 1 },
		},
		{
			name:    "stack_traces unknown",
			modify:  func(c *Config) { c.StackTraces = "sometimes" },
			wantErr: `stack_traces: unknown stack_traces "sometimes"`,
		},
		{
			name:   "stack_traces off",
			modify: func(c *Config) { c.StackTraces = "off" },
		},
		{
			name:    "stack_depth zero",
			modify:  func(c *Config) { c.StackDepth = 0 },
			wantErr: "stack_depth must be between 1 and 127, got 0",
		},
		{
			name:    "stack_depth above the BPF limit",
			modify:  func(c *Config) { c.StackDepth = 128 },
			wantErr: "stack_depth must be between 1 and 127, got 128",
		},
		{
			name:   "stack_depth at the BPF limit",
			modify: func(c *Config) { c.StackDepth = 127 },
		},
		{
			name:    "stack_sample_rate negative",
			modify:  func(c *Config) { c.StackSampleRate = -1 },
			wantErr: "stack_sample_rate must not be negative",
		},
		{
			name:    "min_size negative",
			modify:  func(c *Config) { c.MinSize = -1 },
			wantErr: "min_size must be between 0 and",
		},
		{
			name:    "max_size below min_size",
			modify:  func(c *Config) { c.MinSize, c.MaxSize = 256, 128 },
			wantErr: "max_size must be 0 (no bound) or between min_size (256)",
		},
		{
			name:    "max_size negative",
			modify:  func(c *Config) { c.MaxSize = -5 },
			wantErr: "max_size must be 0",
		},
		{
			name:   "max_size equal to min_size",
			modify: func(c *Config) { c.MinSize, c.MaxSize = 192, 192 },
		},
		{
			name:    "caches.include bad pattern",
			modify:  func(c *Config) { c.Caches.Include = []string{"kmalloc-["} },
			wantErr: `caches.include: bad pattern "kmalloc-["`,
		},
		{
			name:    "caches.exclude bad pattern",
			modify:  func(c *Config) { c.Caches.Exclude = []string{"[a-"} },
			wantErr: `caches.exclude: bad pattern "[a-"`,
		},
		{
			name:    "verdict.window shorter than 10 scans",
			modify:  func(c *Config) { c.Verdict.Window = 90 * time.Second },
			wantErr: "verdict.window must hold at least 10 scans (10 x collection_interval = 1m40s), got 1m30s",
		},
		{
			name: "verdict.window of 10 scans",
			modify: func(c *Config) {
				c.CollectionInterval, c.Verdict.Window, c.Verdict.Persist = time.Second, 10*time.Second, 5*time.Second
			},
		},
		{
			name:    "verdict.persist zero",
			modify:  func(c *Config) { c.Verdict.Persist = 0 },
			wantErr: "verdict.persist must be positive and shorter than verdict.window (30m0s), got 0s",
		},
		{
			name:    "verdict.persist as long as the window",
			modify:  func(c *Config) { c.Verdict.Persist = c.Verdict.Window },
			wantErr: "verdict.persist must be positive and shorter than verdict.window (30m0s), got 30m0s",
		},
		{
			name:    "verdict.max_groups zero",
			modify:  func(c *Config) { c.Verdict.MaxGroups = 0 },
			wantErr: "verdict.max_groups must be between 1 and 20000, got 0",
		},
		{
			name:    "verdict.max_groups too many",
			modify:  func(c *Config) { c.Verdict.MaxGroups = 20001 },
			wantErr: "verdict.max_groups must be between 1 and 20000, got 20001",
		},
		{
			name:    "verdict.event_states unknown",
			modify:  func(c *Config) { c.Verdict.EventStates = []string{"leaking", "suspect"} },
			wantErr: `verdict.event_states: unknown verdict "suspect"`,
		},
		{
			name:   "verdict.event_states empty: no events",
			modify: func(c *Config) { c.Verdict.EventStates = nil },
		},
		{
			name:    "report_interval zero",
			modify:  func(c *Config) { c.ReportInterval = 0 },
			wantErr: "report_interval must be positive, got 0s",
		},
		{
			name:    "profile_interval below collection_interval",
			modify:  func(c *Config) { c.ProfileInterval = 5 * time.Second },
			wantErr: "profile_interval must be at least collection_interval (10s): profiles are built from scans, got 5s",
		},
		{
			name:    "cgroup_root relative",
			modify:  func(c *Config) { c.CgroupRoot = "sys/fs/cgroup" },
			wantErr: `cgroup_root must be an absolute path (where the cgroup v2 hierarchy is mounted), got "sys/fs/cgroup"`,
		},
		{
			name:   "pinning.directory empty: nothing pinned",
			modify: func(c *Config) { c.Pinning.Directory = "" },
		},
		{
			name:    "pinning.directory relative",
			modify:  func(c *Config) { c.Pinning.Directory = "sys/fs/bpf/kmemleak" },
			wantErr: `pinning.directory must be an absolute path on a bpf filesystem, or "" to pin nothing, got "sys/fs/bpf/kmemleak"`,
		},
		{
			name:    "pinning.on_shutdown unknown",
			modify:  func(c *Config) { c.Pinning.OnShutdown = "unpin" },
			wantErr: `pinning.on_shutdown must be keep (a restart follows) or release (stopped for good), got "unpin"`,
		},
		{
			name:    "pinning.max_gap zero",
			modify:  func(c *Config) { c.Pinning.MaxGap = 0 },
			wantErr: "pinning.max_gap must be positive, got 0s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := createDefaultConfig()
			tt.modify(cfg)
			err := cfg.Validate()
			if tt.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
			// One mistake, one error: nothing else in the config is blamed.
			assert.Len(t, unjoin(err), 1, "errors: %v", err)
		})
	}
}

// A stack_sample_rate the probes' 32 bits cannot hold is refused, not
// wrapped around (only a 64-bit int can hold one).
func TestValidateStackSampleRateFitsTheProbes(t *testing.T) {
	if strconv.IntSize < 64 {
		t.Skip("an int cannot exceed 32 bits here")
	}
	cfg := createDefaultConfig()
	cfg.StackSampleRate = math.MaxInt
	require.ErrorContains(t, cfg.Validate(), "stack_sample_rate must be at most 4294967295, got ")
	most := int64(math.MaxUint32) // a variable, so that 32-bit builds compile
	cfg.StackSampleRate = int(most)
	require.NoError(t, cfg.Validate())
	assert.Equal(t, uint32(math.MaxUint32), cfg.trackerOptions().Stacks.SampleRate)
}

func TestValidateReportsEveryError(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.MinAge = -5 * time.Second
	cfg.Allocators = []string{"slab", "pages"}
	cfg.Attach = "fentry"
	cfg.TopN = 0

	err := confmap.Validate(cfg)

	require.Error(t, err)
	for _, field := range []string{"min_age", `allocators: unknown allocator "pages"`, "attach", "top_n"} {
		assert.ErrorContains(t, err, field)
	}
	assert.Len(t, unjoin(cfg.Validate()), 4, "errors: %v", err)
}

// unjoin lists the errors that errors.Join combined.
func unjoin(err error) []error {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		return joined.Unwrap()
	}
	return []error{err}
}

func TestCacheFilter(t *testing.T) {
	tests := []struct {
		name   string
		filter CacheFilter
		tracks map[string]bool
	}{
		{
			name:   "empty tracks everything",
			tracks: map[string]bool{"dentry": true, "kmalloc-64": true},
		},
		{
			name:   "include only",
			filter: CacheFilter{Include: []string{"kmalloc-*"}},
			tracks: map[string]bool{"kmalloc-64": true, "kmalloc-cg-1k": true, "dentry": false},
		},
		{
			name:   "exclude only",
			filter: CacheFilter{Exclude: []string{"maple_node", "kmalloc-rcl-*"}},
			tracks: map[string]bool{"maple_node": false, "kmalloc-rcl-64": false, "kmalloc-64": true},
		},
		{
			name:   "exclude wins over include",
			filter: CacheFilter{Include: []string{"kmalloc-*"}, Exclude: []string{"kmalloc-cg-*"}},
			tracks: map[string]bool{"kmalloc-64": true, "kmalloc-cg-64": false, "filp": false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for name, want := range tt.tracks {
				assert.Equal(t, want, tt.filter.Tracks(name), name)
			}
		})
	}
}

// FuzzConfigUnmarshal feeds the receiver's config arbitrary YAML: decoding
// and validating must fail cleanly, never panic, and a config that
// validates must be one the receiver can turn into probe options.
func FuzzConfigUnmarshal(f *testing.F) {
	for _, seed := range []string{
		"min_age: 5s\ntop_n: 3\n",
		"allocators: [slab, kmalloc, pages]\nattach: kprobe\n",
		"allocators: [percpu, page]\nattach: kprobe\nsample_rate: 0\n",
		"caches:\n  include: ['kmalloc-[']\n",
		"stack_traces: always\nstack_depth: 127\nmax_size: 4096\nmin_size: 8192\n",
		"max_tracked_objects: -1\nreport_interval: 0s\n",
		"metrics:\n  kmem.outstanding.bytes:\n    enabled: false\n",
		"collection_interval: 1ns\nverdict:\n  window: 1ns\n  event_states: [growing, x]\n",
	} {
		f.Add(seed)
	}
	if fixture, err := os.ReadFile(filepath.Join("testdata", "config.yaml")); err == nil {
		f.Add(string(fixture))
	}
	f.Fuzz(func(t *testing.T, text string) {
		var raw map[string]any
		if err := yaml.Unmarshal([]byte(text), &raw); err != nil {
			return
		}
		cfg := createDefaultConfig()
		if err := confmap.NewFromStringMap(raw).Unmarshal(cfg); err != nil {
			return
		}
		if cfg.Validate() != nil {
			return
		}
		opts := cfg.trackerOptions()
		if opts.MaxObjects < minTrackedObjects || opts.Stacks.Depth < 1 || opts.MinSize > opts.MaxSize {
			t.Fatalf("a config that validates gives bad probe options: %+v", opts)
		}
	})
}
