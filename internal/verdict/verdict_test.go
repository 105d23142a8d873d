package verdict

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// A workload allocates and frees the objects of one group, second by
// second, and keeps their allocation times.
type workload interface {
	step(t time.Duration, rng *rand.Rand)
	live() []time.Duration
}

type objects []time.Duration

func (o objects) live() []time.Duration { return o }

// leak allocates perMinute objects a minute from start, pausing between
// pauseFrom and pauseTo, and frees none.
type leak struct {
	objects
	perMinute          float64
	start              time.Duration
	pauseFrom, pauseTo time.Duration
	owed               float64
}

func (l *leak) step(t time.Duration, _ *rand.Rand) {
	if t < l.start || (t >= l.pauseFrom && t < l.pauseTo) {
		return
	}
	for l.owed += l.perMinute / 60; l.owed >= 1; l.owed-- {
		l.objects = append(l.objects, t)
	}
}

// pool keeps about size objects and replaces churn of them a second; with
// noise, its size wanders within noise of size.
type pool struct {
	objects
	size, churn, noise int
	target             int
}

func (p *pool) step(t time.Duration, rng *rand.Rand) {
	if p.target == 0 {
		p.target = p.size
	}
	if p.noise > 0 {
		p.target = min(max(p.target+rng.IntN(2*p.noise/5+1)-p.noise/5, p.size-p.noise), p.size+p.noise)
	}
	for range p.churn {
		if len(p.objects) > 0 {
			p.objects[rng.IntN(len(p.objects))] = t
		}
	}
	for len(p.objects) < p.target {
		p.objects = append(p.objects, t)
	}
	for len(p.objects) > p.target {
		i := rng.IntN(len(p.objects))
		p.objects = slices.Delete(p.objects, i, i+1)
	}
}

// sawtooth allocates perSecond objects a second for period, then frees
// them all.
type sawtooth struct {
	objects
	perSecond int
	period    time.Duration
}

func (s *sawtooth) step(t time.Duration, _ *rand.Rand) {
	if t%s.period == 0 {
		s.objects = s.objects[:0]
	}
	for range s.perSecond {
		s.objects = append(s.objects, t)
	}
}

// fill allocates perSecond objects a second from start to stop and keeps
// them: a cache that fills once.
type fill struct {
	objects
	perSecond   int
	start, stop time.Duration
}

func (f *fill) step(t time.Duration, _ *rand.Rand) {
	if t >= f.start && t < f.stop {
		for range f.perSecond {
			f.objects = append(f.objects, t)
		}
	}
}

// both is two workloads at one call site (a leak under a pool).
type both struct{ a, b workload }

func (w *both) step(t time.Duration, rng *rand.Rand) { w.a.step(t, rng); w.b.step(t, rng) }
func (w *both) live() []time.Duration                { return append(slices.Clone(w.a.live()), w.b.live()...) }

type config struct {
	interval, minAge time.Duration
	opts             Options
}

// The receiver's defaults.
var defaults = config{10 * time.Second, 30 * time.Second,
	Options{Window: 30 * time.Minute, Persist: time.Minute, ReportInterval: 5 * time.Minute, MaxGroups: 100}}

// run drives a workload for d and returns when the group was first called
// leaking (-1: never) and its last verdict.
func run(c config, w workload, d time.Duration, seed uint64) (time.Duration, Verdict) {
	rng := rand.New(rand.NewPCG(seed, 1))
	j := New(c.opts)
	epoch := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	first := time.Duration(-1)
	var last Verdict
	for now := time.Duration(0); now < d; now += time.Second {
		w.step(now, rng)
		if now%c.interval != 0 {
			continue
		}
		var s Sample
		for _, at := range w.live() {
			if age := now - at; age >= c.minAge {
				s.Objects++
				s.Bytes += 192
				s.OldestAge = max(s.OldestAge, age)
				if now-c.interval-at >= c.minAge {
					s.Survivors++
				}
			}
		}
		if s.Objects == 0 {
			continue
		}
		last = j.Observe(epoch.Add(now), Reclaim{}, map[string]Sample{"g": s})["g"]
		if last.State == Leaking && first < 0 {
			first = now
		}
	}
	return first, last
}

