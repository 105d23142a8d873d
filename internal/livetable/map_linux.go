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
	mem []byte
}

// Map maps the live table m into the process.
func Map(m *ebpf.Map) (*Mapped, error) {
	size := int(m.MaxEntries()) * int(m.ValueSize())
	page := os.Getpagesize()
	mem, err := unix.Mmap(m.FD(), 0, (size+page-1)/page*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping the live table %s into memory: %w", m, err)
	}
	tab, err := New(mem[:size])
	if err != nil {
		_ = unix.Munmap(mem) // New's error is the one to return
		return nil, err
	}
	return &Mapped{Table: tab, mem: mem}, nil
}

// Close unmaps the table.
func (m *Mapped) Close() error {
	if err := unix.Munmap(m.mem); err != nil {
		return fmt.Errorf("unmapping a live table: %w", err)
	}
	return nil
}
