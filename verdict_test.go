//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
)

// A labelled workload: kernel objects made and kept, or not, at a pace,
// from a call site of their own (the function, as this kernel names it).
type labelled struct {
	name     string
	function string // the call site's function: each workload has its own
	leaks    bool
	within   time.Duration // a leak must be found within this of the start
	// step runs every tick, i from 0; it returns the fds to keep.
	tick time.Duration
	step func(i int, held []int) ([]int, error)
}

// The suite, run side by side: two leaks and four workloads that keep
// objects long without leaking. Their system calls are ones other
// programs seldom make: a VM or a service starting meanwhile (qemu makes
// signalfds, eventfds and epoll instances, and keeps them for its life)
// would add a step to a group that is meant to be steady.
var labelledWorkloads = []labelled{
	{
		name: "fast leak: 20 pipes a second, kept", function: "alloc_pipe_info", leaks: true, within: time.Minute,
		tick: 500 * time.Millisecond,
		step: func(_ int, held []int) ([]int, error) {
			for range 10 {
				var p [2]int
				if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
					return held, err
				}
				held = append(held, p[0], p[1])
			}
			return held, nil
		},
	},
	{
		name: "slow leak: a userfaultfd every 3 s, kept", function: "new_userfaultfd", leaks: true, within: 3 * time.Minute,
		tick: 3 * time.Second,
		step: func(_ int, held []int) ([]int, error) {
			fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC, 0, 0)
			if errno != 0 {
				return held, fmt.Errorf("userfaultfd: %w", errno)
			}
			return append(held, int(fd)), nil
		},
	},
	{
		// Lifetimes spread around 10 s: some live minutes.
		name: "churning pool: 100 socket pairs, 10 replaced a second at random", function: "sk_prot_alloc",
		tick: 100 * time.Millisecond,
		step: func(i int, held []int) ([]int, error) {
			if len(held) == 200 {
				at := 2 * ((i * 7919) % 100)
				closeAll(held[at : at+2])
				held = slices.Delete(held, at, at+2)
			}
			for len(held) < 200 {
				pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return held, err
				}
				held = append(held, pair[0], pair[1])
			}
			return held, nil
		},
	},
	{
		// Shorter than verdict.persist: what rises and falls back within
		// it is never a leak. (fanotify allows 128 groups a user.)
		name: "sawtooth: 5 fanotify groups a second for 15 s, then all closed", function: "__do_sys_fanotify_init",
		tick: 200 * time.Millisecond,
		step: func(i int, held []int) ([]int, error) {
			if i%75 == 0 {
				closeAll(held)
				held = held[:0]
			}
			fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC, unix.O_RDONLY)
			return appendFd(held, fd, err)
		},
	},
	{
		name: "fill then stop: 200 timerfds in 10 s, kept", function: "__do_sys_timerfd_create",
		tick: 50 * time.Millisecond,
		step: func(i int, held []int) ([]int, error) {
			if i >= 200 {
				return held, nil
			}
			fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
			return appendFd(held, fd, err)
		},
	},
	{
		// In the process keyring, which goes with the process.
		name: "steady: 300 keys added at once, kept", function: "user_preparse",
		tick: time.Hour,
		step: func(_ int, held []int) ([]int, error) {
			for i := range 300 {
				if _, err := unix.AddKey("user", fmt.Sprintf("kmemleak-test-%d", i), []byte("held"), unix.KEY_SPEC_PROCESS_KEYRING); err != nil {
					return held, fmt.Errorf("add_key: %w", err)
				}
			}
			return held, nil
		},
	},
}

