package verdict

import (
	"bytes"
	"cmp"
	"encoding/gob"
	"errors"
	"fmt"
	"slices"
	"time"
)

// historyMagic and historyFormat begin every saved history: Restore takes
// nothing else. A change in what a saved field means takes a new format; a
// field added is its zero value in older histories (gob), which must read
// as nothing known (FileHolders: no process followed yet).
const (
	historyMagic  = "kmemleak verdicts\n"
	historyFormat = 1
)

// MaxHistoryBytes bounds what Restore reads: at most max_groups (20,000)
// groups of maxSamples points, about 30 bytes each once encoded, is 150
// MB; anything larger is not a history of this receiver.
const MaxHistoryBytes = 256 << 20

// savedHistory is a Judge's memory as Save writes it.
type savedHistory struct {
	Format   int
	Previous int64 // Unix nanoseconds; 0 before the first scan
	Groups   map[string]savedGroup
}

// savedGroup is a group's memory; began is for the scan that set it and
// is not saved.
type savedGroup struct {
	Points       []savedPoint
	LastSeen     int64
	Hits         int
	Candidate    bool
	Leaking      bool
	Floor        int64
	Since        int64
	LastReport   int64
	Reported     State
	ReportedRate float64
	FileHolders  map[uint32]int64
}

type savedPoint struct {
	At                            int64
	Objects, Bytes                int64
	Oldest                        time.Duration
	Freed, Files, Cgroups, Unheld int64
	Reclaimed, Listed             bool
}

// Save encodes what the Judge remembers of every group followed, for
// Restore in the next process: its size is bounded by MaxGroups groups of
// at most maxSamples points.
func (j *Judge) Save() ([]byte, error) {
	h := savedHistory{Format: historyFormat, Previous: unixNano(j.previous), Groups: make(map[string]savedGroup, len(j.groups))}
	for key, g := range j.groups {
		sg := savedGroup{
			Points: make([]savedPoint, len(g.points)), LastSeen: unixNano(g.lastSeen), Hits: g.hits, Candidate: g.candidate, Leaking: g.leaking,
			Floor: g.floor, Since: unixNano(g.since), LastReport: unixNano(g.lastReport), Reported: g.reported, ReportedRate: g.reportedRate,
			FileHolders: g.fileHolders,
		}
		for i, p := range g.points {
			sg.Points[i] = savedPoint{unixNano(p.at), p.objects, p.bytes, p.oldest, p.freed, p.files, p.cgroups, p.unheld, p.reclaimed, p.listed}
		}
		h.Groups[key] = sg
	}
	var buf bytes.Buffer
	buf.WriteString(historyMagic)
	if err := gob.NewEncoder(&buf).Encode(&h); err != nil {
		return nil, fmt.Errorf("encoding the verdict histories: %w", err)
	}
	return buf.Bytes(), nil
}

// Restore replaces what the Judge remembers with a history Save wrote,
// and returns how many groups it restored: the leaks first, then the most
// recently seen, up to MaxGroups. Data of another format, another program
// or damaged is refused with an error, the Judge left as it was.
func (j *Judge) Restore(data []byte) (n int, err error) {
	if len(data) > MaxHistoryBytes {
		return 0, fmt.Errorf("%d bytes, more than a history can be (%d)", len(data), MaxHistoryBytes)
	}
	rest, ok := bytes.CutPrefix(data, []byte(historyMagic))
	if !ok {
		return 0, errors.New("not a verdict history of this receiver")
	}
	// gob reports what it cannot decode as errors; a panic on data it was
	// never meant to read must not take the collector with it.
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, fmt.Errorf("decoding the verdict histories: %v", r)
		}
	}()
	var h savedHistory
	if err := gob.NewDecoder(bytes.NewReader(rest)).Decode(&h); err != nil {
		return 0, fmt.Errorf("decoding the verdict histories: %w", err)
	}
	if h.Format != historyFormat {
		return 0, fmt.Errorf("a verdict history of format %d, not %d", h.Format, historyFormat)
	}
	keys := make([]string, 0, len(h.Groups))
	for key, g := range h.Groups {
		if len(g.Points) == 0 || len(g.Points) > maxSamples {
			return 0, fmt.Errorf("the group %q has %d points, not 1 to %d", key, len(g.Points), maxSamples)
		}
		keys = append(keys, key)
	}
	slices.SortFunc(keys, func(a, b string) int {
		ga, gb := h.Groups[a], h.Groups[b]
		if ga.Leaking != gb.Leaking {
			if ga.Leaking {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(gb.LastSeen, ga.LastSeen), cmp.Compare(a, b))
	})
	groups := make(map[string]*group, min(len(keys), j.opts.MaxGroups))
	for _, key := range keys[:min(len(keys), j.opts.MaxGroups)] {
		sg := h.Groups[key]
		g := &group{
			points: make([]point, len(sg.Points)), lastSeen: fromUnixNano(sg.LastSeen), hits: sg.Hits, candidate: sg.Candidate, leaking: sg.Leaking, floor: sg.Floor,
			since: fromUnixNano(sg.Since), lastReport: fromUnixNano(sg.LastReport), reported: sg.Reported, reportedRate: sg.ReportedRate,
			fileHolders: sg.FileHolders,
		}
		for i, p := range sg.Points {
			g.points[i] = point{fromUnixNano(p.At), p.Objects, p.Bytes, p.Oldest, p.Freed, p.Reclaimed, p.Files, p.Cgroups, p.Unheld, p.Listed}
		}
		groups[key] = g
	}
	j.groups, j.previous = groups, fromUnixNano(h.Previous)
	return len(groups), nil
}

// unixNano is t in Unix nanoseconds, and the zero time 0.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
