//go:build linux && e2e

// Package e2e runs the otelcol-kmemleak distribution that ocb built, with
// its OTLP exporters pointed at an OTLP server in the test, and checks what
// arrives. `make e2e` builds the collector and runs it; it needs root.
package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // the otlp_grpc exporter compresses by default

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
)

// collector is the binary under test, built by `make build`.
func collector(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("KMEMLEAK_COLLECTOR")
	if bin == "" {
		bin = filepath.Join("..", "_build", "otelcol-kmemleak")
	}
	_, err := os.Stat(bin)
	require.NoError(t, err, "build the collector first (make build), or set KMEMLEAK_COLLECTOR")
	require.Zero(t, os.Geteuid(), "the collector loads eBPF programs: run as root")
	return bin
}

// runUntilTheEnd starts cmd and stops it with SIGTERM when the test ends;
// if the test failed, its output goes to the test's log.
func runUntilTheEnd(t *testing.T, name string, cmd *exec.Cmd) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		if t.Failed() {
			t.Logf("%s exit: %v; output:\n%s", name, err, out.String())
		}
	})
}

// received is what the OTLP server got.
type received struct {
	mu      sync.Mutex
	metrics []pmetric.Metrics
	logs    []plog.Logs
}

func (r *received) addMetrics(md pmetric.Metrics) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.metrics = append(r.metrics, md)
}

func (r *received) addLogs(ld plog.Logs) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, ld)
}

type grpcMetrics struct {
	pmetricotlp.UnimplementedGRPCServer
	r *received
}

func (g *grpcMetrics) Export(_ context.Context, req pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	g.r.addMetrics(req.Metrics())
	return pmetricotlp.NewExportResponse(), nil
}

type grpcLogs struct {
	plogotlp.UnimplementedGRPCServer
	r *received
}

func (g *grpcLogs) Export(_ context.Context, req plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	g.r.addLogs(req.Logs())
	return plogotlp.NewExportResponse(), nil
}

// serveGRPC starts an OTLP/gRPC server on loopback and returns its address.
func serveGRPC(t *testing.T, r *received) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := grpc.NewServer()
	pmetricotlp.RegisterGRPCServer(s, &grpcMetrics{r: r})
	plogotlp.RegisterGRPCServer(s, &grpcLogs{r: r})
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

// serveHTTP starts an OTLP/HTTP (protobuf) server on loopback.
func serveHTTP(t *testing.T, r *received) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/metrics", func(w http.ResponseWriter, req *http.Request) {
		body := readBody(req)
		er := pmetricotlp.NewExportRequest()
		if err := er.UnmarshalProto(body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.addMetrics(er.Metrics())
		resp, _ := pmetricotlp.NewExportResponse().MarshalProto()
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(resp) // a response lost is an export retried
	})
	mux.HandleFunc("/v1/logs", func(w http.ResponseWriter, req *http.Request) {
		body := readBody(req)
		er := plogotlp.NewExportRequest()
		if err := er.UnmarshalProto(body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.addLogs(er.Logs())
		resp, _ := plogotlp.NewExportResponse().MarshalProto()
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(resp) // a response lost is an export retried
	})
	s := &http.Server{Handler: mux}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return "http://" + l.Addr().String()
}

// readBody reads a request body, gzip-compressed as the exporters send it
// by default, or not.
func readBody(req *http.Request) []byte {
	var r io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			return nil
		}
		r = zr
	}
	body, _ := io.ReadAll(r)
	return body
}

const configTemplate = `
receivers:
  kmemleak:
    collection_interval: 1s
    initial_delay: 0s
    min_age: 2s
    top_n: 500
    verdict:
      window: 1m
      persist: 3s
    pinning:
      directory: "" # each run starts empty and leaves nothing pinned
exporters:
  %s:
    endpoint: %s
%s
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [kmemleak]
      exporters: [%s]
    logs:
      receivers: [kmemleak]
      exporters: [%s]
`

