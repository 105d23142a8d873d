package rxbuffers

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPosted(t *testing.T) {
	// The stack suite run 13 called leaking.
	vsock := []string{"__alloc_skb", "alloc_skb_with_frags", "virtio_vsock_rx_fill", "virtio_transport_rx_work", "process_one_work"}
	assert.Equal(t, "virtio_vsock_rx_fill", Posted(vsock))
	assert.Equal(t, "ixgbe_alloc_rx_buffers", Posted([]string{"__netdev_alloc_skb", "ixgbe_alloc_rx_buffers", "ixgbe_poll"}))
	assert.Empty(t, Posted([]string{"__alloc_skb", "tcp_stream_alloc_skb", "tcp_sendmsg_locked"}), "a socket's own buffers")
	assert.Empty(t, Posted([]string{"alloc_pipe_info"}))
}
