//go:build linux && (amd64 || arm64)

package holders

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kmemleak/kmemleakreceiver/bpf"
	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

var (
	_ = [1]struct{}{}[unsafe.Sizeof(bpf.HoldersHeld{})-heldSize]
	_ = [1]struct{}{}[unsafe.Sizeof(bpf.HoldersHeldProcess{})-processSize]
	_ = [1]struct{}{}[bpf.HoldersHeldKindHELD_BY_TASK-kindByTask]
	_ = [1]struct{}{}[bpf.HoldersHeldKindHELD_AS_FILE-kindAsFile]
	_ = [1]struct{}{}[bpf.HoldersHeldKindHELD_PROCESS-kindProcess]
)

// Iterators are the holder iterators, loaded and attached.
type Iterators struct {
	progs bpf.HoldersPrograms
	links []*link.Iter
	// holds is the last listing, its maps reused by the next: a busy
	// server's is hundreds of thousands of objects.
	holds kmem.Holds
}

// Open loads and attaches the iterators. Kernels before 5.12 (no task_vma
// iterator) or without BTF refuse them.
func Open() (*Iterators, error) {
	spec, err := bpf.LoadHolders()
	if err != nil {
		return nil, err
	}
	// The object's only data is the unused pointer that puts the records'
	// types into its BTF (bpf/holders.h), which no program reads: a .bss
	// map made for it would stay mapped, and alive, after Close.
	delete(spec.Maps, ".bss")
	delete(spec.Variables, bpf.HoldersVarUnusedHeldTypes)
	it := &Iterators{}
	if err := spec.LoadAndAssign(&it.progs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("loading the holder iterators: %w", verr)
		}
		return nil, fmt.Errorf("loading the holder iterators: %w", err)
	}
	for _, p := range []*ebpf.Program{it.progs.HeldByTasks, it.progs.HeldAsFiles, it.progs.HeldByMappings} {
		l, err := link.AttachIter(link.IterOptions{Program: p})
		if err != nil {
			_ = it.Close() // the attach error is the one to return
			return nil, fmt.Errorf("attaching the holder iterator %s: %w", p, err)
		}
		it.links = append(it.links, l)
	}
	return it, nil
}

// Read runs the iterators and returns what live tasks hold now, valid
// until the next Read.
func (it *Iterators) Read() (*kmem.Holds, error) {
	holds := &it.holds
	if holds.Objects == nil {
		holds.Objects, holds.Processes = map[uint64]kmem.Holder{}, map[uint32]kmem.Process{}
	}
	clear(holds.Objects)
	clear(holds.Processes)
	for _, l := range it.links {
		if err := read(l, holds); err != nil {
			return nil, err
		}
	}
	return holds, nil
}

func read(l *link.Iter, holds *kmem.Holds) error {
	r, err := l.Open()
	if err != nil {
		return fmt.Errorf("running a holder iterator: %w", err)
	}
	err = decode(r, holds)
	return errors.Join(err, r.Close())
}

// Close detaches and unloads the iterators.
func (it *Iterators) Close() error {
	var errs []error
	for _, l := range it.links {
		errs = append(errs, l.Close())
	}
	errs = append(errs, it.progs.Close())
	return errors.Join(errs...)
}
