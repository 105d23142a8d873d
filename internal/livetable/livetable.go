//go:build linux && (amd64 || arm64)

package livetable

import (
	"fmt"
	"math"
	"sync/atomic"
	"unsafe"

	"github.com/kmemleak/kmemleakreceiver/bpf"
)

const (
	slots       = int(bpf.KmemleakTableLayoutTABLE_SLOTS)
	preferFirst = int(bpf.KmemleakTableLayoutTABLE_PREFER_FIRST)
	empty       = uint64(bpf.KmemleakTableKeyTABLE_EMPTY)
	busy        = uint64(bpf.KmemleakTableKeyTABLE_BUSY)
	hash1       = uint64(bpf.KmemleakTableHashTABLE_HASH1)
	hash2       = uint64(bpf.KmemleakTableHashTABLE_HASH2)
)

// BucketSize is the size of one bucket, the table's value size.
const BucketSize = int(unsafe.Sizeof(bpf.KmemleakLiveBucket{}))

// Table is a live table in memory the probes share.
type Table struct {
	buckets []bpf.KmemleakLiveBucket
}

// New views mem, a whole number of buckets, as a table. The memory must
// stay valid, and 8-byte aligned, as long as the table is used.
func New(mem []byte) (*Table, error) {
	buckets, err := view[bpf.KmemleakLiveBucket](mem, "live table", "buckets")
	if err != nil {
		return nil, err
	}
	return &Table{buckets: buckets}, nil
}

// view views mem, a whole number of Ts, 8-byte aligned, as a slice of them:
// the elements of the table named what.
func view[T any](mem []byte, what, elements string) ([]T, error) {
	size := int(unsafe.Sizeof(*new(T)))
	if len(mem)%size != 0 || len(mem) == 0 {
		return nil, fmt.Errorf("%s of %d bytes: not a whole number of %d-byte %s", what, len(mem), size, elements)
	}
	if uintptr(unsafe.Pointer(&mem[0]))%8 != 0 {
		return nil, fmt.Errorf("%s memory is not 8-byte aligned", what)
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&mem[0])), len(mem)/size), nil
}

// Buckets is how many buckets a table needs to hold the given number of
// objects.
func Buckets(objects uint32) uint32 {
	// Filled to 70% at most: with two choices of bucket, fuller tables
	// start to drop allocations (see the table test).
	return max(1, uint32((uint64(objects)*10/7+uint64(slots)-1)/uint64(slots))) //nolint:gosec // G115: at most (2^32-1)*10/7/15 buckets
}

// Len is the number of buckets.
func (t *Table) Len() int { return len(t.buckets) }

// indexes are an address's two buckets, as bucket_of() in the probes.
func indexes(key uint64, n int) (uint32, uint32) {
	return bucketOf(key, hash1, n), bucketOf(key, hash2, n)
}

func bucketOf(key, multiplier uint64, n int) uint32 {
	return uint32((key * multiplier) >> 32 * uint64(n) >> 32) //nolint:gosec // G115: n is a table's length, and the result below it
}

// Object is a record as read, with its address.
type Object struct {
	Key uint64
	bpf.KmemleakObject
}

// Walk calls fn for every object the table holds, bucket by bucket. An
// object allocated or freed during the walk may be seen or not; a record
// rewritten while it is read is not seen. obj is reused between calls.
func (t *Table) Walk(fn func(obj *Object)) {
	t.WalkPart(0, 1, fn)
}

// WalkPart walks part i of n, n parts making the whole table, so that n
// goroutines can walk it.
func (t *Table) WalkPart(i, n int, fn func(obj *Object)) {
	var obj Object
	first, end := part(i, n, len(t.buckets))
	for b := first; b < end; b++ {
		bucket := &t.buckets[b]
		for i := range slots {
			visit(&bucket.Keys[i], &bucket.Objects[i], 0, &obj, fn)
		}
	}
}

// part is where part i of n of a table of size entries begins and ends.
func part(i, n, size int) (first, end int) {
	return i * size / n, (i + 1) * size / n
}

// visit calls fn with the record rec, read into obj, if its key is an
// object's (neither empty nor busy nor with any of the flags) before and
// after the record is read.
func visit(keyp *uint64, rec *bpf.KmemleakObject, flags uint64, obj *Object, fn func(obj *Object)) {
	key := atomic.LoadUint64(keyp)
	if key == empty || key == busy || key&flags != 0 {
		return
	}
	if read(rec, &obj.KmemleakObject) && atomic.LoadUint64(keyp) == key {
		obj.Key = key
		fn(obj)
	}
}

// read copies rec into out between two reads of its seq, with atomic
// loads: on arm64 plain loads may be done after the second read of seq.
func read(rec *bpf.KmemleakObject, out *bpf.KmemleakObject) bool {
	seq := atomic.LoadUint32(&rec.Seq)
	if seq%2 != 0 {
		return false
	}
	out.AllocTime = atomic.LoadUint64(&rec.AllocTime)
	out.CallSite = atomic.LoadUint64(&rec.CallSite)
	out.Cache = atomic.LoadUint64(&rec.Cache)
	bytesStack := atomic.LoadUint64((*uint64)(unsafe.Pointer(&rec.Bytes)))
	out.Bytes, out.StackId = uint32(bytesStack&math.MaxUint32), int32(bytesStack>>32) //nolint:gosec // G115: the two halves publish packed
	owner := atomic.LoadUint64((*uint64)(unsafe.Pointer(&rec.Tgid)))
	out.Tgid, out.Cgroup = uint32(owner&math.MaxUint32), uint32(owner>>32)
	flags := atomic.LoadUint32((*uint32)(unsafe.Pointer(&rec.Allocator)))
	out.Allocator, out.StackSkipped, out.Context = uint8(flags&0xff), uint8(flags>>8&0xff), uint8(flags>>16&0xff)
	out.Seq = seq
	return atomic.LoadUint32(&rec.Seq) == seq
}

