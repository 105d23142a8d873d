//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"iter"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"golang.org/x/sys/unix"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
)

// suspectEvent is what the tests read of one kmem.leak.suspect record.
type suspectEvent struct {
	cache, callSite, stack string
	verdict                string
	objects                int64
	at                     time.Time
}

func eventOf(lr plog.LogRecord) suspectEvent {
	attrs := lr.Attributes()
	cache, _ := attrs.Get("kmem.cache")
	site, _ := attrs.Get("kmem.call_site")
	stack, _ := attrs.Get("code.stacktrace")
	objects, _ := attrs.Get("kmem.objects")
	state, _ := attrs.Get("kmem.verdict")
	return suspectEvent{cache.Str(), site.Str(), stack.Str(), state.Str(), objects.Int(), lr.Timestamp().AsTime()}
}

func suspectEvents(sink *consumertest.LogsSink) []suspectEvent {
	var out []suspectEvent
	for lr := range logRecords(sink.AllLogs()) {
		out = append(out, eventOf(lr))
	}
	return out
}

// logRecords are every log record of the batches, in order.
func logRecords(all []plog.Logs) iter.Seq[plog.LogRecord] {
	return func(yield func(plog.LogRecord) bool) {
		for _, ld := range all {
			for _, rl := range ld.ResourceLogs().All() {
				for _, sl := range rl.ScopeLogs().All() {
					for _, lr := range sl.LogRecords().All() {
						if !yield(lr) {
							return
						}
					}
				}
			}
		}
	}
}

// The test holds objects from two user-visible paths, pipes and unix
// socket pairs, adding more every scan, and expects: each path its own
// group, with a stack that names the syscall that made it (stacks are
// adaptive: taken once a scan has found the call site suspect), and
// called leaking while the test adds.
func TestIntegrationStacksNameTheSyscallPathAndVerdictsFollow(t *testing.T) {
	kerneltest.RequireBPF(t)
	cfg := testConfig()
	cfg.ReportInterval = time.Nanosecond // an event every scan
	p := startReceiver(t, cfg)

	var fds []int
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	hold := func() {
		for range 40 {
			var pipe [2]int
			require.NoError(t, unix.Pipe2(pipe[:], unix.O_CLOEXEC))
			pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err)
			fds = append(fds, pipe[0], pipe[1], pair[0], pair[1])
		}
	}
	// Long enough for a verdict: objects aged after min_age, the oldest
	// past verdict.persist, nine samples and two scans that agree.
	adding := cfg.MinAge + cfg.Verdict.Persist + 12*cfg.CollectionInterval
	for start := time.Now(); time.Since(start) < adding; {
		hold()
		time.Sleep(cfg.CollectionInterval)
	}

	// Per path, the group with the most objects: pipe2 and socketpair also
	// allocate dentries, inodes, files and slab metadata on the way, many
	// groups of one or two objects a call, so which is largest is close.
	// Some of them come from the same call sites (__d_alloc,
	// alloc_empty_file): there each path must be a group of its own.
	var pipeGroup, pairGroup *suspectEvent
	sites := map[string]map[string]bool{} // call site -> the paths with a group there
	leaking := map[string]bool{}
	for _, e := range suspectEvents(p.logs) {
		var largest **suspectEvent
		var path string
		switch {
		case strings.Contains(e.stack, "do_pipe2"):
			largest, path = &pipeGroup, "pipe"
		case strings.Contains(e.stack, "__sys_socketpair"):
			largest, path = &pairGroup, "socketpair"
		default:
			continue
		}
		if *largest == nil || e.objects > (*largest).objects {
			*largest = &e
		}
		if sites[e.callSite] == nil {
			sites[e.callSite] = map[string]bool{}
		}
		sites[e.callSite][path] = true
		key := e.callSite + e.stack
		leaking[key] = leaking[key] || e.verdict == "leaking"
	}
	require.NotNil(t, pipeGroup, "no suspect group with a stack through do_pipe2")
	require.NotNil(t, pairGroup, "no suspect group with a stack through __sys_socketpair")
	t.Logf("pipe group %s:\n%s", pipeGroup.callSite, pipeGroup.stack)
	t.Logf("socketpair group %s:\n%s", pairGroup.callSite, pairGroup.stack)
	var shared []string
	for site, paths := range sites {
		if len(paths) == 2 {
			shared = append(shared, site)
		}
	}
	assert.NotEmpty(t, shared, "no call site both paths allocate from came out as a group per path")
	t.Logf("call sites split by path: %v", shared)
	for _, g := range []*suspectEvent{pipeGroup, pairGroup} {
		assert.Contains(t, g.stack, kerneltest.SyscallEntry, "stack of %s does not reach the syscall entry", g.callSite)
		assert.False(t, isAllocatorFrameName(g.callSite), "group named after an allocator frame: %s", g.callSite)
		assert.True(t, leaking[g.callSite+g.stack], "%s never called leaking while the test added to it", g.callSite)
	}
}

func isAllocatorFrameName(frame string) bool {
	fn, _, _ := strings.Cut(frame, "+")
	return strings.HasPrefix(fn, "kmem_cache_alloc") || strings.HasPrefix(fn, "__kmalloc") || strings.HasSuffix(fn, "_noprof")
}

// Size and cache filters act in the probes: what they leave out is never
// tracked, so never reported.
func TestIntegrationFiltersLeaveObjectsOut(t *testing.T) {
	kerneltest.RequireBPF(t)
	cfg := testConfig()
	cfg.MinSize = 512                     // drops pipe_inode_info (kmalloc-cg-192), keeps its buffer array (kmalloc-cg-1k)
	cfg.Caches.Exclude = []string{"filp"} // drops the pipes' struct files
	p := startReceiver(t, cfg)

	waitForScan(t, p.metrics, "a first scan", func(map[string]int64) bool { return true })
	kerneltest.OpenPipes(t, heldPipes)
	time.Sleep(cfg.MinAge + 3*cfg.CollectionInterval)

	caches := map[string]int64{}
	v := viewOf(lastMetrics(t, p.metrics))
	for g, n := range v.groups {
		if strings.HasPrefix(g[1], "alloc_pipe_info+") || strings.HasPrefix(g[1], "alloc_empty_file+") {
			caches[g[0]] += n
		}
	}
	t.Logf("pipe objects by cache: %v", caches)
	assert.GreaterOrEqual(t, caches["kmalloc-cg-1k"], int64(heldPipes), "the pipe buffer arrays (1 KiB) are not reported")
	assert.Zero(t, caches["kmalloc-cg-192"], "objects under min_size reported")
	assert.Zero(t, caches["filp"], "an excluded cache reported")
	for g := range v.groups {
		assert.NotEqual(t, "filp", g[0], "an excluded cache reported")
	}
}