func TestLeaksAreFoundInTime(t *testing.T) {
	tests := []struct {
		name   string
		w      func() workload
		within time.Duration
	}{
		{"fast leak, 600/min", func() workload { return &leak{perMinute: 600} }, 2 * time.Minute},
		{"slow leak, 20/min", func() workload { return &leak{perMinute: 20} }, 3 * time.Minute},
		{"slower leak, 4/min", func() workload { return &leak{perMinute: 4} }, 5 * time.Minute},
		{"very slow leak, 1/min", func() workload { return &leak{perMinute: 1} }, 15 * time.Minute},
		{"leak of 20/min under a pool of 2000 churning 50/s", func() workload {
			return &both{&pool{size: 2000, churn: 50, noise: 40}, &leak{perMinute: 20}}
		}, 12 * time.Minute},
		{"leak of 20/min under a long-lived pool of 5000", func() workload {
			return &both{&pool{size: 5000, noise: 20}, &leak{perMinute: 20, start: 10 * time.Minute}}
		}, 22 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for seed := range uint64(5) {
				found, last := run(defaults, tt.w(), 40*time.Minute, seed)
				t.Logf("seed %d: found at %v", seed, found)
				assert.True(t, found >= 0 && found <= tt.within, "seed %d: leak found at %v, want within %v", seed, found, tt.within)
				assert.Equal(t, Leaking, last.State, "seed %d", seed)
			}
		})
	}
}

func TestNoLeakIsFoundWhereNoneIs(t *testing.T) {
	tests := []struct {
		name string
		w    func() workload
		want []State // the states allowed at the end
	}{
		// A pool that wanders may end on a rise: growing, never leaking.
		{"a long-lived steady pool", func() workload { return &pool{size: 5000, noise: 50} }, []State{Steady, Growing}},
		{"a churning pool", func() workload { return &pool{size: 2000, churn: 50, noise: 40} }, []State{Transient, Steady, Growing}},
		{"a quiet pool recycling slowly", func() workload { return &pool{size: 300, churn: 1, noise: 10} }, []State{Transient, Steady, Growing}},
		{"a sawtooth of 40 seconds", func() workload { return &sawtooth{perSecond: 20, period: 40 * time.Second} }, []State{Transient, Growing}},
		{"a cache that fills in 20 s and stays", func() workload {
			return &fill{perSecond: 50, start: 5 * time.Minute, stop: 5*time.Minute + 20*time.Second}
		}, []State{Steady}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for seed := range uint64(5) {
				found, last := run(defaults, tt.w(), 40*time.Minute, seed)
				assert.Negative(t, found, "seed %d: called a leak at %v", seed, found)
				assert.Contains(t, tt.want, last.State, "seed %d: ends %v", seed, last.State)
			}
		})
	}
}

// A leak that pauses (a batch job) stays a leak while what it left stays
// and about half a window of pause, at a rate falling to nothing; after a
// window of pause it is a steady group.
func TestPausedLeak(t *testing.T) {
	paused := func() workload { return &leak{perMinute: 30, pauseFrom: 8 * time.Minute, pauseTo: time.Hour} }
	found, last := run(defaults, paused(), 20*time.Minute, 1)
	assert.Positive(t, found)
	assert.Equal(t, Leaking, last.State, "12 minutes into the pause")
	_, last = run(defaults, paused(), 45*time.Minute, 1)
	assert.Equal(t, Steady, last.State, "37 minutes into the pause")
}