// Delete removes key from the table, as a free in the probes does, and
// says whether it was there.
func (t *Table) Delete(key uint64) bool {
	i1, i2 := indexes(key, len(t.buckets))
	first := &t.buckets[i1]
	if release(first, key) {
		return true
	}
	if i1 == i2 || atomic.LoadUint64(&first.Overflow) == 0 || !release(&t.buckets[i2], key) {
		return false
	}
	atomic.AddUint64(&first.Overflow, ^uint64(0))
	return true
}

// DeleteIf removes every object drop picks, each only if its slot still
// holds the object read, and returns how many it removed.
func (t *Table) DeleteIf(drop func(obj *Object) bool) int {
	deleted := 0
	var obj Object
	for b := range t.buckets {
		bucket := &t.buckets[b]
		for i := range slots {
			key := atomic.LoadUint64(&bucket.Keys[i])
			if key == empty || key == busy || !read(&bucket.Objects[i], &obj.KmemleakObject) {
				continue
			}
			obj.Key = key
			if !drop(&obj) || !atomic.CompareAndSwapUint64(&bucket.Keys[i], key, empty) {
				continue
			}
			deleted++
			// An object in its second bucket was counted in its first's
			// overflow.
			if i1, _ := indexes(key, len(t.buckets)); int(i1) != b {
				atomic.AddUint64(&t.buckets[i1].Overflow, ^uint64(0))
			}
		}
	}
	return deleted
}

func release(b *bpf.KmemleakLiveBucket, key uint64) bool {
	for i := range slots {
		if atomic.LoadUint64(&b.Keys[i]) == key && atomic.CompareAndSwapUint64(&b.Keys[i], key, empty) {
			return true
		}
	}
	return false
}

// Insert adds an object as an allocation in the probes does, replacing a
// stale entry of the same key; false when both buckets are full. For
// synthetic objects (benchmarks, tests): the probes do their own inserts.
func (t *Table) Insert(key uint64, obj *bpf.KmemleakObject) bool {
	i1, i2 := indexes(key, len(t.buckets))
	first := &t.buckets[i1]
	var second *bpf.KmemleakLiveBucket
	if i2 != i1 {
		second = &t.buckets[i2]
	}
	overflowed := second != nil && atomic.LoadUint64(&first.Overflow) != 0
	if claim(first, key, key, obj) || (overflowed && claim(second, key, key, obj)) {
		return true
	}
	used := usedSlots(first)
	if (used < preferFirst || second == nil || used <= usedSlots(second)) && claim(first, empty, key, obj) {
		return true
	}
	if second == nil {
		return false
	}
	atomic.AddUint64(&first.Overflow, 1)
	if claim(second, empty, key, obj) {
		return true
	}
	atomic.AddUint64(&first.Overflow, ^uint64(0))
	return false
}

func claim(b *bpf.KmemleakLiveBucket, from, key uint64, obj *bpf.KmemleakObject) bool {
	for i := range slots {
		if atomic.LoadUint64(&b.Keys[i]) == from && atomic.CompareAndSwapUint64(&b.Keys[i], from, busy) {
			publish(b, i, key, obj)
			return true
		}
	}
	return false
}

func publish(b *bpf.KmemleakLiveBucket, slot int, key uint64, obj *bpf.KmemleakObject) {
	writeRecord(&b.Objects[slot], obj)
	atomic.StoreUint64(&b.Keys[slot], key)
}

// writeRecord writes obj into rec between two increments of its seq, as
// write_record() in the probes.
func writeRecord(rec *bpf.KmemleakObject, obj *bpf.KmemleakObject) {
	seq := atomic.LoadUint32(&rec.Seq)
	atomic.StoreUint32(&rec.Seq, seq+1)
	atomic.StoreUint64(&rec.AllocTime, obj.AllocTime)
	atomic.StoreUint64(&rec.CallSite, obj.CallSite)
	atomic.StoreUint64(&rec.Cache, obj.Cache)
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&rec.Bytes)), uint64(obj.Bytes)|uint64(uint32(obj.StackId))<<32) //nolint:gosec // G115: the stack id's bits, as the probes store them
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&rec.Tgid)), uint64(obj.Tgid)|uint64(obj.Cgroup)<<32)
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&rec.Allocator)), uint32(obj.Allocator)|uint32(obj.StackSkipped)<<8|uint32(obj.Context)<<16)
	atomic.StoreUint32(&rec.Seq, seq+2)
}

func usedSlots(b *bpf.KmemleakLiveBucket) int {
	used := 0
	for i := range slots {
		if atomic.LoadUint64(&b.Keys[i]) != empty {
			used++
		}
	}
	return used
}
