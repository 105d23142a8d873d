package holders

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

func record(addr uint64, tgid, kind uint32) []byte {
	b := binary.NativeEndian.AppendUint64(nil, addr)
	b = binary.NativeEndian.AppendUint32(b, tgid)
	return binary.NativeEndian.AppendUint32(b, kind)
}

func TestDecode(t *testing.T) {
	var in []byte
	in = append(in, record(0x10, 7, kindByTask)...)
	in = append(in, record(0x20, 7, kindAsFile)...)
	// A mapping's file, also open as a descriptor: the task's own.
	in = append(in, record(0x30, 7, kindByTask)...)
	in = append(in, record(0x30, 8, kindAsFile)...)
	in = append(in, record(0, 7, kindProcess)...)
	in = binary.NativeEndian.AppendUint64(in, 12345)
	in = append(in, []byte("python3\x00\x00\x00\x00\x00\x00\x00\x00\x00")...)
	holds := &kmem.Holds{Objects: map[uint64]kmem.Holder{}, Processes: map[uint32]kmem.Process{}}
	require.NoError(t, decode(bytes.NewReader(in), holds))
	assert.Equal(t, map[uint64]kmem.Holder{
		0x10: {Tgid: 7, Hold: kmem.HeldByTask},
		0x20: {Tgid: 7, Hold: kmem.HeldAsFile},
		0x30: {Tgid: 7, Hold: kmem.HeldByTask},
	}, holds.Objects)
	assert.Equal(t, map[uint32]kmem.Process{7: {Name: "python3", StartNs: 12345}}, holds.Processes)
}

func TestDecodeRefusesTruncatedAndUnknownRecords(t *testing.T) {
	holds := &kmem.Holds{Objects: map[uint64]kmem.Holder{}, Processes: map[uint32]kmem.Process{}}
	assert.ErrorContains(t, decode(bytes.NewReader(record(1, 1, kindByTask)[:10]), holds), "reading a held object")
	assert.ErrorContains(t, decode(bytes.NewReader(record(0, 1, kindProcess)), holds), "reading a process")
	assert.ErrorContains(t, decode(bytes.NewReader(record(1, 1, 9)), holds), "unknown kind 9")
}
