// Package profile turns a scan's groups of aged live objects into OTLP
// profiles of in-use kernel memory: per allocator, one profile of objects
// (inuse_objects) and one of bytes (inuse_space), a sample per kernel stack
// and owner, which pprof shows as a flame graph.
package profile

import (
	"cmp"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pprofile"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/report"
)

// The sample types, as Go's heap profiles name them.
const (
	InuseObjects = "inuse_objects"
	InuseSpace   = "inuse_space"
)

// KernelMapping names the kernel's own text, where a frame has no module.
const KernelMapping = "[kernel.kallsyms]"

// Options say what the profiles describe.
type Options struct {
	Resource pcommon.Resource // the receiver's, as on its metrics
	Scope    string           // the instrumentation scope's name
	Version  string
	Time     time.Time     // when the scan began
	Duration time.Duration // since the previous profile
}

// Build makes the profiles of groups: every group of aged objects a scan
// found, not only the reported ones. A group without a stack is a
// one-frame stack of its call site.
func Build(groups []report.Group, opts Options) pprofile.Profiles {
	out := pprofile.NewProfiles()
	b := newBuilder(out.Dictionary())
	rp := out.ResourceProfiles().AppendEmpty()
	opts.Resource.CopyTo(rp.Resource())
	sp := rp.ScopeProfiles().AppendEmpty()
	sp.Scope().SetName(opts.Scope)
	sp.Scope().SetVersion(opts.Version)

	byAllocator := map[kmem.Allocator][]report.Group{}
	for _, g := range groups {
		byAllocator[g.Allocator] = append(byAllocator[g.Allocator], g)
	}
	for _, a := range kmem.Allocators {
		gs := byAllocator[a]
		if len(gs) == 0 {
			continue
		}
		for _, st := range []struct {
			name, unit string
			value      func(report.Group) int64
		}{
			{InuseObjects, "count", func(g report.Group) int64 { return g.Objects }},
			{InuseSpace, "bytes", func(g report.Group) int64 { return g.Bytes }},
		} {
			p := sp.Profiles().AppendEmpty()
			p.SampleType().SetTypeStrindex(b.str(st.name))
			p.SampleType().SetUnitStrindex(b.str(st.unit))
			p.PeriodType().SetTypeStrindex(b.str("space"))
			p.PeriodType().SetUnitStrindex(b.str("bytes"))
			p.SetTime(pcommon.NewTimestampFromTime(opts.Time))
			p.SetDurationNano(uint64(max(opts.Duration, 0)))
			p.AttributeIndices().Append(b.attr("kmem.allocator", a.String()))
			for _, g := range gs {
				s := p.Samples().AppendEmpty()
				s.SetStackIndex(b.stack(g))
				s.Values().Append(st.value(g))
				b.sampleAttributes(s.AttributeIndices(), g)
			}
		}
	}
	return out
}

// builder fills a dictionary without duplicates, indexing what it added:
// pprofile's own Set* helpers search the tables linearly.
type builder struct {
	dict      pprofile.ProfilesDictionary
	strings   map[string]int32
	mappings  map[string]int32
	functions map[string]int32
	locations map[location]int32
	stacks    map[string]int32
	attrs     map[[2]string]int32
}

func newBuilder(dict pprofile.ProfilesDictionary) *builder {
	b := &builder{
		dict: dict, strings: map[string]int32{}, mappings: map[string]int32{}, functions: map[string]int32{},
		locations: map[location]int32{}, stacks: map[string]int32{}, attrs: map[[2]string]int32{},
	}
	// Index 0 of every table is the empty entry, as the format requires.
	b.str("")
	dict.MappingTable().AppendEmpty()
	dict.FunctionTable().AppendEmpty()
	dict.LocationTable().AppendEmpty()
	dict.StackTable().AppendEmpty()
	dict.AttributeTable().AppendEmpty()
	dict.LinkTable().AppendEmpty()
	return b
}

// next is the index of the next entry of a dictionary table that has n:
// OTLP's indexes are int32, and a profile's tables (a scan's groups, their
// frames and names) hold far fewer than 2^31 entries.
func next(n int) int32 {
	return int32(n) //nolint:gosec // G115: see above
}

func (b *builder) str(s string) int32 {
	i, ok := b.strings[s]
	if !ok {
		i = next(b.dict.StringTable().Len())
		b.dict.StringTable().Append(s)
		b.strings[s] = i
	}
	return i
}

func (b *builder) mapping(module string) int32 {
	name := cmp.Or(module, KernelMapping)
	i, ok := b.mappings[name]
	if !ok {
		i = next(b.dict.MappingTable().Len())
		b.dict.MappingTable().AppendEmpty().SetFilenameStrindex(b.str(name))
		b.mappings[name] = i
	}
	return i
}

func (b *builder) function(name string) int32 {
	i, ok := b.functions[name]
	if !ok {
		i = next(b.dict.FunctionTable().Len())
		f := b.dict.FunctionTable().AppendEmpty()
		f.SetNameStrindex(b.str(name))
		f.SetSystemNameStrindex(b.str(name))
		b.functions[name] = i
	}
	return i
}

// location is what a profile's location says of a frame; the frame's
// symbol is not part of it: every frame no symbol names is one location.
type location struct {
	function string
	offset   uint64
	module   string
}

// location is a frame: its function, in its module's mapping, at its
// offset in the function as the address (never the kernel address,
// which KASLR hides).
func (b *builder) location(f report.Frame) int32 {
	key := location{f.Function, f.Offset, f.Module}
	i, ok := b.locations[key]
	if !ok {
		i = next(b.dict.LocationTable().Len())
		loc := b.dict.LocationTable().AppendEmpty()
		loc.SetMappingIndex(b.mapping(f.Module))
		loc.SetAddress(f.Offset)
		loc.Lines().AppendEmpty().SetFunctionIndex(b.function(f.Function))
		b.locations[key] = i
	}
	return i
}

// stack is a group's stack, innermost frame first, or its call site alone.
func (b *builder) stack(g report.Group) int32 {
	text := cmp.Or(g.StackText(), g.CallSiteSym)
	i, ok := b.stacks[text]
	if !ok {
		i = next(b.dict.StackTable().Len())
		st := b.dict.StackTable().AppendEmpty()
		for _, f := range g.StackOrCallSite() {
			st.LocationIndices().Append(b.location(f))
		}
		b.stacks[text] = i
	}
	return i
}

func (b *builder) attr(key, value string) int32 {
	k := [2]string{key, value}
	i, ok := b.attrs[k]
	if !ok {
		i = next(b.dict.AttributeTable().Len())
		kv := b.dict.AttributeTable().AppendEmpty()
		kv.SetKeyStrindex(b.str(key))
		kv.Value().SetStr(value)
		b.attrs[k] = i
	}
	return i
}

// sampleAttributes are a group's cache, stack hash and owner: pprof shows
// them as labels, to focus the flame graph on one container or process.
func (b *builder) sampleAttributes(out pcommon.Int32Slice, g report.Group) {
	out.Append(b.attr("kmem.cache", g.Cache), b.attr("kmem.stack.hash", g.StackHash))
	for _, kv := range g.Owner.Attributes() {
		out.Append(b.attr(kv[0], kv[1]))
	}
}
