package profile

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pprofile"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
	"github.com/kmemleak/kmemleakreceiver/internal/report"
	"github.com/kmemleak/kmemleakreceiver/internal/workload"
)

// Run `go test ./internal/profile -update` to rewrite the golden file, then
// review the diff; the run with -update fails on purpose.
var update = flag.Bool("update", false, "rewrite testdata/profiles.json")

var pipeStack = frames("alloc_pipe_info+0x2b", "create_pipe_files+0x45", "do_pipe2+0x4f", "__x64_sys_pipe2+0x18", "do_syscall_64+0x9e")

// frames is a stack as the symbolizer names its frames.
func frames(symbols ...string) (out []report.Frame) {
	for _, s := range symbols {
		out = append(out, report.SymbolFrame(s))
	}
	return out
}

// groups is a scan's groups: a pipe leak by a container's process and by
// another, with the same stack; a socketpair at the same call site by
// another path; a module's slab objects without a stack; pages a softirq
// took; and the fold of the rest.
func groups() []report.Group {
	nginx := owner.Owner{Context: kmem.InTask, Pid: 4242, Name: "nginx", Cgroup: "/kubepods.slice/x.scope",
		Workload: workload.Workload{ContainerID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}
	bash := owner.Owner{Context: kmem.InTask, Pid: 977, Name: "bash", Exited: true}
	pipe := func(o owner.Owner, n int64) report.Group {
		return report.Group{Allocator: kmem.Kmalloc, Cache: "kmalloc-cg-1k", CallSiteSym: "alloc_pipe_info+0x2b", Frames: pipeStack,
			StackHash: "1111111111111111", Owner: o, Objects: n, Bytes: n * 1024}
	}
	return []report.Group{
		pipe(nginx, 1500),
		pipe(bash, 400),
		{Allocator: kmem.Kmalloc, Cache: "kmalloc-cg-1k", CallSiteSym: "alloc_pipe_info+0x2b",
			Frames:    frames("alloc_pipe_info+0x2b", "unix_socketpair+0x10", "__sys_socketpair+0x7e", "do_syscall_64+0x9e"),
			StackHash: "2222222222222222", Owner: nginx, Objects: 10, Bytes: 10240},
		{Allocator: kmem.Slab, Cache: "kmltest_cache", CallSiteSym: "kmltest_cache_one+0x17 [kmltest]",
			StackHash: "3333333333333333", Owner: owner.Owner{Context: kmem.InKthread, Pid: 55, Name: "kworker/0:1"}, Objects: 7, Bytes: 448},
		{Allocator: kmem.Page, Cache: "order-0", CallSiteSym: "tcp_data_queue+0x20",
			Frames: frames("tcp_data_queue+0x20", "tcp_rcv_established+0x1a0", "0xffffffff81000000"), StackHash: "4444444444444444",
			Owner: owner.Owner{Context: kmem.InSoftirq}, Objects: 3, Bytes: 12288},
		pipe(owner.Folded, 25),
	}
}

func build(t *testing.T) pprofile.Profiles {
	t.Helper()
	res := pcommon.NewResource()
	res.Attributes().PutStr("host.name", "node-7")
	return Build(groups(), Options{
		Resource: res, Scope: "github.com/kmemleak/kmemleakreceiver", Version: "0.1.0",
		Time: time.Date(2025, time.March, 4, 10, 5, 0, 0, time.UTC), Duration: time.Minute,
	})
}

func TestBuildMatchesGolden(t *testing.T) {
	pd := build(t)
	got, err := (&pprofile.JSONMarshaler{}).MarshalProfiles(pd)
	require.NoError(t, err)
	path := filepath.Join("testdata", "profiles.json")
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
		t.Fatal("golden file rewritten: review the diff and run again without -update")
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.JSONEq(t, string(want), string(got))
}

// Per allocator two profiles, objects and bytes, a sample per group, the
// values the groups'.
func TestBuildSamples(t *testing.T) {
	pd := build(t)
	dict := pd.Dictionary()
	profiles := pd.ResourceProfiles().At(0).ScopeProfiles().At(0).Profiles()
	require.Equal(t, 6, profiles.Len(), "kmalloc, slab and page, two sample types each")
	totals := map[string]int64{}
	for _, p := range profiles.All() {
		attrs, err := pprofile.FromAttributeIndices(dict.AttributeTable(), p, dict)
		require.NoError(t, err)
		alloc, _ := attrs.Get("kmem.allocator")
		st := dict.StringTable().At(int(p.SampleType().TypeStrindex()))
		for _, s := range p.Samples().All() {
			require.Equal(t, 1, s.Values().Len())
			totals[alloc.Str()+" "+st] += s.Values().At(0)
		}
	}
	assert.Equal(t, map[string]int64{
		"kmalloc inuse_objects": 1935, "kmalloc inuse_space": 1935 * 1024,
		"slab inuse_objects": 7, "slab inuse_space": 448,
		"page inuse_objects": 3, "page inuse_space": 12288,
	}, totals)

	// The pipe leak's first sample: its stack, innermost first, and its
	// owner as attributes.
	kmalloc := profiles.At(2) // slab's two first, as kmem.Allocators lists them
	attrs, err := pprofile.FromAttributeIndices(dict.AttributeTable(), kmalloc, dict)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"kmem.allocator": "kmalloc"}, attrs.AsRaw())
	s := kmalloc.Samples().At(0)
	var frames []string
	for _, li := range dict.StackTable().At(int(s.StackIndex())).LocationIndices().All() {
		loc := dict.LocationTable().At(int(li))
		fn := dict.FunctionTable().At(int(loc.Lines().At(0).FunctionIndex()))
		mapping := dict.MappingTable().At(int(loc.MappingIndex()))
		frames = append(frames, fmt.Sprintf("%s+0x%x %s", dict.StringTable().At(int(fn.NameStrindex())), loc.Address(),
			dict.StringTable().At(int(mapping.FilenameStrindex()))))
	}
	assert.Equal(t, []string{
		"alloc_pipe_info+0x2b [kernel.kallsyms]", "create_pipe_files+0x45 [kernel.kallsyms]", "do_pipe2+0x4f [kernel.kallsyms]",
		"__x64_sys_pipe2+0x18 [kernel.kallsyms]", "do_syscall_64+0x9e [kernel.kallsyms]",
	}, frames)
	attrs, err = pprofile.FromAttributeIndices(dict.AttributeTable(), s, dict)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{
		"kmem.cache": "kmalloc-cg-1k", "kmem.stack.hash": "1111111111111111", "kmem.context": "task",
		"process.pid": "4242", "process.executable.name": "nginx", "process.linux.cgroup": "/kubepods.slice/x.scope",
		"container.id": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	}, attrs.AsRaw())
}

