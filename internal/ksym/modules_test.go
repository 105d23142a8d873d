package ksym

import (
	"path/filepath"
	"strings"
	"testing"
)

// kallsyms lists a module's init functions after their memory is freed,
// until the module is unloaded; a module loaded into that memory must be
// named by its own symbols. The files are what Debian's 6.1 showed (cut
// down) when kernels/kmltest's modules were loaded: kmltest, unloaded, and
// loaded again after kmlpad, which had taken kmltest's old place, into the
// memory kmlpad's init text had been freed from.
func TestKallsymsModuleLoadedOverFreedInitText(t *testing.T) {
	dir := t.TempDir()
	kallsyms := filepath.Join(dir, "kallsyms")
	modules := filepath.Join(dir, "modules")
	writeFile(t, kallsyms, "ffffffff81000000 T _stext\n"+
		"ffffffffc057c000 t kmltest_leak_one\t[kmltest]\n"+
		"ffffffffc057c060 t kmltest_keep_recent\t[kmltest]\n"+
		"ffffffffc057e000 d leaked\t[kmltest]\n"+
		"ffffffffc0581000 T kmltest_init\t[kmltest]\n")
	writeFile(t, modules, "kmltest 16384 0 - Live 0xffffffffc057c000 (OE)\n")
	s, err := New(kallsyms, modules)
	if err != nil {
		t.Fatal(err)
	}
	resolves := func(addr uint64, want string) {
		t.Helper()
		if sym, ok := s.Resolve(addr); !ok || sym.String() != want {
			t.Errorf("Resolve(%#x) = %q, %v; want %q", addr, sym, ok, want)
		}
	}
	resolves(0xffffffffc057c01d, "kmltest_leak_one+0x1d [kmltest]")
	// Freed init text no module has taken: its name still says which init
	// code allocated what it did.
	resolves(0xffffffffc0581010, "kmltest_init+0x10 [kmltest]")

	writeFile(t, kallsyms, "ffffffff81000000 T _stext\n"+
		"ffffffffc0581000 t kmltest_leak_one\t[kmltest]\n"+
		"ffffffffc0581060 t kmltest_keep_recent\t[kmltest]\n"+
		"ffffffffc0583060 d leaked\t[kmltest]\n"+
		"ffffffffc057c000 t kmlpad_exit\t[kmlpad]\n"+
		"ffffffffc057c000 t cleanup_module\t[kmlpad]\n"+
		// A BPF program's name is never stale, wherever it lies.
		"ffffffffc0584000 t bpf_prog_0123456789abcdef_prog\t[bpf]\n"+
		// ftrace's names of freed init text, after every module's own.
		"ffffffffc0586000 T kmltest_init\t[kmltest]\n"+
		"ffffffffc0581000 T kmlpad_init\t[kmlpad]\n"+
		"ffffffffc0581070 T kmlpad_init_part\t[kmlpad]\n")
	writeFile(t, modules, "kmltest 16384 0 - Live 0xffffffffc0581000 (OE)\n"+
		"kmlpad 12288 0 - Live 0xffffffffc057c000 (OE)\n")
	if reloaded, err := s.Refresh(); !reloaded || err != nil {
		t.Fatalf("Refresh = %v, %v; want true, nil", reloaded, err)
	}
	resolves(0xffffffffc058101d, "kmltest_leak_one+0x1d [kmltest]")
	resolves(0xffffffffc058107c, "kmltest_keep_recent+0x1c [kmltest]")
	resolves(0xffffffffc057c004, "kmlpad_exit+0x4 [kmlpad]")
	resolves(0xffffffffc0584010, "bpf_prog_0123456789abcdef_prog+0x10 [bpf]")
	resolves(0xffffffffc0586010, "kmltest_init+0x10 [kmltest]")

	// Where /proc/modules hides the addresses, nothing tells which names
	// are stale: all are kept, as kallsyms has them.
	writeFile(t, modules, "kmltest 16384 0 - Live 0x0000000000000000 (OE)\n"+
		"kmlpad 12288 0 - Live 0x0000000000000000 (OE)\n")
	if reloaded, err := s.Refresh(); !reloaded || err != nil {
		t.Fatalf("Refresh = %v, %v; want true, nil", reloaded, err)
	}
	resolves(0xffffffffc058107c, "kmlpad_init_part+0xc [kmlpad]")
}

