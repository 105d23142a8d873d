//go:build linux

package kmemleakreceiver

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/receiver"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/ksym"
	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
	"github.com/kmemleak/kmemleakreceiver/internal/report"
	"github.com/kmemleak/kmemleakreceiver/internal/slabinfo"
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
	"github.com/kmemleak/kmemleakreceiver/internal/trend"
	"github.com/kmemleak/kmemleakreceiver/internal/truth"
)

type kmemleakReceiver struct {
	cfg        *Config
	set        receiver.Settings
	metrics    consumer.Metrics // nil unless a metrics pipeline uses the receiver
	logs       consumer.Logs    // nil unless a logs pipeline uses the receiver
	onShutdown func()

	mu      sync.Mutex // guards the lifecycle: Start and Shutdown come once per pipeline
	started bool
	stopped bool
	tracker *tracker.Tracker
	cancel  context.CancelFunc
	done    chan struct{}

	telemetry *metadata.TelemetryBuilder // the receiver's own metrics, in the collector's telemetry

	// Owned by the scan loop.
	namer            callSiteNamer
	emitter          report.Emitter
	snap             tracker.Snapshot
	truth            *truth.Checker
	warnedNoSlabinfo bool // the truth check is off, and the user was told
	trend            *trend.History
	dropped          uint64 // allocations dropped for a full map, as of the last scan
	errors           errorLimiter
	filtered         map[tracker.CacheID]bool // slab caches met so far: true if caches: leaves them out
	filteredOut      int                      // how many of them it leaves out
}

func newReceiver(cfg *Config, set receiver.Settings, onShutdown func()) (*kmemleakReceiver, error) {
	return &kmemleakReceiver{cfg: cfg, set: set, onShutdown: onShutdown}, nil
}

// Start loads and attaches the probes and starts the scan loop. Everything
// that can be missing (privileges, BTF, tracefs, a tracepoint) fails here,
// with what is missing and how to fix it.
func (r *kmemleakReceiver) Start(_ context.Context, _ component.Host) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return nil
	}
	r.started = true

	if err := probes.acquire(r.set.ID); err != nil {
		return err
	}
	if err := r.start(); err != nil {
		probes.release(r.set.ID)
		return err
	}
	return nil
}

// start loads the probes and starts the scan loop.
func (r *kmemleakReceiver) start() error {
	// First, so that a user without them hears of nothing else.
	if err := tracker.CheckPrivileges(); err != nil {
		return fmt.Errorf("kmemleak: %w", err)
	}
	// Before attaching: the truth check needs the counts without any object
	// the probes will track.
	r.truth = truth.NewChecker(r.kernelCounts())
	opts := r.cfg.trackerOptions()
	opts.Logger = r.set.Logger
	tr, err := tracker.Open(opts)
	if err != nil {
		return fmt.Errorf("kmemleak: %w", err)
	}
	r.tracker = tr
	if err := r.skipFilteredKmalloc(); err != nil {
		_ = tr.Close()
		return fmt.Errorf("kmemleak: %w", err)
	}
	if r.telemetry, err = metadata.NewTelemetryBuilder(r.set.TelemetrySettings); err != nil {
		_ = tr.Close()
		return fmt.Errorf("kmemleak: creating the receiver's own metrics: %w", err)
	}
	r.trend = trend.New(r.cfg.TrendWindow, r.cfg.ReportInterval)
	r.filtered = map[tracker.CacheID]bool{}

	r.namer = callSiteNamer{includeAddresses: r.cfg.IncludeAddresses}
	if sym, err := ksym.New(kallsymsPath, "/proc/modules"); err != nil {
		r.set.Logger.Warn("Kernel symbols are unavailable, call sites will not be named", zap.Error(err))
	} else {
		r.namer.sym = sym
	}
	r.emitter = report.Emitter{
		Metrics:          metadata.NewMetricsBuilder(r.cfg.MetricsBuilderConfig, r.set),
		Logs:             metadata.NewLogsBuilder(r.cfg.logsBuilderConfig(), r.set),
		IncludeAddresses: r.cfg.IncludeAddresses,
		StacksOn:         opts.TakesStacks(),
	}
	r.emitter.Resource = r.resource(r.emitter.Metrics.NewResourceBuilder())

	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan struct{})
	go r.run(ctx)
	return nil
}

