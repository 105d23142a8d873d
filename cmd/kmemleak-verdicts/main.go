//go:build linux && (amd64 || arm64)

// Command kmemleak-verdicts is the organic labelled suite of the receiver's
// verdicts: the receiver, in-process at its default settings, beside real
// programs for a while. Some leak on purpose, each at a call site of its
// own; the rest is ordinary server work that keeps kernel memory without
// leaking (file walks, a log, the page cache, builds, services starting, a
// batch, TIME_WAIT sockets, tmpfs files). Every call site called leaking
// that is not a planted leak is a false positive, whatever made it: the
// machine's own work counts too. A planted leak is its own call site and
// the sites its leak events' stacks pass it at: an eventfd is also a file
// and the file's security blob, and those leak with it.
//
// It prints each call site ever called leaking, with when and why, each
// planted leak's detection time, precision and recall, and exits 1 when
// precision or recall is under 1 or a leak was found late.
//
//	sudo go run ./cmd/kmemleak-verdicts -duration 30m
//
// With -leaks-only it runs the planted leaks alone, for a long run beside
// whatever the machine does anyway (building and testing this project).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"

	"github.com/kmemleak/kmemleakreceiver"
	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
)

func main() {
	duration := flag.Duration("duration", 30*time.Minute, "how long the workloads run")
	logPath := flag.String("log", "", "write the receiver's log (every Scan line and leak, with reasons) to this file")
	leaksOnly := flag.Bool("leaks-only", false, "run the planted leaks only: the machine's own work is the rest (a build, the tests)")
	flag.Parse()
	if *leaksOnly {
		workloads = slices.DeleteFunc(workloads, func(w workload) bool { return len(w.leaks) == 0 })
	}
	if err := run(*duration, *logPath); err != nil {
		fmt.Fprintln(os.Stderr, "kmemleak-verdicts:", err)
		os.Exit(1)
	}
}

func run(duration time.Duration, logPath string) error {
	project, err := os.Getwd()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "kmemleak-verdicts-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	s := &suite{dir: dir, project: project, modCache: goEnv("GOMODCACHE")}
	defer s.undo()

	rec := newRecorder()
	stop, err := startReceiver(rec, logPath)
	if err != nil {
		return err
	}
	defer stop()
	// The first scan, before the clock starts: a leak is timed from its
	// workload's start.
	for rec.scans() == 0 {
		time.Sleep(100 * time.Millisecond)
	}

	// Interrupted, the workloads stop and what they made is removed.
	interrupted, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(interrupted, duration)
	defer cancel()
	start := time.Now()
	fmt.Printf("kmemleak-verdicts: %d workloads for %v, the receiver at its defaults\n", len(workloads), duration)
	var wg sync.WaitGroup
	errs := make([]error, len(workloads))
	for i, w := range workloads {
		wg.Go(func() { errs[i] = w.run(ctx, s) })
	}
	progress(ctx, rec, start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("%s: %w", workloads[i].name, err)
		}
	}
	if interrupted.Err() != nil {
		return errors.New("interrupted")
	}
	return rec.judge(start, duration)
}

// progress prints a line a minute: scans, and the call sites leaking now.
func progress(ctx context.Context, rec *recorder, start time.Time) {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			fmt.Printf("%6v  %3d scans  leaking now: %v\n", time.Since(start).Round(time.Second), rec.scans(), rec.leakingNow())
		}
	}
}

// startReceiver runs the receiver at its default settings, into rec, and
// returns what stops it.
func startReceiver(rec *recorder, logPath string) (func(), error) {
	f := kmemleakreceiver.NewFactory()
	cfg := f.CreateDefaultConfig().(*kmemleakreceiver.Config)
	// A run starts from empty tables, never from the last run's.
	cfg.Pinning.Directory = ""
	set := receivertest.NewNopSettings(metadata.Type)
	logCfg := zap.NewProductionConfig()
	if logPath != "" {
		logCfg.OutputPaths = []string{logPath}
	}
	logger, err := logCfg.Build()
	if err != nil {
		return nil, err
	}
	set.Logger = logger
	metrics, _ := consumer.NewMetrics(rec.consumeMetrics)
	logs, _ := consumer.NewLogs(rec.consumeLogs)
	ctx := context.Background()
	rm, err := f.CreateMetrics(ctx, set, cfg, metrics)
	if err != nil {
		return nil, err
	}
	rl, err := f.CreateLogs(ctx, set, cfg, logs)
	if err != nil {
		return nil, err
	}
	if err := rm.Start(ctx, componenttest.NewNopHost()); err != nil {
		return nil, err
	}
	if err := rl.Start(ctx, componenttest.NewNopHost()); err != nil {
		return nil, err
	}
	return func() {
		_ = rm.Shutdown(ctx)
		_ = rl.Shutdown(ctx)
		_ = logger.Sync()
	}, nil
}

// site is a call site as the metrics name it: its function and cache.
type site struct{ function, cache string }

func (s site) String() string { return s.function + " (" + s.cache + ")" }

// called is a call site that was called leaking.
type called struct {
	first, last time.Time
	scans       int      // scans that called it leaking
	reasons     []string // its leak events' reasons, each once
	// The functions of its leak events' stacks: a leak's syscall allocates
	// at call sites other than its own (an eventfd is also a file and its
	// security blob), and those objects leak just as much.
	through map[string]bool
}

// recorder keeps what the receiver said: per scan, which call sites were
// leaking; per leak event, why.
type recorder struct {
	mu      sync.Mutex
	n       int
	now     []site // leaking in the last scan
	leaking map[site]*called
}

func newRecorder() *recorder { return &recorder{leaking: map[site]*called{}} }

func (r *recorder) scans() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

