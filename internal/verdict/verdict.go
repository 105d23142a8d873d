// Package verdict tells, for each group of long-lived objects, whether it
// leaks: from the trend of its count of aged objects over a long window,
// tested against the series' own noise, and from whether its oldest
// objects stay. A steady pool, a sawtooth and a cache that fills once live
// long without leaking; a leak keeps adding objects that never go.
//
// The synthetic suite in verdict_test.go is what its thresholds are tuned
// on: leaks of several rates alone and under pools, pools, sawtooths,
// caches that fill once, a leak that pauses.
package verdict

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"
)

// State is what a group's history says of it.
type State int

const (
	// Transient groups recycle their objects: the oldest does not age with
	// the clock.
	Transient State = iota
	// Steady groups keep their objects without growing: pools, caches.
	Steady
	// Growing groups rise, but not yet surely, or not in the recent past.
	Growing
	// Leaking groups rise significantly against their noise, still rise,
	// and keep their oldest objects. A leak that pauses stays leaking
	// while the objects it left stay.
	Leaking
)

// States are every state, in order.
var States = []State{Transient, Steady, Growing, Leaking}

var stateNames = [...]string{"transient", "steady", "growing", "leaking"}

func (s State) String() string { return stateNames[s] }

// ParseState is the state named s.
func ParseState(s string) (State, bool) {
	for _, st := range States {
		if st.String() == s {
			return st, true
		}
	}
	return 0, false
}

// Sample is one scan's view of a group.
type Sample struct {
	Objects   int64 // live objects older than min_age
	Bytes     int64
	OldestAge time.Duration
	// Survivors are the live objects that were already older than min_age
	// at the previous scan: the group's aged objects freed since then are
	// the previous scan's Objects less these.
	Survivors int64
	// Reclaimable, when set, says what the kernel's shrinkers reclaim of the
	// group's objects: "reclaimable cache" (SLAB_RECLAIM_ACCOUNT: dentries,
	// inodes, buffer heads, the page cache's xarray nodes), or the objects
	// they belong to. They grow while the kernel has memory to spare, so
	// their rise is a leak only once it has survived reclaim.
	Reclaimable string
	// TmpfsFiles, for a group of tmpfs inodes (OnePerTmpfsFile), is how
	// many files tmpfs mounts hold: files kept there explain as much
	// growth.
	TmpfsFiles      int64
	OnePerTmpfsFile bool
	// Cgroups, for a group of cgroups' structures (PerCgroup), is how many
	// cgroups the kernel keeps, dying ones included: cgroups made and kept
	// explain its growth.
	Cgroups   int64
	PerCgroup bool
	// Bookkeeping, when set, says the group is an allocator's own
	// bookkeeping, which follows the memory it manages for everyone else.
	Bookkeeping string
	// DamonRegions says the group is DAMON's monitoring regions, and
	// DamonBound is the most the running kdamonds may keep: a rise up to
	// it is DAMON refining its view of memory.
	DamonRegions bool
	DamonBound   int64
	// DeviceBuffers, when set, is the driver function that posted the
	// group's objects to its device as receive buffers: the device holds
	// them until data arrives.
	DeviceBuffers string
	// Held, when set, says what legitimately holds the group's objects
	// (live tasks' own structures): a rise that would be a leak is growing
	// instead, with this reason.
	Held string
	// HeldByTasks, when HoldersListed (this scan listed what live tasks
	// hold), is how many of the objects are live tasks' own structures,
	// however few: growth they hold while the rest stays put is explained.
	HeldByTasks   int64
	HoldersListed bool
	// FileHolders, when HoldersListed, is how many of the objects each
	// process holding them as open files holds: growth of files held by processes that each keep what
	// they opened (a shell's pipelines, each command with its pipes) is
	// explained; one process opening more and more is a leak. So is a rise
	// of what no task holds beside them: UnheldRecent counts the objects
	// no task holds that are younger than the window, an upper bound on
	// how much that share rose in it.
	UnheldRecent int64
	FileHolders  map[uint32]int64
	// Clue says what the group's objects point at, for a leak's reason:
	// who allocated them, whether they outlive it, who holds them.
	Clue string
}

// Reclaim is how hard the kernel reclaimed memory since the previous scan.
type Reclaim struct {
	// Scanned is the objects the shrinkers scanned (/proc/vmstat
	// slabs_scanned).
	Scanned int64
	// Dropped: someone dropped the caches (drop_caches), which frees every
	// unused object of every reclaimable cache.
	Dropped bool
}

