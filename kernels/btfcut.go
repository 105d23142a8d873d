//go:build ignore

// btfcut copies a kernel's BTF out of its boot image. An arm64 vmlinuz is a
// raw Image (optionally gzipped, optionally wrapped for EFI): no ELF
// sections to find .BTF by, but the section's bytes are in it verbatim. It
// is found by its header and checked by parsing it and looking up the types
// the probes need.
//
//	go run kernels/btfcut.go <vmlinuz> <out.btf>
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cilium/ebpf/btf"
)

// The types bpf/kmemleak.bpf.c needs, and user_pt_regs, which bpf_tracing.h
// uses for arm64: a BTF without them is the wrong blob.
var required = []string{"kmem_cache", "user_pt_regs", "pt_regs", "trace_event_raw_kmem_cache_alloc", "page"}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go run kernels/btfcut.go <vmlinuz> <out.btf>")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "btfcut:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	image, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	if bytes.HasPrefix(image, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(bytes.NewReader(image))
		if err != nil {
			return err
		}
		if image, err = io.ReadAll(zr); err != nil {
			return fmt.Errorf("gunzip: %w", err)
		}
	}
	raw, err := find(image)
	if err != nil {
		return err
	}
	return os.WriteFile(out, raw, 0o644)
}

// find returns the one BTF blob in image whose header is consistent and
// which parses and has every required type.
func find(image []byte) ([]byte, error) {
	magic := []byte{0x9f, 0xeb, 0x01, 0x00} // 0xeB9F little-endian, version 1, no flags
	var found [][]byte
	var rejected []error
	for off := 0; ; {
		i := bytes.Index(image[off:], magic)
		if i < 0 {
			break
		}
		at := off + i
		off = at + 1
		raw, err := candidate(image[at:])
		if err == nil {
			err = check(raw)
		}
		if err != nil {
			rejected = append(rejected, fmt.Errorf("at %#x: %w", at, err))
			continue
		}
		found = append(found, raw)
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, fmt.Errorf("no usable BTF in the image: %w", errors.Join(rejected...))
	}
	return nil, fmt.Errorf("%d BTF blobs in the image, expected one", len(found))
}

// candidate cuts the blob whose header starts b, if the header is one.
func candidate(b []byte) ([]byte, error) {
	const hdrLen = 24
	if len(b) < hdrLen {
		return nil, errors.New("truncated header")
	}
	le := binary.LittleEndian
	if l := le.Uint32(b[4:]); l != hdrLen {
		return nil, fmt.Errorf("hdr_len %d", l)
	}
	typeOff, typeLen := le.Uint32(b[8:]), le.Uint32(b[12:])
	strOff, strLen := le.Uint32(b[16:]), le.Uint32(b[20:])
	// pahole lays the sections out types first, strings right after.
	if typeOff != 0 || strOff != typeOff+typeLen || typeLen == 0 || strLen == 0 {
		return nil, fmt.Errorf("inconsistent sections: types %d+%d, strings %d+%d", typeOff, typeLen, strOff, strLen)
	}
	size := uint64(hdrLen) + uint64(strOff) + uint64(strLen)
	if size > uint64(len(b)) {
		return nil, fmt.Errorf("%d bytes past the end of the image", size-uint64(len(b)))
	}
	return b[:size], nil
}

func check(raw []byte) error {
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	for _, name := range required {
		var s *btf.Struct
		if err := spec.TypeByName(name, &s); err != nil {
			return fmt.Errorf("struct %s: %w", name, err)
		}
	}
	return nil
}
