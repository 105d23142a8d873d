//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/storage/filestorage"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.opentelemetry.io/collector/extension/xextension/storage"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
)

// The tests that end a collector as the kernel or an operator would
// (SIGKILL, SIGTERM) run it in a child process: the test binary again,
// running TestChildCollector, told its configuration (JSON) and its
// file_storage directory by these variables.
const (
	childConfigEnv  = "KMEMLEAK_CHILD_COLLECTOR_CONFIG"
	childStorageEnv = "KMEMLEAK_CHILD_COLLECTOR_STORAGE"
)

// childCollector is a collector in a child process: what it exports
// arrives in its sinks, in order, as its stdout brings it.
type childCollector struct {
	cmd     *exec.Cmd
	metrics *consumertest.MetricsSink
	logs    *consumertest.LogsSink
	stderr  bytes.Buffer  // its log, read once it has exited
	ended   chan struct{} // closed when its stdout is read to the end
	stopped bool

	mu sync.Mutex
	// saves are, for each save of the verdict histories, how many batches
	// of events had come before it.
	saves []int
}

// startChildCollector starts a collector of cfg in a child process, with
// the file_storage extension in storageDir when cfg names a storage. It is
// killed when the test ends, and its log shown if the test failed.
func startChildCollector(t *testing.T, cfg *Config, storageDir string) *childCollector {
	t.Helper()
	config, err := json.Marshal(cfg)
	require.NoError(t, err)
	c := &childCollector{
		cmd:     exec.Command(os.Args[0], "-test.run=^TestChildCollector$", "-test.count=1"),
		metrics: new(consumertest.MetricsSink),
		logs:    new(consumertest.LogsSink),
		ended:   make(chan struct{}),
	}
	c.cmd.Env = append(os.Environ(), childConfigEnv+"="+string(config), childStorageEnv+"="+storageDir)
	// A test binary that dies without its cleanups must not leave a
	// collector with its probes attached behind.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c.cmd.Stderr = &c.stderr
	out, err := c.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, c.cmd.Start())
	t.Cleanup(func() {
		if !c.stopped {
			_ = c.cmd.Process.Kill()
			<-c.ended
			_ = c.cmd.Wait() // killed: its error says so
		}
		if t.Failed() {
			t.Logf("the log of the child collector %d:\n%s", c.cmd.Process.Pid, c.stderr.String())
		}
	})
	go c.read(t, out)
	return c
}

// read takes the child's lines into the sinks until its stdout ends; what
// is not one of TestChildCollector's lines (go test's own) goes to the
// test's log.
func (c *childCollector) read(t *testing.T, out io.Reader) {
	defer close(c.ended)
	lines := bufio.NewReader(out)
	for {
		line, err := lines.ReadBytes('\n')
		if err != nil {
			return
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		kind, data, _ := bytes.Cut(line, []byte(" "))
		switch string(kind) {
		case "metrics":
			md, err := (&pmetric.JSONUnmarshaler{}).UnmarshalMetrics(data)
			if err != nil {
				t.Errorf("the child collector's metrics: %v", err)
				continue
			}
			_ = c.metrics.ConsumeMetrics(context.Background(), md) // a sink does not fail
		case "logs":
			ld, err := (&plog.JSONUnmarshaler{}).UnmarshalLogs(data)
			if err != nil {
				t.Errorf("the child collector's events: %v", err)
				continue
			}
			_ = c.logs.ConsumeLogs(context.Background(), ld) // a sink does not fail
		case "saved":
			c.mu.Lock()
			c.saves = append(c.saves, len(c.logs.AllLogs()))
			c.mu.Unlock()
		default:
			t.Logf("child collector: %s", line)
		}
	}
}

// waitForSave waits up to within for a save of the verdict histories made
// after events of which ok holds.
func (c *childCollector) waitForSave(t *testing.T, within time.Duration, what string, ok func([]plog.Logs) bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.saves) > 0 && ok(c.logs.AllLogs()[:c.saves[len(c.saves)-1]])
	}, within, 100*time.Millisecond, "no save of the verdict histories after %s", what)
}