func TestParseModules(t *testing.T) {
	m := parseModules([]byte("kmltest 16384 0 - Live 0xffffffffc0581000 (OE)\n" +
		"kmlpad 12288 1 kmltest, Live 0xffffffffc057c000\n" +
		"hidden 4096 0 - Live 0x0000000000000000\n" +
		"short 4096 0 -\n" +
		"badsize x 0 - Live 0xffffffffc0590000\n" +
		"wraps 16 0 - Live 0xfffffffffffffff8\n" +
		// A range that reaches past kmltest's, as a module whose memory
		// types were allocated apart (6.4+) can seem to.
		"wide 65536 0 - Live 0xffffffffc0570000\n"))
	if len(m.sorted) != 3 {
		t.Fatalf("parsed %d ranges, want 3 (kmltest, kmlpad, wide): %+v", len(m.sorted), m.byName)
	}
	tests := []struct {
		module string
		addr   uint64
		want   bool
	}{
		{"kmltest", 0xffffffffc0581000, false}, // its own
		{"kmlpad", 0xffffffffc0581000, true},   // kmltest's
		{"kmlpad", 0xffffffffc0584fff, true},   // kmltest's last byte
		{"kmlpad", 0xffffffffc0585000, false},  // past every range
		{"kmltest", 0xffffffffc057c000, true},  // kmlpad's
		{"kmltest", 0xffffffffc0570000, true},  // wide's
		{"kmlpad", 0xffffffffc057efff, false},  // its own, inside wide's
		{"kmlpad", 0xffffffffc057ffff, true},   // past its own, inside wide's
		{"kmltest", 0xffffffffc0580000, false}, // between wide's end and kmltest's start
		{"hidden", 0xffffffffc0581000, false},  // not known: kept
		{"bpf", 0xffffffffc0581000, false},     // not a module: kept
		{"kmltest", 0xffffffffc056ffff, false}, // below every range
		{"kmltest", 0xffffffffffffffff, false}, // top of the address space
	}
	for _, tt := range tests {
		if got := m.stale([]byte(tt.module), tt.addr); got != tt.want {
			t.Errorf("stale(%s, %#x) = %v, want %v", tt.module, tt.addr, got, tt.want)
		}
	}
}

// An arm64 module's functions share their addresses with mapping symbols
// ($x), listed first, on Debian's arm64 6.1.
func TestParseSkipsMappingSymbols(t *testing.T) {
	tab, err := Parse(strings.NewReader("ffff800000010000 T _stext\n" +
		"ffffa8b870d31000 t $x\t[kmltest]\n" +
		"ffffa8b870d31000 t kmltest_leak_one\t[kmltest]\n" +
		"ffffa8b870d31040 t $d\t[kmltest]\n" +
		"ffffa8b870d31048 t .L__unnamed_1\t[kmltest]\n" +
		"ffffa8b870d31050 t L0\t[kmltest]\n" +
		"ffffa8b870d31060 t $x.2\t[kmltest]\n" +
		"ffffa8b870d31060 t kmltest_keep_recent\t[kmltest]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[uint64]string{
		0xffffa8b870d31028: "kmltest_leak_one+0x28 [kmltest]",
		0xffffa8b870d31058: "kmltest_leak_one+0x58 [kmltest]",
		0xffffa8b870d31094: "kmltest_keep_recent+0x34 [kmltest]",
	} {
		if sym, ok := tab.Resolve(addr); !ok || sym.String() != want {
			t.Errorf("Resolve(%#x) = %q, %v; want %q", addr, sym, ok, want)
		}
	}
	if got, want := tab.Len(), 3; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
}
