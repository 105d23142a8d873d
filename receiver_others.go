//go:build !linux

package kmemleakreceiver

import (
	"errors"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver"
)

// kmemleakReceiver exists on other platforms only so the factory compiles;
// newReceiver never returns one.
type kmemleakReceiver struct {
	component.StartFunc
	component.ShutdownFunc
	metrics consumer.Metrics
	logs    consumer.Logs
}

func newReceiver(*Config, receiver.Settings, func()) (*kmemleakReceiver, error) {
	return nil, errors.New("the kmemleak receiver is only supported on linux: it tracks the Linux kernel's allocators with eBPF")
}
