//go:build linux && e2e

package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
)

// The leaker child: opens the number of pipes each line of its stdin
// asks for, answers OK, and holds them until its stdin closes.
const leakerEnv = "KMEMLEAK_E2E_LEAKER"

func runLeaker() {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		n, err := strconv.Atoi(in.Text())
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		// Never closed: held until the leaker exits.
		for range n {
			var p [2]int
			if err := unix.Pipe2(p[:], 0); err != nil {
				fmt.Println(err)
				os.Exit(1)
			}
		}
		fmt.Println("OK")
	}
}

// leaker is the child, with how many pipes it held when.
type leaker struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	pid    int
	held   []heldAt
}

type heldAt struct {
	at    time.Time
	pipes int
}

// startLeaker runs the test binary as the leaker, named name, in the
// cgroup cgroupFD.
func startLeaker(t *testing.T, name string, cgroupFD int) *leaker {
	bin := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.Symlink(os.Args[0], bin))
	cmd := exec.Command(bin, "-test.run=^TestCollectorWritesToPrometheus$")
	cmd.Env = append(os.Environ(), leakerEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgroupFD}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	l := &leaker{cmd: cmd, stdin: stdin, stdout: bufio.NewReader(stdout), pid: cmd.Process.Pid}
	t.Cleanup(l.stop)
	return l
}

func (l *leaker) leak(t *testing.T, n int) {
	_, err := fmt.Fprintln(l.stdin, n)
	require.NoError(t, err)
	line, err := l.stdout.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "OK\n", line)
	l.held = append(l.held, heldAt{time.Now(), l.pipes() + n})
}

func (l *leaker) pipes() int {
	if len(l.held) == 0 {
		return 0
	}
	return l.held[len(l.held)-1].pipes
}

// heldBefore is how many pipes the leaker held at least since d ago.
func (l *leaker) heldBefore(d time.Duration) int {
	n := 0
	for _, h := range l.held {
		if time.Since(h.at) >= d {
			n = h.pipes
		}
	}
	return n
}

// stop closes the leaker's stdin: it exits, and its pipes are freed.
func (l *leaker) stop() {
	l.stdin.Close()
	_ = l.cmd.Wait()
}

// containerCgroup makes a cgroup named like a Docker container's scope
// under the cgroup v2 root, and returns its path, container id and fd.
func containerCgroup(t *testing.T) (path, id string, fd int) {
	root, err := owner.CgroupRoot("/proc/self/mountinfo")
	require.NoError(t, err)
	require.NotEmpty(t, root, "no cgroup v2 hierarchy is mounted")
	raw := make([]byte, 32)
	rand.Read(raw)
	id = hex.EncodeToString(raw)
	path, fd = kerneltest.Cgroup(t, root, "docker-"+id+".scope")
	return path, id, fd
}

// prometheus is the test's Prometheus server.
type prometheus struct {
	t    *testing.T
	base string // http://127.0.0.1:port
}