// stop sends the child sig and waits for it to end. After SIGTERM its
// Shutdown must have run and succeeded, as the collector's would.
func (c *childCollector) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, c.cmd.Process.Signal(sig))
	<-c.ended
	err := c.cmd.Wait()
	c.stopped = true
	if sig == syscall.SIGTERM {
		require.NoError(t, err, "the child collector did not stop cleanly after SIGTERM: %s", c.stderr.String())
	}
}

// TestChildCollector is the collector startChildCollector starts: it
// writes each batch of metrics and events as a line of OTLP JSON after
// "metrics " or "logs ", and "saved" after each save of the verdict
// histories, until killed, or until SIGTERM, on which it shuts down.
func TestChildCollector(t *testing.T) {
	config := os.Getenv(childConfigEnv)
	if config == "" {
		t.Skip("the collector startChildCollector starts in a child process")
	}
	cfg := createDefaultConfig()
	require.NoError(t, json.Unmarshal([]byte(config), cfg))
	stopped, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	out := &childOutput{}
	extensions := host{}
	if cfg.Storage != nil {
		f := filestorage.NewFactory()
		scfg := f.CreateDefaultConfig().(*filestorage.Config)
		scfg.Directory = os.Getenv(childStorageEnv)
		ext, err := f.Create(context.Background(), extensiontest.NewNopSettings(f.Type()), scfg)
		require.NoError(t, err)
		require.NoError(t, ext.Start(context.Background(), componenttest.NewNopHost()))
		defer func() { require.NoError(t, ext.Shutdown(context.Background())) }()
		extensions[*cfg.Storage] = announcedStorage{ext.(storage.Extension), out}
	}
	set := receivertest.NewNopSettings(metadata.Type)
	// file_storage names its file after the receiver's ID: every
	// collector's must be the one a configuration gives, not a nop's
	// random one.
	set.ID = component.NewID(metadata.Type)
	set.Logger = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.Lock(os.Stderr), zapcore.InfoLevel))
	rcv, err := NewFactory().CreateMetrics(context.Background(), set, cfg, out)
	require.NoError(t, err)
	_, err = NewFactory().CreateLogs(context.Background(), set, cfg, out)
	require.NoError(t, err)
	require.NoError(t, rcv.Start(context.Background(), extensions))
	<-stopped.Done()
	require.NoError(t, rcv.Shutdown(context.Background()))
}

// childOutput is the child collector's consumers: a line on stdout per
// batch, and per save of announcedStorage.
type childOutput struct {
	mu sync.Mutex // the collector may call its consumers concurrently: lines must not interleave
}

func (*childOutput) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (o *childOutput) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	data, err := (&pmetric.JSONMarshaler{}).MarshalMetrics(md)
	if err != nil {
		return err
	}
	return o.line("metrics", data)
}

func (o *childOutput) ConsumeLogs(_ context.Context, ld plog.Logs) error {
	data, err := (&plog.JSONMarshaler{}).MarshalLogs(ld)
	if err != nil {
		return err
	}
	return o.line("logs", data)
}

func (o *childOutput) line(kind string, data []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, err := fmt.Printf("%s %s\n", kind, data)
	return err
}

// announcedStorage is a storage extension whose clients say on the child's
// output when they saved, so that a test can kill the collector after a
// save it knows of.
type announcedStorage struct {
	storage.Extension
	out *childOutput
}

func (s announcedStorage) GetClient(ctx context.Context, kind component.Kind, id component.ID, name string) (storage.Client, error) {
	client, err := s.Extension.GetClient(ctx, kind, id, name)
	if err != nil {
		return nil, err
	}
	return announcedClient{client, s.out}, nil
}

type announcedClient struct {
	storage.Client
	out *childOutput
}

func (c announcedClient) Set(ctx context.Context, key string, value []byte) error {
	if err := c.Client.Set(ctx, key, value); err != nil {
		return err
	}
	return c.out.line("saved", nil)
}
