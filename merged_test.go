//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/reclaim"
	"github.com/kmemleak/kmemleakreceiver/internal/slabinfo"
	"github.com/kmemleak/kmemleakreceiver/internal/slabmerge"
)

// A bound listening socket holds a bind bucket from tcp_bind_bucket,
// which SLUB merges into another cache of its size unless the kernel was
// booted with slab_nomerge or slub_debug (on 6.18 here: eventpoll_epi,
// with fib6_node and tcp_bind2_bucket). The buckets' events name the cache
// as slabinfo lists it and, when merged, every name that shares it; under
// slub_debug (make test-kernels boots every kernel so for the oracle too)
// the cache is tcp_bind_bucket itself and nothing is listed.
func TestIntegrationMergedCacheNames(t *testing.T) {
	kerneltest.RequireBPF(t)
	merged := slabmerge.New(reclaim.SlabDir).Of("tcp_bind_bucket")
	counts, err := slabinfo.Read(slabinfo.Path)
	require.NoError(t, err)
	want := "tcp_bind_bucket"
	if merged != nil {
		var listed []string
		for _, name := range merged {
			if _, ok := counts[name]; ok {
				listed = append(listed, name)
			}
		}
		require.Len(t, listed, 1, "slabinfo lists a merged cache once: %v of %v", listed, merged)
		want = listed[0]
	}
	t.Logf("tcp_bind_bucket is in %s, merged with %v", want, merged)

	cfg := testConfig()
	cfg.ReportInterval = time.Nanosecond // an event every scan
	p := startReceiver(t, cfg)
	const held = 100
	for range held {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { ln.Close() })
	}

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if lr, ok := bucketEvent(p.logs.AllLogs(), held); ok {
			cache, _ := lr.Attributes().Get("kmem.cache")
			assert.Equal(t, want, cache.Str(), "the name slabinfo lists")
			names, ok := lr.Attributes().Get("kmem.cache.merged")
			if merged == nil {
				// names is a zero Value unless ok: AsRaw only then.
				if ok {
					t.Errorf("a cache merged with nothing lists names: %v", names.AsRaw())
				}
				return
			}
			require.True(t, ok, "no kmem.cache.merged")
			got := make([]string, 0, names.Slice().Len())
			for _, v := range names.Slice().All() {
				got = append(got, v.Str())
			}
			assert.Equal(t, merged, got)
			return
		}
		if all := p.metrics.AllMetrics(); len(all) > 0 && viewOf(all[len(all)-1]).untraced[want] {
			t.Skipf("the truth check untracked %s on this kernel (frees it cannot see): nothing of it is reported", want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no kmem.leak.suspect event of inet_bind_bucket_create with %d objects within 30s", held)
}

// bucketEvent finds an event of the bind buckets with at least n objects.
func bucketEvent(all []plog.Logs, n int64) (plog.LogRecord, bool) {
	for lr := range logRecords(all) {
		ev := eventOf(lr)
		if strings.HasPrefix(ev.callSite, "inet_bind_bucket_create+") && ev.objects >= n {
			return lr, true
		}
	}
	return plog.LogRecord{}, false
}
