//go:build linux && (amd64 || arm64)

package tracker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kmemleak/kmemleakreceiver/bpf"
	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/livetable"
)

// The pinned maps outlive the tracker and the next one adopts them, with
// their objects, when the shape is the same; otherwise it starts from
// empty tables, says why, and leaves nothing of the old ones; Unpin leaves
// nothing at all. Only maps are made: no program is attached.
func TestIntegrationPinnedTablesAreAdoptedOrCleared(t *testing.T) {
	kerneltest.RequireBPF(t)
	dir := pinDir(t)
	opts := pinOptions(dir)

	first, logs := openPinnedMaps(t, opts)
	assert.Equal(t, "no tables are pinned", startReason(t, logs))
	const key, site, cache = 0xffff888012345600, 0xffffffff81234567, 0xffff888000abc000
	insert(t, first, key, site)
	require.NoError(t, first.maps.Caches.Put(uint64(cache), bpf.KmemleakCacheInfo{Skip: 1}))
	oldLive := mapID(t, first.maps.Live)
	require.NoError(t, first.Close())
	assert.FileExists(t, filepath.Join(dir, stateName), "Close unpinned the state")

	// The same shape, and an option that does not shape the tables: adopted.
	opts.Stacks.SampleRate = 7
	second, logs := openPinnedMaps(t, opts)
	assert.Empty(t, startReason(t, logs))
	adopted, _ := second.Adopted()
	assert.True(t, adopted)
	assert.Equal(t, oldLive, mapID(t, second.maps.Live), "the live table was made anew")
	assert.Equal(t, map[uint64]uint64{key: site}, objects(t, second))
	var info bpf.KmemleakCacheInfo
	require.NoError(t, second.maps.Caches.Lookup(uint64(cache), &info))
	assert.Zero(t, info.Skip, "a cache the collector before untracked is left untracked")

	// Two collectors never share the directory.
	_, err := openPins(dir, shape{}, time.Minute, zap.NewNop())
	require.ErrorContains(t, err, "another collector uses the pin directory")
	require.NoError(t, second.Close())

	// A larger table: a clean start, and the old maps are gone.
	opts.MaxObjects *= 2
	third, logs := openPinnedMaps(t, opts)
	assert.Contains(t, startReason(t, logs), "the tables' shape changed: allocators or max_tracked_objects")
	assert.Empty(t, objects(t, third))
	assert.Eventually(t, func() bool { return !mapExists(oldLive) }, 10*time.Second, 50*time.Millisecond, "the old live table is still in the kernel")

	// Stopped for good: nothing is left.
	newLive := mapID(t, third.maps.Live)
	require.NoError(t, third.Unpin())
	require.NoError(t, third.Close())
	assert.NoDirExists(t, dir)
	assert.Eventually(t, func() bool { return !mapExists(newLive) }, 10*time.Second, 50*time.Millisecond, "the live table is still in the kernel")
}

// Tables the probes last wrote longer ago than MaxGap hold a phantom for
// every free since: they are not adopted.
func TestIntegrationPinnedTablesTooOldAreCleared(t *testing.T) {
	kerneltest.RequireBPF(t)
	opts := pinOptions(pinDir(t))
	first, _ := openPinnedMaps(t, opts)
	insert(t, first, 0xffff888012345600, 0xffffffff81234567)
	require.NoError(t, first.Close())

	time.Sleep(10 * time.Millisecond)
	opts.MaxGap = time.Millisecond
	second, logs := openPinnedMaps(t, opts)
	assert.Contains(t, startReason(t, logs), "more than pinning.max_gap")
	assert.Empty(t, objects(t, second))
	require.NoError(t, second.Unpin())
	require.NoError(t, second.Close())
}

// Whatever sits in the directory that is not this format's state is
// cleared, never adopted nor a failed start.
func TestIntegrationPinnedForeignStateIsCleared(t *testing.T) {
	kerneltest.RequireBPF(t)
	dir := pinDir(t)
	require.NoError(t, os.MkdirAll(dir, 0o700))
	for _, name := range []string{stateName, bpf.KmemleakMapLive} {
		foreign, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
		require.NoError(t, err)
		require.NoError(t, foreign.Pin(filepath.Join(dir, name)))
		require.NoError(t, foreign.Close())
	}

	tr, logs := openPinnedMaps(t, pinOptions(dir))
	assert.Contains(t, startReason(t, logs), "another format")
	require.NoError(t, tr.Unpin())
	require.NoError(t, tr.Close())
}