// startPrometheus runs Debian's prometheus on a loopback port with the
// remote-write receiver, a temporary storage folder, and the alerting
// rules of examples/prometheus/alerts.yaml evaluated every second.
func startPrometheus(t *testing.T) *prometheus {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("Prometheus is not installed: apt-get install prometheus (Debian's package; make e2e installs it)")
	}
	rules, err := filepath.Abs(filepath.Join("..", "examples", "prometheus", "alerts.yaml"))
	require.NoError(t, err)
	dir := t.TempDir()
	config := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, "global:\n  evaluation_interval: 1s\nrule_files:\n  - %s\n", rules), 0o600))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()

	runUntilTheEnd(t, "prometheus", exec.Command(bin, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-remote-write-receiver"))
	p := &prometheus{t: t, base: "http://" + addr}
	require.Eventually(t, func() bool {
		resp, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 200*time.Millisecond, "Prometheus did not become ready")
	return p
}

// sample is one series of a query's answer: its labels and its latest
// value, or its values over time for a range query.
type sample struct {
	Metric map[string]string
	Value  float64
	Values []float64
}

// get calls the HTTP API and decodes its data.
func (p *prometheus) get(path string, params url.Values, data any) {
	p.t.Helper()
	resp, err := http.Get(p.base + path + "?" + params.Encode())
	require.NoError(p.t, err)
	defer resp.Body.Close()
	var body struct {
		Status string
		Error  string
		Data   json.RawMessage
	}
	require.NoError(p.t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(p.t, "success", body.Status, "%s %v: %s", path, params, body.Error)
	require.NoError(p.t, json.Unmarshal(body.Data, data))
}

// query runs an instant PromQL query now.
func (p *prometheus) query(q string) []sample {
	p.t.Helper()
	return p.queryAt(q, time.Now())
}

// queryAt runs an instant PromQL query at a given time.
func (p *prometheus) queryAt(q string, at time.Time) []sample {
	p.t.Helper()
	var data struct {
		Result []struct {
			Metric map[string]string
			Value  [2]any
		}
	}
	p.get("/api/v1/query", url.Values{"query": {q}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}, &data)
	var out []sample
	for _, r := range data.Result {
		out = append(out, sample{Metric: r.Metric, Value: number(p.t, r.Value[1])})
	}
	return out
}

// queryRange runs a PromQL query over the last d, a point every step.
func (p *prometheus) queryRange(q string, d, step time.Duration) []sample {
	p.t.Helper()
	end := time.Now()
	var data struct {
		Result []struct {
			Metric map[string]string
			Values [][2]any
		}
	}
	p.get("/api/v1/query_range", url.Values{"query": {q},
		"start": {strconv.FormatInt(end.Add(-d).Unix(), 10)}, "end": {strconv.FormatInt(end.Unix(), 10)},
		"step": {strconv.Itoa(int(step.Seconds()))}}, &data)
	var out []sample
	for _, r := range data.Result {
		s := sample{Metric: r.Metric}
		for _, v := range r.Values {
			s.Values = append(s.Values, number(p.t, v[1]))
		}
		out = append(out, s)
	}
	return out
}

// names are the metric names Prometheus holds.
func (p *prometheus) names() []string {
	var names []string
	p.get("/api/v1/label/__name__/values", url.Values{}, &names)
	return names
}

// alert is an active (pending or firing) alert.
type alert struct {
	Labels      map[string]string
	Annotations map[string]string
	State       string
}

func (p *prometheus) alerts(name string, match func(map[string]string) bool) []alert {
	var data struct{ Alerts []alert }
	p.get("/api/v1/alerts", url.Values{}, &data)
	var out []alert
	for _, a := range data.Alerts {
		if a.Labels["alertname"] == name && match(a.Labels) {
			out = append(out, a)
		}
	}
	return out
}

func number(t *testing.T, v any) float64 {
	s, ok := v.(string)
	require.True(t, ok, "a sample value is a string in Prometheus's API: %v", v)
	f, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err)
	return f
}

// prometheusDoc is the page of the documentation with the metrics'
// Prometheus names, the queries and the alerts, from the repository's root.
const prometheusDoc = "docs/prometheus.md"

// docQueries are the PromQL block of prometheusDoc: title -> query.
func docQueries(t *testing.T, doc string) map[string]string {
	_, block, ok := strings.Cut(doc, "```promql\n")
	require.True(t, ok, "%s has no promql block", prometheusDoc)
	block, _, _ = strings.Cut(block, "```")
	queries := map[string]string{}
	var title string
	for line := range strings.Lines(block) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "# "):
			title = strings.TrimPrefix(line, "# ")
		case line != "":
			require.NotEmpty(t, title, "a query of %s without a title: %s", prometheusDoc, line)
			queries[title] = line
			title = ""
		}
	}
	return queries
}

