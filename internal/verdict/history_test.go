package verdict

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A leak judged by one process is still a leak, since the same moment, at
// the next process's first scan, with no new wait for its window.
func TestRestoredLeakIsStillLeakingAtOnce(t *testing.T) {
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	sample := func(now time.Duration) Sample {
		n := int64(now / time.Second) // one object a second, none freed
		return Sample{Objects: n, Bytes: 64 * n, OldestAge: now, Survivors: max(n-10, 0)}
	}
	before := New(defaults.opts)
	var leak Verdict
	now := time.Duration(0)
	for ; leak.State != Leaking; now += 10 * time.Second {
		require.Less(t, now, 20*time.Minute, "never called leaking")
		leak = before.Observe(at.Add(now), Reclaim{}, map[string]Sample{"g": sample(now), "flat": {Objects: 3, Bytes: 3, OldestAge: time.Hour, Survivors: 3}})["g"]
	}
	saved, err := before.Save()
	require.NoError(t, err)

	after := New(defaults.opts)
	n, err := after.Restore(saved)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	now += 30 * time.Second // the restart
	v := after.Observe(at.Add(now), Reclaim{}, map[string]Sample{"g": sample(now)})["g"]
	assert.Equal(t, Leaking, v.State)
	assert.True(t, leak.Since.Equal(v.Since), "since %v, then %v", leak.Since, v.Since)
	assert.False(t, v.Began, "the leak began before the restart")
}

// Restore keeps the leaks first when the new max_groups is smaller.
func TestRestoreKeepsLeaksWithinMaxGroups(t *testing.T) {
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	before := New(defaults.opts)
	before.groups = map[string]*group{
		"leak":   {points: []point{{at: at, objects: 9}}, lastSeen: at, leaking: true},
		"recent": {points: []point{{at: at.Add(time.Second), objects: 1}}, lastSeen: at.Add(time.Second)},
	}
	saved, err := before.Save()
	require.NoError(t, err)
	opts := defaults.opts
	opts.MaxGroups = 1
	after := New(opts)
	n, err := after.Restore(saved)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Contains(t, after.groups, "leak")
}

// What is not a history of this format is refused, the judge untouched.
func TestRestoreRefusesWhatItDidNotWrite(t *testing.T) {
	j := New(defaults.opts)
	saved, err := j.Save()
	require.NoError(t, err)
	other := []byte(historyMagic + "\x02garbage")
	for name, data := range map[string][]byte{
		"empty":     nil,
		"foreign":   []byte(`{"groups":{}}`),
		"truncated": saved[:len(saved)-3],
		"damaged":   other,
		"too large": make([]byte, MaxHistoryBytes+1),
	} {
		t.Run(name, func(t *testing.T) {
			j := New(defaults.opts)
			j.groups["kept"] = &group{}
			_, err := j.Restore(data)
			require.Error(t, err)
			assert.Contains(t, j.groups, "kept")
		})
	}
}

func FuzzRestore(f *testing.F) {
	j := New(defaults.opts)
	saved, err := j.Save()
	require.NoError(f, err)
	f.Add(saved)
	f.Fuzz(func(_ *testing.T, data []byte) {
		_, _ = New(defaults.opts).Restore(data) // must not panic
	})
}

// A process's open files are counted across a restart from what it held
// before: one that opened more meanwhile is adding.
func TestRestoredFileHoldersKeepTheirCounts(t *testing.T) {
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	files := func(n int64) map[string]Sample {
		return map[string]Sample{"g": {Objects: n, Bytes: 64 * n, OldestAge: time.Minute, Survivors: n,
			HoldersListed: true, FileHolders: map[uint32]int64{812: n}}}
	}
	before := New(defaults.opts)
	before.Observe(at, Reclaim{}, files(10))
	saved, err := before.Save()
	require.NoError(t, err)

	after := New(defaults.opts)
	_, err = after.Restore(saved)
	require.NoError(t, err)
	after.Observe(at.Add(30*time.Second), Reclaim{}, files(20))
	assert.Equal(t, int64(10), after.groups["g"].added)
}
