package scan

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/kmemleak/kmemleakreceiver/internal/bookkeeping"
	"github.com/kmemleak/kmemleakreceiver/internal/cgroups"
	"github.com/kmemleak/kmemleakreceiver/internal/damon"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
	"github.com/kmemleak/kmemleakreceiver/internal/reclaim"
	"github.com/kmemleak/kmemleakreceiver/internal/report"
	"github.com/kmemleak/kmemleakreceiver/internal/rxbuffers"
	"github.com/kmemleak/kmemleakreceiver/internal/tmpfs"
	"github.com/kmemleak/kmemleakreceiver/internal/verdict"
)

// What a scan tells the verdicts besides the counts: what the kernel knows
// that explains a call site's growth (reclaim, live tasks, tmpfs files,
// the allocators' own bookkeeping), and what points at a leak.

// holds lists what live tasks hold when a call site rises like a leak:
// the verdict needs to know whether they explain it. Nil otherwise, or
// when they cannot be listed.
func (p *Scanner) holds() *kmem.Holds {
	if p.opts.Holders == nil || !p.rising {
		return nil
	}
	holds, err := p.opts.Holders.Read()
	if err != nil {
		if !p.warnedHolders {
			p.warnedHolders = true
			p.opts.Logger.Warn("Cannot list what live tasks hold: growth of processes' own structures may be called leaking", zap.Error(err))
		}
		return nil
	}
	// Every aged object is looked up, not only the candidates': a site that
	// rises like a leak for the first time in this scan needs its holders
	// now, or it is confirmed a leak before they are known (services' mm
	// structs were, in TestIntegrationVerdictsOnLabelledWorkloads).
	return holds
}

// reclaimed is how hard the kernel reclaimed since the last scan: none on
// the first scan, or when the counters cannot be read.
func (p *Scanner) reclaimed() verdict.Reclaim {
	c, err := p.machine.Reclaim()
	if err != nil {
		p.reclaimOK = false
		return verdict.Reclaim{}
	}
	var r verdict.Reclaim
	if p.reclaimOK {
		r = verdict.Reclaim{Scanned: c.SlabsScanned - p.reclaim.SlabsScanned, Dropped: c.DropSlab > p.reclaim.DropSlab}
	}
	p.reclaim, p.reclaimOK = c, true
	return r
}

// site is a call site's groups summed, and who allocated them.
type site struct {
	report.Group // the stack and owner of its largest group with one
	// exited counts the objects of processes that have ended.
	exited int64
	// heldAsFiles sums, per owner, the objects live tasks hold as open
	// files: who holds them, when several do.
	heldAsFiles map[owner.Owner]int64
	// byOwner sums the objects of each owner; adder is who keeps adding
	// to them (risers.observe).
	byOwner map[owner.Owner]int64
	adder   owner.Owner
}

// mostHeld is how many of the site's objects live tasks hold as the open
// files of the owner they hold the most of.
func (s *site) mostHeld() int64 {
	var n int64
	for _, held := range s.heldAsFiles {
		n = max(n, held)
	}
	return n
}

func (s *site) add(g report.Group) {
	s.Add(g)
	// The stack of the WARN line: the site's largest group that has one.
	if len(s.Frames) == 0 && len(g.Frames) > 0 {
		s.Frames = g.Frames
	}
	if !s.Owner.Attributed() {
		s.Owner = g.Owner
	}
	if g.Owner.Exited {
		s.exited += g.Objects
	}
	if s.byOwner == nil {
		s.byOwner = map[owner.Owner]int64{}
	}
	s.byOwner[g.Owner] += g.Objects
	if held := g.FileHolders.Total(); held > 0 {
		if s.heldAsFiles == nil {
			s.heldAsFiles = map[owner.Owner]int64{}
		}
		s.heldAsFiles[g.Owner] += held
	}
}

// spreadHolders is how many processes' open files, none holding more than
// a quarter, make a growth of services starting rather than one process
// leaking descriptors.
const spreadHolders = 4

// sample is what the verdict is told of a site: its counts, whether its
// cache is reclaimable, what holds its objects.
func (p *Scanner) sample(s *site, live string) verdict.Sample {
	out := verdict.Sample{Objects: s.Objects, Bytes: s.Bytes, OldestAge: s.OldestAge, Survivors: s.Survivors}
	functions := functions(s)
	switch companion := reclaim.Companion(functions); {
	case s.FileHolders.Total()*2 >= s.Objects && s.Objects > 0:
		// Open files pin their dentries and inodes: no shrinker takes
		// them, whatever their cache.
	case (s.Allocator == kmem.Slab || s.Allocator == kmem.Kmalloc) && p.machine.Reclaimable(s.Cache):
		out.Reclaimable = "reclaimable cache"
	case companion != "":
		out.Reclaimable = companion + ", reclaimed with them"
	}
	out.OnePerTmpfsFile = s.Allocator == kmem.Slab && s.Cache == tmpfs.Cache
	out.PerCgroup = cgroups.Made(functions)
	out.Bookkeeping = bookkeeping.Of(functions[0])
	out.DeviceBuffers = rxbuffers.Posted(functions)
	out.DamonRegions = damon.Made(functions[0])
	// Nine in ten: objects allocated since the holders were listed, and
	// tasks exiting meanwhile, are not seen held. Or all but fewer than a
	// leak adds: a few a task structure's caches keep (vmalloc'ed stacks
	// kept for reuse), a few sockets closing.
	most := s.mostHeld()
	explains := func(held int64) bool { return held*10 >= s.Objects*9 || (held > 0 && s.Objects-held < verdict.MinRise) }
	switch {
	case s.Objects == 0:
	case explains(s.HeldByTask):
		out.Held = "live tasks' own structures (" + percent(s.HeldByTask, s.Objects) + " of its objects)" + live
	case explains(s.FileHolders.Total()) && len(s.heldAsFiles) >= spreadHolders && most*4 <= s.FileHolders.Total():
		out.Held = fmt.Sprintf("open files of %d live processes, none holding a quarter of them", len(s.heldAsFiles))
	case cgroups.ForAllocator(functions[0]) && explains(s.Objects-s.exited):
		out.Held = "structures of the cgroups of the processes that made them, which still run (" +
			percent(s.Objects-s.exited, s.Objects) + " of its objects): one per cgroup and list_lru"
	}
	out.HeldByTasks, out.HoldersListed = s.HeldByTask, p.snap.Holds != nil
	out.UnheldRecent, out.FileHolders = s.UnheldRecent, s.FileHolders
	out.Clue = p.clue(s)
	return out
}

