//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pprofile"

	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/profile"
)

// pipeProfileObjects is a profile export's inuse_objects of the stacks
// through pipe2(2) whose innermost frame is alloc_pipe_info: the pipes'
// pipe_inode_info and buffer array.
func pipeProfileObjects(pd pprofile.Profiles) int64 {
	dict := pd.Dictionary()
	name := func(i int32) string { return dict.StringTable().At(int(i)) }
	var n int64
	for _, rp := range pd.ResourceProfiles().All() {
		for _, sp := range rp.ScopeProfiles().All() {
			for _, p := range sp.Profiles().All() {
				if name(p.SampleType().TypeStrindex()) != profile.InuseObjects {
					continue
				}
				for _, s := range p.Samples().All() {
					var frames []string
					for _, li := range dict.StackTable().At(int(s.StackIndex())).LocationIndices().All() {
						loc := dict.LocationTable().At(int(li))
						frames = append(frames, name(dict.FunctionTable().At(int(loc.Lines().At(0).FunctionIndex())).NameStrindex()))
					}
					if len(frames) > 0 && frames[0] == "alloc_pipe_info" && slices.Contains(frames, "do_pipe2") {
						n += s.Values().At(0)
					}
				}
			}
		}
	}
	return n
}

// waitForProfile waits for a profile export after now that satisfies ok.
func waitForProfile(t *testing.T, sink *consumertest.ProfilesSink, what string, ok func(pprofile.Profiles) bool) pprofile.Profiles {
	t.Helper()
	seen := len(sink.AllProfiles())
	var last pprofile.Profiles
	require.Eventually(t, func() bool {
		all := sink.AllProfiles()
		for _, pd := range all[seen:] {
			last = pd
			if ok(pd) {
				return true
			}
		}
		seen = len(all)
		return false
	}, 30*time.Second, 100*time.Millisecond, "no profile where %s", what)
	return last
}

// Held pipes raise inuse_objects of the stack through pipe2(2) by two
// objects a pipe, and closing them lowers it again.
func TestIntegrationProfilesShowHeldPipes(t *testing.T) {
	kerneltest.RequireBPF(t)
	cfg := testConfig()
	cfg.StackTraces = "always"
	cfg.ProfileInterval = cfg.CollectionInterval
	p := startReceiver(t, cfg)

	var baseline int64
	prev := int64(-1)
	waitForProfile(t, p.profiles, "two profiles in a row agree on the pipes' objects", func(pd pprofile.Profiles) bool {
		n := pipeProfileObjects(pd)
		settled := n == prev
		prev, baseline = n, n
		return settled
	})
	const n = 300
	pipes := kerneltest.OpenPipes(t, n)
	held := waitForProfile(t, p.profiles, "the held pipes' objects are in", func(pd pprofile.Profiles) bool {
		return pipeProfileObjects(pd) >= baseline+2*n
	})
	t.Logf("baseline %d, holding %d pipes: %d", baseline, n, pipeProfileObjects(held))

	kerneltest.ClosePipes(pipes)
	waitForProfile(t, p.profiles, "the closed pipes' objects are out", func(pd pprofile.Profiles) bool {
		return pipeProfileObjects(pd) <= baseline+n/20
	})
}
