//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/xconsumer"
	"go.opentelemetry.io/collector/extension/xextension/storage"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/receiver"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/cgroups"
	"github.com/kmemleak/kmemleakreceiver/internal/damon"
	"github.com/kmemleak/kmemleakreceiver/internal/holders"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/ksym"
	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
	"github.com/kmemleak/kmemleakreceiver/internal/mountinfo"
	"github.com/kmemleak/kmemleakreceiver/internal/otlp"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
	"github.com/kmemleak/kmemleakreceiver/internal/profile"
	"github.com/kmemleak/kmemleakreceiver/internal/reclaim"
	"github.com/kmemleak/kmemleakreceiver/internal/report"
	"github.com/kmemleak/kmemleakreceiver/internal/scan"
	"github.com/kmemleak/kmemleakreceiver/internal/slabinfo"
	"github.com/kmemleak/kmemleakreceiver/internal/slabmerge"
	"github.com/kmemleak/kmemleakreceiver/internal/staleness"
	"github.com/kmemleak/kmemleakreceiver/internal/tmpfs"
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

type kmemleakReceiver struct {
	cfg        *Config
	set        receiver.Settings
	metrics    consumer.Metrics   // nil unless a metrics pipeline uses the receiver
	logs       consumer.Logs      // nil unless a logs pipeline uses the receiver
	profiles   xconsumer.Profiles // nil unless a profiles pipeline uses the receiver
	onShutdown func()

	mu      sync.Mutex // guards the lifecycle: Start and Shutdown come once per pipeline
	started bool
	stopped bool
	tracker *tracker.Tracker
	holders *holders.Iterators // nil when the kernel cannot list what tasks hold
	cancel  context.CancelFunc
	done    chan struct{}

	telemetry *metadata.TelemetryBuilder // the receiver's own metrics, in the collector's telemetry
	storage   storage.Client             // nil without storage: the verdict histories

	// Owned by the scan loop.
	scanner *scan.Scanner
	symbols *ksym.Kallsyms // nil when kallsyms cannot be read
	emitter otlp.Emitter
	stale   staleness.Marker
	errors  errorLimiter
	// lastProfile is when the last profiles were built, or the receiver
	// started.
	lastProfile time.Time
	// lastSave is when the verdict histories were last saved, or the
	// receiver started.
	lastSave time.Time
}

func newReceiver(cfg *Config, set receiver.Settings, onShutdown func()) (*kmemleakReceiver, error) {
	return &kmemleakReceiver{cfg: cfg, set: set, onShutdown: onShutdown}, nil
}

// Start loads and attaches the probes and starts the scan loop. Everything
// that can be missing (privileges, BTF, tracefs, a tracepoint, the storage
// extension) fails here, with what is missing and how to fix it.
func (r *kmemleakReceiver) Start(ctx context.Context, host component.Host) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return nil
	}
	r.started = true

	if err := probes.acquire(r.set.ID); err != nil {
		return err
	}
	if err := r.start(ctx, host); err != nil {
		probes.release(r.set.ID)
		return fmt.Errorf("kmemleak: %w", err)
	}
	return nil
}

// start loads the probes and starts the scan loop; on failure it releases
// whatever it put into the kernel.
func (r *kmemleakReceiver) start(ctx context.Context, host component.Host) (err error) {
	defer func() {
		if err != nil {
			_ = r.release()
		}
	}()
	// First, so that a user without them hears of nothing else.
	if err := tracker.CheckPrivileges(); err != nil {
		return err
	}
	if r.cfg.Storage != nil {
		if r.storage, err = storageClient(ctx, host, *r.cfg.Storage, r.set.ID); err != nil {
			return err
		}
	}
	opts := r.cfg.trackerOptions()
	opts.Logger = r.set.Logger
	sopts := r.cfg.scanOptions(opts.TakesStacks())
	sopts.Logger = r.set.Logger
	if r.cfg.Attribution {
		owners, err := r.owners()
		if err != nil {
			return err
		}
		sopts.Owners = owners
	}
	r.holders = r.openHolders()
	if r.holders != nil {
		sopts.Holders = r.holders
	}
	r.scanner = scan.New(newMachine(), sopts)
	if r.tracker, err = tracker.Open(opts); err != nil {
		return err
	}
	if r.storage != nil {
		adopted, _ := r.tracker.Adopted()
		r.restoreVerdicts(ctx, adopted)
	}
	r.symbols = r.loadSymbols()
	if err := r.scanner.Attach(r.tracker, ksym.Symbolizer{Symbols: r.symbols, IncludeAddresses: r.cfg.IncludeAddresses}); err != nil {
		return err
	}
	if r.telemetry, err = metadata.NewTelemetryBuilder(r.set.TelemetrySettings); err != nil {
		return fmt.Errorf("creating the receiver's own metrics: %w", err)
	}
	r.emitter = otlp.Emitter{
		Metrics:          metadata.NewMetricsBuilder(r.cfg.MetricsBuilderConfig, r.set),
		Logs:             metadata.NewLogsBuilder(r.cfg.logsBuilderConfig(), r.set),
		IncludeAddresses: r.cfg.IncludeAddresses,
		StacksOn:         opts.TakesStacks(),
	}
	r.emitter.Resource = r.resource()
	r.emitter.OwnerResource = r.ownerResource

	r.lastProfile = time.Now()
	r.lastSave = r.lastProfile
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan struct{})
	go r.run(ctx)
	return nil
}