// Explanation is what a growth is explained by, for alerts to tell
// explained from unexplained growth.
type Explanation int

const (
	// Unexplained is growth nothing here explains.
	Unexplained Explanation = iota
	// ReclaimableCache is a cache the kernel reclaims, growing while no
	// reclaim has tested it, or shrinking when one did.
	ReclaimableCache
	// LiveTasks means the objects are live tasks' own structures; they go
	// when their tasks do.
	LiveTasks
	// TmpfsFiles means the objects are tmpfs inodes, and tmpfs mounts gained
	// files as fast.
	TmpfsFiles
	// AllocatorBookkeeping means the objects are an allocator's own, which
	// follow the memory it manages for every other call site.
	AllocatorBookkeeping
	// Cgroups means the objects are cgroups' structures, and the kernel
	// kept more cgroups at the end of the window than at its start.
	Cgroups
	// DeviceBuffers means the objects are receive buffers a driver posted
	// to its device, held by it until data arrives.
	DeviceBuffers
	// KernelBound means the objects are a kernel structure its
	// configuration bounds (DAMON's regions), below that bound.
	KernelBound
)

var explanationNames = [...]string{"none", "reclaimable_cache", "live_tasks", "tmpfs_files", "allocator_bookkeeping", "cgroups", "device_buffers", "kernel_bound"}

func (e Explanation) String() string { return explanationNames[e] }

// Verdict is a group's state after one more scan.
type Verdict struct {
	State State
	// PerMinute and BytesPerMinute are the group's growth over the window
	// (Theil–Sen).
	PerMinute, BytesPerMinute float64
	// Since is, for a leak, when its oldest object was allocated.
	Since time.Time
	// Reason says, for a person, why a group that is not steady or
	// transient is what it is: what explains its growth, or what points at
	// a leak.
	Reason string
	// ExplainedBy is what explains a growing group's rise, if anything.
	ExplainedBy Explanation
	// Began says the group turned leaking this scan.
	Began bool
	// Report says the verdict deserves an event now: the group is new, its
	// state changed, a leak's rate doubled or halved, or report_interval
	// has passed since the last one.
	Report bool
}

// Options tune the judge.
type Options struct {
	// Window is how far back a trend looks; older samples are forgotten.
	Window time.Duration
	// Persist is how old a group's oldest object must be before it can be
	// called a leak: a sawtooth or a batch shorter than this never is.
	Persist time.Duration
	// ReportInterval is how often a leak is reported while it lasts.
	ReportInterval time.Duration
	// MaxGroups bounds the groups followed. A new group takes the place of
	// the least recently seen non-leaking group that the previous scan did
	// not see; when every group was seen, the new one is not followed
	// (Observe gives it no verdict) until one goes: groups that stay keep
	// their history.
	MaxGroups int
}

const (
	// minSamples is the fewest samples a leak verdict rests on: the least
	// a Mann–Kendall test clears zLeak with on a perfectly rising series.
	minSamples = 9
	// maxSamples bounds a group's memory: beyond it, older samples are
	// thinned out by half.
	maxSamples = 240
	// zLeak is the Mann–Kendall score a leak needs (one-sided p < 0.0002):
	// hundreds of groups are judged every scan, so a laxer test would call
	// some steady group a leak every few minutes by chance alone.
	zLeak = 3.5
	// zGrowing is the score of a rise worth saying (p < 0.05).
	zGrowing = 1.65
	// confirmScans is how many scans in a row must find a leak.
	confirmScans = 2
	// MinRise is the fewest objects a leak adds in its window (and so a
	// site with fewer objects than this that nothing holds has no leak to
	// call, whatever holds the rest): a process
	// keeping two or three objects until it exits (a memory policy, seen
	// called leaking at 0.04/min) is not worth a page, and a leak of one
	// object a minute clears it in five.
	MinRise = 5
	// mixedEvidence is the least window a leak in a group that also frees
	// its aged objects is judged on: a pool's wander can lift its floor for
	// minutes (a bounded random walk of +-50 around 5,000 did for 6).
	mixedEvidence = 10 * time.Minute
)

type point struct {
	at      time.Time
	objects int64
	bytes   int64
	oldest  time.Duration
	freed   int64 // aged objects freed since the previous point
	// reclaimed: since the previous point the kernel reclaimed hard
	// enough to reach the group's objects, were they reclaimable.
	reclaimed bool
	files     int64 // Sample.TmpfsFiles
	cgroups   int64 // Sample.Cgroups
	// unheld is the objects live tasks do not hold as their own
	// structures, where listed says the scan listed what they hold.
	unheld int64
	listed bool
}