// The dictionary is valid: every index in range, index 0 of each table
// the empty entry, and nothing twice.
func TestBuildDictionaryIsValid(t *testing.T) {
	pd := build(t)
	dict := pd.Dictionary()
	str := func(i int32) string {
		require.True(t, i >= 0 && int(i) < dict.StringTable().Len(), "string index %d out of range", i)
		return dict.StringTable().At(int(i))
	}
	inRange := func(what string, i int32, n int) {
		assert.True(t, i >= 0 && int(i) < n, "%s index %d out of [0, %d)", what, i, n)
	}
	assert.Equal(t, "", dict.StringTable().At(0))
	assertUnique(t, "strings", dict.StringTable().AsRaw())

	var mappings, functions, locations, stacks, attrs []string
	for i, m := range dict.MappingTable().All() {
		mappings = append(mappings, str(m.FilenameStrindex()))
		if i == 0 {
			assert.Equal(t, pprofile.NewMapping(), m)
		}
	}
	for _, f := range dict.FunctionTable().All() {
		functions = append(functions, str(f.NameStrindex())+"/"+str(f.SystemNameStrindex())+"/"+str(f.FilenameStrindex()))
	}
	for _, l := range dict.LocationTable().All() {
		inRange("mapping", l.MappingIndex(), dict.MappingTable().Len())
		key := fmt.Sprint(l.MappingIndex(), l.Address())
		for _, line := range l.Lines().All() {
			inRange("function", line.FunctionIndex(), dict.FunctionTable().Len())
			key += fmt.Sprint("/", line.FunctionIndex())
		}
		locations = append(locations, key)
	}
	for _, s := range dict.StackTable().All() {
		for _, li := range s.LocationIndices().All() {
			inRange("location", li, dict.LocationTable().Len())
		}
		stacks = append(stacks, fmt.Sprint(s.LocationIndices().AsRaw()))
	}
	for _, a := range dict.AttributeTable().All() {
		attrs = append(attrs, str(a.KeyStrindex())+"="+a.Value().AsString())
	}
	for what, list := range map[string][]string{"mappings": mappings, "functions": functions, "locations": locations, "stacks": stacks, "attributes": attrs} {
		assertUnique(t, what, list)
	}
	for _, p := range pd.ResourceProfiles().At(0).ScopeProfiles().At(0).Profiles().All() {
		str(p.SampleType().TypeStrindex())
		str(p.SampleType().UnitStrindex())
		for _, s := range p.Samples().All() {
			inRange("stack", s.StackIndex(), dict.StackTable().Len())
			assert.NotZero(t, s.StackIndex(), "a sample on the empty stack")
			for _, ai := range s.AttributeIndices().All() {
				inRange("attribute", ai, dict.AttributeTable().Len())
			}
		}
	}
}

func assertUnique(t *testing.T, what string, list []string) {
	t.Helper()
	seen := map[string]bool{}
	for _, v := range list {
		assert.False(t, seen[v], "%s: %q twice", what, v)
		seen[v] = true
	}
}
