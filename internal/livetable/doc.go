// Package livetable is the probes' live-object table as user space sees it:
// struct live_bucket of bpf/kmemleak.h, read in place where the kernel
// writes it (a BPF array mapped into the process), with the same hashing
// and the same claim-write-publish protocol as the probes. Reading copies
// each record between two equal even seq values, so a record the probes
// rewrite meanwhile is skipped rather than torn.
//
// The layout comes from the probes' objects, built for linux/amd64 and
// linux/arm64: elsewhere the package is empty.
package livetable
