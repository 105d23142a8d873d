//go:build linux && (amd64 || arm64)

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"syscall"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"

	"github.com/kmemleak/kmemleakreceiver"
	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
)

// childArg makes the command run a receiver, the collector whose memory
// and CPU time the parent measures from outside, in a process of its own so
// that nothing of the bench is counted.
const childArg = "receiver-child"

// The child's protocol on stdout: "ready" once the probes are attached and
// the table filled, then "scan <seconds> <bytes>" for every scan: its
// duration as the receiver measured it, and the live heap after a garbage
// collection. It runs until its stdin closes.
const (
	childReady = "ready"
	childScan  = "scan"
)

func runChild(args []string) (err error) {
	fs := flag.NewFlagSet(childArg, flag.ContinueOnError)
	maxObjects := fs.Int("max-tracked-objects", 1_000_000, "max_tracked_objects")
	interval := fs.Duration("interval", 10*time.Second, "collection_interval")
	fill := fs.Int("fill", 0, "synthetic objects to insert into the live table before the first scan")
	if err := fs.Parse(args); err != nil {
		return err
	}
	signal.Ignore(syscall.SIGINT) // the parent ends the child, by closing stdin

	f := kmemleakreceiver.NewFactory()
	cfg := f.CreateDefaultConfig().(*kmemleakreceiver.Config)
	// A run starts from empty tables, never from the last run's.
	cfg.Pinning.Directory = ""
	cfg.MaxTrackedObjects = *maxObjects
	cfg.CollectionInterval = *interval
	// Time to fill the table before the first scan.
	cfg.InitialDelay = 2 * time.Second
	// The verdicts keep a window of history per call site: the shortest
	// window fills within the first ten scans, so that the scans after
	// show the steady state, as 30 minutes of scans would in production.
	cfg.Verdict.Window = 10 * *interval
	cfg.Verdict.Persist = cfg.Verdict.Window / 2
	if err := cfg.Validate(); err != nil {
		return err
	}
	set := receivertest.NewNopSettings(metadata.Type)
	set.Logger = zap.NewNop()
	next, err := consumer.NewMetrics(reportScan)
	if err != nil {
		return err
	}
	ctx := context.Background()
	rcv, err := f.CreateMetrics(ctx, set, cfg, next)
	if err != nil {
		return err
	}
	if err := rcv.Start(ctx, componenttest.NewNopHost()); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, rcv.Shutdown(ctx)) }()
	if *fill > 0 {
		live, err := liveTable(uint32(*maxObjects))
		if err != nil {
			return err
		}
		err = errors.Join(fillSynthetic(live, *fill), live.Close())
		if err != nil {
			return err
		}
	}
	fmt.Println(childReady)
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}

// reportScan prints the duration of the scan that made md.
func reportScan(_ context.Context, md pmetric.Metrics) error {
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				if m.Name() == "kmem.tracker.scan.duration" {
					// Collected first, so that the live heap is
					// exact rather than as of whichever scan the
					// collector last ran in.
					runtime.GC()
					heap := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
					metrics.Read(heap)
					fmt.Println(childScan, m.Gauge().DataPoints().At(0).DoubleValue(), heap[0].Value.Uint64())
				}
			}
		}
	}
	return nil
}
