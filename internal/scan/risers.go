package scan

import (
	"cmp"
	"math/bits"

	"github.com/kmemleak/kmemleakreceiver/internal/owner"
)

// risers remembers, per call site, in which of its last scans each owner's
// objects rose and fell. The clue of a site that rises names who keeps
// adding to it, not who holds the most: a batch's two thousand pipes, held
// for minutes, beside a leak's dozens of files at the same call site made
// the clue name the batch (suite run 12).
type risers map[string]map[owner.Owner]*rises

// rises is one owner's objects at a site at the last scan, and a bit for
// each of the last sixteen scans (lowest the latest) in which they rose,
// or fell.
type rises struct {
	objects    int64
	rose, fell uint16
}

// net is how many more of the scans the owner's objects rose in than fell.
func (r *rises) net() int { return bits.OnesCount16(r.rose) - bits.OnesCount16(r.fell) }

// observe records a site's objects per owner this scan and returns the
// owner that added most to it in its last scans: the most scans of rising
// net of falling, then objects; the zero Owner when none rose, or none is
// a process or an interrupt context. Owners not seen this scan are
// forgotten. A process is one owner before and after it exits: its exit
// is no rise.
func (r risers) observe(key string, byOwner map[owner.Owner]int64) owner.Owner {
	sums := make(map[owner.Owner]int64, len(byOwner))
	named := make(map[owner.Owner]owner.Owner, len(byOwner))
	for o, n := range byOwner {
		k := o
		k.Exited = false
		sums[k] += n
		named[k] = o
	}
	before := r[key]
	now := make(map[owner.Owner]*rises, len(sums))
	var best owner.Owner
	var bestRises *rises
	for k, n := range sums {
		got := &rises{objects: n}
		if prev := before[k]; prev != nil {
			got.rose, got.fell = prev.rose<<1, prev.fell<<1
			switch {
			case n > prev.objects:
				got.rose |= 1
			case n < prev.objects:
				got.fell |= 1
			}
		} else if n > 0 {
			got.rose = 1
		}
		now[k] = got
		o := named[k]
		if !o.Attributed() || o.Other || got.rose == 0 {
			continue
		}
		if bestRises == nil || cmp.Or(
			cmp.Compare(got.net(), bestRises.net()),
			cmp.Compare(got.objects, bestRises.objects),
			cmp.Compare(best.Pid, o.Pid)) > 0 {
			best, bestRises = o, got
		}
	}
	r[key] = now
	return best
}

// forget drops the sites not judged this scan.
func (r risers) forget(judged map[string]*site) {
	for key := range r {
		if judged[key] == nil {
			delete(r, key)
		}
	}
}
