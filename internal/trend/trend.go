// Package trend follows suspect groups across scans: whether each keeps
// growing, how fast, and when it deserves a log event. A leak grows scan
// after scan; a long-lived cache (dentries, inodes) merely stays.
package trend

import "time"

// Verdict is what the history says of a group after one more scan.
type Verdict struct {
	// Growing is true when the group's count rose in every one of the last
	// window scans.
	Growing bool
	// PerMinute is the count's change per minute over the scans remembered.
	PerMinute float64
	// Report is true when the group deserves an event now: it is new, it
	// just turned growing, or report_every has passed since its last one.
	Report bool
}

type sample struct {
	at    time.Time
	count int64
}

type group struct {
	samples    []sample // the last window, oldest first
	growing    bool
	lastReport time.Time
	lastSeen   time.Time
}

// History remembers each group's last counts.
type History struct {
	window      int
	reportEvery time.Duration
	groups      map[string]*group
}

// New returns a History over window scans (at least 2) that reports a group
// again every reportEvery while it stays.
func New(window int, reportEvery time.Duration) *History {
	return &History{window: window, reportEvery: reportEvery, groups: map[string]*group{}}
}

// Observe records one scan: the count of each group by key. Groups absent
// for longer than reportEvery are forgotten, so a group that comes back
// after that is new again.
func (h *History) Observe(now time.Time, counts map[string]int64) map[string]Verdict {
	out := make(map[string]Verdict, len(counts))
	for key, count := range counts {
		g := h.groups[key]
		isNew := g == nil
		if isNew {
			g = &group{}
			h.groups[key] = g
		}
		g.lastSeen = now
		g.samples = append(g.samples, sample{now, count})
		if len(g.samples) > h.window {
			g.samples = g.samples[len(g.samples)-h.window:]
		}
		wasGrowing := g.growing
		g.growing = len(g.samples) == h.window && rising(g.samples)

		v := Verdict{Growing: g.growing, PerMinute: perMinute(g.samples)}
		v.Report = isNew || (g.growing && !wasGrowing) || now.Sub(g.lastReport) >= h.reportEvery
		if v.Report {
			g.lastReport = now
		}
		out[key] = v
	}
	for key, g := range h.groups {
		if now.Sub(g.lastSeen) > h.reportEvery {
			delete(h.groups, key)
		}
	}
	return out
}

func rising(samples []sample) bool {
	for i := 1; i < len(samples); i++ {
		if samples[i].count <= samples[i-1].count {
			return false
		}
	}
	return true
}

func perMinute(samples []sample) float64 {
	first, last := samples[0], samples[len(samples)-1]
	elapsed := last.at.Sub(first.at).Minutes()
	if elapsed <= 0 {
		return 0
	}
	return float64(last.count-first.count) / elapsed
}
