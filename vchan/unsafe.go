package vchan

import "unsafe"

// wordAt returns a pointer to the 32-bit word at off in b, which must be in
// range and 4-byte aligned (callers check alignedPage first). This is the
// only place the package converts shared memory to a typed pointer: the
// fields of libxenvchan's struct vchan_interface (ring_shared cons/prod and
// the four flag bytes) are aligned uint32 words accessed with sync/atomic.
func wordAt(b []byte, off int) *uint32 {
	return (*uint32)(unsafe.Pointer(&b[off:][:4][0]))
}

// aligned reports whether b starts on a 4-byte boundary.
func aligned(b []byte) bool {
	return len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))%4 == 0
}

// littleEndian reports whether this machine stores words little-endian, as
// the shared layout requires (every Xen target does).
func littleEndian() bool {
	x := uint32(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}