func (r *kmemleakReceiver) resource(rb *metadata.ResourceBuilder) pcommon.Resource {
	if host, err := os.Hostname(); err == nil {
		rb.SetHostName(host)
	}
	rb.SetOsType("linux")
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		rb.SetOsVersion(unix.ByteSliceToString(uts.Release[:]))
	}
	rb.SetKmemAttachMode(attachModes(r.tracker.Modes()))
	return rb.Emit()
}

// attachModes is the one mode all allocators use, or allocator=mode pairs.
func attachModes(modes map[tracker.Allocator]tracker.Mode) string {
	var pairs []string
	distinct := map[tracker.Mode]bool{}
	for _, a := range tracker.Allocators {
		if m, ok := modes[a]; ok {
			pairs = append(pairs, a.String()+"="+string(m))
			distinct[m] = true
		}
	}
	if len(distinct) == 1 {
		for m := range distinct {
			return string(m)
		}
	}
	slices.Sort(pairs)
	return strings.Join(pairs, ",")
}

func (r *kmemleakReceiver) run(ctx context.Context) {
	defer close(r.done)
	wait := time.NewTimer(r.cfg.InitialDelay)
	defer wait.Stop()
	select {
	case <-ctx.Done():
		return
	case <-wait.C:
	}
	tick := time.NewTicker(r.cfg.CollectionInterval)
	defer tick.Stop()
	for {
		r.scan(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (r *kmemleakReceiver) scan(ctx context.Context) {
	log := r.set.Logger
	start := time.Now()
	// The order matters to the truth check: objects allocated before cutoff
	// were alive when the kernel counted, which was before the scan.
	cutoff, err := tracker.MonotonicNow()
	if err != nil {
		log.Error("Reading the monotonic clock failed", zap.Error(err))
		return
	}
	kernel := r.kernelCounts()
	if err := r.tracker.Scan(&r.snap); err != nil {
		r.errors.log(log, "Scan of live kernel objects failed", err)
		return
	}
	r.telemetry.KmemleakObjectsScanned.Add(ctx, int64(len(r.snap.Objects)))
	r.warnIfFull(ctx)
	r.filterSlabCaches()
	var bounds map[string]int64
	if kernel != nil {
		res := r.truth.Check(&r.snap, cutoff, kernel)
		r.untrace(res)
		bounds = res.Bounds
	}
	if r.namer.sym != nil {
		if _, err := r.namer.sym.Refresh(); err != nil {
			log.Warn("Reloading kernel symbols after a module change failed; using the old table", zap.Error(err))
		}
	}
	opts := report.Options{MinAge: r.cfg.MinAge, TopN: r.cfg.TopN, Bounds: bounds, SampleRate: r.cfg.SampleRate}
	if r.emitter.StacksOn {
		opts.Stacks = r.tracker
	}
	rep := report.Build(&r.snap, opts, r.namer)
	rep.Untraced = r.truth.Untraced()
	toLog := r.follow(rep.Groups)
	if r.cfg.StackTraces == tracker.StacksAdaptive.String() {
		if err := r.tracker.SetStackSites(callSites(rep.Groups)); err != nil {
			log.Error("Asking for the stacks of suspect call sites failed", zap.Error(err))
		}
	}
	took := time.Since(start)
	r.telemetry.KmemleakScanDuration.Record(ctx, took.Seconds())
	now := pcommon.NewTimestampFromTime(time.Now())

	if r.metrics != nil {
		if err := r.metrics.ConsumeMetrics(ctx, r.emitter.EmitMetrics(rep, took, now)); err != nil {
			r.errors.log(log, "Passing metrics to the next consumer failed", err)
		}
	}
	if r.logs != nil && len(toLog) > 0 {
		if err := r.logs.ConsumeLogs(ctx, r.emitter.EmitLogs(ctx, toLog, rep.Incomplete(), now)); err != nil {
			r.errors.log(log, "Passing leak-suspect events to the next consumer failed", err)
		} else {
			r.telemetry.KmemleakEventsEmitted.Add(ctx, int64(len(toLog)))
		}
	}
}

// warnIfFull says, once per scan at most, that the map was full: the
// probes dropped allocations, so every count is a lower bound.
func (r *kmemleakReceiver) warnIfFull(ctx context.Context) {
	var dropped uint64
	for _, c := range r.snap.Counters {
		dropped += c.Dropped
	}
	if dropped > r.dropped {
		r.telemetry.KmemleakObjectsDropped.Add(ctx, int64(dropped-r.dropped))
		r.set.Logger.Warn("The live-object map is full: allocations went untracked, counts are lower bounds; raise max_tracked_objects",
			zap.Uint64("dropped_since_last_scan", dropped-r.dropped), zap.Int("max_tracked_objects", r.cfg.MaxTrackedObjects))
	}
	r.dropped = dropped
}

// errorLimiter logs the first error of each kind, then at most one a
// minute with the number held back: an exporter that is down fails every
// scan, and its errors must not flood the collector's log.
type errorLimiter struct {
	last map[string]time.Time
	held map[string]int
}

const errorLogEvery = time.Minute

func (l *errorLimiter) log(logger *zap.Logger, msg string, err error) {
	if l.last == nil {
		l.last, l.held = map[string]time.Time{}, map[string]int{}
	}
	if time.Since(l.last[msg]) < errorLogEvery {
		l.held[msg]++
		return
	}
	logger.Error(msg, zap.Error(err), zap.Int("errors_not_logged_since_last", l.held[msg]))
	l.last[msg], l.held[msg] = time.Now(), 0
}

// follow updates each group's trend and returns the groups that deserve an
// event this scan.
func (r *kmemleakReceiver) follow(groups []report.Group) []report.Group {
	counts := make(map[string]int64, len(groups))
	for _, g := range groups {
		counts[groupKey(g)] = g.Objects
	}
	verdicts := r.trend.Observe(time.Now(), counts)
	var toLog []report.Group
	for i := range groups {
		v := verdicts[groupKey(groups[i])]
		groups[i].Growing, groups[i].GrowthPerMinute = v.Growing, v.PerMinute
		if v.Report {
			toLog = append(toLog, groups[i])
		}
	}
	return toLog
}

func groupKey(g report.Group) string {
	return strings.Join([]string{g.Allocator.String(), g.Cache, g.CallSiteSym, g.Stack}, "\x00")
}

// callSites are the probes' call sites of the groups, largest first, for
// adaptive stacks. Page groups have none: their allocations always take a
// stack.
func callSites(groups []report.Group) []uint64 {
	sites := make([]uint64, 0, len(groups))
	for _, g := range groups {
		if g.Allocator != tracker.Page {
			sites = append(sites, g.CallSite)
		}
	}
	return sites
}

// skipFilteredKmalloc tells the probes which kmalloc caches the caches:
// filter leaves out: all their names are known up front.
func (r *kmemleakReceiver) skipFilteredKmalloc() error {
	if r.cfg.Caches.IsZero() {
		return nil
	}
	for id, name := range tracker.KmallocCaches() {
		if !r.cfg.Caches.Tracks(name) {
			if err := r.tracker.Skip(id, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// filterSlabCaches applies the caches: filter to the slab caches the probes
// met since the last scan, and drops the objects of filtered caches from
// the snapshot and the map (those allocated before the probes were told).
func (r *kmemleakReceiver) filterSlabCaches() {
	if r.cfg.Caches.IsZero() {
		return
	}
	fresh := map[tracker.CacheID]bool{}
	for key, name := range r.snap.CacheNames {
		id := tracker.CacheID{Allocator: tracker.Slab, Key: key}
		if _, seen := r.filtered[id]; !seen {
			r.filtered[id] = !r.cfg.Caches.Tracks(name)
			fresh[id] = r.filtered[id]
			if r.filtered[id] {
				r.filteredOut++
			}
		}
	}
	// Filters that leave no slab cache out (an include list that matches
	// them all) cost no pass over the objects.
	if r.filteredOut == 0 {
		return
	}
	addrs := map[tracker.CacheID][]uint64{}
	kept := r.snap.Objects[:0]
	for _, obj := range r.snap.Objects {
		if id := tracker.CacheOf(obj); r.filtered[id] {
			addrs[id] = append(addrs[id], obj.Address)
			continue
		}
		kept = append(kept, obj)
	}
	r.snap.Objects = kept
	for id, skip := range fresh {
		if skip {
			if err := r.tracker.Skip(id, addrs[id]); err != nil {
				r.set.Logger.Error("Leaving out a filtered cache failed", zap.String("cache", r.snap.CacheNames[id.Key]), zap.Error(err))
			}
			delete(addrs, id)
		}
	}
	for _, stale := range addrs {
		if err := r.tracker.Delete(stale); err != nil {
			r.set.Logger.Error("Deleting objects of filtered caches failed", zap.Error(err))
		}
	}
}

// kernelCounts reads the kernel's object count per slab cache, or returns
// nil, with one warning, when it cannot: then caches with untraced frees are
// neither found nor filtered, and their objects are reported as suspects.
func (r *kmemleakReceiver) kernelCounts() map[string]int64 {
	counts, err := slabinfo.Read(slabinfo.Path)
	if err != nil && !r.warnedNoSlabinfo {
		r.warnedNoSlabinfo = true
		r.set.Logger.Warn("Cannot read the kernel's slab counts: caches whose frees bypass the tracepoints will show up as leaks",
			zap.Error(err))
	}
	return counts
}

// untrace stops tracking the caches the truth check convicted, and deletes
// the phantoms it found.
func (r *kmemleakReceiver) untrace(res truth.Result) {
	log := r.set.Logger
	for _, v := range res.Verdicts {
		log.Warn("Slab cache frees bypass the tracepoints; no longer tracking it",
			zap.String("cache", v.Name), zap.Stringer("allocator", v.ID.Allocator), zap.String("reason", v.Reason),
			zap.Int64("tracked_objects_older_than_scan", v.Old), zap.Int64("most_it_can_hold", v.Bound),
			zap.Int64("kernel_active_objects", v.Kernel))
		if err := r.tracker.Skip(v.ID, v.Addrs); err != nil {
			log.Error("Untracking a cache failed", zap.String("cache", v.Name), zap.Error(err))
		}
	}
	if err := r.tracker.Delete(res.Stale); err != nil {
		log.Error("Deleting entries of untraced caches failed", zap.Error(err))
	}
}

// Shutdown stops the scan loop and releases every program, link and map.
func (r *kmemleakReceiver) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil
	}
	r.stopped = true
	r.onShutdown()
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	select {
	case <-r.done:
		defer probes.release(r.set.ID)
		r.telemetry.Shutdown()
		return r.tracker.Close()
	case <-ctx.Done():
		// The loop is stuck in a consumer that ignores cancellation. Closing
		// the maps under it could hand their fd numbers to other files, so
		// the probes go when it returns.
		go func() {
			<-r.done
			r.telemetry.Shutdown()
			_ = r.tracker.Close()
			probes.release(r.set.ID)
		}()
		return fmt.Errorf("kmemleak: the scan loop did not stop in time (%w); probes are released when it does", ctx.Err())
	}
}

// probes makes sure one receiver at a time loads the probes in a process:
// two would attach every program twice, doubling the cost on every kernel
// allocation and each reporting the same leaks. One receiver can serve any
// number of pipelines.
var probes probeOwner

type probeOwner struct {
	mu    sync.Mutex
	owner *component.ID
}

func (p *probeOwner) acquire(id component.ID) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.owner != nil {
		return fmt.Errorf("kmemleak: receiver %q already tracks the kernel allocators in this collector; "+
			"a second one (%q) would attach every probe twice: list %q in every pipeline that needs it instead", *p.owner, id, *p.owner)
	}
	p.owner = &id
	return nil
}

func (p *probeOwner) release(id component.ID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.owner != nil && *p.owner == id {
		p.owner = nil
	}
}

// kallsymsPath is where kernel symbols are read; a variable for tests.
var kallsymsPath = "/proc/kallsyms"

// callSiteNamer names call sites for reports. Without symbols it hides
// the raw address unless the user opted in: addresses defeat KASLR.
type callSiteNamer struct {
	sym              *ksym.Symbolizer
	includeAddresses bool
}

func (n callSiteNamer) Symbolize(addr uint64) string {
	if n.sym != nil {
		if s, ok := n.sym.Resolve(addr); ok {
			return s.String()
		}
	}
	if n.includeAddresses {
		return fmt.Sprintf("0x%x", addr)
	}
	return "unknown"
}

// StackMapEntries is the size of the stack map the receiver creates for
// cfg, for tools that report how full it gets.
func StackMapEntries(cfg *Config) uint32 {
	return tracker.StackMapEntries(cfg.trackerOptions())
}