// From counts alone, what rises longer than a leak takes to find is a leak
// while it rises: a batch that holds its objects for 5 minutes, a cache
// that fills for 3. The batch's verdict goes at its first release, and the
// releases in its history keep it from coming back; the cache's goes half
// a window after it stops filling.
func TestLongRisesLookLikeLeaksWhileTheyRise(t *testing.T) {
	found, last := run(defaults, &sawtooth{perSecond: 5, period: 5 * time.Minute}, 40*time.Minute, 1)
	assert.Equal(t, 2*time.Minute, found)
	assert.NotEqual(t, Leaking, last.State)
	found, last = run(defaults, &fill{perSecond: 5, start: 5 * time.Minute, stop: 8 * time.Minute}, 40*time.Minute, 1)
	assert.Equal(t, 7*time.Minute, found)
	assert.Equal(t, Steady, last.State)
}

// At the cap, groups seen scan after scan keep their history: a newcomer
// is not followed until a group the previous scan did not see can go.
func TestCapKeepsTheGroupsThatStay(t *testing.T) {
	j := New(Options{Window: 30 * time.Minute, Persist: time.Minute, ReportInterval: time.Minute, MaxGroups: 2})
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	s := Sample{Objects: 10, Bytes: 1920, OldestAge: time.Minute, Survivors: 10}
	for i := range 5 {
		out := j.Observe(at.Add(time.Duration(i)*10*time.Second), Reclaim{}, map[string]Sample{"a": s, "b": s, "new": s})
		assert.Len(t, out, 2, "scan %d", i)
		assert.NotContains(t, out, "new", "scan %d", i)
	}
	// b goes; one scan later its place is free.
	out := j.Observe(at.Add(50*time.Second), Reclaim{}, map[string]Sample{"a": s, "new": s})
	assert.NotContains(t, out, "new", "b was seen by the previous scan")
	out = j.Observe(at.Add(60*time.Second), Reclaim{}, map[string]Sample{"a": s, "new": s})
	assert.Contains(t, out, "new")
	assert.Len(t, j.groups, 2)
}

// A leak's first leaking verdict says it began; the next ones do not.
func TestBeganOnce(t *testing.T) {
	j := New(defaults.opts)
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	var began []time.Duration
	for now := time.Duration(0); now < 10*time.Minute; now += 10 * time.Second {
		n := int64(now / time.Second) // one object a second, none freed
		s := Sample{Objects: n, Bytes: 64 * n, OldestAge: now, Survivors: max(n-10, 0)}
		if v := j.Observe(at.Add(now), Reclaim{}, map[string]Sample{"g": s})["g"]; v.Began {
			assert.Equal(t, Leaking, v.State)
			assert.True(t, v.Report)
			began = append(began, now)
		}
	}
	assert.Len(t, began, 1)
}

func TestParseState(t *testing.T) {
	for _, s := range States {
		got, ok := ParseState(s.String())
		assert.True(t, ok)
		assert.Equal(t, s, got)
	}
	_, ok := ParseState("leak")
	assert.False(t, ok)
}

// rising drives one group that gains an object a second and frees none
// for d, with what each scan adds to its sample and the reclaim before it,
// and returns every verdict by scan time.
func rising(d time.Duration, adjust func(now time.Duration, s *Sample) Reclaim) map[time.Duration]Verdict {
	j := New(defaults.opts)
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	out := map[time.Duration]Verdict{}
	for now := 10 * time.Second; now < d; now += 10 * time.Second {
		n := int64(now / time.Second)
		s := Sample{Objects: n, Bytes: 64 * n, OldestAge: now, Survivors: n - 10}
		reclaim := adjust(now, &s)
		out[now] = j.Observe(at.Add(now), reclaim, map[string]Sample{"g": s})["g"]
	}
	return out
}

// A leak's verdict says why: the clue the scan gave, or that nothing
// explains it.
func TestLeaksSayWhy(t *testing.T) {
	v := rising(5*time.Minute, func(time.Duration, *Sample) Reclaim { return Reclaim{} })[4*time.Minute+50*time.Second]
	assert.Equal(t, Leaking, v.State)
	assert.Equal(t, "keeps rising, and nothing that holds kernel memory explains it", v.Reason)
	v = rising(5*time.Minute, func(_ time.Duration, s *Sample) Reclaim {
		s.Clue = "allocating processes exited, still rising"
		return Reclaim{}
	})[4*time.Minute+50*time.Second]
	assert.Equal(t, Leaking, v.State)
	assert.Equal(t, "allocating processes exited, still rising", v.Reason)
	assert.Equal(t, Unexplained, v.ExplainedBy)
}

