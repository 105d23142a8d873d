//go:build linux && (amd64 || arm64)

// Command kmemleak-soak runs the kmemleak receiver in-process for a while,
// optionally under a mixed allocation load, and reports what a long run
// must not show: a growing RSS, leaked file descriptors or goroutines,
// dropped objects, a filling stack map, scan errors.
//
//	sudo go run ./cmd/kmemleak-soak -duration 30m -stacks always
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"

	"github.com/kmemleak/kmemleakreceiver"
	"github.com/kmemleak/kmemleakreceiver/internal/churn"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

func main() {
	duration := flag.Duration("duration", 10*time.Minute, "how long to run")
	every := flag.Duration("every", time.Minute, "how often to print a line")
	stacks := flag.String("stacks", "adaptive", "stack_traces: adaptive, always or off")
	load := flag.Bool("load", false, "run a fork/exec, file and loopback-TCP churn meanwhile")
	maxObjects := flag.Int("max-tracked-objects", 1_000_000, "max_tracked_objects")
	allocators := flag.String("allocators", "slab,kmalloc", "allocators, comma-separated: slab, kmalloc, page, percpu")
	flag.Parse()
	if err := run(*duration, *every, *stacks, *load, *maxObjects, strings.Split(*allocators, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "kmemleak-soak:", err)
		os.Exit(1)
	}
}

// latest keeps the newest value of each metric, summed over data points.
type latest struct {
	mu     sync.Mutex
	values map[string]float64
	scans  atomic.Int64
	events atomic.Int64
}

func (l *latest) consumeMetrics(_ context.Context, md pmetric.Metrics) error {
	values := map[string]float64{}
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				var points pmetric.NumberDataPointSlice
				switch m.Type() {
				case pmetric.MetricTypeGauge:
					points = m.Gauge().DataPoints()
				case pmetric.MetricTypeSum:
					points = m.Sum().DataPoints()
				default:
					continue
				}
				for _, dp := range points.All() {
					values[m.Name()] += dp.DoubleValue() + float64(dp.IntValue())
				}
			}
		}
	}
	l.mu.Lock()
	l.values = values
	l.mu.Unlock()
	l.scans.Add(1)
	return nil
}

func (l *latest) consumeLogs(_ context.Context, ld plog.Logs) error {
	l.events.Add(int64(ld.LogRecordCount()))
	return nil
}

func (l *latest) get(name string) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.values[name]
}

func run(duration, every time.Duration, stacks string, load bool, maxObjects int, allocators []string) error {
	f := kmemleakreceiver.NewFactory()
	cfg := f.CreateDefaultConfig().(*kmemleakreceiver.Config)
	// A run starts from empty tables, never from the last run's.
	cfg.Pinning.Directory = ""
	cfg.StackTraces = stacks
	cfg.MaxTrackedObjects = maxObjects
	cfg.Allocators = allocators
	if err := cfg.Validate(); err != nil {
		return err
	}
	rm, rl, l, err := createReceiver(f, cfg)
	ctx := context.Background()
	if err != nil {
		return err
	}

	fdsBefore, goroutinesBefore := openFDs(), runtime.NumGoroutine()
	if err := rm.Start(ctx, componenttest.NewNopHost()); err != nil {
		return err
	}
	if err := rl.Start(ctx, componenttest.NewNopHost()); err != nil {
		return err
	}
	stop := make(chan struct{})
	var churned atomic.Int64
	var wg sync.WaitGroup
	if load {
		wg.Go(func() {
			if err := churn.Run(stop, &churned); err != nil {
				fmt.Fprintln(os.Stderr, "kmemleak-soak: the load stopped:", err)
			}
		})
	}

	capacity := stackCapacity(cfg)
	rssStart := rssKiB()
	fmt.Printf("kmemleak-soak: %v, stack_traces %s (stack map %d entries), load %t, RSS %d KiB at start\n",
		duration, stacks, capacity, load, rssStart)
	fmt.Println("elapsed  scans  events  tracked  stacks(fill)    dropped  stack_err  untraced  rss_kib  fds  goroutines")
	maxStacks := watch(l, duration, every, capacity)
	close(stop)
	wg.Wait()
	rssEnd := rssKiB()
	shutdownStart := time.Now()
	if err := rm.Shutdown(ctx); err != nil {
		return err
	}
	if err := rl.Shutdown(ctx); err != nil {
		return err
	}
	time.Sleep(100 * time.Millisecond) // let the scan loop's goroutine exit
	fmt.Printf("summary: %d scans, %d events, churn iterations %d; RSS %d -> %d KiB; stack map at most %.0f of %d (%.1f%%); "+
		"dropped %.0f, stack errors %.0f; shutdown %v; fds %d -> %d, goroutines %d -> %d\n",
		l.scans.Load(), l.events.Load(), churned.Load(), rssStart, rssEnd, maxStacks, capacity, 100*maxStacks/float64(capacity),
		l.get("kmem.tracker.dropped"), l.get("kmem.tracker.stack_errors"), time.Since(shutdownStart).Round(time.Millisecond),
		fdsBefore, openFDs(), goroutinesBefore, runtime.NumGoroutine())
	return nil
}

// createReceiver creates the receiver for a metrics and a logs pipeline
// whose consumers keep what l reports.
func createReceiver(f receiver.Factory, cfg *kmemleakreceiver.Config) (receiver.Metrics, receiver.Logs, *latest, error) {
	set := receivertest.NewNopSettings(metadata.Type)
	logger, err := zap.NewProduction()
	if err != nil {
		return nil, nil, nil, err
	}
	set.Logger = logger
	l := &latest{}
	nextMetrics, _ := consumer.NewMetrics(l.consumeMetrics)
	nextLogs, _ := consumer.NewLogs(l.consumeLogs)
	ctx := context.Background()
	rm, err := f.CreateMetrics(ctx, set, cfg, nextMetrics)
	if err != nil {
		return nil, nil, nil, err
	}
	rl, err := f.CreateLogs(ctx, set, cfg, nextLogs)
	return rm, rl, l, err
}

// watch prints a line every every for duration, and returns the most
// stacks the map held.
func watch(l *latest, duration, every time.Duration, capacity uint32) (maxStacks float64) {
	start := time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for elapsed := time.Duration(0); elapsed < duration; {
		<-tick.C
		elapsed = time.Since(start).Round(time.Second)
		s := l.get("kmem.tracker.stacks")
		maxStacks = max(maxStacks, s)
		fmt.Printf("%7v  %5d  %6d  %7.0f  %6.0f(%4.1f%%)  %7.0f  %9.0f  %8.0f  %7d  %3d  %10d\n",
			elapsed, l.scans.Load(), l.events.Load(), l.get("kmem.tracker.objects"), s, 100*s/float64(capacity),
			l.get("kmem.tracker.dropped"), l.get("kmem.tracker.stack_errors"), l.get("kmem.tracker.untraced_caches"),
			rssKiB(), openFDs(), runtime.NumGoroutine())
	}
	return maxStacks
}

// stackCapacity is the size of the stack map the receiver creates for cfg:
// its smallest when no allocation takes a stack.
func stackCapacity(cfg *kmemleakreceiver.Config) uint32 {
	if cfg.StackTraces == kmem.StacksOff.String() && !slices.Contains(cfg.Allocators, kmem.Page.String()) {
		return 1
	}
	return tracker.StackMapEntries(uint32(cfg.MaxTrackedObjects))
}

func rssKiB() int64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return -1
}

func openFDs() int {
	entries, _ := os.ReadDir("/proc/self/fd")
	return len(entries)
}
