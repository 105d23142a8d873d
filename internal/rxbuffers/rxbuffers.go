// Package rxbuffers names the stacks on which a driver allocates receive
// buffers and posts them to its device: a network card's or a virtio
// device's receive ring. The device holds them until data arrives, as many
// as its rings have slots, so on a quiet link they all grow old; as
// traffic comes and goes the count of old ones climbs and falls. In suite
// run 13, on a virtual machine, virtio-vsock's refills were called leaking
// at 27 objects a minute.
package rxbuffers

import "strings"

// refills are the drivers' ring refill functions, by name.
var refills = map[string]bool{
	"virtio_vsock_rx_fill": true, // virtio-vsock (VMs, Firecracker, Kata)
	"try_fill_recv":        true, // virtio-net
}

// refillSuffixes end the names of the refill functions of most Ethernet
// drivers: ixgbe_alloc_rx_buffers, i40e_alloc_rx_buffers, igb_, ice_,
// e1000_, and the *_rx_refill of others.
var refillSuffixes = []string{"_alloc_rx_buffers", "_alloc_rx_buffer", "_rx_refill", "_refill_rx"}

// Posted returns the refill function among a stack's functions, innermost
// first, or "" when none is.
func Posted(functions []string) string {
	for _, fn := range functions {
		if refills[fn] {
			return fn
		}
		for _, suffix := range refillSuffixes {
			if strings.HasSuffix(fn, suffix) {
				return fn
			}
		}
	}
	return ""
}
