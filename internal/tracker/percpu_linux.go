//go:build linux && (amd64 || arm64)

package tracker

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/kmemleak/kmemleakreceiver/bpf"
)

// preemptCount says where x86-64 keeps each CPU's preempt count, which
// tells the probes whether an allocation runs in a softirq or an interrupt
// (interrupt_context in bpf/kmemleak.bpf.c): offsets in the per-CPU
// section, of the count and of the run queues, through which the probes
// find this CPU's copy; and of current_task, to check them. The zero
// value: unknown, and the probes are told the context by programs on the
// irq tracepoints instead.
type preemptCount struct {
	count, runqueues, currentTask uint64
}

func (p preemptCount) known() bool { return p.count != 0 }

// btfTypes finds kernel types by name, as *btf.Spec does.
type btfTypes interface {
	TypeByName(name string, typ any) error
}

// findPreemptCount finds the offsets in the kernel's BTF, whose section of
// per-CPU variables gives each one's offset in it. The count and
// current_task are variables of their own, or members of pcpu_hot from
// 6.2 to 6.14. The probes reach the run queue as the current task's
// task->se.cfs_rq->rq (CONFIG_FAIR_GROUP_SCHED).
func findPreemptCount(types btfTypes) (preemptCount, error) {
	var percpu *btf.Datasec
	if err := types.TypeByName(".data..percpu", &percpu); err != nil {
		return preemptCount{}, fmt.Errorf("the kernel's BTF lists no per-CPU variables: %w", err)
	}
	vars := map[string]btf.VarSecinfo{}
	for _, v := range percpu.Vars {
		if named, ok := v.Type.(*btf.Var); ok {
			vars[named.Name] = v
		}
	}
	var p preemptCount
	for _, want := range []struct {
		at         *uint64
		name, perf string // the variable, and its member name in pcpu_hot
	}{{&p.count, "__preempt_count", "preempt_count"}, {&p.currentTask, "current_task", "current_task"}, {&p.runqueues, "runqueues", ""}} {
		if v, ok := vars[want.name]; ok {
			*want.at = uint64(v.Offset)
			continue
		}
		v, ok := vars["pcpu_hot"]
		if !ok || want.perf == "" {
			return preemptCount{}, fmt.Errorf("the kernel's BTF has no per-CPU variable %s", want.name)
		}
		in, ok := memberOffset(v.Type.(*btf.Var).Type, want.perf)
		if !ok {
			return preemptCount{}, fmt.Errorf("the kernel's BTF has neither %s nor pcpu_hot.%s", want.name, want.perf)
		}
		*want.at = uint64(v.Offset) + in
	}
	for _, path := range [][2]string{{"task_struct", "se"}, {"sched_entity", "cfs_rq"}, {"cfs_rq", "rq"}} {
		var s *btf.Struct
		if err := types.TypeByName(path[0], &s); err != nil {
			return preemptCount{}, fmt.Errorf("finding struct %s in the kernel's BTF: %w", path[0], err)
		}
		if _, ok := memberOffset(s, path[1]); !ok {
			return preemptCount{}, fmt.Errorf("the kernel's struct %s has no %s (CONFIG_FAIR_GROUP_SCHED)", path[0], path[1])
		}
	}
	return p, nil
}

// memberOffset is the byte offset of the member name in the struct or
// union t, looked for in its anonymous members too.
func memberOffset(t btf.Type, name string) (uint64, bool) {
	var members []btf.Member
	switch t := btf.UnderlyingType(t).(type) {
	case *btf.Struct:
		members = t.Members
	case *btf.Union:
		members = t.Members
	}
	for _, m := range members {
		if m.Name == name {
			return uint64(m.Offset.Bytes()), true
		}
		if m.Name == "" {
			if in, ok := memberOffset(m.Type, name); ok {
				return uint64(m.Offset.Bytes()) + in, true
			}
		}
	}
	return 0, false
}

// preemptCountOf finds and checks where the running kernel keeps the
// preempt count, for attribution on x86-64 (arm64's is in the task).
func preemptCountOf(specs *bpf.KmemleakSpecs) (preemptCount, error) {
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return preemptCount{}, fmt.Errorf("reading the kernel's BTF: %w", err)
	}
	p, err := findPreemptCount(kernel)
	if err != nil {
		return preemptCount{}, err
	}
	if err := checkPreemptCount(specs, p); err != nil {
		return preemptCount{}, err
	}
	return p, nil
}

// checkPreemptCount runs read_percpu to see the offsets work on the
// running kernel: this CPU's current_task, found through the run queue, is
// the task that ran the program, and a program run from a system call
// runs in no interrupt.
func checkPreemptCount(specs *bpf.KmemleakSpecs, p preemptCount) error {
	check := bpf.KmemleakPercpuCheck{RunqueuesOffset: p.runqueues, CurrentTaskOffset: p.currentTask, PreemptCountOffset: p.count}
	err := withTestRun(specs.Percpu, specs.ReadPercpu, func(percpu *ebpf.Map, read *ebpf.Program) error {
		if err := percpu.Update(uint32(0), &check, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("writing read_percpu's offsets: %w", err)
		}
		if _, err := read.Run(&ebpf.RunOptions{}); err != nil {
			return fmt.Errorf("running read_percpu: %w", err)
		}
		if err := percpu.Lookup(uint32(0), &check); err != nil {
			return fmt.Errorf("reading what read_percpu read: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return checkedPreemptCount(&check)
}

// The preempt count's bits for hard interrupts, NMIs and softirqs
// (include/linux/preempt.h).
const interruptBits = 0x00ffff00

// checkedPreemptCount says whether what read_percpu read shows the offsets
// right.
func checkedPreemptCount(c *bpf.KmemleakPercpuCheck) error {
	if c.Task == 0 || c.CurrentTask != c.Task {
		// The addresses stay out of the message: they defeat KASLR.
		return errors.New("this CPU's current_task, found through its run queue, is not the task that ran the program")
	}
	if c.PreemptCount&interruptBits != 0 {
		return fmt.Errorf("the preempt count read from a system call, %#x, says it runs in an interrupt", c.PreemptCount)
	}
	return nil
}
