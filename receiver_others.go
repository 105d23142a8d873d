//go:build !linux || !(amd64 || arm64)

package kmemleakreceiver

import (
	"fmt"
	"runtime"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/xconsumer"
	"go.opentelemetry.io/collector/receiver"
)

// kmemleakReceiver exists on other platforms only so the factory compiles;
// newReceiver never returns one.
type kmemleakReceiver struct {
	component.StartFunc
	component.ShutdownFunc
	metrics  consumer.Metrics
	logs     consumer.Logs
	profiles xconsumer.Profiles
}

// The probes are built for x86-64 and arm64 (bpf/gen.go): on other Linux
// architectures the receiver says so instead of loading them.
func newReceiver(*Config, receiver.Settings, func()) (*kmemleakReceiver, error) {
	return nil, fmt.Errorf("the kmemleak receiver is only supported on linux/amd64 and linux/arm64 (this is %s/%s): it tracks the Linux kernel's allocators with eBPF", runtime.GOOS, runtime.GOARCH)
}
