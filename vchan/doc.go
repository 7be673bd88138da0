// Package vchan is a byte-stream transport between two Xen domains over a
// pair of shared-memory rings and one event channel, laid out exactly like
// Xen's libxenvchan so that either end may be the C library.
//
// One side, the server (NewServer, Listen), shares a control page and the
// ring pages and allocates an unbound event channel; the other, the client
// (NewClient, Dial), maps them and binds the channel. The resulting Endpoint
// is a full-duplex stream with Read/Write semantics close to net.Conn.
//
// Control page layout (little-endian, offsets in bytes):
//
//	 0  u32 left.cons    server    left ring: client -> server
//	 4  u32 left.prod    client
//	 8  u32 right.cons   client    right ring: server -> client
//	12  u32 right.prod   server
//	16  u16 left_order   server, at init only
//	18  u16 right_order  server, at init only
//	20  u8  cli_live     0 closed, 1 connected, 2 not yet connected
//	21  u8  srv_live     0 closed, 1 connected
//	22  u8  cli_notify   requests addressed to the client (1 WRITE, 2 READ)
//	23  u8  srv_notify   requests addressed to the server
//	24  u32 grants[]     refs of external ring pages, left ring first
//
// Rings of order 10 and 11 live inside the control page (at 1024 and 2048);
// orders 12 to 20 are separate pages listed in grants.
//
// The package owns the ring protocol and the Backend contract (pages and
// event channels, see backend.go). It does not talk to Xenstore itself: the
// Store interface is implemented elsewhere (linkmgr on Xen, vchan/heap in
// tests). Platform code lives in the backend packages vchan/heap (in one
// process), vchan/shm (simulated host across processes) and vchan/xen.
//
// The peer is not trusted: everything read from shared memory is loaded once,
// atomically, and validated; a peer that breaks the protocol makes the
// Endpoint fail with a *BrokenError, never a panic or an unbounded wait.
// See docs/vchan.md.
package vchan