// openHolders loads the iterators that list what live tasks hold, for the
// verdicts to tell processes starting from leaks. Without them (kernels
// before 5.12) the receiver runs on, and says what that costs.
func (r *kmemleakReceiver) openHolders() *holders.Iterators {
	it, err := holders.Open()
	if err != nil {
		r.set.Logger.Warn("Cannot list what live tasks hold: growth of processes' own structures may be called leaking", zap.Error(err))
		return nil
	}
	return it
}

// release closes what Start put into the kernel. The pinned tables stay
// for the next collector unless pinning.on_shutdown says this one is
// stopped for good: the collector cannot tell a restart from an uninstall.
func (r *kmemleakReceiver) release() error {
	var errs []error
	if r.tracker != nil {
		if r.cfg.Pinning.OnShutdown == releasePins {
			errs = append(errs, r.tracker.Unpin())
		}
		errs = append(errs, r.tracker.Close())
	}
	if r.holders != nil {
		errs = append(errs, r.holders.Close())
	}
	if r.storage != nil {
		errs = append(errs, r.storage.Close(context.Background()))
	}
	return errors.Join(errs...)
}

// kallsymsPath is where kernel symbols are read; a variable for tests.
var kallsymsPath = "/proc/kallsyms"

func (r *kmemleakReceiver) loadSymbols() *ksym.Kallsyms {
	sym, err := ksym.New(kallsymsPath, "/proc/modules")
	if err != nil {
		r.set.Logger.Warn("Kernel symbols are unavailable, call sites will not be named", zap.Error(err))
		return nil
	}
	return sym
}

// machine is the scanner's Machine: the kernel's slab counts, clock and
// reclaim.
type machine struct {
	caches *reclaim.Caches
	merged *slabmerge.Names
}

func newMachine() machine {
	return machine{caches: reclaim.NewCaches(reclaim.SlabDir), merged: slabmerge.New(reclaim.SlabDir)}
}

func (machine) SlabCounts() (map[string]int64, error) { return slabinfo.Read(slabinfo.Path) }
func (machine) Now() (uint64, error)                  { return tracker.MonotonicNow() }
func (machine) Reclaim() (reclaim.Counters, error)    { return reclaim.ReadVMStat(reclaim.VMStatPath) }
func (m machine) Reclaimable(cache string) bool       { return m.caches.Reclaimable(cache) }
func (m machine) MergedNames(cache string) []string   { return m.merged.Of(cache) }

func (machine) DamonRegions() (int64, error) { return damon.Bound(damon.Kdamonds) }

func (machine) Cgroups() (int64, error) {
	f, err := os.Open("/proc/cgroups")
	if err != nil {
		return 0, err
	}
	defer f.Close() //nolint:errcheck // read only: closing loses nothing
	return cgroups.Count(f)
}

func (machine) TmpfsFiles() (int64, error) {
	mounts, err := mountinfo.Read(mountinfo.Path)
	if err != nil {
		return 0, err
	}
	return tmpfs.Files(mounts)
}

// owners is attribution's resolver: processes from /proc, cgroups from
// cgroup_root or where the cgroup v2 hierarchy is mounted.
func (r *kmemleakReceiver) owners() (*owner.Resolver, error) {
	root := r.cfg.CgroupRoot
	if root != "" {
		if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
			return nil, fmt.Errorf("cgroup_root %q is not a cgroup v2 hierarchy (%w): mount the host's there, or leave cgroup_root empty", root, err)
		}
		return owner.NewResolver("/proc", root), nil
	}
	root, err := owner.CgroupRoot("/proc/self/mountinfo")
	if err != nil || root == "" {
		r.set.Logger.Warn("No cgroup v2 hierarchy is mounted: attribution names processes, not their cgroups or containers", zap.Error(err))
	}
	return owner.NewResolver("/proc", root), nil
}

// ownerResource is the receiver's resource with an owner's attributes:
// the host's are read once, at start.
func (r *kmemleakReceiver) ownerResource(o owner.Owner) pcommon.Resource {
	rb := r.emitter.Metrics.NewResourceBuilder()
	otlp.SetOwner(rb, o)
	res := rb.Emit()
	for k, v := range r.emitter.Resource.Attributes().All() {
		v.CopyTo(res.Attributes().PutEmpty(k))
	}
	return res
}

