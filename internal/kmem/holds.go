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

// FileHolders counts, per process (tgid), the objects it holds as open
// files.
type FileHolders map[uint32]int64

// Add counts o's into h, and returns h: a new map when h is nil, so that
// no two tallies share one.
func (h FileHolders) Add(o FileHolders) FileHolders {
	if len(o) == 0 {
		return h
	}
	if h == nil {
		h = make(FileHolders, len(o))
	}
	for tgid, n := range o {
		h[tgid] += n
	}
	return h
}

// Total is how many objects the processes hold as open files.
func (h FileHolders) Total() int64 {
	var n int64
	for _, held := range h {
		n += held
	}
	return n
}

// One is the process that holds every file, when only one does.
func (h FileHolders) One() (tgid uint32, ok bool) {
	for tgid := range h {
		return tgid, len(h) == 1
	}
	return 0, false
}

// held counts an aged object some live task holds into t.
func (t *Tally) held(h Holder) {
	switch h.Hold {
	case HeldByTask:
		t.HeldByTask++
	case HeldAsFile:
		if t.FileHolders == nil {
			t.FileHolders = FileHolders{}
		}
		t.FileHolders[h.Tgid]++
	}
}