// A reclaimable cache that rises like a leak is growing while no reclaim
// has tested it, and while it shrinks under reclaim; once it keeps its
// objects through reclaim it is a leak.
func TestReclaimableCachesLeakOnlyThroughReclaim(t *testing.T) {
	end := 12*time.Minute + 50*time.Second
	untested := rising(13*time.Minute, func(_ time.Duration, s *Sample) Reclaim {
		s.Reclaimable = "reclaimable cache"
		return Reclaim{Scanned: 10} // light reclaim elsewhere: fewer objects than the group has
	})
	for now, v := range untested {
		assert.NotEqual(t, Leaking, v.State, "at %v", now)
	}
	assert.Equal(t, Growing, untested[end].State)
	assert.Equal(t, ReclaimableCache, untested[end].ExplainedBy)
	assert.Equal(t, "reclaimable cache, no reclaim seen", untested[end].Reason)

	// Caches dropped at 6 minutes: the group kept every object.
	survived := rising(13*time.Minute, func(now time.Duration, s *Sample) Reclaim {
		s.Reclaimable = "reclaimable cache"
		return Reclaim{Dropped: now == 6*time.Minute}
	})
	assert.NotEqual(t, Leaking, survived[5*time.Minute+50*time.Second].State)
	assert.Equal(t, Leaking, survived[6*time.Minute+10*time.Second].State)
	assert.Equal(t, Unexplained, survived[end].ExplainedBy)
	assert.Contains(t, survived[end].Reason, "reclaimable cache, survived reclaim")

	// Shrinkers scanned more than it holds at 6 minutes, and it lost a
	// tenth of its objects.
	shrank := rising(13*time.Minute, func(now time.Duration, s *Sample) Reclaim {
		s.Reclaimable = "reclaimable cache"
		if now == 6*time.Minute {
			s.Survivors -= s.Objects / 10
			return Reclaim{Scanned: 100_000}
		}
		return Reclaim{}
	})
	for now, v := range shrank {
		assert.NotEqual(t, Leaking, v.State, "at %v", now)
	}
	assert.Equal(t, "reclaimable cache, shrank under reclaim", shrank[end].Reason)
}

// Objects that live tasks hold are growing, not a leak, for as long as the
// scans say so; a leak found before the holders were known ends when they
// are, and one that loses its explanation is a leak at once.
func TestHeldObjectsAreNotLeaks(t *testing.T) {
	held := "live tasks' own structures"
	vs := rising(13*time.Minute, func(now time.Duration, s *Sample) Reclaim {
		if now < 3*time.Minute || now >= 8*time.Minute {
			s.Held = held
		}
		return Reclaim{}
	})
	assert.Equal(t, Growing, vs[2*time.Minute+50*time.Second].State)
	assert.Equal(t, LiveTasks, vs[2*time.Minute+50*time.Second].ExplainedBy)
	assert.Equal(t, held, vs[2*time.Minute+50*time.Second].Reason)
	assert.Equal(t, Leaking, vs[3*time.Minute].State)
	assert.True(t, vs[3*time.Minute].Began)
	assert.Equal(t, Leaking, vs[7*time.Minute+50*time.Second].State)
	assert.Equal(t, Growing, vs[8*time.Minute].State)
	assert.True(t, vs[8*time.Minute].Report, "the change from leaking is reported")
}

