package ksym

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

func parseFile(t testing.TB, path string) *Table {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := Parse(f)
	if err != nil {
		t.Fatalf("Parse(%s): %v", path, err)
	}
	return tab
}

func TestResolve(t *testing.T) {
	tab := parseFile(t, "testdata/kallsyms")

	// 6 distinct core text addresses + 3 module ones; data, malformed and
	// zero-address lines are dropped, duplicates collapse.
	if got, want := tab.Len(), 9; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}

	tests := []struct {
		name string
		addr uint64
		want string // "" means not found
	}{
		{"zero", 0, ""},
		{"below first symbol", 0xffffffff80ffffff, ""},
		{"first symbol start, global wins, first listed", 0xffffffff81000000, "_stext+0x0"},
		{"inside first symbol", 0xffffffff81000001, "_stext+0x1"},
		{"local symbol start", 0xffffffff81000100, "do_one_initcall+0x0"},
		{"data symbol skipped", 0xffffffff81000190, "do_one_initcall+0x90"},
		{"weak symbol", 0xffffffff81000210, "arch_cpu_idle+0x10"},
		{"last byte before next symbol", 0xffffffff810004ff, "kmem_cache_free+0x1ff"},
		{"rodata ksymtab skipped", 0xffffffff81000410, "kmem_cache_free+0x110"},
		{"bss and absolute skipped", 0xffffffff81000710, "alloc_pipe_info+0x210"},
		{"last core symbol", 0xffffffff81000800, "_etext+0x0"},
		{"max distance past last core symbol", 0xffffffff81000800 + maxSymbolSize, "_etext+0x100000"},
		{"beyond max distance", 0xffffffff81000800 + maxSymbolSize + 1, ""},
		{"gap between core and modules", 0xffffffffa0000000, ""},
		{"module below other modules, listed last", 0xffffffffc0a00810, "conntrack_mt+0x10 [xt_conntrack]"},
		{"module global wins over earlier local", 0xffffffffc0a01010, "nft_register_chain_type+0x10 [nf_tables]"},
		{"module weak", 0xffffffffc0a01200, "nft_weak_hook+0x0 [nf_tables]"},
		{"module data skipped", 0xffffffffc0a01310, "nft_weak_hook+0x110 [nf_tables]"},
		{"malformed module line skipped", 0xffffffffc0a02000, "nft_weak_hook+0xe00 [nf_tables]"},
		{"beyond last module symbol", 0xffffffffc0a01200 + maxSymbolSize + 1, ""},
		{"top of address space", ^uint64(0), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sym, ok := tab.Resolve(tt.addr)
			if tt.want == "" {
				if ok {
					t.Fatalf("Resolve(%#x) = %q, want not found", tt.addr, sym)
				}
				return
			}
			if !ok {
				t.Fatalf("Resolve(%#x) not found, want %q", tt.addr, tt.want)
			}
			if got := sym.String(); got != tt.want {
				t.Errorf("Resolve(%#x) = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}
}

func TestResolveFields(t *testing.T) {
	tab := parseFile(t, "testdata/kallsyms")
	got, ok := tab.Resolve(0xffffffffc0a00810)
	want := Symbol{Name: "conntrack_mt", Offset: 0x10, Module: "xt_conntrack"}
	if !ok || got != want {
		t.Errorf("Resolve = %+v, %v; want %+v, true", got, ok, want)
	}
}

func TestSymbolString(t *testing.T) {
	tests := []struct {
		sym  Symbol
		want string
	}{
		{Symbol{Name: "alloc_pipe_info", Offset: 0x1f}, "alloc_pipe_info+0x1f"},
		{Symbol{Name: "_stext"}, "_stext+0x0"},
		{Symbol{Name: "nf_tables_init_net", Offset: 0x10, Module: "nf_tables"}, "nf_tables_init_net+0x10 [nf_tables]"},
		{Symbol{Name: "f", Offset: ^uint64(0)}, "f+0xffffffffffffffff"},
	}
	for _, tt := range tests {
		if got := tt.sym.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.sym, got, tt.want)
		}
	}
}

func TestParseRestricted(t *testing.T) {
	f, err := os.Open("testdata/kallsyms_restricted")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = Parse(f)
	if err == nil || !strings.Contains(err.Error(), "kernel.kptr_restrict") {
		t.Fatalf("Parse error = %v, want one mentioning kernel.kptr_restrict", err)
	}
}

func TestParseErrors(t *testing.T) {
	readErr := errors.New("boom")
	tests := []struct {
		name    string
		in      string
		wantSub string
	}{
		{"empty", "", "no text symbols"},
		{"only data", "ffffffff82000000 D jiffies\nffffffff82000100 r __ksymtab_foo\n", "no text symbols"},
		{"only malformed", "garbage\nffffffff81000000 T\nzzzz T foo\nffffffff81000000 TT foo\n", "4 malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantSub) {
				t.Fatalf("Parse error = %v, want one containing %q", err, tt.wantSub)
			}
			if strings.Contains(err.Error(), "kptr_restrict") {
				t.Errorf("Parse error = %v, must not blame kptr_restrict", err)
			}
		})
	}
	t.Run("reader error", func(t *testing.T) {
		_, err := Parse(iotest.ErrReader(readErr))
		if !errors.Is(err, readErr) {
			t.Fatalf("Parse error = %v, want it to wrap %v", err, readErr)
		}
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestKallsymsRefresh(t *testing.T) {
	dir := t.TempDir()
	kallsyms := filepath.Join(dir, "kallsyms")
	modules := filepath.Join(dir, "modules")
	const addr = 0xffffffffc0a01010
	writeFile(t, kallsyms, "ffffffffc0a01000 t old_fn\t[foo]\n")
	writeFile(t, modules, "foo 16384 0 - Live 0xffffffffc0a01000\n")

	s, err := New(kallsyms, modules)
	if err != nil {
		t.Fatal(err)
	}
	wantResolve := func(want string) {
		t.Helper()
		sym, ok := s.Resolve(addr)
		if !ok || sym.String() != want {
			t.Fatalf("Resolve = %q, %v; want %q", sym, ok, want)
		}
	}
	wantRefresh := func(want bool) {
		t.Helper()
		got, err := s.Refresh()
		if err != nil || got != want {
			t.Fatalf("Refresh = %v, %v; want %v, nil", got, err, want)
		}
	}
	wantResolve("old_fn+0x10 [foo]")
	wantRefresh(false)

	// kallsyms alone changing is not looked at: only module changes are.
	writeFile(t, kallsyms, "ffffffffc0a01000 t new_fn\t[bar]\n")
	wantRefresh(false)
	wantResolve("old_fn+0x10 [foo]")

	// Refcount and "used by" columns change on mere use, not on reload.
	writeFile(t, modules, "foo 16384 3 baz, Live 0xffffffffc0a01000\n")
	wantRefresh(false)

	writeFile(t, modules, "bar 8192 0 - Live 0xffffffffc0a01000\n")
	wantRefresh(true)
	wantResolve("new_fn+0x10 [bar]")
	wantRefresh(false)

	// A failed reload keeps the old table and is retried on the next call.
	writeFile(t, kallsyms, "0000000000000000 t new_fn\t[bar]\n")
	writeFile(t, modules, "bar 8192 0 - Live 0xffffffffc0b00000\n")
	if got, err := s.Refresh(); got || err == nil || !strings.Contains(err.Error(), "kptr_restrict") {
		t.Fatalf("Refresh = %v, %v; want false and a kptr_restrict error", got, err)
	}
	wantResolve("new_fn+0x10 [bar]")
	writeFile(t, kallsyms, "ffffffffc0b00000 t moved_fn\t[bar]\n")
	wantRefresh(true)
	if sym, ok := s.Resolve(0xffffffffc0b00004); !ok || sym.String() != "moved_fn+0x4 [bar]" {
		t.Fatalf("Resolve = %q, %v; want moved_fn+0x4 [bar]", sym, ok)
	}
}

func TestKallsymsNoModulesFile(t *testing.T) {
	dir := t.TempDir()
	kallsyms := filepath.Join(dir, "kallsyms")
	writeFile(t, kallsyms, "ffffffff81000000 T _stext\n")
	s, err := New(kallsyms, filepath.Join(dir, "absent"))
	if err != nil {
		t.Fatalf("New without a modules file: %v", err)
	}
	if reloaded, err := s.Refresh(); reloaded || err != nil {
		t.Fatalf("Refresh = %v, %v; want false, nil", reloaded, err)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(filepath.Join(dir, "absent"), filepath.Join(dir, "modules")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("New with missing kallsyms: err = %v, want ErrNotExist", err)
	}
	if _, err := New("testdata/kallsyms", dir); err == nil {
		t.Error("New with an unreadable modules file (a directory): want error")
	}
}

func TestKallsymsConcurrent(t *testing.T) {
	dir := t.TempDir()
	kallsyms := filepath.Join(dir, "kallsyms")
	modules := filepath.Join(dir, "modules")
	writeFile(t, kallsyms, "ffffffff81000000 T _stext\n")
	writeFile(t, modules, "")
	s, err := New(kallsyms, modules)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 50 {
				if i == 0 && j%10 == 0 {
					if err := os.WriteFile(modules, fmt.Appendf(nil, "m%d 1 0 - Live 0x0\n", j), 0o644); err != nil {
						t.Error(err)
					}
				}
				if _, err := s.Refresh(); err != nil {
					t.Error(err)
				}
				if _, ok := s.Resolve(0xffffffff81000010); !ok {
					t.Error("Resolve failed during Refresh")
				}
			}
		})
	}
	wg.Wait()
}

