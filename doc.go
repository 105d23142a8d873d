// Package kmemleakreceiver is an OpenTelemetry Collector receiver that finds
// kernel memory leaks with eBPF: it tracks every live allocation of the
// kernel allocators and reports objects that outlive a threshold as metrics
// and kmem.leak.suspect log events.
//
// mdatagen names the package after the directory holding metadata.yaml, and
// a checkout's directory is rarely called kmemleakreceiver: run it through a
// link that is.
//
//go:generate sh -c "ln -sfn \"$PWD\" \"${TMPDIR:-/tmp}/kmemleakreceiver\" && cd \"${TMPDIR:-/tmp}/kmemleakreceiver\" && go tool mdatagen metadata.yaml"
package kmemleakreceiver
