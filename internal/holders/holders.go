// Package holders lists the kernel objects live tasks hold, with BPF
// iterators over every task, its open files and its mappings
// (bpf/holders.bpf.c): what explains a call site's growth by processes
// that started (their own structures), or names who holds a leak (its
// open files). The iterators run only when Read is called, never on an
// allocation.
package holders

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/kmemleak/kmemleakreceiver/internal/kmem"
)

// heldSize and processSize are the records' sizes (struct held and struct
// held_process in bpf/holders.h).
const (
	heldSize    = 16
	processSize = heldSize + 8 + 16
)

// held kinds, as bpf/holders.h numbers them.
const (
	kindByTask  = 1
	kindAsFile  = 2
	kindProcess = 3
)

// decode reads the records one iterator wrote into holds.
func decode(r io.Reader, holds *kmem.Holds) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var rec [processSize]byte
	for {
		if _, err := io.ReadFull(br, rec[:heldSize]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading a held object: %w", err)
		}
		addr := binary.NativeEndian.Uint64(rec[0:])
		tgid := binary.NativeEndian.Uint32(rec[8:])
		switch kind := binary.NativeEndian.Uint32(rec[12:]); kind {
		case kindByTask:
			holds.Objects[addr] = kmem.Holder{Tgid: tgid, Hold: kmem.HeldByTask}
		case kindAsFile:
			// A file that is also some task's own structure (a mapping's
			// file) stays one: that explains it.
			if h := holds.Objects[addr]; h.Hold != kmem.HeldByTask {
				holds.Objects[addr] = kmem.Holder{Tgid: tgid, Hold: kmem.HeldAsFile}
			}
		case kindProcess:
			if _, err := io.ReadFull(br, rec[heldSize:processSize]); err != nil {
				return fmt.Errorf("reading a process: %w", err)
			}
			holds.Processes[tgid] = kmem.Process{
				StartNs: binary.NativeEndian.Uint64(rec[heldSize:]),
				Name:    comm(rec[heldSize+8 : processSize]),
			}
		default:
			return fmt.Errorf("a held object of unknown kind %d", kind)
		}
	}
}

// comm is a NUL-padded task name.
func comm(b []byte) string {
	name, _, _ := bytes.Cut(b, []byte{0})
	return string(name)
}
