//go:build linux && (amd64 || arm64)

package main

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver"
	"github.com/kmemleak/kmemleakreceiver/bpf"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/tracker"
)

// A serverWorkload is a real program's work, measured as a rate.
type serverWorkload struct {
	name    string
	unit    string
	measure func() (float64, error)
}

// runServer measures what the probes cost two real programs: nginx serving
// a small file to wrk, where allocations are mostly skbuffs that live
// microseconds, and tar walking a big tree, where they are path lookups.
// The syscall loop of the overhead section keeps the live table in cache;
// these do not.
func runServer(c config) (err error) {
	if why := serverToolsMissing(); why != "" {
		fmt.Println("server: skipped:", why)
		return nil
	}
	if c.serverWindow < time.Second {
		return fmt.Errorf("-server-window %v: wrk runs whole seconds", c.serverWindow)
	}
	web, err := startNginx()
	if err != nil {
		return err
	}
	defer closeInto(&err, web)
	entries, err := countEntries(c.serverTree)
	if err != nil {
		return err
	}
	workloads := []serverWorkload{
		{name: "nginx", unit: "requests/s", measure: func() (float64, error) { return runWrk(web.url, c.serverWindow) }},
		{name: "tar", unit: "files/s", measure: func() (float64, error) { return runTar(c.serverTree, entries, c.serverWindow) }},
	}
	// Once unmeasured: nginx's first requests, and tar's first walks (the
	// tree's dentries and inodes are cached from countEntries's walk on).
	for _, w := range workloads {
		if _, err := w.measure(); err != nil {
			return fmt.Errorf("warming up %s: %w", w.name, err)
		}
	}

	rows, skipped := serverRows()
	res := make([][][]float64, len(workloads)) // [workload][row][round]
	for i := range res {
		res[i] = make([][]float64, len(rows))
	}
	for round := range c.runs {
		fmt.Fprintf(os.Stderr, "server: round %d of %d\n", round+1, c.runs)
		if err := c.locked(func() error { return measureServerRound(rows, workloads, res) }); err != nil {
			return err
		}
	}

	fmt.Printf("server: %s (1 worker, access log off) on 127.0.0.1 serving a 1 KiB file to %s (2 threads, 32 connections), %v a measurement; %s: -cf /dev/null of %s (%d entries; no file's contents read, as GNU tar reads none into /dev/null), as many whole walks as fill %v a measurement\n",
		toolVersion("nginx", "-v"), toolVersion("wrk", "-v"), c.serverWindow, toolVersion("tar", "--version"), c.serverTree, entries, c.serverWindow)
	fmt.Printf("medians of %d rounds; within a round each row in turn, attached once for nginx then tar; cost is the median of the rounds' 1 - rate / rate with nothing attached\n", c.runs)
	for _, s := range skipped {
		fmt.Println("skipped:", s)
	}
	var costs [][]float64 // [workload][row]
	for i, w := range workloads {
		fmt.Printf("\n%s, %s:\n", w.name, w.unit)
		costs = append(costs, printServerTable(rows, res[i]))
	}
	fmt.Println()
	if err := c.locked(func() error { return printProgramStats(rows[serverDefaults], workloads) }); err != nil {
		return err
	}
	fmt.Println()
	const nginx, tar = 0, 1
	printTargets([]target{
		{what: "nginx: ours at the defaults, cost %", value: costs[nginx][serverDefaults], limit: 3},
		{what: "nginx: ours, sample_rate 100, cost %", value: costs[nginx][serverSampled], limit: 1},
		{what: "tar: ours at the defaults, cost %", value: costs[tar][serverDefaults], limit: 3},
	})
	return nil
}

// The rows of serverRows, in order.
const (
	serverNone = iota
	serverEmpty
	serverDefaults
	serverSampled
)

// serverRows are the conditions, nothing attached first: the empty
// programs on the kmem hooks are the floor of any tracker there. Ours is
// the receiver's default configuration, then the same with sample_rate
// 100; its adaptive stacks take none, as in a receiver whose scans find no
// site suspect.
func serverRows() (rows []overheadRow, skipped []string) {
	cfg := kmemleakreceiver.NewFactory().CreateDefaultConfig().(*kmemleakreceiver.Config)
	// The defaults are valid: config_test.go checks.
	mode, _ := kmem.ParseMode(cfg.Attach)
	stacks, _ := kmem.ParseStackMode(cfg.StackTraces)
	rows = []overheadRow{
		{name: rowNone, hooks: "-"},
		programRow(rowEmpty, emptyBTF),
		oursWith(mode, stacks, cfg.SampleRate, math.MaxUint32, cfg.Attribution),
		oursWith(mode, stacks, 100, math.MaxUint32, cfg.Attribution),
	}
	if why := bpftraceMissing(); why != "" {
		skipped = append(skipped, "bpftrace row: "+why)
	} else {
		rows = append(rows, bpftraceRow(false, cfg.MaxTrackedObjects))
	}
	return rows, skipped
}

