package ksym

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
)

// Kallsyms wraps a Table loaded from a kallsyms path and reloads it when the
// set of loaded modules changes, because module text moves on every load and
// disappears on unload while core kernel text never moves.
type Kallsyms struct {
	kallsymsPath string
	modulesPath  string

	table atomic.Pointer[Table] // swapped whole so Resolve never takes a lock

	mu         sync.Mutex // serializes Refresh, guards the fields below
	modulesSum uint64
	hash       maphash.Hash
}

// New loads kallsyms from kallsymsPath and remembers the modules file state
// from modulesPath, whose module ranges also tell which module symbols name
// memory another module holds now. A missing modules file is not an error:
// kernels built without CONFIG_MODULES have no /proc/modules, and their
// text never changes.
func New(kallsymsPath, modulesPath string) (*Kallsyms, error) {
	s := &Kallsyms{kallsymsPath: kallsymsPath, modulesPath: modulesPath}
	// Read the modules before kallsyms: if a module is loaded in between,
	// the recorded sum is stale and the next Refresh reloads.
	sum, modules, err := s.readModules()
	if err != nil {
		return nil, err
	}
	t, err := load(kallsymsPath, modules)
	if err != nil {
		return nil, err
	}
	s.modulesSum = sum
	s.table.Store(t)
	return s, nil
}

// Refresh reloads the table if the modules file changed since the last load;
// it reports whether it reloaded. Comparing the modules file costs one small
// read, so it is safe to call every scan. If reloading fails, the old table is
// kept, the error is returned, and the next call retries.
func (s *Kallsyms) Refresh() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum, modules, err := s.readModules()
	if err != nil {
		return false, err
	}
	if sum == s.modulesSum {
		return false, nil
	}
	t, err := load(s.kallsymsPath, modules)
	if err != nil {
		return false, err
	}
	s.modulesSum = sum
	s.table.Store(t)
	return true, nil
}

// Resolve resolves addr with the current table.
func (s *Kallsyms) Resolve(addr uint64) (Symbol, bool) {
	return s.table.Load().Resolve(addr)
}

func load(path string, modules loadedModules) (*Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ksym: %w", err)
	}
	defer f.Close() //nolint:errcheck // read only: closing loses nothing
	t, err := parse(f, modules)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return t, nil
}

// readModules reads the modules file, and hashes it skipping the refcount
// and "used by" columns of /proc/modules lines ("name size refcount deps
// state addr [taint]"): they change whenever a module is merely used, which
// would otherwise trigger a full kallsyms reload for nothing. Name, size,
// state (init text is dropped from kallsyms when Loading becomes Live) and
// load address still identify every change to module text.
func (s *Kallsyms) readModules() (uint64, loadedModules, error) {
	data, err := os.ReadFile(s.modulesPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, loadedModules{}, fmt.Errorf("ksym: %w", err)
	}
	s.hash.Reset()
	for line := range bytes.Lines(data) {
		i := 0
		for field := range bytes.FieldsSeq(line) {
			if i != 2 && i != 3 {
				s.hash.Write(field)
				s.hash.WriteByte(' ')
			}
			i++
		}
		s.hash.WriteByte('\n')
	}
	return s.hash.Sum64(), parseModules(data), nil
}
