//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
)

// holdPipesEnv makes the test binary a child that holds that many pipes
// until its stdin closes (TestHelperHoldPipes).
const holdPipesEnv = "KMEMLEAK_HOLD_PIPES"

// TestHelperHoldPipes is not a test: it is the child process of
// holdPipesInChild, and returns at once in a normal run.
func TestHelperHoldPipes(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv(holdPipesEnv))
	if err != nil {
		return
	}
	kerneltest.OpenPipes(t, n)
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it
}

// holdPipesInChild starts a child process that holds n pipes until the
// test ends.
func holdPipesInChild(t *testing.T, n int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldPipes$")
	cmd.Env = append(os.Environ(), holdPipesEnv+"="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "the child holding pipes did not start")
	require.Equal(t, "ready\n", line)
}

// The receiver leaves out what its own process allocates: pipes opened by
// the receiver's process are not tracked, the same pipes held by another
// process are.
func TestIntegrationOwnProcessIsNotTracked(t *testing.T) {
	kerneltest.RequireBPF(t)
	cfg := testConfig()
	cfg.trackOwnProcess = false
	p := startReceiver(t, cfg)

	baseline, _ := settledPipeBaseline(t, p.metrics)
	kerneltest.OpenPipes(t, heldPipes) // the receiver's process
	holdPipesInChild(t, heldPipes)
	// Two objects of each kind per pipe, and a few missed (see the
	// held-pipes test).
	lost := int64(heldPipes / 100)
	held := waitForMetrics(t, p.metrics, "the child's pipes are suspects", func(md pmetric.Metrics) bool {
		for site, n := range pipeObjects(suspectsByFunction(md)) {
			if n-baseline[site] < 2*heldPipes-lost {
				return false
			}
		}
		return true
	})
	// Whatever else allocates pipes meanwhile stays far below the
	// 2 x heldPipes more the receiver's own would add.
	for site, n := range pipeObjects(suspectsByFunction(held)) {
		assert.Less(t, n-baseline[site], int64(3*heldPipes), "%s: the receiver's own pipes were tracked", site)
	}
	t.Logf("baseline %v, the child and the receiver's process holding %d pipes each: %v",
		baseline, heldPipes, pipeObjects(suspectsByFunction(held)))
}