// measureServerRound measures every workload under every row, in turn.
func measureServerRound(rows []overheadRow, workloads []serverWorkload, res [][][]float64) error {
	for i, row := range rows {
		err := attached(row, func() error {
			for j, w := range workloads {
				rate, err := w.measure()
				if err != nil {
					return fmt.Errorf("%s: %w", w.name, err)
				}
				res[j][i] = append(res[j][i], rate)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s: %w", row.name, err)
		}
	}
	return nil
}

// attached runs f with the row attached.
func attached(row overheadRow, f func() error) (err error) {
	if row.attach != nil {
		var probe io.Closer
		if probe, err = row.attach(); err != nil {
			return err
		}
		defer closeInto(&err, probe)
	}
	return f()
}

// printServerTable prints one workload's rows and returns each row's cost
// in percent.
func printServerTable(rows []overheadRow, rates [][]float64) []float64 {
	costs := make([]float64, len(rows))
	var cells [][]string
	for i, row := range rows {
		cost := make([]float64, len(rates[i]))
		for r := range cost {
			cost[r] = 100 * (1 - rates[i][r]/rates[serverNone][r])
		}
		costs[i] = median(cost)
		costCell := num(costs[i])
		if i == serverNone {
			costCell = "-"
		}
		each := make([]string, len(rates[i]))
		for r, v := range rates[i] {
			each[r] = num(v)
		}
		cells = append(cells, []string{row.name, num(median(rates[i])), costCell, strings.Join(each, " ")})
	}
	table(os.Stdout, "row\tmedian\tcost %\trounds", cells)
	return costs
}

// printProgramStats measures each workload once more with the row
// attached and bpf_stats on, and prints the time each of the row's
// programs took. Apart from the rounds: bpf_stats adds two clock reads to
// every run.
func printProgramStats(row overheadRow, workloads []serverWorkload) error {
	before, err := heldBPF(os.Getpid(), "prog_id")
	if err != nil {
		return err
	}
	mapsBefore, err := heldBPF(os.Getpid(), "map_id")
	if err != nil {
		return err
	}
	return attached(row, func() (err error) {
		progs, err := newPrograms(before)
		defer func() {
			for _, p := range progs {
				err = errors.Join(err, p.prog.Close())
			}
		}()
		if err != nil {
			return err
		}
		counters, err := probeCounters(mapsBefore)
		if err != nil {
			return err
		}
		if counters != nil {
			defer closeInto(&err, counters)
		}
		stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		if err != nil {
			fmt.Println("bpf_stats: not measured:", err)
			return nil
		}
		defer closeInto(&err, stats)
		for _, w := range workloads {
			if err := printWorkloadStats(row, w, progs, counters); err != nil {
				return err
			}
		}
		return nil
	})
}

// probeCounters opens the receiver's per-CPU counters (the stats map of
// bpf/kmemleak.bpf.c) among the maps this process holds that are not in
// before: the ones the row made. nil when the row has none.
func probeCounters(before []heldObject) (*ebpf.Map, error) {
	now, err := heldBPF(os.Getpid(), "map_id")
	if err != nil {
		return nil, err
	}
	for _, h := range now {
		if slices.ContainsFunc(before, func(b heldObject) bool { return b.id == h.id }) {
			continue
		}
		m, err := ebpf.NewMapFromID(ebpf.MapID(h.id))
		if err != nil {
			continue // closed meanwhile
		}
		if info, err := m.Info(); err == nil && info.Name == bpf.KmemleakMapStats && m.ValueSize() == uint32(unsafe.Sizeof(bpf.KmemleakCounters{})) {
			return m, nil
		}
		_ = m.Close() // only looked at
	}
	return nil, nil
}

// slabCounters sums the slab and kmalloc counters of every CPU.
func slabCounters(m *ebpf.Map) (kmem.Counters, error) {
	var all []bpf.KmemleakCounters
	for _, a := range []bpf.KmemleakAllocator{bpf.KmemleakAllocatorALLOCATOR_SLAB, bpf.KmemleakAllocatorALLOCATOR_KMALLOC} {
		var perCPU []bpf.KmemleakCounters
		if err := m.Lookup(uint32(a), &perCPU); err != nil {
			return kmem.Counters{}, fmt.Errorf("reading the probes' counters: %w", err)
		}
		all = append(all, perCPU...)
	}
	return tracker.SumCounters(all), nil
}

// loadedProgram is one of the programs a row loaded.
type loadedProgram struct {
	name string
	prog *ebpf.Program
}

// newPrograms opens the programs this process holds that are not in
// before: the ones the row loaded, which the row keeps to itself.
func newPrograms(before []heldObject) ([]loadedProgram, error) {
	now, err := heldBPF(os.Getpid(), "prog_id")
	if err != nil {
		return nil, err
	}
	var out []loadedProgram
	for _, h := range now {
		if slices.ContainsFunc(before, func(b heldObject) bool { return b.id == h.id }) {
			continue
		}
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(h.id))
		if err != nil {
			return out, fmt.Errorf("opening program %d: %w", h.id, err)
		}
		out = append(out, loadedProgram{name: fmt.Sprintf("program %d", h.id), prog: p})
		if info, err := p.Info(); err == nil {
			out[len(out)-1].name = info.Name
		}
	}
	return out, nil
}

// printWorkloadStats measures the workload once, and prints what each
// program ran during it.
func printWorkloadStats(row overheadRow, w serverWorkload, progs []loadedProgram, counters *ebpf.Map) error {
	start, err := programStats(progs)
	if err != nil {
		return err
	}
	var startCounts kmem.Counters
	if counters != nil {
		if startCounts, err = slabCounters(counters); err != nil {
			return err
		}
	}
	began := time.Now()
	rate, err := w.measure()
	if err != nil {
		return fmt.Errorf("%s: %w", w.name, err)
	}
	took := time.Since(began)
	end, err := programStats(progs)
	if err != nil {
		return err
	}
	type use struct {
		name string
		runs uint64
		cpu  time.Duration
	}
	uses := make([]use, len(progs))
	var total use
	for i, p := range progs {
		uses[i] = use{p.name, end[i].RunCount - start[i].RunCount, end[i].Runtime - start[i].Runtime}
		total.runs += uses[i].runs
		total.cpu += uses[i].cpu
	}
	slices.SortFunc(uses, func(a, b use) int { return cmp.Compare(b.cpu, a.cpu) })
	cells := make([][]string, 0, len(uses)+1)
	for _, u := range append(uses, use{"all", total.runs, total.cpu}) {
		perRun := "-"
		if u.runs > 0 {
			perRun = num(float64(u.cpu.Nanoseconds()) / float64(u.runs))
		}
		cells = append(cells, []string{u.name, strconv.FormatUint(u.runs, 10), perRun, num(u.cpu.Seconds())})
	}
	fmt.Printf("bpf_stats of %s during one more %s measurement (%s %s with bpf_stats on): %s CPU-seconds in the programs over %s s on %d CPUs, %s%% of the machine\n",
		row.name, w.name, num(rate), w.unit, num(total.cpu.Seconds()), num(took.Seconds()), runtime.NumCPU(),
		num(100*total.cpu.Seconds()/(took.Seconds()*float64(runtime.NumCPU()))))
	table(os.Stdout, "program\truns\tns/run\tCPU-s", cells)
	if counters == nil {
		return nil
	}
	endCounts, err := slabCounters(counters)
	if err != nil {
		return err
	}
	allocs, promoted := endCounts.Allocs-startCounts.Allocs, endCounts.Promoted-startCounts.Promoted
	fmt.Printf("slab and kmalloc: %d allocations tracked, %d of them moved from the young area into the live table (%s%%); %d frees, %d of untracked objects; %d missed frees; %d allocations not tracked for a race with a move\n",
		allocs, promoted, num(100*float64(promoted)/float64(max(allocs, 1))), endCounts.Frees-startCounts.Frees,
		endCounts.UntrackedFrees-startCounts.UntrackedFrees, endCounts.MissedFrees-startCounts.MissedFrees, endCounts.Raced-startCounts.Raced)
	return nil
}

func programStats(progs []loadedProgram) ([]*ebpf.ProgramStats, error) {
	out := make([]*ebpf.ProgramStats, len(progs))
	for i, p := range progs {
		s, err := p.prog.Stats()
		if err != nil {
			return nil, fmt.Errorf("reading the stats of %s: %w", p.name, err)
		}
		out[i] = s
	}
	return out, nil
}

// serverToolsMissing installs nginx and wrk from the distribution if
// either is missing, as `make bench` installs bpftrace, and says why the
// section cannot run, or "" if it can.
func serverToolsMissing() string {
	missing := func() bool {
		_, err1 := exec.LookPath("nginx")
		_, err2 := exec.LookPath("wrk")
		return err1 != nil || err2 != nil
	}
	if !missing() {
		return ""
	}
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "nginx", "wrk"}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Sprintf("nginx or wrk is not installed, and apt-get %s failed (%v): %s", args[0], err, bytes.TrimSpace(out))
		}
	}
	if missing() {
		return "nginx or wrk is not on PATH after apt-get install nginx wrk"
	}
	return ""
}

