package kmem

// Context is what ran an allocation.
type Context uint8

// The contexts an allocation runs in.
const (
	InTask    Context = iota // a process's task
	InKthread                // a kernel thread
	InSoftirq                // serving a softirq, in whichever task it interrupted
	InIRQ                    // a hard interrupt or an NMI
)

var contextNames = []string{InTask: "task", InKthread: "kthread", InSoftirq: "softirq", InIRQ: "irq"}

func (c Context) String() string {
	if int(c) < len(contextNames) {
		return contextNames[c]
	}
	return "unknown"
}

// Interrupt reports whether c is an interrupt's: then no task owns the
// allocation.
func (c Context) Interrupt() bool { return c == InSoftirq || c == InIRQ }

// Owner is who allocated an object, as the probes recorded it. Without
// attribution every object's is the zero Owner.
type Owner struct {
	Context Context
	Tgid    uint32 // 0 in interrupt context
	// Cgroup is the task's cgroup v2 id, its low half: the inode number of
	// the cgroup's directory.
	Cgroup uint32
	// Earlier marks an object allocated before the process now holding
	// Tgid started: a process that exited since owns it (Snapshot.Reused).
	Earlier bool
}

// Exit is a process that ended while the probes ran.
type Exit struct {
	Tgid    uint32
	Name    string // its comm
	StartNs uint64 // CLOCK_MONOTONIC
	ExitNs  uint64 // CLOCK_MONOTONIC, when its last thread exited
}