func appendFd(held []int, fd int, err error) ([]int, error) {
	if err != nil {
		return held, err
	}
	return append(held, fd), nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// run drives w until stop closes, and closes what it holds when the test
// ends.
func (w labelled) run(t *testing.T, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	var held []int
	defer func() { t.Cleanup(func() { closeAll(held) }) }()
	tick := time.NewTicker(w.tick)
	defer tick.Stop()
	for i := 0; ; i++ {
		var err error
		if held, err = w.step(i, held); err != nil {
			t.Errorf("%s: %v", w.name, err)
			return
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// The labelled suite: real workloads side by side for three minutes, with
// a config scaled down from the defaults (scans every 2 s instead of 10,
// min_age 6 s, verdict.persist 20 s). Both leaks must be found in time,
// and none of the rest ever called leaking. The machine's own groups
// called leaking meanwhile are logged, not judged: nothing labels them.
func TestIntegrationVerdictsOnLabelledWorkloads(t *testing.T) {
	kerneltest.RequireBPF(t)
	cfg := testConfig()
	cfg.CollectionInterval = 2 * time.Second
	cfg.MinAge = 6 * time.Second
	cfg.Verdict.Window, cfg.Verdict.Persist = 5*time.Minute, 20*time.Second
	cfg.StackTraces = "off" // groups per call site: each workload's own
	require.NoError(t, cfg.Validate())
	p := startReceiver(t, cfg)
	waitForScan(t, p.metrics, "a first scan", func(map[string]int64) bool { return true })

	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for _, w := range labelledWorkloads {
		wg.Add(1)
		go w.run(t, stop, &wg)
	}
	services := startServices(t, stop, 4*time.Second)
	time.Sleep(3 * time.Minute)
	close(stop)
	wg.Wait()
	<-services

	found := map[string]time.Duration{} // function -> first leaking verdict, from the start
	background := map[string]int64{}    // unlabelled functions called leaking -> most objects
	var seen bool
	for _, md := range p.metrics.AllMetrics() {
		at, ok := scanTime(md)
		if !ok || at.Before(start) {
			continue
		}
		for fn, states := range verdictsByFunction(md) {
			seen = seen || fn == labelledWorkloads[0].function
			if states["leaking"] == 0 {
				continue
			}
			if _, first := found[fn]; !first {
				found[fn] = at.Sub(start)
			}
			background[fn] = max(background[fn], states["leaking"])
		}
	}
	require.True(t, seen, "no scan named the fast leak's call site %s", labelledWorkloads[0].function)

	var truePositives, falsePositives, leaks int
	for _, w := range labelledWorkloads {
		delete(background, w.function)
		at, called := found[w.function]
		switch {
		case w.leaks:
			leaks++
			if called {
				truePositives++
			}
			t.Logf("%-70s leak, found after %v", w.name, roundOrNever(at, called))
			assert.True(t, called && at <= w.within, "%s: leak found after %v, want within %v", w.name, roundOrNever(at, called), w.within)
		default:
			if called {
				falsePositives++
			}
			t.Logf("%-70s no leak, called one after %v", w.name, roundOrNever(at, called))
			assert.False(t, called, "%s: called leaking after %v", w.name, at)
		}
	}
	// Services started: their task structures grow, explained by the live
	// tasks that hold them, never a leak.
	explained := map[string]string{}
	for _, md := range p.metrics.AllMetrics() {
		if at, ok := scanTime(md); !ok || at.Before(start) {
			continue
		}
		for _, dp := range outstandingObjects(md) {
			site, _ := dp.Attributes().Get("kmem.call_site")
			by, _ := dp.Attributes().Get("kmem.growth.explained_by")
			fn, _, _ := strings.Cut(site.Str(), "+")
			if slices.Contains(processSites, fn) && by.Str() != "none" {
				explained[fn] = by.Str()
			}
		}
	}
	for _, fn := range processSites {
		_, called := found[fn]
		assert.False(t, called, "process creation's %s called leaking while services started: %s", fn, leakReason(p.logs.AllLogs(), fn))
		delete(background, fn)
	}
	t.Logf("process creation's sites whose growth was explained: %v", explained)
	assert.Contains(t, slices.Collect(maps.Values(explained)), "live_tasks", "no process creation site was explained by live tasks")

	// The fast leak's events say who holds it.
	reason := leakReason(p.logs.AllLogs(), labelledWorkloads[0].function)
	assert.Contains(t, reason, fmt.Sprintf("(pid %d), its open files", os.Getpid()), "the fast leak's reason")

	precision := float64(truePositives) / float64(max(truePositives+falsePositives, 1))
	recall := float64(truePositives) / float64(leaks)
	t.Logf("precision %.2f, recall %.2f over %d labelled workloads; the machine's own groups called leaking: %v",
		precision, recall, len(labelledWorkloads), slices.Sorted(maps.Keys(background)))
}

// processSites are the functions that allocate a process's own
// structures when it is forked and exec'd, as the kernels tested name them.
var processSites = []string{
	"dup_task_struct", "copy_process", "alloc_pid", "copy_signal", "copy_sighand", "copy_files", "dup_fd",
	"copy_fs", "prepare_creds", "prepare_exec_creds", "dup_mm", "mm_alloc", "vm_area_dup", "vm_area_alloc",
	"anon_vma_fork", "anon_vma_clone", "__anon_vma_prepare", "alloc_bprm", "security_task_alloc",
	"security_prepare_creds", "lsm_blob_alloc", "mas_alloc_nodes", "mm_init",
}

// startServices starts a long-lived process every interval until stop
// closes; they are killed when the test ends. The returned channel closes
// when it stops starting them.
func startServices(t *testing.T, stop <-chan struct{}, interval time.Duration) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			cmd := exec.Command("sleep", "3600")
			if err := cmd.Start(); err != nil {
				t.Errorf("starting a service: %v", err)
				return
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return done
}

// leakReason is the reason of the last leak event of a call site's
// function.
func leakReason(logs []plog.Logs, function string) string {
	var reason string
	for lr := range logRecords(logs) {
		site, _ := lr.Attributes().Get("kmem.call_site")
		state, _ := lr.Attributes().Get("kmem.verdict")
		r, _ := lr.Attributes().Get("kmem.verdict.reason")
		if fn, _, _ := strings.Cut(site.Str(), "+"); fn == function && state.Str() == "leaking" {
			cache, _ := lr.Attributes().Get("kmem.cache")
			reason = r.Str() + " (" + cache.Str() + ")"
		}
	}
	return reason
}

func roundOrNever(d time.Duration, ok bool) string {
	if !ok {
		return "never"
	}
	return fmt.Sprint(d.Round(time.Second))
}

// scanTime is when a scan's metrics were taken.
func scanTime(md pmetric.Metrics) (time.Time, bool) {
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				if m.Name() == "kmem.tracker.scan.duration" && m.Gauge().DataPoints().Len() > 0 {
					return m.Gauge().DataPoints().At(0).Timestamp().AsTime(), true
				}
			}
		}
	}
	return time.Time{}, false
}
