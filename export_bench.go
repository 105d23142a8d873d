//go:build linux

package kmemleakreceiver

import "github.com/kmemleak/kmemleakreceiver/internal/tracker"

// TrackerOptions returns the probes' options for a validated cfg, so that
// the bench command loads the probes exactly as the receiver would.
func TrackerOptions(cfg *Config) tracker.Options { return cfg.trackerOptions() }