type group struct {
	points   []point
	lastSeen time.Time
	hits     int // consecutive scans that found a leak
	// candidate: the last scan found the group rising like a leak, whether
	// or not something explained it.
	candidate bool

	leaking bool
	// floor is the count a leak must stay above to stay a leak: half way
	// between where it started and where it was when found.
	floor        int64
	since        time.Time
	began        bool // turned leaking in the scan being judged
	lastReport   time.Time
	reported     State // the state of the last verdict reported
	reportedRate float64
	// fileHolders is, per process holding the group's objects as open
	// files, the fewest it held at a scan that listed the holders; added
	// is the most any of them holds above that at this scan.
	fileHolders map[uint32]int64
	added       int64
}

// Judge follows groups across scans.
type Judge struct {
	opts   Options
	groups map[string]*group
	// previous is when the previous scan was observed.
	previous time.Time
}

// New returns a Judge.
func New(opts Options) *Judge {
	return &Judge{opts: opts, groups: map[string]*group{}}
}

// Observe records one scan's samples by group key, and how hard the kernel
// reclaimed since the last scan, and returns each followed group's verdict.
// Groups unseen for a window are forgotten.
func (j *Judge) Observe(now time.Time, reclaim Reclaim, samples map[string]Sample) map[string]Verdict {
	out := make(map[string]Verdict, len(samples))
	var newcomers []string
	for key, s := range samples {
		if g := j.groups[key]; g != nil {
			out[key] = g.observe(now, s, reclaim, j.opts)
		} else {
			newcomers = append(newcomers, key)
		}
	}
	// At the cap, the largest newcomers are the ones followed.
	slices.SortFunc(newcomers, func(a, b string) int {
		return cmp.Or(cmp.Compare(samples[b].Bytes, samples[a].Bytes), cmp.Compare(a, b))
	})
	for _, key := range newcomers {
		if len(j.groups) >= j.opts.MaxGroups && !j.evict() {
			break
		}
		g := &group{}
		j.groups[key] = g
		out[key] = g.observe(now, samples[key], reclaim, j.opts)
	}
	for key, g := range j.groups {
		if now.Sub(g.lastSeen) > j.opts.Window {
			delete(j.groups, key)
		}
		// A group this scan did not see rises like nothing now.
		if g.lastSeen != now {
			g.candidate = false
		}
	}
	j.previous = now
	return out
}

// Candidates reports whether the last scan found a group rising like a
// leak: then the next scan needs to know what holds its objects.
func (j *Judge) Candidates() bool {
	for _, g := range j.groups {
		if g.candidate {
			return true
		}
	}
	return false
}

// evict forgets the least recently seen group that is not a leak and that
// the previous scan did not see.
func (j *Judge) evict() bool {
	var victim string
	var seen time.Time
	for key, g := range j.groups {
		if !g.leaking && g.lastSeen.Before(j.previous) && (victim == "" || g.lastSeen.Before(seen)) {
			victim, seen = key, g.lastSeen
		}
	}
	if victim == "" {
		return false
	}
	delete(j.groups, victim)
	return true
}

func (g *group) observe(now time.Time, s Sample, reclaim Reclaim, opts Options) Verdict {
	g.lastSeen = now
	reclaimed := reclaim.Dropped || reclaim.Scanned > 0 && reclaim.Scanned >= s.Objects
	g.add(point{now, s.Objects, s.Bytes, s.OldestAge, g.freedSince(s), reclaimed, s.TmpfsFiles, s.Cgroups,
		s.Objects - s.HeldByTasks, s.HoldersListed}, now.Add(-opts.Window))
	if s.HoldersListed {
		g.added = g.followFileHolders(s.FileHolders)
	}
	return g.judge(now, s, opts)
}

// followFileHolders records how many of the group's objects each process
// holds as open files, at a scan that listed them, and returns the most
// any of them holds above the fewest it held since it was first listed.
// A process that holds none any more is forgotten.
func (g *group) followFileHolders(held map[uint32]int64) int64 {
	var most int64
	fewest := make(map[uint32]int64, len(held))
	for tgid, n := range held {
		low, seen := g.fileHolders[tgid]
		if !seen || n < low {
			low = n
		}
		fewest[tgid] = low
		most = max(most, n-low)
	}
	g.fileHolders = fewest
	return most
}

