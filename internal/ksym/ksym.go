// Package ksym turns kernel text addresses into "function+0xoff [module]"
// using /proc/kallsyms, so that kmemleak call sites and stack frames can be
// reported by name.
package ksym

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// maxSymbolSize bounds how far past a symbol start an address may lie and
// still be attributed to that symbol. kallsyms carries no sizes, so without a
// bound an address in a gap (rodata after _etext, the gigabytes between core
// text and the module area, or past the last module) would come back as a
// huge offset into whatever text symbol precedes it. The largest kernel
// functions are tens of KiB, so 1 MiB never cuts off real code yet rejects the
// big gaps. On the 6.18 kernel this was written against, consecutive text
// symbols are at most 20 KiB apart except for about 1 MiB of alignment padding
// around the SRSO alias thunks (not code) and the 21 MiB from _etext to
// _sinittext; module space starts about 1 GiB above core text.
const maxSymbolSize = 1 << 20

// Symbol is the result of resolving one address.
type Symbol struct {
	Name   string // function name, e.g. "alloc_pipe_info"
	Offset uint64 // addr - symbol start
	Module string // "" for the core kernel, else the module name without brackets
}

// String formats as "name+0x1f" or "name+0x1f [module]", the notation used by
// the kernel's own backtraces so reports can be grepped against dmesg.
func (s Symbol) String() string {
	b := make([]byte, 0, len(s.Name)+len(s.Module)+24)
	b = append(b, s.Name...)
	b = append(b, "+0x"...)
	b = strconv.AppendUint(b, s.Offset, 16)
	if s.Module != "" {
		b = append(b, " ["...)
		b = append(b, s.Module...)
		b = append(b, ']')
	}
	return string(b)
}

// sym is kept to 16 bytes because a kernel has well over 100k of them: the
// name lives in Table.names (preceded by its kallsyms type letter, which is
// only needed while sorting) and the module is an index into Table.modules.
type sym struct {
	addr    uint64
	name    uint32 // offset of the name in Table.names
	nameLen uint16 // KSYM_NAME_LEN is 512, longer names are rejected
	module  uint16 // index into Table.modules, 0 is the core kernel
}

// Table is an immutable, sorted symbol table. Immutability is what lets a
// Kallsyms swap tables atomically while readers keep using the old one.
type Table struct {
	syms    []sym // sorted by addr, one entry per address
	names   string
	modules []string
}

// Parse reads kallsyms-format text ("ffffffff81000000 T _stext", optional
// "\t[module]" suffix).
//
// Only text symbols (t, T, w, W) are kept: kmemleak call sites and stack
// frames are always code addresses, and data symbols (d, b, r, a, v, ... and
// the __ksymtab entries) interleaved with them would otherwise be picked as
// the "containing" symbol. Lowercase w is kept because module weak functions
// that are not exported are listed as w.
//
// Malformed lines are skipped; their count only surfaces in the error when
// nothing usable was found, since a format change is then the likely cause.
func Parse(r io.Reader) (*Table, error) {
	return parse(r, loadedModules{})
}

// parse is Parse leaving out the symbols of loaded modules that name
// another module's memory (see loadedModules).
func parse(r io.Reader, modules loadedModules) (*Table, error) {
	sc := bufio.NewScanner(r)
	// A big buffer means few read(2) calls on /proc/kallsyms, whose lines are
	// all far shorter than this.
	sc.Buffer(make([]byte, 256<<10), 256<<10)

	b := tableBuilder{modules: []string{""}, moduleIdx: map[string]uint16{}}
	var lines, malformed, zero int
	for sc.Scan() {
		lines++
		addr, typ, name, module, ok := parseLine(sc.Bytes())
		if !ok {
			malformed++
			continue
		}
		if !isText(typ) || isMappingSymbol(name) {
			continue
		}
		if addr == 0 {
			// kptr_restrict hides addresses by printing zeros, which
			// would otherwise all collapse onto one bogus symbol.
			zero++
			continue
		}
		if module != nil && modules.stale(module, addr) {
			continue
		}
		if err := b.add(addr, typ, name, module); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ksym: reading kallsyms: %w", err)
	}
	if len(b.syms) == 0 {
		if zero > 0 {
			return nil, fmt.Errorf("ksym: all %d text symbols in kallsyms have address 0: "+
				"addresses are hidden from this reader by kernel.kptr_restrict "+
				"(reading them needs CAP_SYSLOG and kernel.kptr_restrict <= 1)", zero)
		}
		return nil, fmt.Errorf("ksym: no text symbols in kallsyms (%d lines, %d malformed)", lines, malformed)
	}
	return b.table(), nil
}

// tableBuilder collects the text symbols of a kallsyms file.
type tableBuilder struct {
	syms      []sym
	names     strings.Builder
	modules   []string
	moduleIdx map[string]uint16
}