func TestCollectorExportsOverOTLP(t *testing.T) {
	bin := collector(t)
	for _, tt := range []struct {
		exporter string
		serve    func(*testing.T, *received) string
		extra    string
	}{
		{"otlp_grpc", serveGRPC, "    tls:\n      insecure: true"},
		{"otlp_http", serveHTTP, ""},
	} {
		t.Run(tt.exporter, func(t *testing.T) {
			r := &received{}
			endpoint := tt.serve(t, r)
			config := filepath.Join(t.TempDir(), "config.yaml")
			require.NoError(t, os.WriteFile(config,
				fmt.Appendf(nil, configTemplate, tt.exporter, endpoint, tt.extra, tt.exporter, tt.exporter), 0o600))
			runUntilTheEnd(t, "collector", exec.Command(bin, "--config", config))

			// Leak pipes once the collector is up, until it says so.
			require.Eventually(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(r.metrics) > 0 },
				30*time.Second, 100*time.Millisecond, "no metrics arrived")
			var held int
			for start := time.Now(); pipeEvents(r) == 0; held += 50 {
				require.Less(t, time.Since(start), time.Minute, "no kmem.leak.suspect event called the leaking pipes leaking")
				kerneltest.OpenPipes(t, 50)
				time.Sleep(250 * time.Millisecond)
			}
			t.Logf("called leaking after %d pipes", held)
			// Two objects a pipe at alloc_pipe_info: its pipe_inode_info
			// and its buffer array.
			require.Eventually(t, func() bool { return pipeSuspects(r) >= int64(2*held) }, 30*time.Second, 200*time.Millisecond,
				"the held pipes never arrived as kmem.outstanding.objects")
			checkResourceAndNames(t, r)
		})
	}
}

// pipeSuspects is the newest kmem.outstanding.objects of alloc_pipe_info.
func pipeSuspects(r *received) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var best int64
	for _, md := range r.metrics {
		var n int64
		for _, rm := range md.ResourceMetrics().All() {
			for _, sm := range rm.ScopeMetrics().All() {
				for _, m := range sm.Metrics().All() {
					if m.Name() != "kmem.outstanding.objects" {
						continue
					}
					for _, dp := range m.Gauge().DataPoints().All() {
						if site, _ := dp.Attributes().Get("kmem.call_site"); strings.HasPrefix(site.Str(), "alloc_pipe_info+") {
							n += dp.IntValue()
						}
					}
				}
			}
		}
		best = max(best, n)
	}
	return best
}

// pipeEvents counts the events that call alloc_pipe_info's objects a leak.
func pipeEvents(r *received) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ld := range r.logs {
		for _, rl := range ld.ResourceLogs().All() {
			for _, sl := range rl.ScopeLogs().All() {
				for _, lr := range sl.LogRecords().All() {
					site, _ := lr.Attributes().Get("kmem.call_site")
					state, _ := lr.Attributes().Get("kmem.verdict")
					if lr.EventName() == "kmem.leak.suspect" && strings.HasPrefix(site.Str(), "alloc_pipe_info+") && state.Str() == "leaking" {
						n++
					}
				}
			}
		}
	}
	return n
}

// checkResourceAndNames checks the resource and that every metric DESIGN.md
// promises arrived.
func checkResourceAndNames(t *testing.T, r *received) {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := map[string]bool{}
	for _, md := range r.metrics {
		for _, rm := range md.ResourceMetrics().All() {
			res := rm.Resource().Attributes()
			for _, key := range []string{"host.name", "os.type", "os.version", "kmem.attach_mode"} {
				v, ok := res.Get(key)
				assert.True(t, ok && v.Str() != "", "resource attribute %s missing", key)
			}
			for _, sm := range rm.ScopeMetrics().All() {
				assert.Equal(t, "github.com/kmemleak/kmemleakreceiver", sm.Scope().Name())
				for _, m := range sm.Metrics().All() {
					names[m.Name()] = true
				}
			}
		}
	}
	for _, want := range []string{
		"kmem.outstanding.objects", "kmem.outstanding.bytes", "kmem.outstanding.oldest_age", "kmem.outstanding.growth",
		"kmem.allocations", "kmem.frees", "kmem.tracker.objects", "kmem.tracker.dropped", "kmem.tracker.untracked_frees",
		"kmem.tracker.stack_errors", "kmem.tracker.scan.duration", "kmem.tracker.recursion_misses",
	} {
		assert.True(t, names[want], "metric %s never arrived", want)
	}
}

func TestCollectorSubcommands(t *testing.T) {
	bin := collector(t)
	out, err := exec.Command(bin, "components").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "name: kmemleak")
	assert.Contains(t, string(out), "github.com/kmemleak/kmemleakreceiver")

	out, err = exec.Command(bin, "validate", "--config", filepath.Join("..", "examples", "config.yaml")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command(bin, "validate", "--config", filepath.Join("..", "testdata", "invalid-config.yaml")).CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "min_age must be positive")
	assert.Contains(t, string(out), `allocators: unknown allocator "pages"`)
}
