package vchan

import (
	"sync/atomic"
	"time"
)

// Test-only access to internals for the external tests in vchan_test, which
// need the heap backend (a package that imports vchan).

// Exported layout constants for tests.
const (
	OffLeftCons  = offLeftCons
	OffLeftProd  = offLeftProd
	OffRightCons = offRightCons
	OffRightProd = offRightProd
	OffOrders    = offOrders
	OffFlags     = offFlags
	OffGrants    = offGrants
)

// PageForTest returns the shared control page.
func (e *Endpoint) PageForTest() []byte { return e.page }

// RingsForTest returns the shared read and write ring buffers.
func (e *Endpoint) RingsForTest() (rd, wr []byte) { return e.rd.buf, e.wr.buf }

// ShadowsForTest returns the private copies of our own indices.
func (e *Endpoint) ShadowsForTest() (rdCons, wrProd uint32) {
	e.rmu.Lock()
	defer e.rmu.Unlock()
	e.wmu.Lock()
	defer e.wmu.Unlock()
	return e.rdShadow, e.wrShadow
}

// SetIndicesForTest sets both rings' prod and cons on a server that has no
// client yet (the protocol allows any starting value; a client starts from
// what it finds), keeping the server's private shadows in step.
func (e *Endpoint) SetIndicesForTest(left, right uint32) {
	e.rmu.Lock()
	defer e.rmu.Unlock()
	e.wmu.Lock()
	defer e.wmu.Unlock()
	for _, off := range []int{offLeftCons, offLeftProd} {
		atomic.StoreUint32(wordAt(e.page, off), left)
	}
	for _, off := range []int{offRightCons, offRightProd} {
		atomic.StoreUint32(wordAt(e.page, off), right)
	}
	e.rdShadow, e.wrShadow = left, right
}

// SetRecheckForTest changes the periodic re-check interval; call it before
// the endpoint is used concurrently. A very long interval makes a lost
// event hang a test instead of costing a quarter second.
func (e *Endpoint) SetRecheckForTest(d time.Duration) { e.recheck = d }

// Word is an atomic load of the 32-bit word at off of the control page.
func Word(page []byte, off int) uint32 { return atomic.LoadUint32(wordAt(page, off)) }

// StoreWord is an atomic store into the control page (a peer's write).
func StoreWord(page []byte, off int, v uint32) { atomic.StoreUint32(wordAt(page, off), v) }
