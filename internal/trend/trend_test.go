package trend

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// scan observes one group's count at the n-th scan, 10 s apart.
func scan(h *History, n int, count int64) Verdict {
	return h.Observe(t0.Add(time.Duration(n)*10*time.Second), map[string]int64{"g": count})["g"]
}

func TestGrowingNeedsARiseInEveryScanOfTheWindow(t *testing.T) {
	h := New(3, time.Hour)
	assert.False(t, scan(h, 0, 10).Growing, "one sample is no trend")
	assert.False(t, scan(h, 1, 20).Growing, "two samples are fewer than the window")
	v := scan(h, 2, 30)
	assert.True(t, v.Growing)
	assert.InDelta(t, 60, v.PerMinute, 1e-9, "20 objects in 20 s")
	assert.True(t, scan(h, 3, 31).Growing)
	assert.False(t, scan(h, 4, 31).Growing, "flat is not growing")
	assert.False(t, scan(h, 5, 40).Growing, "the flat scan is still in the window")
	assert.True(t, scan(h, 6, 41).Growing)
	assert.False(t, scan(h, 7, 35).Growing, "a fall ends it")
}

func TestPerMinuteSpansTheWindow(t *testing.T) {
	h := New(4, time.Hour)
	for n, c := range []int64{100, 100, 100, 40} {
		scan(h, n, c)
	}
	assert.InDelta(t, -120, scan(h, 4, 40).PerMinute, 1e-9, "100 -> 40 over the last 4 scans, 30 s")
}

func TestReportOnAppearanceTurningGrowingAndEveryInterval(t *testing.T) {
	h := New(3, time.Minute)
	assert.True(t, scan(h, 0, 10).Report, "a new group is reported")
	assert.False(t, scan(h, 1, 10).Report)
	assert.False(t, scan(h, 2, 11).Report, "not growing yet: 10, 10, 11")
	v := scan(h, 3, 12)
	assert.True(t, v.Growing)
	assert.True(t, v.Report, "turning growing is reported")
	assert.False(t, scan(h, 4, 13).Report, "still growing: not again")
	assert.False(t, scan(h, 5, 13).Report)
	assert.False(t, scan(h, 8, 13).Report, "50 s since the last event")
	assert.True(t, scan(h, 9, 13).Report, "a minute since the last event")
	assert.False(t, scan(h, 10, 13).Report)
}

func TestGroupsAreTrackedApartAndForgottenWhenGone(t *testing.T) {
	h := New(2, time.Minute)
	v := h.Observe(t0, map[string]int64{"a": 1, "b": 5})
	assert.True(t, v["a"].Report)
	assert.True(t, v["b"].Report)
	v = h.Observe(t0.Add(10*time.Second), map[string]int64{"a": 2})
	assert.True(t, v["a"].Growing)
	assert.NotContains(t, v, "b")
	// b is back within the interval: not new, and no event yet.
	v = h.Observe(t0.Add(20*time.Second), map[string]int64{"a": 3, "b": 5})
	assert.False(t, v["b"].Report)
	// Gone for longer than the interval: new again.
	v = h.Observe(t0.Add(90*time.Second), map[string]int64{"a": 4})
	assert.NotContains(t, v, "b")
	assert.True(t, v["a"].Report, "a minute and more since a's last event")
	v = h.Observe(t0.Add(100*time.Second), map[string]int64{"b": 5})
	assert.True(t, v["b"].Report)
	assert.False(t, v["b"].Growing, "its history started over")
}