// toolVersion is the first line a tool prints about its version.
func toolVersion(name string, args ...string) string {
	// nginx prints it on stderr; wrk prints it, then its usage, and
	// exits 1.
	out, _ := exec.Command(name, args...).CombinedOutput()
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	// wrk's goes on with its event loop and copyright.
	first, _, _ = strings.Cut(first, " [")
	return strings.TrimPrefix(first, "nginx version: ")
}

// nginxServer is a private nginx: its own configuration, files and port.
type nginxServer struct {
	cmd    *exec.Cmd
	dir    string
	url    string
	exited chan error
}

const nginxConf = `worker_processes 1;
daemon off;
# The worker reads the bench's temporary directory, which only root can.
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events {}
http {
	access_log off;
	client_body_temp_path %[1]s/client_body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen 127.0.0.1:%[2]d;
		root %[1]s;
	}
}
`

// startNginx starts nginx and returns once it serves the file.
func startNginx() (_ *nginxServer, err error) {
	dir, err := os.MkdirTemp("", "kmemleak-bench-nginx-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir) // err says what failed
		}
	}()
	page := bytes.Repeat([]byte("x"), 1024)
	if err := os.WriteFile(filepath.Join(dir, "1k"), page, 0o600); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, port), 0o600); err != nil {
		return nil, err
	}
	// -e: nginx opens the error log it was built with (a system file, or
	// stderr on Debian) before it reads the configuration.
	cmd := exec.Command("nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting nginx: %w", err)
	}
	n := &nginxServer{cmd: cmd, dir: dir, url: fmt.Sprintf("http://127.0.0.1:%d/1k", port), exited: make(chan error, 1)}
	go func() { n.exited <- cmd.Wait() }()
	if err := n.waitServing(len(page)); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		_ = n.stop() // err says what failed
		return nil, fmt.Errorf("%w; nginx's error log: %s", err, bytes.TrimSpace(log))
	}
	return n, nil
}

