package vchan

// ring is one byte ring: a power-of-two buffer indexed by free-running
// counters. The buffer is shared memory; ring itself holds only private,
// validated values (size and mask come from the orders copied at init).
type ring struct {
	buf  []byte // len(buf) == size
	size uint32
	mask uint32
}

func newRing(buf []byte, order int) ring {
	size := uint32(1) << order
	return ring{buf: buf[:size:size], size: size, mask: size - 1}
}

// copyIn copies src into the ring starting at stream position idx, wrapping
// at the end. The caller guarantees len(src) <= free space <= size.
func (r *ring) copyIn(idx uint32, src []byte) {
	off := idx & r.mask
	n := copy(r.buf[off:], src)
	copy(r.buf, src[n:])
}

// copyOut copies len(dst) bytes from stream position idx into dst. The
// caller guarantees len(dst) <= ready <= size.
func (r *ring) copyOut(dst []byte, idx uint32) {
	off := idx & r.mask
	n := copy(dst, r.buf[off:])
	copy(dst[n:], r.buf)
}