// docNames are prometheusDoc's table of metric names: OTLP -> Prometheus.
func docNames(t *testing.T, doc string) map[string]string {
	names := map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(kmem\\.[a-z_.]+)` \\| `(kmem_[a-z_]+)`").FindAllStringSubmatch(doc, -1) {
		names[m[1]] = m[2]
	}
	require.NotEmpty(t, names, "%s has no table of Prometheus names", prometheusDoc)
	return names
}

func isPipeSite(labels map[string]string) bool {
	return strings.HasPrefix(labels["kmem_call_site"], "alloc_pipe_info+")
}

// The built collector, on examples/prometheus.yaml as it is (shorter
// intervals by --set), writes to a real Prometheus that loads
// examples/prometheus/alerts.yaml. A process in a container-like cgroup
// leaks pipes: the metric names are docs/prometheus.md's, the resource
// attributes arrive as labels, every query of that page answers as it says, and
// KernelMemoryLeak fires for alloc_pipe_info; when the process exits its
// series end at once (staleness markers) and the alert resolves.
func TestCollectorWritesToPrometheus(t *testing.T) {
	if os.Getenv(leakerEnv) != "" {
		runLeaker()
		return
	}
	bin := collector(t)
	prom := startPrometheus(t)
	doc, err := os.ReadFile(filepath.Join("..", prometheusDoc))
	require.NoError(t, err)
	queries, names := docQueries(t, string(doc)), docNames(t, string(doc))
	host, err := os.Hostname()
	require.NoError(t, err)
	var uts unix.Utsname
	require.NoError(t, unix.Uname(&uts))

	cmd := exec.Command(bin, "--config", filepath.Join("..", "examples", "prometheus.yaml"),
		"--set=receivers::kmemleak::collection_interval=1s",
		"--set=receivers::kmemleak::initial_delay=0s",
		"--set=receivers::kmemleak::min_age=2s",
		"--set=receivers::kmemleak::verdict::window=1m",
		"--set=receivers::kmemleak::verdict::persist=3s",
		`--set=receivers::kmemleak::pinning::directory=""`, // each run starts empty and leaves nothing pinned
		"--set=service::telemetry::metrics::level=none")
	cmd.Env = append(os.Environ(), "PROMETHEUS_URL="+prom.base)
	runUntilTheEnd(t, "collector", cmd)
	require.Eventually(t, func() bool { return len(prom.query("kmem_tracker_scan_duration_seconds")) > 0 },
		30*time.Second, 500*time.Millisecond, "no scan arrived in Prometheus")

	cgroupPath, containerID, cgroupFD := containerCgroup(t)
	const name = "kml-leaker"
	lk := startLeaker(t, name, cgroupFD)
	inContainer := func(labels map[string]string) bool { return labels["container_id"] == containerID }

	// 10 pipes a second until the leak alert fires: the verdict (window 1m,
	// persist 3s) then the rule's 2 minutes.
	start := time.Now()
	var firing []alert
	for tick := 0; ; tick++ {
		require.Less(t, time.Since(start), 5*time.Minute, "KernelMemoryLeak never fired for alloc_pipe_info; %d pipes held", lk.pipes())
		lk.leak(t, 5)
		time.Sleep(500 * time.Millisecond)
		if tick%4 != 0 {
			continue
		}
		all := prom.alerts("KernelMemoryLeak", isPipeSite)
		firing = firing[:0]
		for _, a := range all {
			if a.State == "firing" {
				firing = append(firing, a)
			}
		}
		if len(firing) > 0 {
			break
		}
	}
	t.Logf("KernelMemoryLeak fired after %s, %d pipes held: %v", time.Since(start).Round(time.Second), lk.pipes(), firing)
	for _, a := range firing {
		assert.Equal(t, host, a.Labels["host_name"])
		assert.Equal(t, "warning", a.Labels["severity"])
		assert.NotEmpty(t, a.Labels["kmem_allocator"])
		assert.NotEmpty(t, a.Labels["kmem_cache"])
		assert.Contains(t, a.Annotations["summary"], a.Labels["kmem_call_site"])
	}

	t.Run("names", func(t *testing.T) {
		have := map[string]bool{}
		for _, n := range prom.names() {
			have[n] = true
		}
		documented := map[string]bool{}
		for otlp, want := range names {
			documented[want] = true
			if want == "kmem_tracker_untraced_caches" {
				continue // only while a cache is untraced
			}
			assert.True(t, have[want], "%s names %s %s; Prometheus has no such metric", prometheusDoc, otlp, want)
		}
		for n := range have {
			if strings.HasPrefix(n, "kmem_") {
				assert.True(t, documented[n], "Prometheus has %s, which the table of %s lacks", n, prometheusDoc)
			}
		}
	})

	t.Run("resource attributes as labels", func(t *testing.T) {
		series := prom.query(`kmem_outstanding_objects{container_id="` + containerID + `"}`)
		require.NotEmpty(t, series)
		for _, s := range series {
			m := s.Metric
			assert.Equal(t, host, m["host_name"])
			assert.Equal(t, "linux", m["os_type"])
			assert.Equal(t, unix.ByteSliceToString(uts.Release[:]), m["os_version"])
			assert.NotEmpty(t, m["kmem_attach_mode"])
			assert.Equal(t, "task", m["kmem_context"])
			assert.Equal(t, strconv.Itoa(lk.pid), m["process_pid"])
			assert.Equal(t, name, m["process_executable_name"])
			assert.Equal(t, cgroupPath, m["process_linux_cgroup"])
			for _, l := range []string{"kmem_allocator", "kmem_cache", "kmem_call_site", "kmem_stack_hash", "kmem_verdict"} {
				assert.NotEmpty(t, m[l], l)
			}
			assert.NotContains(t, m, "otel_scope_name", "disable_scope_info")
		}
		// Between what the leaker held before the last min_age, scan and
		// export (15 s is ample) and what it holds now: two objects a pipe.
		atSite := prom.query(`sum(kmem_outstanding_objects{container_id="` + containerID + "\",kmem_call_site=~`alloc_pipe_info\\+.*`})")
		require.Len(t, atSite, 1)
		assert.GreaterOrEqual(t, atSite[0].Value, float64(2*lk.heldBefore(15*time.Second)))
		assert.LessOrEqual(t, atSite[0].Value, float64(2*lk.pipes()))
	})

	t.Run("tracker health", func(t *testing.T) {
		for _, metric := range []string{"kmem_tracker_dropped_total", "kmem_allocations_total", "kmem_tracker_objects"} {
			byAllocator := map[string]float64{}
			for _, s := range prom.query(metric + `{host_name="` + host + `"}`) {
				byAllocator[s.Metric["kmem_allocator"]] = s.Value
			}
			assert.Contains(t, byAllocator, "slab", metric)
			assert.Contains(t, byAllocator, "kmalloc", metric)
			if metric != "kmem_tracker_dropped_total" {
				assert.Positive(t, byAllocator["slab"]+byAllocator["kmalloc"], metric)
			}
		}
		scan := prom.query(`kmem_tracker_scan_duration_seconds{host_name="` + host + `"}`)
		require.Len(t, scan, 1)
		assert.Positive(t, scan[0].Value)
		leaking := prom.query(`kmem_groups{host_name="` + host + `",kmem_verdict="leaking"}`)
		require.Len(t, leaking, 1)
		assert.GreaterOrEqual(t, leaking[0].Value, 1.0, "the node's call sites with the leaking verdict")
	})

	t.Run("documented queries", func(t *testing.T) {
		checks := map[string]func(t *testing.T, q string){
			"Leaking call sites per node, in bytes": func(t *testing.T, q string) {
				assert.True(t, anyPositive(prom.query(q), func(m map[string]string) bool { return m["host_name"] == host && isPipeSite(m) }))
			},
			"The ten call sites of each node holding the most long-lived memory, whatever their verdict": func(t *testing.T, q string) {
				mine := 0
				for _, s := range prom.query(q) {
					if s.Metric["host_name"] == host {
						mine++
					}
				}
				assert.True(t, mine >= 1 && mine <= 10, "%d call sites for this node", mine)
			},
			"Leaking or growing memory per container (attribution), in bytes": func(t *testing.T, q string) {
				assert.True(t, anyPositive(prom.query(q), inContainer))
			},
			"Objects outstanding at one call site, per node": func(t *testing.T, q string) {
				var n float64
				for _, s := range prom.query(q) {
					if s.Metric["host_name"] == host {
						n = s.Value
					}
				}
				assert.GreaterOrEqual(t, n, float64(2*lk.heldBefore(15*time.Second)))
			},
			"Bytes held by leaking groups per node, over time (graph it)": func(t *testing.T, q string) {
				// Other call sites may come and go as leaking: what is sure
				// is a point every 5 s and the leaking pipes' bytes in the
				// last (their objects only grow).
				var pipeBytes float64
				for _, s := range prom.query(`kmem_outstanding_bytes{kmem_verdict="leaking",kmem_call_site=~"alloc_pipe_info\\+.*"}`) {
					pipeBytes += s.Value
				}
				require.Positive(t, pipeBytes)
				var values []float64
				for _, s := range prom.queryRange(q, time.Minute, 5*time.Second) {
					if s.Metric["host_name"] == host {
						values = s.Values
					}
				}
				require.GreaterOrEqual(t, len(values), 12, "a point every 5 s over the last minute")
				assert.GreaterOrEqual(t, values[len(values)-1], pipeBytes)
			},
			"Growth per call site, in bytes per minute (the receiver's slope times bytes per object)": func(t *testing.T, q string) {
				assert.True(t, anyPositive(prom.query(q), func(m map[string]string) bool { return m["host_name"] == host && isPipeSite(m) }))
			},
			"Allocations the tracker dropped (live table full) in the last 10 minutes": func(t *testing.T, q string) {
				allocators := map[string]bool{}
				for _, s := range prom.query(q) {
					if s.Metric["host_name"] == host {
						allocators[s.Metric["kmem_allocator"]] = true
					}
				}
				assert.Equal(t, map[string]bool{"slab": true, "kmalloc": true}, allocators)
			},
			"Nodes whose tracker has untraced caches (leaks in them go unseen)": func(t *testing.T, q string) {
				at := time.Now()
				caches := len(prom.queryAt(`kmem_tracker_untraced_caches{host_name="`+host+`"}`, at))
				var counted float64
				for _, s := range prom.queryAt(q, at) {
					if s.Metric["host_name"] == host {
						counted = s.Value
					}
				}
				assert.Equal(t, float64(caches), counted)
			},
		}
		for title, q := range queries {
			check, ok := checks[title]
			if !assert.True(t, ok, "%s has a query this test does not run: %q", prometheusDoc, title) {
				continue
			}
			t.Run(title, func(t *testing.T) { t.Logf("%s", q); check(t, q) })
		}
		for title := range checks {
			assert.Contains(t, queries, title, "%s lost a query", prometheusDoc)
		}
	})

	// The leaker exits and its pipes are freed: the next scan ends their
	// series (without staleness markers Prometheus would answer with their
	// last values for 5 minutes) and the alert resolves.
	lk.stop()
	stopped := time.Now()
	// Its pipes, not all it allocated: the dentries of the files it opened
	// stay cached after it.
	pipes := `kmem_outstanding_objects{container_id="` + containerID + "\",kmem_call_site=~`alloc_pipe_info\\+.*`}"
	require.Eventually(t, func() bool { return len(prom.query(pipes)) == 0 },
		30*time.Second, time.Second, "the exited container's series did not end")
	t.Logf("the container's series ended %s after it exited", time.Since(stopped).Round(time.Second))
	require.Eventually(t, func() bool { return len(prom.alerts("KernelMemoryLeak", isPipeSite)) == 0 },
		time.Minute, time.Second, "KernelMemoryLeak for alloc_pipe_info did not resolve")
	t.Logf("KernelMemoryLeak resolved %s after the container exited", time.Since(stopped).Round(time.Second))
}

func anyPositive(series []sample, match func(map[string]string) bool) bool {
	for _, s := range series {
		if match(s.Metric) && s.Value > 0 {
			return true
		}
	}
	return false
}