func (r *recorder) leakingNow() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.now {
		out = append(out, s.String())
	}
	return out
}

func function(callSite string) string {
	fn, _, _ := strings.Cut(callSite, "+")
	return fn
}

func (r *recorder) consumeMetrics(_ context.Context, md pmetric.Metrics) error {
	now := time.Now()
	seen := map[site]bool{}
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				if m.Name() != "kmem.outstanding.objects" {
					continue
				}
				for _, dp := range m.Gauge().DataPoints().All() {
					attrs := dp.Attributes()
					if v, _ := attrs.Get("kmem.verdict"); v.Str() != "leaking" {
						continue
					}
					cs, _ := attrs.Get("kmem.call_site")
					cache, _ := attrs.Get("kmem.cache")
					seen[site{function(cs.Str()), cache.Str()}] = true
				}
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	r.now = r.now[:0]
	for s := range seen {
		r.now = append(r.now, s)
		c := r.leaking[s]
		if c == nil {
			c = &called{first: now}
			r.leaking[s] = c
		}
		c.last = now
		c.scans++
	}
	return nil
}

func (r *recorder) consumeLogs(_ context.Context, ld plog.Logs) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rl := range ld.ResourceLogs().All() {
		for _, sl := range rl.ScopeLogs().All() {
			for _, lr := range sl.LogRecords().All() {
				attrs := lr.Attributes()
				cs, _ := attrs.Get("kmem.call_site")
				cache, _ := attrs.Get("kmem.cache")
				reason, _ := attrs.Get("kmem.verdict.reason")
				stack, _ := attrs.Get("code.stacktrace")
				s := site{function(cs.Str()), cache.Str()}
				c := r.leaking[s]
				if c == nil {
					c = &called{first: time.Now(), last: time.Now()}
					r.leaking[s] = c
				}
				if !slices.Contains(c.reasons, reason.Str()) {
					c.reasons = append(c.reasons, reason.Str())
				}
				for frame := range strings.Lines(stack.Str()) {
					if c.through == nil {
						c.through = map[string]bool{}
					}
					c.through[function(strings.TrimSpace(frame))] = true
				}
			}
		}
	}
	return nil
}

// plantedFrame returns the planted leak's function a leak event's stack
// passed through, if any.
func plantedFrame(through, planted map[string]bool) string {
	for fn := range planted {
		if through[fn] {
			return fn
		}
	}
	return ""
}

// judge prints every call site called leaking and each planted leak's
// detection time, and says whether the suite passed: precision and recall
// 1, every leak in time. Leaks whose deadline is past the run's end are
// not counted.
func (r *recorder) judge(start time.Time, duration time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	planted := map[string]bool{}
	fmt.Println("\nplanted leaks:")
	var found, leaks int
	var late []string
	for _, w := range workloads {
		if len(w.leaks) == 0 {
			continue
		}
		for _, fn := range w.leaks {
			planted[fn] = true
		}
		if w.within > duration {
			fmt.Printf("  %-80s not judged: the run is shorter than %v\n", w.name, w.within)
			continue
		}
		leaks++
		at, ok := r.firstOf(w.leaks)
		switch {
		case !ok:
			fmt.Printf("  %-80s NOT FOUND (%s)\n", w.name, w.leaks)
			late = append(late, w.name)
		case at.Sub(start) > w.within:
			found++
			fmt.Printf("  %-80s found after %v, LATE (within %v)\n", w.name, at.Sub(start).Round(time.Second), w.within)
			late = append(late, w.name)
		default:
			found++
			fmt.Printf("  %-80s found after %v (within %v)\n", w.name, at.Sub(start).Round(time.Second), w.within)
		}
	}
	sites := slices.SortedFunc(func(yield func(site) bool) {
		for s := range r.leaking {
			if !yield(s) {
				return
			}
		}
	}, func(a, b site) int { return r.leaking[a].first.Compare(r.leaking[b].first) })
	var truePos, falsePos int
	fmt.Println("\ncall sites called leaking (first, last, scans, reasons):")
	for _, s := range sites {
		c := r.leaking[s]
		label := "FALSE POSITIVE"
		switch via := plantedFrame(c.through, planted); {
		case planted[s.function]:
			label = "planted"
			truePos++
		case via != "":
			label = "planted, via " + via
			truePos++
		default:
			falsePos++
		}
		fmt.Printf("  %-50s %-14s %7v %7v %4d  %s\n", s, label, c.first.Sub(start).Round(time.Second),
			c.last.Sub(start).Round(time.Second), c.scans, strings.Join(c.reasons, " | "))
	}
	precision := float64(truePos) / float64(max(truePos+falsePos, 1))
	recall := float64(found) / float64(max(leaks, 1))
	fmt.Printf("\n%d scans over %v: precision %.2f (%d of %d call sites called leaking are planted leaks), recall %.2f (%d of %d), %d late\n",
		r.n, duration, precision, truePos, truePos+falsePos, recall, found, leaks, len(late))
	if falsePos > 0 || found < leaks || len(late) > 0 {
		return fmt.Errorf("the suite failed: %d false positives, %d of %d leaks found, late or missing: %v", falsePos, found, leaks, late)
	}
	return nil
}

func (r *recorder) firstOf(functions []string) (time.Time, bool) {
	var first time.Time
	for s, c := range r.leaking {
		if slices.Contains(functions, s.function) && (first.IsZero() || c.first.Before(first)) {
			first = c.first
		}
	}
	return first, !first.IsZero()
}

// goEnv is a go env variable, "" when go cannot say.
func goEnv(name string) string {
	out, _ := exec.Command("go", "env", name).Output()
	return strings.TrimSpace(string(out))
}
