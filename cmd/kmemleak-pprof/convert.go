package main

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/google/pprof/profile"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pprofile"
)

// The sample types the receiver exports, in the order of the pprof
// profile's values.
var sampleTypes = []*profile.ValueType{{Type: "inuse_objects", Unit: "count"}, {Type: "inuse_space", Unit: "bytes"}}

// source is one OTLP profile with the dictionary its indexes point into.
type source struct {
	p    pprofile.Profile
	dict pprofile.ProfilesDictionary
}

// Convert makes one pprof profile of the latest profiles of each
// allocator and sample type among pds.
func Convert(pds []pprofile.Profiles) (*profile.Profile, error) {
	latest := map[[2]string]source{} // by allocator and sample type
	for _, pd := range pds {
		dict := pd.Dictionary()
		for _, rp := range pd.ResourceProfiles().All() {
			for _, sp := range rp.ScopeProfiles().All() {
				for _, p := range sp.Profiles().All() {
					attrs, err := pprofile.FromAttributeIndices(dict.AttributeTable(), p, dict)
					if err != nil {
						return nil, err
					}
					alloc, _ := attrs.Get("kmem.allocator")
					key := [2]string{alloc.AsString(), str(dict, p.SampleType().TypeStrindex())}
					if old, ok := latest[key]; !ok || p.Time() > old.p.Time() {
						latest[key] = source{p, dict}
					}
				}
			}
		}
	}
	c := newConverter()
	for _, key := range slices.SortedFunc(maps.Keys(latest), func(a, b [2]string) int { return cmp.Compare(a[0]+a[1], b[0]+b[1]) }) {
		v := slices.IndexFunc(sampleTypes, func(t *profile.ValueType) bool { return t.Type == key[1] })
		if v < 0 {
			continue // not a sample type of the receiver's
		}
		if err := c.add(key[0], v, latest[key]); err != nil {
			return nil, err
		}
	}
	if len(c.out.Sample) == 0 {
		return nil, errors.New("no inuse_objects or inuse_space profile of the kmemleak receiver in the input")
	}
	if err := c.out.CheckValid(); err != nil {
		return nil, fmt.Errorf("the profile made is not valid: %w", err)
	}
	return c.out, nil
}

// converter builds the pprof profile, each mapping, function, location
// and sample once.
type converter struct {
	out       *profile.Profile
	mappings  map[string]*profile.Mapping
	functions map[string]*profile.Function
	locations map[string]*profile.Location
	samples   map[string]*profile.Sample
}

func newConverter() *converter {
	return &converter{
		out: &profile.Profile{
			SampleType: sampleTypes, DefaultSampleType: "inuse_space",
			PeriodType: &profile.ValueType{Type: "space", Unit: "bytes"}, Period: 1,
		},
		mappings: map[string]*profile.Mapping{}, functions: map[string]*profile.Function{},
		locations: map[string]*profile.Location{}, samples: map[string]*profile.Sample{},
	}
}

// add adds the samples of one OTLP profile as value v of allocator's
// stacks. A sample of the other sample type with the same stack and
// labels is the same pprof sample.
func (c *converter) add(allocator string, v int, src source) error {
	c.out.TimeNanos = max(c.out.TimeNanos, int64(min(src.p.Time(), math.MaxInt64)))
	c.out.DurationNanos = max(c.out.DurationNanos, int64(min(src.p.DurationNano(), math.MaxInt64)))
	root := c.location("", "["+allocator+"]", 0)
	for _, s := range src.p.Samples().All() {
		if s.Values().Len() == 0 {
			continue
		}
		locs, err := c.stack(src.dict, s.StackIndex())
		if err != nil {
			return err
		}
		labels, err := pprofile.FromAttributeIndices(src.dict.AttributeTable(), s, src.dict)
		if err != nil {
			return err
		}
		labels.PutStr("kmem.allocator", allocator)
		key := sampleKey(locs, labels)
		ps := c.samples[key]
		if ps == nil {
			ps = &profile.Sample{Location: append(locs, root), Value: make([]int64, len(sampleTypes)), Label: pprofLabels(labels)}
			c.samples[key] = ps
			c.out.Sample = append(c.out.Sample, ps)
		}
		ps.Value[v] += s.Values().At(0)
	}
	return nil
}

// stack is the pprof locations of an OTLP stack, innermost first.
func (c *converter) stack(dict pprofile.ProfilesDictionary, index int32) ([]*profile.Location, error) {
	if index < 0 || int(index) >= dict.StackTable().Len() {
		return nil, fmt.Errorf("stack index %d out of range", index)
	}
	var out []*profile.Location
	for _, li := range dict.StackTable().At(int(index)).LocationIndices().All() {
		if li < 0 || int(li) >= dict.LocationTable().Len() {
			return nil, fmt.Errorf("location index %d out of range", li)
		}
		loc := dict.LocationTable().At(int(li))
		var mapping string
		if mi := loc.MappingIndex(); mi > 0 && int(mi) < dict.MappingTable().Len() {
			mapping = str(dict, dict.MappingTable().At(int(mi)).FilenameStrindex())
		}
		for _, line := range loc.Lines().All() {
			if fi := line.FunctionIndex(); fi >= 0 && int(fi) < dict.FunctionTable().Len() {
				out = append(out, c.location(mapping, str(dict, dict.FunctionTable().At(int(fi)).NameStrindex()), loc.Address()))
			}
		}
	}
	return out, nil
}

// location is a frame: a function at an address (the receiver's offset in
// the function) in a mapping ("" for the allocator's frame).
func (c *converter) location(mapping, function string, address uint64) *profile.Location {
	key := fmt.Sprintf("%s\x00%s\x00%x", mapping, function, address)
	if l := c.locations[key]; l != nil {
		return l
	}
	fn := c.functions[function]
	if fn == nil {
		fn = &profile.Function{ID: uint64(len(c.out.Function) + 1), Name: function, SystemName: function}
		c.functions[function] = fn
		c.out.Function = append(c.out.Function, fn)
	}
	l := &profile.Location{ID: uint64(len(c.out.Location) + 1), Address: address, Line: []profile.Line{{Function: fn}}}
	if mapping != "" {
		m := c.mappings[mapping]
		if m == nil {
			m = &profile.Mapping{ID: uint64(len(c.out.Mapping) + 1), File: mapping, HasFunctions: true}
			c.mappings[mapping] = m
			c.out.Mapping = append(c.out.Mapping, m)
		}
		l.Mapping = m
	}
	c.locations[key] = l
	c.out.Location = append(c.out.Location, l)
	return l
}

func sampleKey(locs []*profile.Location, labels pcommon.Map) string {
	var b strings.Builder
	for _, l := range locs {
		fmt.Fprintf(&b, "%d,", l.ID)
	}
	for _, k := range slices.Sorted(maps.Keys(labels.AsRaw())) {
		v, _ := labels.Get(k)
		fmt.Fprintf(&b, "\x00%s=%s", k, v.AsString())
	}
	return b.String()
}

func pprofLabels(attrs pcommon.Map) map[string][]string {
	out := map[string][]string{}
	for k, v := range attrs.All() {
		out[k] = []string{v.AsString()}
	}
	return out
}

func str(dict pprofile.ProfilesDictionary, i int32) string {
	if i < 0 || int(i) >= dict.StringTable().Len() {
		return ""
	}
	return dict.StringTable().At(int(i))
}
