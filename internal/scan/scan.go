// Package scan is what the receiver does every collection_interval, from
// reading the probes' maps to a finished report: the cache filter, the
// truth check and the untracking it decides, the report, each group's
// verdict, and the stack call sites fed back to the probes. It talks to the
// kernel through small interfaces (Machine, Probes, Holders, Owners), so
// that all of it is tested against a fake kernel without privileges.
package scan

import (
	"cmp"
	"iter"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/reclaim"
	"github.com/kmemleak/kmemleakreceiver/internal/report"
	"github.com/kmemleak/kmemleakreceiver/internal/truth"
	"github.com/kmemleak/kmemleakreceiver/internal/verdict"
)

// Machine is what a scan reads of the machine besides the probes.
type Machine interface {
	// SlabCounts reads the kernel's count of active objects per slab cache
	// (/proc/slabinfo).
	SlabCounts() (map[string]int64, error)
	// Now reads CLOCK_MONOTONIC, the clock of kmem.Object.AllocNs.
	Now() (uint64, error)
	// Reclaim reads the kernel's reclaim counters since boot.
	Reclaim() (reclaim.Counters, error)
	// Reclaimable says whether the kernel's shrinkers reclaim a slab cache.
	Reclaimable(cache string) bool
	// MergedNames are every name of a slab cache that SLUB merged others
	// into, sorted, or nil when it merged none (/sys/kernel/slab).
	MergedNames(cache string) []string
	// TmpfsFiles counts the files tmpfs mounts hold.
	TmpfsFiles() (int64, error)
	// Cgroups counts the cgroups the kernel keeps, dying ones included.
	Cgroups() (int64, error)
	// DamonRegions is the most regions DAMON's running kdamonds may keep.
	DamonRegions() (int64, error)
}

// Holders lists what live tasks hold (holders.Iterators); a listing is
// valid until the next.
type Holders interface {
	Read() (*kmem.Holds, error)
}

// Probes is the tracker as a scan uses it.
type Probes interface {
	// Read adds every live object to a snapshot begun by the caller.
	Read(*kmem.Snapshot) error
	// Untrack stops tracking a cache; its entries stay until DeleteCaches.
	Untrack(kmem.CacheID) error
	// DeleteCaches deletes the entries of slab and kmalloc caches, in one
	// pass over the live table, however many caches.
	DeleteCaches([]kmem.CacheID) error
	// SetStackSites makes sites the call sites whose allocations get a
	// stack in adaptive mode, the most important first.
	SetStackSites([]uint64) error
	// Stack reads a kernel stack the probes took.
	Stack(id int32) ([]uint64, error)
	// KmallocCaches lists every kmalloc cache the probes can skip.
	KmallocCaches() []kmem.CacheID
	// Exits returns the processes that ended since the last call (with
	// attribution; none without).
	Exits() ([]kmem.Exit, error)
}

// Owners names who allocated, across scans (owner.Resolver).
type Owners interface {
	report.Owners
	// Begin starts a scan with the processes that ended since the last,
	// and returns the tgids taken over by a new process (kmem.Snapshot.Reused).
	Begin(exits []kmem.Exit) map[uint32]uint64
	// End forgets what no live object's owner needs.
	End(live iter.Seq[kmem.Owner])
}

// Options say what a scan reports and how.
type Options struct {
	MinAge     time.Duration
	TopN       int // the groups of each verdict reported
	SampleRate int // the probes' 1-in-N object sampling
	// Tracks says whether the cache filter keeps a cache, by name; nil
	// keeps every cache.
	Tracks  func(cache string) bool
	Verdict verdict.Options
	// EventStates are the verdicts whose groups get events.
	EventStates    []verdict.State
	StacksOn       bool // groups are per stack
	AdaptiveStacks bool // feed suspect call sites back to the probes
	// MaxTrackedObjects is the live table's room, for the full-table warning.
	MaxTrackedObjects int
	// Owners names the owners the probes record; nil without attribution.
	Owners Owners
	// Holders lists what live tasks hold, read before the scans that need
	// it: while some call site rises like a leak. Nil when the kernel
	// cannot list them.
	Holders Holders
	Logger  *zap.Logger
	// Clock is the wall clock of the verdicts; nil is time.Now.
	Clock func() time.Time
}

