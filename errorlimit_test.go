package kmemleakreceiver

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Each kind of error is logged at once, then at most once a minute, saying
// how many were held back.
func TestErrorLimiter(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	log := zap.New(core)
	clock := time.Unix(1000, 0)
	l := errorLimiter{now: func() time.Time { return clock }}
	for range 5 {
		l.log(log, "export failed", errors.New("down"))
		l.log(log, "scan failed", errors.New("gone"))
		clock = clock.Add(10 * time.Second)
	}
	assert.Equal(t, 1, logs.FilterMessage("export failed").Len())
	assert.Equal(t, 1, logs.FilterMessage("scan failed").Len())
	clock = clock.Add(20 * time.Second) // a minute after the first
	l.log(log, "export failed", errors.New("down"))
	again := logs.FilterMessage("export failed").All()
	assert.Len(t, again, 2)
	assert.Equal(t, int64(4), again[1].ContextMap()["errors_not_logged_since_last"])
}