func (b *tableBuilder) add(addr uint64, typ byte, name, module []byte) error {
	var mod uint16
	if module != nil {
		i, seen := b.moduleIdx[string(module)]
		if !seen {
			n := len(b.modules)
			if n > math.MaxUint16 {
				return errors.New("ksym: kallsyms lists more than 65535 modules")
			}
			i = uint16(n)
			b.modules = append(b.modules, string(module))
			b.moduleIdx[b.modules[i]] = i
		}
		mod = i
	}
	nameLen := len(name)
	if nameLen > math.MaxUint16 {
		return errors.New("ksym: a kallsyms symbol name is longer than 65535 bytes")
	}
	if int64(b.names.Len())+1+int64(len(name)) > math.MaxUint32 {
		return errors.New("ksym: kallsyms symbol names exceed 4 GiB")
	}
	// Grow by doubling rather than append's 1.25x for large slices: both
	// end up megabytes long, and the gentler policy copies each several
	// times over.
	b.names.Grow(1 + len(name))
	if len(b.syms) == cap(b.syms) {
		b.syms = slices.Grow(b.syms, len(b.syms)+1)
	}
	b.names.WriteByte(typ)
	b.syms = append(b.syms, sym{
		addr:    addr,
		name:    uint32(b.names.Len()), //nolint:gosec // G115: checked above, with the name it starts
		nameLen: uint16(nameLen),
		module:  mod,
	})
	b.names.Write(name)
	return nil
}

// table sorts the symbols by address, one per address.
func (b *tableBuilder) table() *Table {
	t := &Table{names: b.names.String(), modules: b.modules}
	// Several symbols often share an address (aliases such as _stext/_text,
	// __x64_sys_foo/__do_sys_foo). Keep one deterministically: a global
	// symbol over a local one, since global names are stable across builds
	// while locals may carry .isra/.constprop suffixes, then the first one
	// listed (name offsets grow in input order).
	slices.SortFunc(b.syms, func(x, y sym) int {
		return cmp.Or(
			cmp.Compare(x.addr, y.addr),
			cmp.Compare(t.localRank(x), t.localRank(y)),
			cmp.Compare(x.name, y.name),
		)
	})
	t.syms = slices.CompactFunc(b.syms, func(x, y sym) bool { return x.addr == y.addr })
	return t
}

// parseLine splits "addr type name[\t[module]]"; module is nil for the core
// kernel. Slices alias line.
func parseLine(line []byte) (addr uint64, typ byte, name, module []byte, ok bool) {
	hexAddr, rest, found := bytes.Cut(line, []byte{' '})
	if !found || len(rest) < 3 || rest[1] != ' ' {
		return 0, 0, nil, nil, false
	}
	addr, err := strconv.ParseUint(string(hexAddr), 16, 64)
	if err != nil {
		return 0, 0, nil, nil, false
	}
	typ = rest[0]
	name, module, found = bytes.Cut(rest[2:], []byte{'\t'})
	if len(name) == 0 || len(name) > math.MaxUint16 {
		return 0, 0, nil, nil, false
	}
	if found {
		if len(module) < 3 || module[0] != '[' || module[len(module)-1] != ']' {
			return 0, 0, nil, nil, false
		}
		module = module[1 : len(module)-1]
	}
	return addr, typ, name, module, true
}

func isText(typ byte) bool {
	switch typ {
	case 't', 'T', 'w', 'W':
		return true
	}
	return false
}

// isMappingSymbol reports whether name is no function but a marker the
// assembler leaves in the symbol table, as the kernel's is_mapping_symbol
// tells them: ARM and arm64 mapping symbols ($x code, $d data, $x.1...) and
// local labels (.L*, L0). kallsyms leaves them out for the core kernel but
// may list a module's: on Debian's arm64 6.1 each function of kmltest
// (kernels/kmltest) shared its address with a $x listed before it, which
// took its name (kmltest_leak_one+0x28 [kmltest] came out as
// $x+0x28 [kmltest]).
func isMappingSymbol(name []byte) bool {
	return bytes.HasPrefix(name, []byte("$")) || bytes.HasPrefix(name, []byte(".L")) || bytes.HasPrefix(name, []byte("L0"))
}

// localRank orders global (uppercase) symbols before local ones.
func (t *Table) localRank(s sym) int {
	if t.names[s.name-1] >= 'a' {
		return 1
	}
	return 0
}

// Resolve finds the symbol containing addr, taken to be the greatest symbol
// start <= addr. ok is false if addr is below the first symbol or more than
// maxSymbolSize past the symbol it would fall in, which covers addresses past
// the last core or module symbol.
func (t *Table) Resolve(addr uint64) (Symbol, bool) {
	i := sort.Search(len(t.syms), func(i int) bool { return t.syms[i].addr > addr }) - 1
	if i < 0 {
		return Symbol{}, false
	}
	s := t.syms[i]
	off := addr - s.addr
	if off > maxSymbolSize {
		return Symbol{}, false
	}
	return Symbol{
		Name:   t.names[s.name : s.name+uint32(s.nameLen)],
		Offset: off,
		Module: t.modules[s.module],
	}, true
}

// Len reports the number of symbols, counting each address once.
func (t *Table) Len() int {
	return len(t.syms)
}

// FindFunctions reports which of names are functions of the core kernel in
// kallsyms-format text (text symbols outside any module), with their
// addresses: 0 where kernel.kptr_restrict hides them, found all the same.
func FindFunctions(r io.Reader, names []string) (map[string]uint64, error) {
	wanted := make(map[string]bool, len(names))
	for _, n := range names {
		wanted[n] = true
	}
	found := map[string]uint64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 256<<10), 256<<10)
	for sc.Scan() {
		addr, typ, name, module, ok := parseLine(sc.Bytes())
		if ok && module == nil && isText(typ) && wanted[string(name)] {
			found[string(name)] = addr
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ksym: reading kallsyms: %w", err)
	}
	return found, nil
}