// freedSince is how many of the group's aged objects of its last sample
// are gone in s.
func (g *group) freedSince(s Sample) int64 {
	if len(g.points) == 0 {
		return 0
	}
	return max(g.points[len(g.points)-1].objects-s.Survivors, 0)
}

func (g *group) add(p point, horizon time.Time) {
	g.points = append(g.points, p)
	first := 0
	for first < len(g.points) && g.points[first].at.Before(horizon) {
		first++
	}
	g.points = g.points[first:]
	if len(g.points) > maxSamples {
		old := g.points[:len(g.points)/2]
		kept := g.points[:0]
		for i := 0; i < len(old); i += 2 {
			kept = append(kept, old[i])
		}
		g.points = append(kept, g.points[len(old):]...)
	}
}

func (g *group) judge(now time.Time, s Sample, opts Options) Verdict {
	t := g.trend()
	last := g.points[len(g.points)-1]
	why, by := g.explain(s)
	v := Verdict{State: g.state(t, last, opts.Persist, by != Unexplained), PerMinute: t.perMinute, BytesPerMinute: t.bytesPerMinute}
	switch v.State {
	case Leaking:
		v.Reason = cmp.Or(s.Clue, "keeps rising, and nothing that holds kernel memory explains it")
		if s.Reclaimable != "" {
			v.Reason = s.Reclaimable + ", survived reclaim; " + v.Reason
		}
	case Growing:
		v.Reason, v.ExplainedBy = cmp.Or(why, "rising, not yet surely a leak"), by
	}
	if v.State == Leaking {
		v.Since, v.Began, g.began = g.since, g.began, false
	}
	rate := math.Abs(t.perMinute)
	changed := v.State == Leaking && (rate > 2*g.reportedRate+1 || rate < g.reportedRate/2-1)
	if g.lastReport.IsZero() || v.State != g.reported || changed || now.Sub(g.lastReport) >= opts.ReportInterval {
		v.Report = true
		g.lastReport, g.reported, g.reportedRate = now, v.State, rate
	}
	return v
}

// explain says what legitimately explains the group's growth, if
// anything: live tasks holding its objects, or a reclaimable cache that no
// reclaim has tested, or that shrank when one did. A reclaimable cache
// whose objects stayed through reclaim is not explained.
func (g *group) explain(s Sample) (string, Explanation) {
	if s.Held != "" {
		return s.Held, LiveTasks
	}
	if why := g.heldGrowth(s); why != "" {
		return why, LiveTasks
	}
	if s.Bookkeeping != "" {
		return "the allocator's own bookkeeping (" + s.Bookkeeping + "), which follows the memory it manages", AllocatorBookkeeping
	}
	if s.DeviceBuffers != "" {
		return "receive buffers a driver posts to its device (" + s.DeviceBuffers + "), held by it until data arrives", DeviceBuffers
	}
	if s.DamonRegions && s.Objects <= s.DamonBound {
		return fmt.Sprintf("DAMON's monitoring regions, within the %d its kdamonds may keep", s.DamonBound), KernelBound
	}
	if s.OnePerTmpfsFile {
		xs, ys, _ := series(g.points)
		files := make([]float64, len(g.points))
		for i, p := range g.points {
			files[i] = float64(p.files)
		}
		// Nine in ten: tmpfs also holds files made before min_age ago.
		if gained := theilSen(xs, files); gained > 0 && gained >= 0.9*theilSen(xs, ys) {
			return fmt.Sprintf("files kept in tmpfs (its mounts gain %.1f files/min)", gained), TmpfsFiles
		}
	}
	// Any rise of the count: a cgroup brings dozens of objects to some
	// sites (its kernfs files), one to others.
	if first, last := g.points[0], g.points[len(g.points)-1]; s.PerCgroup && last.cgroups > first.cgroups {
		return fmt.Sprintf("structures of cgroups, kept while they exist (%d cgroups, %+d in %s)",
			last.cgroups, last.cgroups-first.cgroups, last.at.Sub(first.at).Round(time.Second)), Cgroups
	}
	if s.Reclaimable == "" {
		return "", Unexplained
	}
	tested := false
	for i, p := range g.points {
		if i == 0 || !p.reclaimed {
			continue
		}
		if p.freed > g.points[i-1].objects/100 {
			return s.Reclaimable + ", shrank under reclaim", ReclaimableCache
		}
		tested = true
	}
	if !tested {
		return s.Reclaimable + ", no reclaim seen", ReclaimableCache
	}
	return "", Unexplained
}

