package kmem

// Hold is how a live task holds a kernel object.
type Hold uint8

const (
	// HeldByTask means the object is a live task's own structure (its
	// task_struct, pid, mm, mappings, credentials, file table): it goes
	// when the task does.
	HeldByTask Hold = iota + 1
	// HeldAsFile means the object is a live task's open file, or what
	// the file holds (a pipe's buffers, a socket).
	HeldAsFile
)

// Holder is who holds an object, and how.
type Holder struct {
	Tgid uint32
	Hold Hold
}

// Process is a live process as the holder iterators saw it.
type Process struct {
	Name    string // comm
	StartNs uint64 // CLOCK_MONOTONIC
}

// Holds are the kernel objects live tasks held when they were last listed.
type Holds struct {
	Objects   map[uint64]Holder  // by address
	Processes map[uint32]Process // by tgid
}

// SeveralHolders is Tally.FileHolder when more than one process holds a
// group's files.
const SeveralHolders = ^uint32(0)

// held counts an aged object some live task holds into t.
func (t *Tally) held(h Holder) {
	switch h.Hold {
	case HeldByTask:
		t.HeldByTask++
	case HeldAsFile:
		t.HeldAsFile++
		t.FileHolder = MergeHolders(t.FileHolder, h.Tgid)
	}
}

// MergeHolders is the holder of two groups' files: the one process that
// holds both, or SeveralHolders.
func MergeHolders(a, b uint32) uint32 {
	switch {
	case a == 0 || a == b:
		return b
	case b == 0:
		return a
	}
	return SeveralHolders
}