// A directory outside bpffs costs the restarts their state, not the start.
func TestIntegrationPinDirectoryOutsideBPFFS(t *testing.T) {
	kerneltest.RequireBPF(t)
	opts := pinOptions(filepath.Join(t.TempDir(), "pins"))
	core, logs := observer.New(zapcore.InfoLevel)
	opts.Logger = zap.New(core)
	var tr Tracker
	p, err := tr.openPins(opts, shape{})
	require.NoError(t, err)
	assert.Nil(t, p)
	warned := logs.FilterMessageSnippet("the pin directory cannot be used").All()
	require.Len(t, warned, 1, "%v", logs.All())
	assert.Contains(t, warned[0].ContextMap()["error"], "not on a bpf filesystem")
}

func pinDir(t *testing.T) string {
	dir := fmt.Sprintf("/sys/fs/bpf/kmemleak-test-%d-%s", os.Getpid(), t.Name())
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func pinOptions(dir string) Options {
	return Options{
		Allocators: []kmem.Allocator{kmem.Slab, kmem.Kmalloc}, MaxObjects: 1 << 12, MaxSize: ^uint32(0),
		Stacks: StackOptions{Mode: kmem.StacksAdaptive, Depth: 4}, YoungSlots: 64,
		PinDir: dir, MaxGap: time.Minute,
	}
}

// openPinnedMaps makes and pins the maps as Open does, attaching nothing;
// the tracker is closed when the test ends if not before.
func openPinnedMaps(t *testing.T, opts Options) (*Tracker, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	opts.Logger = zap.New(core)
	spec, specs, err := loadSpecs()
	require.NoError(t, err)
	layout := recordLayout(spec)
	_, err = configure(specs, newPlan(&specs.KmemleakProgramSpecs), opts, nil, nil, preemptCount{})
	require.NoError(t, err)
	tr := &Tracker{attached: map[kmem.Allocator]*attached{}}
	t.Cleanup(func() { _ = tr.Close() })
	tr.pins, err = tr.openPins(opts, shapeOf(layout, &specs.KmemleakMapSpecs, opts, false))
	require.NoError(t, err)
	require.NotNil(t, tr.pins)
	require.NoError(t, tr.createMaps(spec))
	return tr, logs
}

// startReason is why the tracker started from empty tables, or "" if it
// adopted them.
func startReason(t *testing.T, logs *observer.ObservedLogs) string {
	t.Helper()
	if logs.FilterMessageSnippet("Adopting the pinned live tables").Len() == 1 {
		return ""
	}
	clean := logs.FilterMessageSnippet("Starting with empty live tables").All()
	require.Len(t, clean, 1, "neither adopted nor started clean: %v", logs.All())
	return clean[0].ContextMap()["reason"].(string)
}

func insert(t *testing.T, tr *Tracker, key, site uint64) {
	t.Helper()
	tab, err := livetable.Map(tr.maps.Live)
	require.NoError(t, err)
	defer tab.Close() //nolint:errcheck // a test's mapping
	require.True(t, tab.Insert(key, &bpf.KmemleakObject{CallSite: site, Bytes: 64}))
}

// objects are the live table's objects: their call sites by address.
func objects(t *testing.T, tr *Tracker) map[uint64]uint64 {
	t.Helper()
	tab, err := livetable.Map(tr.maps.Live)
	require.NoError(t, err)
	defer tab.Close() //nolint:errcheck // a test's mapping
	out := map[uint64]uint64{}
	tab.Walk(func(o *livetable.Object) { out[o.Key] = o.CallSite })
	return out
}

func mapID(t *testing.T, m *ebpf.Map) ebpf.MapID {
	t.Helper()
	info, err := m.Info()
	require.NoError(t, err)
	id, ok := info.ID()
	require.True(t, ok)
	return id
}

func mapExists(id ebpf.MapID) bool {
	m, err := ebpf.NewMapFromID(id)
	if err == nil {
		_ = m.Close()
		return true
	}
	return !errors.Is(err, os.ErrNotExist)
}
