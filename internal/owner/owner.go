// Package owner names who allocated kernel objects, from what the probes
// recorded (kmem.Owner): the process by pid and name, even once it has
// exited, its cgroup by path, and the container and pod the path names;
// or the interrupt context that allocated them.
package owner

import (
	"cmp"
	"fmt"
	"strconv"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
	"github.com/kmemleak/kmemleakreceiver/internal/workload"
)

// Owner is who allocated a group's objects, named. The zero Owner is no
// attribution.
type Owner struct {
	Context kmem.Context
	// Other stands for every owner outside the reported groups, folded
	// into one group per call site.
	Other bool
	Pid   uint32 // tasks and kernel threads
	// Name is the process's comm, or the kernel thread's name; "" when the
	// process was never seen.
	Name string
	// Exited: the process has ended (its objects outlive it).
	Exited bool
	// Cgroup is the cgroup v2 path from the hierarchy's root ("/" for the
	// root); "" when unknown.
	Cgroup   string
	Workload workload.Workload
}

// Folded is the owner of a call site's objects outside the reported
// groups.
var Folded = Owner{Other: true}

// Attributed reports whether o names an owner (or the fold of several).
func (o Owner) Attributed() bool { return o != Owner{} }

// String is o for a person: "[softirq]", "[irq]", "[other]", or the
// process's name and pid.
func (o Owner) String() string {
	switch {
	case o.Other:
		return "[other]"
	case o.Context.Interrupt():
		return "[" + o.Context.String() + "]"
	case !o.Attributed():
		return ""
	}
	s := fmt.Sprintf("%s (pid %d", cmp.Or(o.Name, "?"), o.Pid)
	if o.Exited {
		s += ", exited"
	}
	if o.Workload.ContainerID != "" {
		s += ", container " + shortID(o.Workload.ContainerID)
	}
	return s + ")"
}

// Attributes are o's attributes by their semantic-convention names, as
// name and value pairs (the pid in decimal), those that are known:
// kmem.context alone for an interrupt or the folded rest.
func (o Owner) Attributes() [][2]string {
	switch {
	case !o.Attributed():
		return nil
	case o.Other:
		return [][2]string{{"kmem.context", "other"}}
	case o.Context.Interrupt():
		return [][2]string{{"kmem.context", o.Context.String()}}
	}
	out := [][2]string{{"kmem.context", o.Context.String()}, {"process.pid", strconv.FormatUint(uint64(o.Pid), 10)}}
	for _, kv := range [][2]string{
		{"process.executable.name", o.Name}, {"process.linux.cgroup", o.Cgroup},
		{"container.id", o.Workload.ContainerID}, {"k8s.pod.uid", o.Workload.PodUID},
	} {
		if kv[1] != "" {
			out = append(out, kv)
		}
	}
	return out
}

func shortID(id string) string { return id[:min(len(id), 12)] }