// Scanner is the scans of one receiver, and what they remember.
type Scanner struct {
	machine Machine
	probes  Probes
	symbols report.Symbolizer
	opts    Options

	snap   kmem.Snapshot
	truth  *truth.Checker
	judge  *verdict.Judge
	filter cacheFilter
	// lastScan is when the previous scan began, 0 before the first.
	lastScan uint64
	// dropped is the allocations dropped for a full map, as of the last scan.
	dropped          uint64
	warnedNoSlabinfo bool // the truth check is off, and the user was told
	// reclaim is the kernel's reclaim counters at the last scan; reclaimOK
	// says they could be read.
	reclaim   reclaim.Counters
	reclaimOK bool
	// warnedHolders: listing what live tasks hold failed, and the user
	// was told.
	warnedHolders bool
	// rising: the last scan found some site rising like a leak
	// (verdict.Judge.Candidates): this one lists what live tasks hold.
	rising bool
	// risers is who added to each call site in its last scans.
	risers risers
}

// Result is what one scan found.
type Result struct {
	Report report.Report  // finished: verdicts and untraced caches filled in
	Events []report.Group // the groups that deserve an event this scan
	// Aged are every group of aged objects, with its verdict, of which
	// Report has the top_n of each verdict: what profiles show.
	Aged []report.Group
	// Sites are every call site judged this scan, its groups summed, with
	// its verdict (Verdict.Began: it turned leaking this scan), in the
	// order of their largest groups: what the collector's log says of a
	// scan.
	Sites []report.Group
	// Scanned is the number of objects read from the probes, before any
	// was filtered out.
	Scanned int64
	// NewlyDropped is the allocations the probes dropped since the last
	// scan for lack of room.
	NewlyDropped uint64
}

// New returns the scanner of a receiver about to attach its probes.
func New(machine Machine, opts Options) *Scanner {
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	p := &Scanner{machine: machine, opts: opts, judge: verdict.New(opts.Verdict), truth: truth.NewChecker(), risers: risers{}}
	p.filter = cacheFilter{tracks: opts.Tracks, seen: map[kmem.CacheID]bool{}}
	return p
}

// Attach takes the probes once they are attached, and the symbols that
// name call sites (read after the probes attached: kallsyms lists the
// probes' own programs, which are in every stack they take). It leaves out
// the kmalloc caches the filter does not keep: their names are all known up
// front.
func (p *Scanner) Attach(probes Probes, symbols report.Symbolizer) error {
	p.probes, p.symbols = probes, symbols
	return p.filter.skipKmalloc(probes)
}

// Scan reads the probes and makes the scan's report.
func (p *Scanner) Scan() (Result, error) {
	// The order matters to the truth check: objects allocated before cutoff
	// were alive when the kernel counted, which was before the scan.
	now, err := p.machine.Now()
	if err != nil {
		return Result{}, err
	}
	kernel := p.slabCounts()
	p.snap.Begin(p.ages(now))
	p.snap.Holds = p.holds()
	p.lastScan = now
	if owners := p.opts.Owners; owners != nil {
		exits, err := p.probes.Exits()
		if err != nil {
			return Result{}, err
		}
		p.snap.Reused = owners.Begin(exits)
	}
	if err := p.probes.Read(&p.snap); err != nil {
		return Result{}, err
	}
	res := Result{Scanned: p.snap.Objects(), NewlyDropped: p.newlyDropped()}
	p.forgetRecreated()
	p.filter.apply(&p.snap, p.probes, p.opts.Logger)
	var bounds map[string]int64
	if kernel != nil {
		checked := p.truth.Check(&p.snap, kernel)
		p.untrace(checked)
		bounds = checked.Bounds
	}
	ropts := report.Options{Bounds: bounds, SampleRate: p.opts.SampleRate}
	if p.opts.StacksOn {
		ropts.Stacks = p.probes
	}
	ropts.Owners = p.opts.Owners
	res.Report = report.Build(&p.snap, ropts, p.symbols)
	if p.opts.Owners != nil {
		p.opts.Owners.End(p.snap.Owners())
	}
	res.Report.Untraced = p.truth.Untraced()
	res.Sites = p.judgeGroups(&res.Report, now)
	res.Aged = res.Report.Groups
	res.Report.Groups = report.Top(res.Report.Groups, p.opts.TopN)
	merged := p.mergedNames()
	merged(res.Report.Groups)
	merged(res.Sites)
	for _, g := range res.Report.Groups {
		if g.Verdict.Report && slices.Contains(p.opts.EventStates, g.Verdict.State) {
			res.Events = append(res.Events, g)
		}
	}
	if p.opts.AdaptiveStacks {
		if err := p.probes.SetStackSites(callSites(res.Report.Groups)); err != nil {
			p.opts.Logger.Error("Asking for the stacks of suspect call sites failed", zap.Error(err))
		}
	}
	return res, nil
}

