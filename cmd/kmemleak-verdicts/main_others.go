//go:build !linux || !(amd64 || arm64)

package main

import (
	"fmt"
	"os"
	"runtime"
)

// The command loads the receiver's probes, which are built for Linux on
// x86-64 and arm64.
func main() {
	fmt.Fprintf(os.Stderr, "kmemleak-verdicts runs on linux/amd64 and linux/arm64 only (this is %s/%s)\n", runtime.GOOS, runtime.GOARCH)
	os.Exit(2)
}