// Growth live tasks hold, beside a share of objects nothing lists as held
// that stays put (credentials files keep after a setuid), is explained;
// once that share rises, or while the holders go unlisted, it is a leak.
func TestGrowthTasksHoldIsNoLeak(t *testing.T) {
	end := 9*time.Minute + 50*time.Second
	unheld := func(rise bool) func(time.Duration, *Sample) Reclaim {
		return func(_ time.Duration, s *Sample) Reclaim {
			s.HoldersListed = true
			rest := int64(s.Objects / 8)
			if !rise {
				rest = 6
			}
			s.HeldByTasks = s.Objects - rest
			return Reclaim{}
		}
	}
	steady := rising(10*time.Minute, unheld(false))
	for now, v := range steady {
		assert.NotEqual(t, Leaking, v.State, "at %v", now)
	}
	assert.Equal(t, LiveTasks, steady[end].ExplainedBy)
	assert.Equal(t, "live tasks' own structures hold its growth (98% of its objects; the other 6 do not rise)", steady[end].Reason)

	assert.Equal(t, Leaking, rising(10*time.Minute, unheld(true))[end].State, "the unheld share rises")

	unlisted := rising(10*time.Minute, func(now time.Duration, s *Sample) Reclaim {
		s.HoldersListed = now >= 8*time.Minute
		s.HeldByTasks = s.Objects - 6
		return Reclaim{}
	})
	assert.Equal(t, Leaking, unlisted[end].State, "listed over too short a part of the window to tell")
}

// Growth held as open files by processes that each keep what they were
// started with (a shell's pipelines, a new command with its pipes every
// scan) is explained; one process opening more, or a share nothing holds
// rising beside them, is a leak.
func TestGrowthOfFilesProcessesKeepIsNoLeak(t *testing.T) {
	end := 9*time.Minute + 50*time.Second
	// Six objects nothing holds, old; recent more that nothing holds.
	files := func(holders func(now time.Duration, held int64) map[uint32]int64, recent func(objects int64) int64) []Verdict {
		vs := rising(10*time.Minute, func(now time.Duration, s *Sample) Reclaim {
			s.HoldersListed = true
			s.UnheldRecent = recent(s.Objects)
			s.FileHolders = holders(now, s.Objects-6-s.UnheldRecent)
			return Reclaim{}
		})
		return []Verdict{vs[2*time.Minute], vs[end]}
	}
	// A new process every scan, holding the ten objects the scan added.
	pipelines := func(now time.Duration, held int64) map[uint32]int64 {
		out := map[uint32]int64{}
		for k := int64(1); k <= int64(now/(10*time.Second)); k++ {
			out[uint32(1000+k)] = 10
		}
		out[1001] -= 10*int64(len(out)) - held
		return out
	}
	none := func(int64) int64 { return 0 }
	for _, v := range files(pipelines, none) {
		assert.Equal(t, Growing, v.State)
		assert.Equal(t, LiveTasks, v.ExplainedBy)
	}
	assert.Equal(t, "open files of 59 live processes hold its growth, none of which opened 5 more (98% of its objects; 0 of the others are new)",
		files(pipelines, none)[1].Reason)

	one := func(_ time.Duration, held int64) map[uint32]int64 { return map[uint32]int64{812: held} }
	assert.Equal(t, Leaking, files(one, none)[1].State, "one process opens more")
	assert.Equal(t, Leaking, files(pipelines, func(objects int64) int64 { return objects / 8 })[1].State, "what nothing holds rises beside")
}

// A process's files are counted from the fewest it held: one that closes
// most and then opens more than it closed is adding, one that ends is
// forgotten.
func TestFileHoldersCountFromTheFewest(t *testing.T) {
	var g group
	for i, step := range []struct {
		held  map[uint32]int64
		added int64
	}{
		{map[uint32]int64{812: 10, 900: 2000}, 0},
		{map[uint32]int64{812: 3, 900: 2000}, 0},
		{map[uint32]int64{812: 8, 900: 2000}, 5},
		{map[uint32]int64{812: 8}, 5},
		{map[uint32]int64{812: 8, 900: 2000}, 5},
		{map[uint32]int64{900: 2003}, 3},
	} {
		assert.Equal(t, step.added, g.followFileHolders(step.held), "step %d", i)
	}
}