// heldGrowth explains a growth that live tasks hold while the rest of the
// group stays put: as their own structures, or as open files when no
// process holding them opened more of them (a shell's pipelines: each
// command keeps the pipes it was started with) and too few of the rest
// are new to be a leak of their own. Tasks share what they
// hold with owners no iterator lists (credentials kept by files opened
// before a setuid, by sockets, by exiting tasks), so a steady share of a
// site's objects is never seen held; a leak there is that share rising.
func (g *group) heldGrowth(s Sample) string {
	switch {
	case !s.HoldersListed:
	case s.HeldByTasks > 0 && g.unheldFlat():
		return fmt.Sprintf("live tasks' own structures hold its growth (%d%% of its objects; the other %d do not rise)",
			s.HeldByTasks*100/max(s.Objects, 1), s.Objects-s.HeldByTasks)
	case len(s.FileHolders) > 0 && g.added < MinRise && s.UnheldRecent < MinRise:
		held := int64(0)
		for _, n := range s.FileHolders {
			held += n
		}
		return fmt.Sprintf("open files of %d live processes hold its growth, none of which opened %d more (%d%% of its objects; %d of the others are new)",
			len(s.FileHolders), MinRise, held*100/max(s.Objects, 1), s.UnheldRecent)
	}
	return ""
}

// unheldFlat reports whether the objects live tasks do not hold as their
// own structures stay put over the scans that listed the holders, when
// they cover most of the window: a trend of a few scans says nothing of a
// slow leak.
func (g *group) unheldFlat() bool {
	var xs, ys []float64
	first, last := g.points[0].at, g.points[len(g.points)-1].at
	for _, p := range g.points {
		if p.listed {
			xs = append(xs, p.at.Sub(first).Minutes())
			ys = append(ys, float64(p.unheld))
		}
	}
	window := last.Sub(first).Minutes()
	return len(xs) >= minSamples && xs[len(xs)-1]-xs[0] >= window/2 && theilSen(xs, ys)*window < MinRise
}

// state decides, and remembers a leak once it is found. A rise that would
// be a leak but is explained is growing.
func (g *group) state(t trend, last point, persist time.Duration, explained bool) State {
	if g.leaking {
		// A leak that pauses stays one while what it left stays and the
		// window still shows the rise: about half a window of pause.
		if t.persists && last.objects >= g.floor && t.z >= zGrowing && !explained {
			return Leaking
		}
		g.leaking = false
	}
	g.candidate = t.leak && last.oldest >= persist
	if g.candidate {
		g.hits++
	} else {
		g.hits = 0
	}
	switch {
	case g.hits >= confirmScans && explained:
		return Growing
	case g.hits >= confirmScans:
		g.leaking, g.began = true, true
		g.floor = t.start + (last.objects-t.start)/2
		g.since = last.at.Add(-last.oldest)
		return Leaking
	case t.perMinute > 0 && t.z >= zGrowing:
		return Growing
	case t.persists:
		return Steady
	}
	return Transient
}

// trend is what the window's samples show.
type trend struct {
	z                         float64 // Mann–Kendall score of the counts
	perMinute, bytesPerMinute float64
	start                     int64 // the count where the window's fit starts
	// persists: the objects of the window's first scan are still there
	// (the oldest aged with the clock).
	persists bool
	// leak: the whole window or its latter half rises like a leak (see
	// leakLike).
	leak bool
}

func (g *group) trend() trend {
	n := len(g.points)
	for _, from := range []int{0, n / 2} {
		if tail := g.points[from:]; len(tail) >= minSamples {
			if rising := leakLike(tail); rising != nil {
				// The rates and the start are the leak's: a window whose
				// first half was a batch ending falls, the leak after it
				// does not.
				t := fit(rising)
				t.persists = fit(g.points).persists
				t.leak = true
				return t
			}
		}
	}
	return fit(g.points)
}

// fit is the trend of pts without the leak test.
func fit(pts []point) trend {
	first, last := pts[0], pts[len(pts)-1]
	span := last.at.Sub(first.at)
	xs, ys, bs := series(pts)
	var t trend
	_, t.z = mannKendall(ys)
	t.perMinute, t.bytesPerMinute = theilSen(xs, ys), theilSen(xs, bs)
	t.start = int64(median(ys[:max(len(ys)/4, 1)]))
	t.persists = span > 0 && last.oldest-first.oldest >= span*9/10
	return t
}

