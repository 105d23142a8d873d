//go:build linux && (amd64 || arm64)

package livetable

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Mapped is a live table mapped into the process from its BPF map. Mapped
// by hand, not with ebpf.Map.Memory, so that Close unmaps it at once rather
// than whenever the garbage collector gets to it: a mapping keeps its map
// allocated.
type Mapped struct {
	*Table
	mapping
}

// MappedYoung is a young area mapped into the process, as Mapped.
type MappedYoung struct {
	*Young
	mapping
}

// Map maps the live table m into the process.
func Map(m *ebpf.Map) (*Mapped, error) {
	tab, mp, err := mapAs(m, New)
	if err != nil {
		return nil, err
	}
	return &Mapped{Table: tab, mapping: mp}, nil
}

// MapYoung maps the young area m into the process.
func MapYoung(m *ebpf.Map) (*MappedYoung, error) {
	young, mp, err := mapAs(m, NewYoung)
	if err != nil {
		return nil, err
	}
	return &MappedYoung{Young: young, mapping: mp}, nil
}

// mapAs maps the values of the array m and views them as a T.
func mapAs[T any](m *ebpf.Map, view func(mem []byte) (T, error)) (T, mapping, error) {
	mp, mem, err := mapMemory(m)
	if err != nil {
		return *new(T), mapping{}, err
	}
	v, err := view(mem)
	if err != nil {
		_ = mp.Close() // the view's error is the one to return
		return *new(T), mapping{}, err
	}
	return v, mp, nil
}

// mapping is the memory of a BPF array mapped into the process.
type mapping struct {
	mem []byte
}

// mapMemory maps the values of the array m, and returns them.
func mapMemory(m *ebpf.Map) (mapping, []byte, error) {
	size := int(m.MaxEntries()) * int(m.ValueSize())
	page := os.Getpagesize()
	mem, err := unix.Mmap(m.FD(), 0, (size+page-1)/page*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return mapping{}, nil, fmt.Errorf("mapping the live table %s into memory: %w", m, err)
	}
	return mapping{mem: mem}, mem[:size], nil
}

// Close unmaps the table.
func (m mapping) Close() error {
	if err := unix.Munmap(m.mem); err != nil {
		return fmt.Errorf("unmapping a live table: %w", err)
	}
	return nil
}
