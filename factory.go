package kmemleakreceiver

import (
	"context"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/xconsumer"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/xreceiver"

	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
)

// NewFactory creates the factory of the kmemleak receiver.
func NewFactory() receiver.Factory {
	return xreceiver.NewFactory(
		metadata.Type,
		func() component.Config { return createDefaultConfig() },
		xreceiver.WithMetrics(createMetrics, metadata.MetricsStability),
		xreceiver.WithLogs(createLogs, metadata.LogsStability),
		xreceiver.WithProfiles(createProfiles, metadata.ProfilesStability),
	)
}

func createProfiles(_ context.Context, set receiver.Settings, cfg component.Config, next xconsumer.Profiles) (xreceiver.Profiles, error) {
	r, err := receivers.getOrCreate(cfg.(*Config), set)
	if err != nil {
		return nil, err
	}
	r.profiles = next
	return r, nil
}

func createMetrics(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Metrics) (receiver.Metrics, error) {
	r, err := receivers.getOrCreate(cfg.(*Config), set)
	if err != nil {
		return nil, err
	}
	r.metrics = next
	return r, nil
}

func createLogs(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Logs) (receiver.Logs, error) {
	r, err := receivers.getOrCreate(cfg.(*Config), set)
	if err != nil {
		return nil, err
	}
	r.logs = next
	return r, nil
}

// receivers shares one instance between the metrics and the logs pipelines
// of a configuration, as core's otlpreceiver does, so the probes load once.
var receivers = sharedReceivers{byConfig: map[*Config]*kmemleakReceiver{}}

type sharedReceivers struct {
	mu       sync.Mutex
	byConfig map[*Config]*kmemleakReceiver
}

func (s *sharedReceivers) getOrCreate(cfg *Config, set receiver.Settings) (*kmemleakReceiver, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.byConfig[cfg]; ok {
		return r, nil
	}
	r, err := newReceiver(cfg, set, func() { s.remove(cfg) })
	if err != nil {
		return nil, err
	}
	s.byConfig[cfg] = r
	return r, nil
}

func (s *sharedReceivers) remove(cfg *Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byConfig, cfg)
}