// ages are the times a scan that begins now sorts objects by: the truth
// check's cutoff is now, aged objects are min_age old, survivors were aged
// when the previous scan began, and objects allocated before it began were
// old then too (the truth check asks whether they are still there);
// recent objects are younger than the verdicts' window.
func (p *Scanner) ages(now uint64) kmem.Ages {
	minAge := uint64(max(p.opts.MinAge, 0))
	window := uint64(max(p.opts.Verdict.Window, 0))
	ages := kmem.Ages{Now: now, Cutoff: now, Aged: now - min(minAge, now), Previous: p.lastScan, Recent: now - min(window, now)}
	if p.lastScan > 0 {
		ages.Survived = p.lastScan - min(minAge, p.lastScan)
	}
	return ages
}

// forgetRecreated drops what was decided about the slab caches destroyed
// since the last scan with another created at the same address (a module
// unloaded and loaded again): the new cache is filtered by its own name,
// and tracked and checked afresh.
func (p *Scanner) forgetRecreated() {
	for _, key := range p.snap.Recreated {
		id := kmem.CacheID{Allocator: kmem.Slab, Key: key}
		name := p.snap.CacheNames[key]
		p.filter.forget(id)
		p.truth.Forget(id)
		p.opts.Logger.Info("A slab cache was created where a destroyed one was: judged afresh", zap.String("cache", name))
	}
}

// slabCounts reads the kernel's object count per slab cache, or returns
// nil, with one warning, when it cannot: then caches with untraced frees
// are neither found nor filtered, and their objects are reported as
// suspects.
func (p *Scanner) slabCounts() map[string]int64 {
	counts, err := p.machine.SlabCounts()
	if err != nil && !p.warnedNoSlabinfo {
		p.warnedNoSlabinfo = true
		p.opts.Logger.Warn("Cannot read the kernel's slab counts: caches whose frees bypass the tracepoints will show up as leaks",
			zap.Error(err))
	}
	return counts
}

// newlyDropped says, once per scan at most, that the map was full: the
// probes dropped allocations, so every count is a lower bound.
func (p *Scanner) newlyDropped() uint64 {
	var dropped uint64
	for _, c := range p.snap.Counters {
		dropped += c.Dropped
	}
	newly := dropped - min(p.dropped, dropped)
	p.dropped = dropped
	if newly > 0 {
		p.opts.Logger.Warn("The live table is full: allocations went untracked, counts are lower bounds; raise max_tracked_objects",
			zap.Uint64("dropped_since_last_scan", newly), zap.Int("max_tracked_objects", p.opts.MaxTrackedObjects))
	}
	return newly
}

// untrace stops tracking the caches the truth check convicted, and deletes
// the phantoms it found.
func (p *Scanner) untrace(res truth.Result) {
	log := p.opts.Logger
	doomed := res.Stale
	for _, v := range res.Untraced {
		doomed = append(doomed, v.ID)
		fields := []zap.Field{zap.String("cache", v.Name), zap.Stringer("allocator", v.ID.Allocator), zap.String("reason", v.Reason),
			zap.Int64("tracked_objects_older_than_scan", v.Old), zap.Int64("kernel_active_objects", v.Kernel),
			zap.Int64("tracked_objects_vanished", v.Vanished)}
		if v.ID.Allocator == kmem.Slab {
			if names := p.machine.MergedNames(v.Name); names != nil {
				fields = append(fields, zap.Strings("merged_caches", names))
			}
		}
		log.Warn("Slab cache frees bypass the tracepoints; no longer tracking it", fields...)
		if err := p.probes.Untrack(v.ID); err != nil {
			log.Error("Untracking a cache failed", zap.String("cache", v.Name), zap.Error(err))
		}
	}
	if len(doomed) > 0 {
		if err := p.probes.DeleteCaches(doomed); err != nil {
			log.Error("Deleting entries of untraced caches failed", zap.Error(err))
		}
	}
}

