//go:build !linux || !(amd64 || arm64)

package kmemleakreceiver

import (
	"context"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
)

// Off linux/amd64 and linux/arm64 the factory registers, its config
// validates, and creating the receiver says where it runs instead of
// failing later.
func TestUnsupportedPlatformCreateSaysWhereItRuns(t *testing.T) {
	f := NewFactory()
	assert.Equal(t, metadata.Type, f.Type())
	cfg := f.CreateDefaultConfig().(*Config)
	assert.NoError(t, cfg.Validate())
	set := receivertest.NewNopSettings(metadata.Type)
	_, err := f.CreateMetrics(context.Background(), set, cfg, consumertest.NewNop())
	assert.ErrorContains(t, err, "the kmemleak receiver is only supported on linux/amd64 and linux/arm64 (this is "+runtime.GOOS+"/"+runtime.GOARCH+")")
	_, err = f.CreateLogs(context.Background(), set, cfg, consumertest.NewNop())
	assert.ErrorContains(t, err, "the kmemleak receiver is only supported on linux/amd64 and linux/arm64 (this is "+runtime.GOOS+"/"+runtime.GOARCH+")")
}
