package kmemleakreceiver

import (
	"time"

	"go.uber.org/zap"
)

// errorLimiter logs the first error of each kind, then at most one a
// minute with the number held back: an exporter that is down fails every
// scan, and its errors must not flood the collector's log.
type errorLimiter struct {
	last map[string]time.Time
	held map[string]int
	now  func() time.Time // nil: time.Now
}

const errorLogEvery = time.Minute

func (l *errorLimiter) log(logger *zap.Logger, msg string, err error) {
	if l.last == nil {
		l.last, l.held = map[string]time.Time{}, map[string]int{}
	}
	now := time.Now()
	if l.now != nil {
		now = l.now()
	}
	if now.Sub(l.last[msg]) < errorLogEvery {
		l.held[msg]++
		return
	}
	logger.Error(msg, zap.Error(err), zap.Int("errors_not_logged_since_last", l.held[msg]))
	l.last[msg], l.held[msg] = now, 0
}