// The next scan needs the holders only while some group rises like a leak.
func TestCandidates(t *testing.T) {
	j := New(defaults.opts)
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	flat := Sample{Objects: 100, Bytes: 6400, OldestAge: 5 * time.Minute, Survivors: 100}
	for now := 10 * time.Second; now < 5*time.Minute; now += 10 * time.Second {
		j.Observe(at.Add(now), Reclaim{}, map[string]Sample{"g": flat})
		assert.False(t, j.Candidates())
	}
	var candidate bool
	for now := 5 * time.Minute; now < 10*time.Minute; now += 10 * time.Second {
		n := int64(now / time.Second)
		j.Observe(at.Add(now), Reclaim{}, map[string]Sample{"g": flat, "h": {Objects: n, Bytes: 64 * n, OldestAge: now, Survivors: n - 10}})
		candidate = candidate || j.Candidates()
	}
	assert.True(t, candidate)
	// The rising group is gone: nothing needs the holders now.
	j.Observe(at.Add(10*time.Minute), Reclaim{}, map[string]Sample{"g": flat})
	assert.False(t, j.Candidates())
}

// tmpfs inodes that rise with the files tmpfs mounts hold are growing; the
// same rise with no files kept there is a leak.
func TestTmpfsFilesExplainTheirInodes(t *testing.T) {
	end := 9*time.Minute + 50*time.Second
	kept := rising(10*time.Minute, func(now time.Duration, s *Sample) Reclaim {
		s.OnePerTmpfsFile, s.TmpfsFiles = true, 500+int64(now/time.Second)
		return Reclaim{}
	})
	for now, v := range kept {
		assert.NotEqual(t, Leaking, v.State, "at %v", now)
	}
	assert.Equal(t, TmpfsFiles, kept[end].ExplainedBy)
	assert.Equal(t, "files kept in tmpfs (its mounts gain 60.0 files/min)", kept[end].Reason)
	gone := rising(10*time.Minute, func(now time.Duration, s *Sample) Reclaim {
		s.OnePerTmpfsFile, s.TmpfsFiles = true, 500+int64(now/time.Second)/3
		return Reclaim{}
	})
	assert.Equal(t, Leaking, gone[end].State, "a third of the rise kept as files")
}

// A rise of cgroups' structures is explained while the kernel keeps more
// cgroups than at the window's start, by however many.
func TestCgroupsExplainTheirStructures(t *testing.T) {
	end := 9*time.Minute + 50*time.Second
	kept := rising(10*time.Minute, func(now time.Duration, s *Sample) Reclaim {
		s.PerCgroup, s.Cgroups = true, 30+int64(now/time.Minute)
		return Reclaim{}
	})
	for now, v := range kept {
		assert.NotEqual(t, Leaking, v.State, "at %v", now)
	}
	assert.Equal(t, Cgroups, kept[end].ExplainedBy)
	assert.Equal(t, "structures of cgroups, kept while they exist (39 cgroups, +9 in 9m40s)", kept[end].Reason)
	churned := rising(10*time.Minute, func(_ time.Duration, s *Sample) Reclaim {
		s.PerCgroup, s.Cgroups = true, 30
		return Reclaim{}
	})
	assert.Equal(t, Leaking, churned[end].State, "cgroups made and removed")
}