func series(pts []point) (xs, ys, bs []float64) {
	xs, ys, bs = make([]float64, len(pts)), make([]float64, len(pts)), make([]float64, len(pts))
	for i, p := range pts {
		xs[i] = p.at.Sub(pts[0].at).Minutes()
		ys[i], bs[i] = float64(p.objects), float64(p.bytes)
	}
	return xs, ys, bs
}

// leakLike returns the points that rise like a leak, all of pts or what
// follows a step, or nil: the count rises significantly against its own noise,
// steadily (not a step, not a population settling), and the oldest objects
// stay. A group that frees none of its aged objects is judged on that
// alone; one that frees some (a leak hidden in a pool, or a pool that
// wanders: Mann–Kendall takes autocorrelated wander for a trend) must also
// lift its floor, the least count of each quarter, far beyond its wander.
func leakLike(pts []point) []point {
	xs, ys, _ := series(pts)
	// A step is a cache filling at once or a batch starting, not a leak:
	// what rises after it is judged on its own.
	if i := step(ys); i > 0 {
		if len(pts)-i < minSamples {
			return nil
		}
		return leakLike(pts[i:])
	}
	t := fit(pts)
	if t.z < zLeak || t.perMinute <= 0 || !t.persists || ys[len(ys)-1]-float64(t.start) < MinRise ||
		!rises(quarters(ys, median)) || !keepsPace(xs, ys) {
		return nil
	}
	var freed, most int64
	for _, p := range pts[1:] {
		freed += p.freed
		most = max(most, p.objects)
	}
	if freed <= most/100 {
		return pts
	}
	if pts[len(pts)-1].at.Sub(pts[0].at) < mixedEvidence {
		return nil
	}
	if floors := quarters(ys, minimum); !rises(floors) || floors[3]-floors[0] < max(3, 4*spread(xs, ys, t.perMinute)) {
		return nil
	}
	return pts
}

// step finds the rise that makes at least half of the count's whole range
// and is four times its typical rise (the median of its other rises), and
// returns the index of the count after it; 0 when there is none. A leak
// rises in steps of its own size, even a slow one (one object at a time);
// a batch starting or a cache filling at once stands out, even beside the
// rises of a group settling after the probes attach.
func step(ys []float64) int {
	at, largest := 0, 0.0
	var others []float64
	for i := 1; i < len(ys); i++ {
		switch rise := ys[i] - ys[i-1]; {
		case rise > largest:
			if largest > 0 {
				others = append(others, largest)
			}
			at, largest = i, rise
		case rise > 0:
			others = append(others, rise)
		}
	}
	if largest == 0 || 2*largest < slices.Max(ys)-slices.Min(ys) || largest < 4*median(others) {
		return 0
	}
	return at
}

// spread is the median distance of the counts from their Theil–Sen line:
// how far the count wanders without a trend. A bounded wander of a pool
// (autocorrelated, so Mann–Kendall alone takes it for a trend) never rises
// four times as far.
func spread(xs, ys []float64, slope float64) float64 {
	residuals := make([]float64, len(xs))
	for i := range xs {
		residuals[i] = ys[i] - slope*xs[i]
	}
	mid := median(residuals)
	for i, r := range residuals {
		residuals[i] = math.Abs(r - mid)
	}
	return median(residuals)
}

// keepsPace tells a leak, which adds objects at its own pace, from a
// population settling to its size (every group's count of aged objects
// climbs for a while after the probes attach, ever slower): the second
// half rises at least half as fast as the first.
func keepsPace(xs, ys []float64) bool {
	h := len(xs) / 2
	early, late := theilSen(xs[:h], ys[:h]), theilSen(xs[h:], ys[h:])
	return late > 0 && late >= early/2
}

// quarters summarizes each quarter of ys.
func quarters(ys []float64, summary func([]float64) float64) [4]float64 {
	var out [4]float64
	q := len(ys) / 4
	for i := range out {
		end := (i + 1) * q
		if i == 3 {
			end = len(ys)
		}
		out[i] = summary(ys[i*q : end])
	}
	return out
}

// rises tells a leak from a step (a cache that filled once) by the
// quarters of its window: each at least the one before, two of the three
// steps up real, and the last one.
func rises(q [4]float64) bool {
	ups := 0
	for i := 1; i < 4; i++ {
		if q[i] < q[i-1] {
			return false
		}
		if q[i] > q[i-1] {
			ups++
		}
	}
	return ups >= 2 && q[3] > q[2]
}

func minimum(ys []float64) float64 { return slices.Min(ys) }