// freePort is a loopback port no one listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }() // only its port was wanted
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (n *nginxServer) waitServing(size int) error {
	// No idle connection left open to the worker during the measurements.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(n.url)
		if err == nil {
			body, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close() // read whole
			if err == nil && resp.StatusCode == http.StatusOK && len(body) == size {
				return nil
			}
			return fmt.Errorf("nginx answered %s with %d bytes (%v)", resp.Status, len(body), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nginx does not serve %s: %w", n.url, err)
		}
		select {
		case err := <-n.exited:
			return fmt.Errorf("nginx exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends nginx. SIGTERM, not SIGKILL: the master ends its worker.
func (n *nginxServer) stop() error {
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case err := <-n.exited:
		return err
	case <-time.After(10 * time.Second):
		return errors.New("nginx did not exit within 10 s of SIGTERM")
	}
}

func (n *nginxServer) Close() error {
	return errors.Join(n.stop(), os.RemoveAll(n.dir))
}

// runWrk loads url for the window and returns the requests per second.
func runWrk(url string, window time.Duration) (float64, error) {
	out, err := exec.Command("wrk", "-t2", "-c32", fmt.Sprintf("-d%ds", int(window.Seconds())), url).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %w: %s", err, bytes.TrimSpace(out))
	}
	// Error pages are cheaper than the file: a rate with them is not the
	// same work.
	if bytes.Contains(out, []byte("Non-2xx or 3xx responses")) {
		return 0, fmt.Errorf("wrk got errors from nginx: %s", bytes.TrimSpace(out))
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(line, "Requests/sec:"); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no Requests/sec in wrk's output: %s", bytes.TrimSpace(out))
}

// countEntries counts what tar archives of the tree: every file,
// directory and link, the tree itself included.
func countEntries(tree string) (int, error) {
	n := 0
	err := filepath.WalkDir(tree, func(_ string, _ fs.DirEntry, err error) error {
		n++
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("counting the files of %s: %w", tree, err)
	}
	return n, nil
}

// runTar walks the tree with tar, whole, until the window is over, and
// returns the files per second.
func runTar(tree string, entries int, window time.Duration) (float64, error) {
	start := time.Now()
	walks := 0
	for walks == 0 || time.Since(start) < window {
		// Relative names: tar warns about absolute ones.
		out, err := exec.Command("tar", "-cf", "/dev/null", "-C", filepath.Dir(tree), filepath.Base(tree)).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("tar: %w: %s", err, bytes.TrimSpace(out))
		}
		walks++
	}
	return float64(walks*entries) / time.Since(start).Seconds(), nil
}
