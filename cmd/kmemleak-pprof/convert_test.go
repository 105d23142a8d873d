package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	gprofile "github.com/google/pprof/profile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pprofile"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/owner"
	"github.com/kmemleak/kmemleakreceiver/internal/profile"
	"github.com/kmemleak/kmemleakreceiver/internal/report"
)

func exported(at time.Time, pipes int64) pprofile.Profiles {
	groups := []report.Group{
		{Allocator: kmem.Kmalloc, Cache: "kmalloc-cg-1k", CallSiteSym: "alloc_pipe_info+0x2b",
			Frames: frames("alloc_pipe_info+0x2b", "create_pipe_files+0x45", "do_pipe2+0x4f"), StackHash: "1111111111111111",
			Owner: owner.Owner{Context: kmem.InTask, Pid: 42, Name: "holder"}, Objects: pipes, Bytes: pipes * 1024},
		{Allocator: kmem.Slab, Cache: "kmltest_cache", CallSiteSym: "kmltest_cache_one+0x17 [kmltest]", StackHash: "2222222222222222",
			Objects: 7, Bytes: 448},
	}
	return profile.Build(groups, profile.Options{Resource: pcommon.NewResource(), Scope: "kmemleak", Time: at, Duration: time.Minute})
}

// frames is a stack as the symbolizer names its frames.
func frames(symbols ...string) (out []report.Frame) {
	for _, s := range symbols {
		out = append(out, report.SymbolFrame(s))
	}
	return out
}

func TestConvert(t *testing.T) {
	t0 := time.Date(2025, time.March, 4, 10, 0, 0, 0, time.UTC)
	// Two exports: the later wins.
	p, err := Convert([]pprofile.Profiles{exported(t0.Add(time.Minute), 300), exported(t0, 100)})
	require.NoError(t, err)
	require.NoError(t, p.CheckValid())
	assert.Equal(t, []string{"inuse_objects", "inuse_space"}, []string{p.SampleType[0].Type, p.SampleType[1].Type})
	assert.Equal(t, t0.Add(time.Minute).UnixNano(), p.TimeNanos)

	byRoot := map[string][]int64{}
	for _, s := range p.Sample {
		var frames []string
		for _, l := range s.Location {
			frames = append(frames, l.Line[0].Function.Name)
		}
		byRoot[frames[len(frames)-1]] = s.Value
		switch frames[0] {
		case "alloc_pipe_info":
			assert.Equal(t, []string{"alloc_pipe_info", "create_pipe_files", "do_pipe2", "[kmalloc]"}, frames)
			assert.Equal(t, []string{"holder"}, s.Label["process.executable.name"])
			assert.Equal(t, []string{"1111111111111111"}, s.Label["kmem.stack.hash"])
			assert.Equal(t, "[kernel.kallsyms]", s.Location[0].Mapping.File)
			assert.Equal(t, uint64(0x2b), s.Location[0].Address, "the offset in the function, never a kernel address")
		case "kmltest_cache_one":
			assert.Equal(t, "kmltest", s.Location[0].Mapping.File)
		default:
			t.Errorf("unexpected stack %v", frames)
		}
	}
	assert.Equal(t, map[string][]int64{"[kmalloc]": {300, 300 * 1024}, "[slab]": {7, 448}}, byRoot)
}

// The file exporter's JSON lines and a binary request read alike.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	pd := exported(time.Unix(1000, 0), 5)
	js, err := (&pprofile.JSONMarshaler{}).MarshalProfiles(pd)
	require.NoError(t, err)
	pb, err := (&pprofile.ProtoMarshaler{}).MarshalProfiles(pd)
	require.NoError(t, err)
	for name, data := range map[string][]byte{"lines.json": append(append(js, '\n'), js...), "request.pb": pb} {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, data, 0o644))
		out := filepath.Join(dir, name+".pb.gz")
		require.NoError(t, run(out, []string{path}), name)
		data, err := os.ReadFile(out)
		require.NoError(t, err)
		p, err := gprofile.Parse(bytes.NewReader(data))
		require.NoError(t, err, name)
		assert.Len(t, p.Sample, 2, name)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "junk"), []byte("not a profile"), 0o644))
	assert.Error(t, run(filepath.Join(dir, "x.pb.gz"), []string{filepath.Join(dir, "junk")}))
}