// readRealKallsyms returns /proc/kallsyms and the address of kmem_cache_free
// read from it, or skips when the file cannot serve as a real-world sample.
func readRealKallsyms(tb testing.TB) ([]byte, uint64) {
	tb.Helper()
	data, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		tb.Skipf("/proc/kallsyms unreadable: %v", err)
	}
	m := regexp.MustCompile(`(?m)^([0-9a-f]+) T kmem_cache_free$`).FindSubmatch(data)
	if m == nil {
		tb.Skip("/proc/kallsyms has no global kmem_cache_free")
	}
	addr, err := strconv.ParseUint(string(m[1]), 16, 64)
	if err != nil {
		tb.Fatal(err)
	}
	if addr == 0 {
		tb.Skip("/proc/kallsyms addresses are all zero (kernel.kptr_restrict hides them from this user)")
	}
	return data, addr
}

func TestParseRealKallsyms(t *testing.T) {
	data, addr := readRealKallsyms(t)
	tab, err := Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if tab.Len() <= 1000 {
		t.Errorf("Len() = %d, want > 1000", tab.Len())
	}
	for off := range uint64(3) {
		want := Symbol{Name: "kmem_cache_free", Offset: off}
		if got, ok := tab.Resolve(addr + off); !ok || got != want {
			t.Errorf("Resolve(%#x) = %q, %v; want %q", addr+off, got, ok, want)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	data, _ := readRealKallsyms(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResolve(b *testing.B) {
	// Synthetic so it runs unprivileged; the size matches a real kernel.
	const n = 120_000
	var buf bytes.Buffer
	for i := range n {
		fmt.Fprintf(&buf, "%016x T fn_%d\n", 0xffffffff81000000+uint64(i)*0x40, i)
	}
	tab, err := Parse(&buf)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var i uint64
	for b.Loop() {
		addr := 0xffffffff81000000 + (i*7919)%(n*0x40)
		if _, ok := tab.Resolve(addr); !ok {
			b.Fatalf("Resolve(%#x) not found", addr)
		}
		i++
	}
}

// FuzzParse feeds Parse arbitrary kallsyms text: it must never panic, and
// whatever table it returns must resolve any address without panicking and
// only to symbols at or below it.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"ffffffff81000000 T _stext\nffffffff81000100 t helper\n",
		"ffffffffc0a01000 t nf_tables_init_net\t[nf_tables]\n",
		"0000000000000000 T restricted\n",
		"not a line\nffffffff81000000 T\nffffffff81000000\n",
		"ffffffff81000000 D data\nffffffff81000000 W weak\n",
		"",
	} {
		f.Add(seed, uint64(0xffffffff81000042))
	}
	if fixture, err := os.ReadFile("testdata/kallsyms"); err == nil {
		f.Add(string(fixture), uint64(0xffffffff81000042))
	}
	f.Fuzz(func(t *testing.T, text string, addr uint64) {
		table, err := Parse(strings.NewReader(text))
		if err != nil {
			return
		}
		if table.Len() == 0 {
			t.Fatal("Parse returned an empty table without an error")
		}
		if sym, ok := table.Resolve(addr); ok && sym.Offset > addr {
			t.Fatalf("Resolve(%#x) = %+v: offset past the address", addr, sym)
		}
	})
}

func TestSymbolizer(t *testing.T) {
	dir := t.TempDir()
	kallsyms := filepath.Join(dir, "kallsyms")
	if err := os.WriteFile(kallsyms, []byte("ffffffff81000000 T _stext\nffffffff81000100 T alloc_pipe_info\nffffffff81000200 T _etext\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sym, err := New(kallsyms, filepath.Join(dir, "no-modules"))
	if err != nil {
		t.Fatal(err)
	}
	check := func(n Symbolizer, addr uint64, want string) {
		t.Helper()
		if got := n.Symbolize(addr); got != want {
			t.Errorf("Symbolizer{symbols: %t, addresses: %t}.Symbolize(%#x) = %q, want %q", n.Symbols != nil, n.IncludeAddresses, addr, got, want)
		}
	}
	check(Symbolizer{Symbols: sym}, 0xffffffff8100012b, "alloc_pipe_info+0x2b")
	// No symbol, or no table at all: the address only where the user asked.
	for _, n := range []Symbolizer{{Symbols: sym}, {}} {
		check(n, 0x10, "unknown")
		n.IncludeAddresses = true
		check(n, 0x10, "0x10")
	}
}
