//go:build linux && (amd64 || arm64)

package tracker

import (
	"errors"
	"runtime"
	"testing"

	"github.com/cilium/ebpf/btf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmemleak/kmemleakreceiver/bpf"
	"github.com/kmemleak/kmemleakreceiver/internal/kerneltest"
)

// fakeBTF holds kernel types by name, as the kernel's BTF would.
type fakeBTF map[string]btf.Type

func (f fakeBTF) TypeByName(name string, typ any) error {
	t, ok := f[name]
	if !ok {
		return btf.ErrNotFound
	}
	switch out := typ.(type) {
	case **btf.Datasec:
		*out = t.(*btf.Datasec)
	case **btf.Struct:
		*out = t.(*btf.Struct)
	default:
		return errors.New("unexpected type")
	}
	return nil
}

var i32 = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}

// kernelTypes are the types findPreemptCount reads, with the per-CPU
// variables given.
func kernelTypes(vars ...btf.VarSecinfo) fakeBTF {
	ptr := &btf.Pointer{Target: &btf.Void{}}
	return fakeBTF{
		".data..percpu": &btf.Datasec{Name: ".data..percpu", Vars: vars},
		"task_struct":   &btf.Struct{Name: "task_struct", Members: []btf.Member{{Name: "se", Type: &btf.Struct{Name: "sched_entity"}, Offset: 1024}}},
		"sched_entity":  &btf.Struct{Name: "sched_entity", Members: []btf.Member{{Name: "cfs_rq", Type: ptr, Offset: 64 * 8}}},
		"cfs_rq":        &btf.Struct{Name: "cfs_rq", Members: []btf.Member{{Name: "rq", Type: ptr, Offset: 128 * 8}}},
	}
}

func percpuVar(name string, typ btf.Type, offset uint32) btf.VarSecinfo {
	return btf.VarSecinfo{Type: &btf.Var{Name: name, Type: typ}, Offset: offset}
}

var common = []btf.VarSecinfo{percpuVar("runqueues", i32, 0x2fb80), percpuVar("current_task", i32, 0x15010)}

// Linux 6.1 and 6.15 on: __preempt_count is a per-CPU variable of its own.
func TestFindPreemptCount(t *testing.T) {
	p, err := findPreemptCount(kernelTypes(append(common, percpuVar("__preempt_count", i32, 0x15030))...))
	require.NoError(t, err)
	assert.Equal(t, preemptCount{count: 0x15030, runqueues: 0x2fb80, currentTask: 0x15010}, p)
	assert.True(t, p.known())
}

// Linux 6.2 to 6.14: the count and current_task are members of pcpu_hot,
// in an anonymous struct in an anonymous union.
func TestFindPreemptCountInPcpuHot(t *testing.T) {
	inner := &btf.Struct{Members: []btf.Member{{Name: "current_task", Type: &btf.Pointer{}}, {Name: "preempt_count", Type: i32, Offset: 64}}}
	hot := &btf.Struct{Name: "pcpu_hot", Size: 64, Members: []btf.Member{{Type: &btf.Union{Members: []btf.Member{{Type: inner}, {Name: "pad", Type: &btf.Array{}}}}}}}
	p, err := findPreemptCount(kernelTypes(percpuVar("runqueues", i32, 0x2fb80), percpuVar("pcpu_hot", hot, 0x20000)))
	require.NoError(t, err)
	assert.Equal(t, preemptCount{count: 0x20008, runqueues: 0x2fb80, currentTask: 0x20000}, p)
}

func TestFindPreemptCountSaysWhatIsMissing(t *testing.T) {
	_, err := findPreemptCount(kernelTypes(common...))
	assert.ErrorContains(t, err, "no per-CPU variable __preempt_count")
	_, err = findPreemptCount(kernelTypes(percpuVar("__preempt_count", i32, 0x15030), percpuVar("current_task", i32, 0x15010)))
	assert.ErrorContains(t, err, "no per-CPU variable runqueues")
	_, err = findPreemptCount(kernelTypes(percpuVar("runqueues", i32, 0x2fb80), percpuVar("pcpu_hot", &btf.Struct{Name: "pcpu_hot"}, 0x20000)))
	assert.ErrorContains(t, err, "neither __preempt_count nor pcpu_hot.preempt_count")
	types := kernelTypes(append(common, percpuVar("__preempt_count", i32, 0x15030))...)
	types["cfs_rq"] = &btf.Struct{Name: "cfs_rq"}
	_, err = findPreemptCount(types)
	assert.ErrorContains(t, err, "CONFIG_FAIR_GROUP_SCHED")
	_, err = findPreemptCount(fakeBTF{})
	assert.ErrorContains(t, err, "no per-CPU variables")
}

func TestCheckedPreemptCount(t *testing.T) {
	const task = 0xffff88800a4b0000
	assert.NoError(t, checkedPreemptCount(&bpf.KmemleakPercpuCheck{Task: task, CurrentTask: task, PreemptCount: 0x80000001}))
	assert.Error(t, checkedPreemptCount(&bpf.KmemleakPercpuCheck{Task: task, CurrentTask: task + 0x4000}), "another task")
	assert.Error(t, checkedPreemptCount(&bpf.KmemleakPercpuCheck{}), "nothing read")
	assert.Error(t, checkedPreemptCount(&bpf.KmemleakPercpuCheck{Task: task, CurrentTask: task, PreemptCount: 0x100}), "a system call in a softirq")
}

// The running kernel's BTF has what findPreemptCount needs, where the
// kernels the tests run on are x86-64 ones (6.1, 6.12, 6.18).
func TestFindPreemptCountInTheRunningKernel(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("only x86-64 keeps the preempt count per CPU")
	}
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	p, err := findPreemptCount(kernel)
	require.NoError(t, err)
	assert.True(t, p.known())
}

// On the kernels the tests run on, the offsets found in the BTF pass the
// check that read_percpu makes in the kernel: the probes read the preempt
// count, and no program runs on the softirq tracepoints.
func TestIntegrationPreemptCountIsFoundAndChecked(t *testing.T) {
	kerneltest.RequireBPF(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("only x86-64 keeps the preempt count per CPU")
	}
	_, specs, err := loadSpecs()
	require.NoError(t, err)
	p, err := preemptCountOf(specs)
	require.NoError(t, err)
	assert.True(t, p.known())
}
