package ksym

import "fmt"

// Namer names call sites for reports. Without symbols it hides the raw
// address unless the user opted in: addresses defeat KASLR.
type Namer struct {
	Symbols          *Symbolizer // nil when kallsyms could not be read
	IncludeAddresses bool
}

// Symbolize names addr as function+0xoffset [module], or as the raw
// address or "unknown" when no symbol covers it.
func (n Namer) Symbolize(addr uint64) string {
	if n.Symbols != nil {
		if s, ok := n.Symbols.Resolve(addr); ok {
			return s.String()
		}
	}
	if n.IncludeAddresses {
		return fmt.Sprintf("0x%x", addr)
	}
	return "unknown"
}