// A batch that opens 2,000 objects at once and holds them for 4 minutes,
// beside a group's small pool of other objects, is a step: not a leak; a
// leak rising on its own after a step still is.
func TestStepsAreNotLeaks(t *testing.T) {
	batch := rising(12*time.Minute, func(now time.Duration, s *Sample) Reclaim {
		pool := int64(now/time.Minute) % 3 // one object more, then fewer
		s.Objects, s.Survivors = 10+pool, 10+pool
		if now >= time.Minute && now < 5*time.Minute {
			s.Objects += 2000
			s.Survivors += 2000
		}
		s.Bytes, s.OldestAge = 192*s.Objects, now
		return Reclaim{}
	})
	for now, v := range batch {
		assert.NotEqual(t, Leaking, v.State, "at %v", now)
	}
	leakAfter := rising(15*time.Minute, func(now time.Duration, s *Sample) Reclaim {
		s.Objects = 10
		if now >= time.Minute {
			s.Objects += 2000
		}
		if now >= 3*time.Minute {
			s.Objects += int64((now - 3*time.Minute) / (3 * time.Second)) // 20/min
		}
		s.Survivors, s.Bytes, s.OldestAge = s.Objects, 192*s.Objects, now
		return Reclaim{}
	})
	assert.Equal(t, Leaking, leakAfter[14*time.Minute+50*time.Second].State, "the leak after the step")
}

func TestStep(t *testing.T) {
	assert.Equal(t, 3, step([]float64{10, 10, 11, 2011, 2011, 2012}))
	assert.Equal(t, 0, step([]float64{1, 2, 3, 4, 5}), "a slow leak, one at a time")
	assert.Equal(t, 0, step([]float64{10, 110, 110, 210, 210}), "two bursts alike")
	assert.Equal(t, 5, step([]float64{0, 300, 800, 900, 910, 4910, 4915, 4920, 4926}), "a batch beside a group settling")
	assert.Equal(t, 0, step([]float64{5, 5, 5}), "flat")
}

// kept allocates one object at each of its times and keeps it.
type kept struct {
	objects
	at []time.Duration
}

func (k *kept) step(t time.Duration, _ *rand.Rand) {
	if slices.Contains(k.at, t) {
		k.objects = append(k.objects, t)
	}
}

// A handful of objects added over minutes and kept (a process's memory
// policies until it exits) rises as steadily as a slow leak, but is not
// one worth a page; a leak of one object a minute is still found within
// its 12 minutes.
func TestAHandfulIsNoLeak(t *testing.T) {
	few := &kept{at: []time.Duration{0, 4 * time.Minute, 8 * time.Minute, 12 * time.Minute}}
	found, last := run(defaults, few, 20*time.Minute, 1)
	assert.Equal(t, time.Duration(-1), found, "4 objects in 12 minutes called leaking")
	assert.NotEqual(t, Leaking, last.State)

	var slow kept
	for m := range 20 {
		slow.at = append(slow.at, time.Duration(m)*time.Minute)
	}
	found, _ = run(defaults, &slow, 20*time.Minute, 1)
	assert.Positive(t, found, "a leak of one object a minute not found")
	assert.LessOrEqual(t, found, 12*time.Minute)
	t.Logf("one object a minute found after %s", found)
}

// batch holds size objects from start to stop, then frees them.
type batch struct {
	objects
	size        int
	start, stop time.Duration
}

func (b *batch) step(t time.Duration, _ *rand.Rand) {
	switch t {
	case b.start:
		for range b.size {
			b.objects = append(b.objects, t)
		}
	case b.stop:
		b.objects = b.objects[:0]
	}
}

// A leak at a call site that a batch also used and released is a leak
// rising at its own rate: the window's fall when the batch ended is not
// its rate (a leak was reported at -613 objects a minute).
func TestALeakAfterABatchHasItsOwnRate(t *testing.T) {
	leaking := 0
	for _, stop := range []time.Duration{4 * time.Minute, 8 * time.Minute, 12 * time.Minute} {
		for _, d := range []time.Duration{16 * time.Minute, 20 * time.Minute, 24 * time.Minute} {
			w := &both{&batch{size: 2000, start: 30 * time.Second, stop: stop}, &leak{perMinute: 4, start: stop}}
			if _, last := run(defaults, w, d, 1); last.State == Leaking {
				leaking++
				assert.InDelta(t, 4, last.PerMinute, 1, "batch until %v, after %v", stop, d)
			}
		}
	}
	assert.GreaterOrEqual(t, leaking, 6, "the leak after the batch was not found")
}