// resource is the receiver's own resource: the host's.
func (r *kmemleakReceiver) resource() pcommon.Resource {
	rb := r.emitter.Metrics.NewResourceBuilder()
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
func attachModes(modes map[kmem.Allocator]kmem.Mode) string {
	var pairs []string
	distinct := map[kmem.Mode]bool{}
	for _, a := range kmem.Allocators {
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
		if r.storage != nil && time.Since(r.lastSave) >= saveEvery {
			r.saveVerdicts(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// scan runs one scan and passes what it found to the consumers.
func (r *kmemleakReceiver) scan(ctx context.Context) {
	log := r.set.Logger
	start := time.Now()
	if r.symbols != nil {
		if _, err := r.symbols.Refresh(); err != nil {
			log.Warn("Reloading kernel symbols after a module change failed; using the old table", zap.Error(err))
		}
	}
	res, err := r.scanner.Scan()
	if err != nil {
		r.errors.log(log, "Scan of live kernel objects failed", err)
		return
	}
	logScan(log, res)
	took := time.Since(start)
	r.telemetry.KmemleakObjectsScanned.Add(ctx, res.Scanned)
	r.telemetry.KmemleakObjectsDropped.Add(ctx, int64(min(res.NewlyDropped, math.MaxInt64)))
	r.telemetry.KmemleakScanDuration.Record(ctx, took.Seconds())
	now := pcommon.NewTimestampFromTime(time.Now())

	if r.metrics != nil {
		md := r.emitter.EmitMetrics(res.Report, took, now)
		r.stale.Mark(md, now)
		if err := r.metrics.ConsumeMetrics(ctx, md); err != nil {
			r.errors.log(log, "Passing metrics to the next consumer failed", err)
		}
	}
	if r.profiles != nil {
		r.emitProfiles(ctx, res.Aged, start)
	}
	if r.logs != nil && len(res.Events) > 0 {
		if err := r.logs.ConsumeLogs(ctx, r.emitter.EmitLogs(ctx, res.Events, res.Report.Incomplete(), now)); err != nil {
			r.errors.log(log, "Passing leak-suspect events to the next consumer failed", err)
		} else {
			r.telemetry.KmemleakEventsEmitted.Add(ctx, int64(len(res.Events)))
		}
	}
}

// emitProfiles passes the profiles of a scan that began at start to the
// profiles consumer, once profile_interval has passed since the last.
func (r *kmemleakReceiver) emitProfiles(ctx context.Context, groups []report.Group, start time.Time) {
	// Scans come a collection_interval apart, give or take the ticker's
	// jitter: half of one is the tolerance.
	since := start.Sub(r.lastProfile)
	if since < r.cfg.ProfileInterval-r.cfg.CollectionInterval/2 {
		return
	}
	r.lastProfile = start
	pd := profile.Build(groups, profile.Options{
		Resource: r.emitter.Resource, Scope: metadata.ScopeName, Version: r.set.BuildInfo.Version, Time: start, Duration: since,
	})
	if err := r.profiles.ConsumeProfiles(ctx, pd); err != nil {
		r.errors.log(r.set.Logger, "Passing profiles to the next consumer failed", err)
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
		if r.storage != nil {
			r.keepVerdicts(ctx)
		}
		err := r.release()
		r.endSeries(ctx)
		return err
	case <-ctx.Done():
		// The loop is stuck in a consumer that ignores cancellation. Closing
		// the maps under it could hand their fd numbers to other files, so
		// the probes go when it returns.
		go func() {
			<-r.done
			r.telemetry.Shutdown()
			_ = r.release()
			probes.release(r.set.ID)
		}()
		return fmt.Errorf("kmemleak: the scan loop did not stop in time (%w); probes are released when it does", ctx.Err())
	}
}

// endSeriesWithin bounds the wait for the consumer that takes the last
// batch, when Shutdown's context sets no deadline.
const endSeriesWithin = 5 * time.Second

// endSeries ends every series of the last scan, so that a backend does not
// answer with the stopped receiver's values for minutes (Prometheus's
// lookback) beside those of the collector that follows. It waits for the
// consumer until ctx's deadline, or endSeriesWithin, and no longer: a
// consumer that blocks is left to return on its own, with a batch nobody
// else holds.
func (r *kmemleakReceiver) endSeries(ctx context.Context) {
	if r.metrics == nil {
		return
	}
	md := r.stale.End(pcommon.NewTimestampFromTime(time.Now()))
	if md.DataPointCount() == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, endSeriesWithin)
	sent := make(chan error, 1)
	go func() {
		defer cancel()
		sent <- r.metrics.ConsumeMetrics(ctx, md)
	}()
	select {
	case err := <-sent:
		if err != nil {
			r.set.Logger.Warn("Ending the series at shutdown failed: backends keep their last values until they go stale", zap.Error(err))
		}
	case <-ctx.Done():
		r.set.Logger.Warn("Ending the series at shutdown took too long: backends keep their last values until they go stale", zap.Error(ctx.Err()))
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