// judgeGroups gives every call site its verdict, and each of its groups
// the site's, counts the sites of each verdict, and returns the sites.
// Events are per group, with the site's verdict. Sites, not stacks, are
// judged: in adaptive mode a site's stacks are taken only once it is
// suspect, so its stack groups start late, and its older objects stay in a
// group without a stack. A site past verdict.max_groups has no history: it
// counts as transient.
func (p *Scanner) judgeGroups(rep *report.Report, now uint64) (bySite []report.Group) {
	sites := map[string]*site{}
	var order []string
	for _, g := range rep.Groups {
		key := siteKey(g)
		s := sites[key]
		if s == nil {
			s = &site{Group: report.Group{Allocator: g.Allocator, Cache: g.Cache, CallSite: g.CallSite, CallSiteSym: g.CallSiteSym}}
			sites[key] = s
			order = append(order, key)
		}
		s.add(g)
	}
	for key, s := range sites {
		s.adder = p.risers.observe(key, s.byOwner)
	}
	p.risers.forget(sites)
	live := p.liveTasks(now)
	samples := make(map[string]verdict.Sample, len(sites))
	for key, s := range sites {
		samples[key] = p.sample(s, live)
	}
	p.count(samples, "the files tmpfs holds", p.machine.TmpfsFiles,
		func(s verdict.Sample) bool { return s.OnePerTmpfsFile }, func(s *verdict.Sample, n int64) { s.TmpfsFiles = n })
	p.count(samples, "the cgroups the kernel keeps", p.machine.Cgroups,
		func(s verdict.Sample) bool { return s.PerCgroup }, func(s *verdict.Sample, n int64) { s.Cgroups = n })
	p.count(samples, "the regions DAMON may keep", p.machine.DamonRegions,
		func(s verdict.Sample) bool { return s.DamonRegions }, func(s *verdict.Sample, n int64) { s.DamonBound = n })
	verdicts := p.judge.Observe(p.opts.Clock(), p.reclaimed(), samples)
	rep.States = make(map[verdict.State]int, len(verdict.States))
	for _, key := range order {
		s := sites[key]
		s.Verdict = verdicts[key]
		bySite = append(bySite, s.Group)
		rep.States[s.Verdict.State]++
	}
	for i := range rep.Groups {
		g := &rep.Groups[i]
		g.Verdict = sites[siteKey(*g)].Verdict
	}
	p.rising = p.judge.Candidates()
	return bySite
}

// mergedNames returns what gives slab groups the names SLUB merged into
// their cache, asking the machine once per cache a scan, whatever the
// groups: the reported ones, and the sites the log names.
func (p *Scanner) mergedNames() func([]report.Group) {
	names := map[string][]string{}
	return func(groups []report.Group) {
		for i := range groups {
			g := &groups[i]
			if g.Allocator != kmem.Slab {
				continue
			}
			n, ok := names[g.Cache]
			if !ok {
				n = p.machine.MergedNames(g.Cache)
				names[g.Cache] = n
			}
			g.MergedNames = n
		}
	}
}

// SaveVerdicts encodes every call site's verdict history, for
// RestoreVerdicts in the collector that follows (verdict.Judge.Save).
func (p *Scanner) SaveVerdicts() ([]byte, error) { return p.judge.Save() }

// RestoreVerdicts takes up the verdict histories of the collector before,
// before the first scan, and returns how many call sites it restored. A
// site the last scan before found rising has the first scan list what
// live tasks hold, as the next scan would have.
func (p *Scanner) RestoreVerdicts(data []byte) (int, error) {
	n, err := p.judge.Restore(data)
	p.rising = p.judge.Candidates()
	return n, err
}

// siteKey is what a verdict is per: allocator, cache and call site.
func siteKey(g report.Group) string {
	return strings.Join([]string{g.Allocator.String(), g.Cache, g.CallSiteSym}, "\x00")
}

// callSites are the probes' call sites of the groups, leaks first, then
// growing groups, then by bytes, for adaptive stacks. Page groups have
// none: their allocations always take a stack.
func callSites(groups []report.Group) []uint64 {
	ranked := slices.Clone(groups)
	slices.SortStableFunc(ranked, func(a, b report.Group) int { return cmp.Compare(b.Verdict.State, a.Verdict.State) })
	sites := make([]uint64, 0, len(ranked))
	for _, g := range ranked {
		if g.Allocator != kmem.Page {
			sites = append(sites, g.CallSite)
		}
	}
	return sites
}
