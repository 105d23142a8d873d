package ksym

import "fmt"

// Symbolizer names call sites and stack frames for reports
// (report.Symbolizer). Without symbols it hides the raw address unless the
// user opted in: addresses defeat KASLR.
type Symbolizer struct {
	Symbols          *Kallsyms // nil when kallsyms could not be read
	IncludeAddresses bool
}

// Symbolize names addr as function+0xoffset [module], or as the raw
// address or "unknown" when no symbol covers it.
func (sym Symbolizer) Symbolize(addr uint64) string {
	if sym.Symbols != nil {
		if s, ok := sym.Symbols.Resolve(addr); ok {
			return s.String()
		}
	}
	if sym.IncludeAddresses {
		return fmt.Sprintf("0x%x", addr)
	}
	return "unknown"
}
