//go:build linux && (amd64 || arm64)

package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// table prints tab-separated rows aligned.
func table(w io.Writer, header string, rows [][]string) {
	var b strings.Builder
	b.WriteString(header + "\t\n")
	for _, r := range rows {
		for _, cell := range r {
			b.WriteString(cell + "\t")
		}
		b.WriteByte('\n')
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// As with fmt.Println, which prints the rest of the report, a failed
	// write to the terminal has nowhere to be reported.
	_, _ = io.WriteString(tw, b.String())
	_ = tw.Flush()
}

// num formats a measurement with three significant digits or so.
func num(x float64) string {
	switch {
	case x >= 100 || x <= -100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10 || x <= -10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.2f", x)
}
