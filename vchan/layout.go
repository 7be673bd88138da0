package vchan

import (
	"math/bits"
	"sync/atomic"
)

// Offsets in the control page (libxenvchan's struct vchan_interface).
const (
	offLeftCons   = 0
	offLeftProd   = 4
	offRightCons  = 8
	offRightProd  = 12
	offOrders     = 16 // left_order u16, right_order u16
	offFlags      = 20 // cli_live, srv_live, cli_notify, srv_notify
	offGrants     = 24
	offCliLive    = offFlags + byteCliLive
	offSrvLive    = offFlags + byteSrvLive
	inPageOrder10 = 1024 // where an order-10 ring lives in the control page
	inPageOrder11 = 2048 // where an order-11 ring lives in the control page
)

// Byte numbers inside the flag word at offFlags (little-endian).
const (
	byteCliLive   = 0
	byteSrvLive   = 1
	byteCliNotify = 2
	byteSrvNotify = 3
)

// Notify bits.
const (
	notifyWrite = 1 // "signal me after you produce data"
	notifyRead  = 2 // "signal me after you consume data"
)

// Live byte values.
const (
	liveClosed    = 0
	liveConnected = 1
	liveWaiting   = 2 // cli_live only: no client yet
)

// Ring orders.
const (
	minOrder  = 10
	maxOrder  = 20
	pageOrder = 12
)

// initialFlags is the flag word a server stores at init (spec §10.1):
// cli_live 2, srv_live 1, cli_notify WRITE, srv_notify 0.
const initialFlags = liveWaiting | liveConnected<<8 | notifyWrite<<16

// casAttempts bounds the compare-and-swap loop of flagWord.setBytes: a peer
// that rewrites the word continuously must not keep us spinning forever.
const casAttempts = 1 << 12

// flagWord is the 32-bit word at offset 20 that packs the four flag bytes.
// Go has no 8-bit atomics, so every flag access is an atomic operation on
// the whole aligned word; a byte-wide locked update by a C peer on the same
// word is atomic with respect to these (x86-64).
type flagWord struct{ p *uint32 }

func byteMask(i int) uint32 { return 0xff << (8 * i) }

// load returns the whole word.
func (f flagWord) load() uint32 { return atomic.LoadUint32(f.p) }

// byteOf extracts byte i from a word returned by load.
func byteOf(w uint32, i int) uint8 { return uint8(w >> (8 * i)) }

// or sets bits in byte i.
func (f flagWord) or(i int, bits uint8) {
	atomic.OrUint32(f.p, uint32(bits)<<(8*i))
}

// testAndClear clears bits in byte i and reports whether any of them was set.
func (f flagWord) testAndClear(i int, bits uint8) bool {
	m := uint32(bits) << (8 * i)
	return atomic.AndUint32(f.p, ^m)&m != 0
}

// clearByte stores 0 into byte i in one atomic operation.
func (f flagWord) clearByte(i int) { atomic.AndUint32(f.p, ^byteMask(i)) }

// setBytes replaces the bytes selected by mask with the matching bytes of
// val, leaving the others as they are, without the selected bytes ever
// passing through another value. It gives up (false) if the peer changed
// the word casAttempts times in a row.
func (f flagWord) setBytes(mask, val uint32) bool {
	for range casAttempts {
		old := atomic.LoadUint32(f.p)
		if atomic.CompareAndSwapUint32(f.p, old, old&^mask|val&mask) {
			return true
		}
	}
	return false
}

// ceilLog2 returns the smallest k with 1<<k >= n (0 for n <= 1).
func ceilLog2(n int) int {
	if n <= 1 {
		return 0
	}
	return bits.Len(uint(n - 1))
}

// chooseOrders picks the ring orders for NewServer exactly as
// libxenvchan_server_init does (spec §3): left is the client->server ring.
func chooseOrders(leftMin, rightMin int) (left, right int, err error) {
	if leftMin < 0 || rightMin < 0 || leftMin > MaxRingSize || rightMin > MaxRingSize {
		return 0, 0, ErrRingSize
	}
	left = max(pageOrder, ceilLog2(leftMin))
	right = max(pageOrder, ceilLog2(rightMin))
	switch {
	case leftMin <= 1024 && rightMin <= 2048:
		left, right = 10, 11
	case leftMin <= 2048 && rightMin <= 1024:
		left, right = 11, 10
	case leftMin <= 2048:
		left = 11
	case rightMin <= 2048:
		right = 11
	}
	return left, right, nil
}

// validOrders reports whether a client may accept the pair (spec §7.2 step 5).
func validOrders(left, right int) bool {
	if left < minOrder || left > maxOrder || right < minOrder || right > maxOrder {
		return false
	}
	return left != right || left >= pageOrder
}

// ringPages is the number of external pages of a ring of the given order
// (0 for an in-page ring).
func ringPages(order int) int {
	if order < pageOrder {
		return 0
	}
	return 1 << (order - pageOrder)
}

// inPageOffset is where an in-page ring of order 10 or 11 starts.
func inPageOffset(order int) int {
	if order == 10 {
		return inPageOrder10
	}
	return inPageOrder11
}

// layout is a private copy of what a client needs from the control page,
// read once at init.
type layout struct {
	left, right int      // orders
	grants      []uint32 // left pages, then right pages
}

// readLayout copies the orders and grant list out of page with atomic loads
// (the peer may be rewriting it) and validates them.
func readLayout(page []byte) (layout, error) {
	w := atomic.LoadUint32(wordAt(page, offOrders))
	l := layout{left: int(uint16(w)), right: int(uint16(w >> 16))}
	if !validOrders(l.left, l.right) {
		return layout{}, ErrBadLayout
	}
	n := ringPages(l.left) + ringPages(l.right)
	if offGrants+4*n > PageSize { // never true for legal orders; kept as a guard
		return layout{}, ErrBadLayout
	}
	l.grants = make([]uint32, n)
	for i := range l.grants {
		l.grants[i] = atomic.LoadUint32(wordAt(page, offGrants+4*i))
	}
	return l, nil
}