// functions are the functions of a site's call site and, where its stack
// is known, of the frames outwards.
func functions(s *site) []string {
	frames := s.StackOrCallSite()
	out := make([]string, len(frames))
	for i, f := range frames {
		out[i] = f.Function
	}
	return out
}

// count tells the samples that want it (of tmpfs inodes, of cgroups'
// structures) a count, read once and only when one does.
func (p *Scanner) count(samples map[string]verdict.Sample, what string, read func() (int64, error),
	wants func(verdict.Sample) bool, set func(*verdict.Sample, int64)) {
	var n int64
	done := false
	for key, s := range samples {
		if !wants(s) {
			continue
		}
		if !done {
			var err error
			if n, err = read(); err != nil {
				p.opts.Logger.Debug("Cannot count "+what, zap.Error(err))
				return
			}
			done = true
		}
		set(&s, n)
		samples[key] = s
	}
}

// clue says what points at a leak in a site: who holds its objects, or
// that they outlive who allocated them, or who did; and how many are live
// tasks' own structures, when some are but too few to explain it.
func (p *Scanner) clue(s *site) string {
	clue := p.holderClue(s)
	if s.HeldByTask > 0 && s.HeldByTask*10 < s.Objects*9 {
		clue = strings.TrimPrefix(clue+"; ", "; ") + percent(s.HeldByTask, s.Objects) + " live tasks' own structures"
	}
	return clue
}

func (p *Scanner) holderClue(s *site) string {
	switch {
	case s.FileHolders.Total()*2 >= s.Objects && s.Objects > 0:
		holder, one := s.FileHolders.One()
		if !one {
			adder := ""
			if o := s.adder; o.Attributed() && !o.Other && !o.Exited {
				adder = "; still added to by " + o.String()
			}
			return "held by several processes, their open files (" + percent(s.FileHolders.Total(), s.Objects) + ")" + adder
		}
		return "held by " + p.processName(holder) + ", its open files (" + percent(s.FileHolders.Total(), s.Objects) + ")"
	case s.exited*2 >= s.Objects && s.Objects > 0:
		return "allocating processes exited (" + percent(s.exited, s.Objects) + " of its objects), still rising"
	case s.adder.Attributed():
		return "allocated by " + s.adder.String() + ", still rising"
	case s.Owner.Attributed() && !s.Owner.Other:
		return "allocated by " + s.Owner.String() + ", still rising"
	}
	return ""
}

// processName names a live process that holds objects, by the holders'
// listing.
func (p *Scanner) processName(tgid uint32) string {
	name := "?"
	if holds := p.snap.Holds; holds != nil {
		name = cmp.Or(holds.Processes[tgid].Name, name)
	}
	return fmt.Sprintf("%s (pid %d)", name, tgid)
}

// liveTasks says which processes started within the verdict window, for
// the reason of growth their structures explain: "; 3 processes started in
// the last 30m0s: sleep x2, nginx".
func (p *Scanner) liveTasks(now uint64) string {
	holds := p.snap.Holds
	if holds == nil {
		return ""
	}
	since := now - min(uint64(max(p.opts.Verdict.Window, 0)), now)
	names := map[string]int{}
	started := 0
	for _, proc := range holds.Processes {
		if proc.StartNs >= since {
			names[proc.Name]++
			started++
		}
	}
	if started == 0 {
		return "; no process started in the last " + p.opts.Verdict.Window.String()
	}
	byCount := slices.SortedFunc(maps.Keys(names), func(a, b string) int { return cmp.Or(cmp.Compare(names[b], names[a]), cmp.Compare(a, b)) })
	var parts []string
	for _, name := range byCount[:min(len(byCount), 3)] {
		if names[name] > 1 {
			name += fmt.Sprintf(" x%d", names[name])
		}
		parts = append(parts, name)
	}
	return fmt.Sprintf("; %d processes started in the last %v: %s", started, p.opts.Verdict.Window, strings.Join(parts, ", "))
}

func percent(part, whole int64) string {
	return fmt.Sprintf("%d%%", part*100/max(whole, 1))
}
