//go:build linux && e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pprofile/pprofileotlp"
	"google.golang.org/grpc"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
)

// grpcProfiles keeps every OTLP profiles export request it gets, as sent.
type grpcProfiles struct {
	pprofileotlp.UnimplementedGRPCServer
	mu       sync.Mutex
	requests [][]byte
}

func (g *grpcProfiles) Export(_ context.Context, req pprofileotlp.ExportRequest) (pprofileotlp.ExportResponse, error) {
	data, err := req.MarshalProto()
	if err != nil {
		return pprofileotlp.NewExportResponse(), err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.requests = append(g.requests, data)
	return pprofileotlp.NewExportResponse(), nil
}

func (g *grpcProfiles) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.requests)
}

func (g *grpcProfiles) latest() []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.requests[len(g.requests)-1]
}

const profilesConfig = `
receivers:
  kmemleak:
    collection_interval: 1s
    initial_delay: 0s
    min_age: 2s
    stack_traces: always
    profile_interval: 1s
    pinning:
      directory: "" # each run starts empty and leaves nothing pinned
exporters:
  otlp_grpc:
    endpoint: %s
    tls:
      insecure: true
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    profiles:
      receivers: [kmemleak]
      exporters: [otlp_grpc]
`

// The built collector exports profiles over OTLP/gRPC; kmemleak-pprof
// turns one into pprof's format, where `go tool pprof -top` finds the held
// pipes' objects on the stack through pipe2(2), and the flame graph of
// `go tool pprof -http`, rendered by headless Chromium, shows its frame.
func TestCollectorExportsProfiles(t *testing.T) {
	bin := collector(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	got := &grpcProfiles{}
	pprofileotlp.RegisterGRPCServer(srv, got)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)

	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, profilesConfig, l.Addr()), 0o600))
	runUntilTheEnd(t, "collector", exec.Command(bin, "--config", config, "--feature-gates=service.profilesSupport"))
	require.Eventually(t, func() bool { return got.count() > 0 }, 30*time.Second, 100*time.Millisecond, "no profiles arrived")

	const held = 400
	kerneltest.OpenPipes(t, held)
	// Aged after min_age (2 s), in the profile of the scan after.
	after := got.count()
	require.Eventually(t, func() bool { return got.count() >= after+5 }, 30*time.Second, 100*time.Millisecond, "profiles stopped")

	request := filepath.Join(dir, "request.pb")
	require.NoError(t, os.WriteFile(request, got.latest(), 0o600))
	pprofFile := filepath.Join(dir, "kmem.pb.gz")
	out, err := exec.Command("go", "run", "../cmd/kmemleak-pprof", "-o", pprofFile, request).CombinedOutput()
	require.NoError(t, err, "kmemleak-pprof: %s", out)

	top, err := exec.Command("go", "tool", "pprof", "-top", "-sample_index=inuse_objects", "-focus=do_pipe2", pprofFile).CombinedOutput()
	require.NoError(t, err, "go tool pprof -top: %s", top)
	t.Logf("go tool pprof -top:\n%s", top)
	assert.GreaterOrEqual(t, flat(t, string(top), "alloc_pipe_info"), int64(2*held),
		"two objects a held pipe at alloc_pipe_info, through do_pipe2")

	flameGraph(t, pprofFile, dir)
}

// flat reads a function's flat value from `go tool pprof -top`'s table.
func flat(t *testing.T, top, function string) int64 {
	for line := range strings.Lines(top) {
		fields := strings.Fields(line)
		if len(fields) == 6 && fields[5] == function {
			n, err := strconv.ParseInt(fields[0], 10, 64)
			require.NoError(t, err, "line %q", line)
			return n
		}
	}
	t.Fatalf("%s is not in the table", function)
	return 0
}

// flameGraph serves the profile with `go tool pprof -http`, has headless
// Chromium render its flame graph and save a screenshot next to it (out
// of the repository), and checks the rendered page names the pipes' frame.
func flameGraph(t *testing.T, pprofFile, dir string) {
	browser, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium): the flame graph is not rendered")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	ui := exec.Command("go", "tool", "pprof", "-no_browser", "-http="+addr, "-sample_index=inuse_objects", pprofFile)
	var uiOut bytes.Buffer
	ui.Stdout, ui.Stderr = &uiOut, &uiOut
	// `go tool` runs pprof as a child: the group goes, both of them.
	ui.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, ui.Start())
	t.Cleanup(func() {
		syscall.Kill(-ui.Process.Pid, syscall.SIGKILL)
		ui.Wait()
	})
	page := "http://" + addr + "/ui/flamegraph?si=inuse_objects"
	require.Eventually(t, func() bool {
		resp, err := http.Get(page)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 60*time.Second, 200*time.Millisecond, "go tool pprof -http did not serve: %s", &uiOut)

	shot := filepath.Join(dir, "flamegraph.png")
	headless := []string{"--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--window-size=1600,1000"}
	out, err := exec.Command(browser, append(headless, "--screenshot="+shot, page)...).CombinedOutput()
	require.NoError(t, err, "chromium --screenshot: %s", out)
	info, err := os.Stat(shot)
	require.NoError(t, err, "no screenshot: %s", out)
	t.Logf("flame graph screenshot: %s (%d bytes)", shot, info.Size())

	dom, err := exec.Command(browser, append(headless, "--dump-dom", page)...).Output()
	require.NoError(t, err, "chromium --dump-dom")
	assert.Contains(t, string(dom), "alloc_pipe_info", "the rendered flame graph does not show the pipes' frame")
	assert.Contains(t, string(dom), "do_pipe2")
}
