package kmemleakreceiver

import (
	"errors"
	"fmt"
	"time"

	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

// Bounds of max_tracked_objects. Every entry is preallocated in kernel
// memory (about 90 bytes each), so the upper bound keeps a typo from pinning
// gigabytes; the lower bound keeps the map useful at all.
const (
	minTrackedObjects = 1024
	maxTrackedObjects = 16 << 20
)

// Config is the receiver's YAML under `receivers: kmemleak:`.
type Config struct {
	// CollectionInterval is the time between scans of the live-object map.
	CollectionInterval time.Duration `mapstructure:"collection_interval"`
	// InitialDelay postpones the first scan after Start.
	InitialDelay time.Duration `mapstructure:"initial_delay"`
	// MinAge is how old a live object must be to count as a leak suspect.
	MinAge time.Duration `mapstructure:"min_age"`
	// Allocators are the kernel allocators to track: slab, kmalloc.
	Allocators []string `mapstructure:"allocators"`
	// Attach is how the probes attach: auto, tp_btf, raw_tp or tracepoint.
	Attach string `mapstructure:"attach"`
	// MaxTrackedObjects sizes the kernel's live-object map; allocations
	// beyond it are counted as dropped, never block the kernel.
	MaxTrackedObjects int `mapstructure:"max_tracked_objects"`
	// TopN is how many suspect groups (by bytes) each scan reports.
	TopN int `mapstructure:"top_n"`
	// IncludeAddresses adds raw kernel addresses to events. Off by default:
	// they defeat KASLR.
	IncludeAddresses bool `mapstructure:"include_addresses"`

	metadata.MetricsBuilderConfig `mapstructure:",squash"`
	Events                        metadata.EventsConfig `mapstructure:"events"`

	// Prevent unkeyed literal initialization.
	_ struct{}
}

func createDefaultConfig() *Config {
	return &Config{
		CollectionInterval:   10 * time.Second,
		InitialDelay:         time.Second,
		MinAge:               30 * time.Second,
		Allocators:           []string{tracker.Slab.String(), tracker.Kmalloc.String()},
		Attach:               string(tracker.ModeAuto),
		MaxTrackedObjects:    1_000_000,
		TopN:                 50,
		MetricsBuilderConfig: metadata.NewDefaultMetricsBuilderConfig(),
		Events:               metadata.DefaultEventsConfig(),
	}
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
	if len(cfg.Allocators) == 0 {
		errs = append(errs, errors.New("allocators must name at least one allocator"))
	}
	seen := map[string]bool{}
	for _, name := range cfg.Allocators {
		if _, err := tracker.ParseAllocator(name); err != nil {
			errs = append(errs, fmt.Errorf("allocators: %w", err))
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("allocators: %q is listed twice", name))
		}
		seen[name] = true
	}
	if _, err := tracker.ParseMode(cfg.Attach); err != nil {
		errs = append(errs, fmt.Errorf("attach: %w", err))
	}
	if cfg.MaxTrackedObjects < minTrackedObjects || cfg.MaxTrackedObjects > maxTrackedObjects {
		errs = append(errs, fmt.Errorf("max_tracked_objects must be between %d and %d, got %d", minTrackedObjects, maxTrackedObjects, cfg.MaxTrackedObjects))
	}
	if cfg.TopN < 1 {
		errs = append(errs, fmt.Errorf("top_n must be at least 1, got %d", cfg.TopN))
	}
	return errors.Join(errs...)
}

// allocators returns the configured allocators; call only after Validate.
func (cfg *Config) allocators() []tracker.Allocator {
	out := make([]tracker.Allocator, 0, len(cfg.Allocators))
	for _, name := range cfg.Allocators {
		a, _ := tracker.ParseAllocator(name)
		out = append(out, a)
	}
	return out
}

func (cfg *Config) logsBuilderConfig() metadata.LogsBuilderConfig {
	return metadata.LogsBuilderConfig{Events: cfg.Events, ResourceAttributes: cfg.ResourceAttributes}
}
