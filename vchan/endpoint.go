package vchan

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"idcfs/internal/deadline"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// MaxRingSize is the largest ring NewServer accepts (order 20, as libxenvchan).
const MaxRingSize = 1 << maxOrder

// recheckInterval bounds every wait: a blocked operation re-checks the
// indices and the peer's liveness at least this often, so a lost event (or
// a kernel that sends the unmap event before clearing the live byte) cannot
// hang it forever.
const recheckInterval = 250 * time.Millisecond

// closeStoreTimeout bounds the removal of the published path in Close.
const closeStoreTimeout = 5 * time.Second

// Stats are an Endpoint's counters.
type Stats struct {
	BytesIn   uint64 // payload bytes read from the read ring
	BytesOut  uint64 // payload bytes written into the write ring
	EventsIn  uint64 // events received
	EventsOut uint64 // events sent (peer requests, connect and close)
	Notifies  uint64 // events sent because the peer had asked (notify bits)
	Requests  uint64 // times this side set a notify bit in the peer's byte
	ReadRing  int    // read ring size in bytes
	WriteRing int    // write ring size in bytes
}

// State bits of an Endpoint (Endpoint.state).
const (
	stPeerGone  = 1 << iota // peer's live byte seen 0: drain, then EOF
	stFatal                 // broken peer or backend failure: e.fatal
	stClosed                // Close was called
	stConnected             // server: cli_live seen 1
)

// Endpoint is one end of a vchan: a full-duplex byte stream over two rings.
//
// One Read and one Write may run concurrently; concurrent Reads are
// serialised, likewise concurrent Writes. A blocked Read or Write waits on
// the event channel itself; each Endpoint also owns one goroutine that
// waits for events while no operation does (see wait.go); Close stops it
// and waits for it.
type Endpoint struct {
	server  bool
	peer    DomID
	ringRef uint32
	ev      EventChannel
	ctrl    Mapping
	ext     []Mapping // external ring mappings
	page    []byte    // control page (shared)

	// Flag bytes, as numbered in the flag word.
	flags     flagWord
	peerLive  int // the peer's live byte
	ownLive   int // ours
	reqByte   int // the peer's notify byte: we OR requests into it
	ownNotify int // our notify byte: we test-and-clear it after advancing
	rdProd    *uint32
	rdCons    *uint32
	wrProd    *uint32
	wrCons    *uint32
	store     Store // set by Listen: Close removes path
	storePath string

	rmu       sync.Mutex // serialises readers; guards the fields below
	rd        ring
	rdShadow  uint32 // our read-ring cons: never read back from the page
	rdQuiet   bool   // consumed without sending the peer an event...
	rdQuietAt uint64 // ...and eventsOut was this then
	// noDrainEvent: no unasked event when the drained reader blocks
	// (SetDrainEvent).
	noDrainEvent bool
	rdTimer      *time.Timer
	rdWake       chan struct{} // 1-buffered: coalesced wake for the reader
	rdDL         *deadline.Deadline
	rdCtx        ctxWatch // registrations on the contexts Reads waited with

	wmu      sync.Mutex // serialises writers; guards the fields below
	wr       ring
	wrShadow uint32 // our write-ring prod
	wrTimer  *time.Timer
	wrWake   chan struct{}
	wrDL     *deadline.Deadline
	wrCtx    ctxWatch

	recheck time.Duration // recheckInterval; tests may raise it

	// The wait role (wait.go).
	evMu      sync.Mutex
	holder    uint8  // role in ev.Wait, 0 if none
	waiting   uint8  // roles of the operations that may block
	activity  uint64 // counts operations that started to block
	watchWant bool   // the watcher sleeps until the role is free
	evSeq     atomic.Uint64
	wctx      context.Context // what the holder waits with
	wcancel   context.CancelFunc
	holdTimer *time.Timer // the holder's periodic re-check
	watchWake chan struct{}
	watchDone chan struct{}

	connected chan struct{} // server: closed once cli_live == 1 was seen
	connOnce  sync.Once

	// pageMu lets WaitConnected look at the page outside rmu and wmu:
	// it holds it for reading; Close holds it for writing while unmapping.
	pageMu sync.RWMutex

	state atomic.Uint32
	mu    sync.Mutex // guards err, fatal, done closing
	err   error      // first reason the endpoint stopped
	fatal error      // the error that set stFatal
	done  chan struct{}

	closeOnce sync.Once
	closeErr  error

	bytesIn, bytesOut, eventsIn, eventsOut, notifies, requests atomic.Uint64
}

// Endpoint is a stream: an io.ReadWriteCloser with net.Conn's deadlines.
var (
	_ io.ReadWriteCloser = (*Endpoint)(nil)
	_ interface {
		SetDeadline(time.Time) error
		SetReadDeadline(time.Time) error
		SetWriteDeadline(time.Time) error
	} = (*Endpoint)(nil)
)

// NewServer shares a control page (and ring pages) with domain peer,
// allocates an unbound event channel for it and lays out the page as
// libxenvchan's server does. leftMin is the minimum size of the ring the
// server reads (client->server), rightMin of the ring it writes; each must
// be in [0, MaxRingSize] and orders are chosen as the C library does.
// RingRef and Port are what the client needs (see Listen). The Endpoint
// owns everything it allocated; Close releases it.
func NewServer(be Backend, peer DomID, leftMin, rightMin int) (*Endpoint, error) {
	lo, ro, err := chooseOrders(leftMin, rightMin)
	if err != nil {
		return nil, err
	}
	if !littleEndian() {
		return nil, ErrMisaligned
	}
	var undo []func() error
	fail := func(err error) (*Endpoint, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			_ = undo[i]() // the first error is the one to report
		}
		return nil, err
	}
	ev, err := be.AllocUnbound(peer)
	if err != nil {
		return fail(fmt.Errorf("vchan: allocate event channel: %w", err))
	}
	undo = append(undo, ev.Close)
	ctrl, err := be.Share(peer, 1)
	if err != nil {
		return fail(fmt.Errorf("vchan: share control page: %w", err))
	}
	undo = append(undo, ctrl.Close)
	page, err := pageOf(ctrl, 1)
	if err != nil || len(ctrl.Refs()) != 1 {
		return fail(ErrMisaligned)
	}
	if err := ctrl.SetUnmapNotify(offSrvLive, ev); err != nil {
		return fail(fmt.Errorf("vchan: unmap notify: %w", err))
	}
	clear(page)
	binary.LittleEndian.PutUint16(page[offOrders:], uint16(lo))
	binary.LittleEndian.PutUint16(page[offOrders+2:], uint16(ro))

	e := newEndpoint(true, peer, ev, ctrl, page)
	e.ringRef = ctrl.Refs()[0]
	var grants []uint32
	ringBuf := func(order int) ([]byte, error) {
		n := ringPages(order)
		if n == 0 {
			return page[inPageOffset(order):], nil
		}
		m, err := be.Share(peer, n)
		if err != nil {
			return nil, fmt.Errorf("vchan: share %d ring pages: %w", n, err)
		}
		undo = append(undo, m.Close)
		b, err := pageOf(m, n)
		if err != nil || len(m.Refs()) != n {
			return nil, ErrMisaligned
		}
		e.ext = append(e.ext, m)
		grants = append(grants, m.Refs()...)
		return b, nil
	}
	left, err := ringBuf(lo)
	if err != nil {
		return fail(err)
	}
	right, err := ringBuf(ro)
	if err != nil {
		return fail(err)
	}
	for i, g := range grants {
		binary.LittleEndian.PutUint32(page[offGrants+4*i:], g)
	}
	e.rd = newRing(left, lo)
	e.wr = newRing(right, ro)
	atomic.StoreUint32(e.rdCons, 0)
	atomic.StoreUint32(e.wrProd, 0)
	atomic.StoreUint32(wordAt(page, offFlags), initialFlags)
	e.start()
	return e, nil
}

// NewClient connects to the vchan that domain peer's server published as
// ringRef (its control page grant) and port (its unbound event channel):
// it binds the event channel, maps the control page, copies and validates
// the orders and grant list once, maps the rings (the write ring
// read-write, the read ring read-only), then sets cli_live = 1 and
// srv_notify = WRITE and sends an event. A control page without a legal
// layout (for example a stale, zeroed page) gives ErrBadLayout: the server
// is not ready, retry later. The Endpoint owns the mappings and the bound
// port; Close releases them.
func NewClient(be Backend, peer DomID, ringRef, port uint32) (*Endpoint, error) {
	if ringRef == 0 || port == 0 {
		return nil, ErrBadRef
	}
	if !littleEndian() {
		return nil, ErrMisaligned
	}
	var undo []func() error
	fail := func(err error) (*Endpoint, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			_ = undo[i]()
		}
		return nil, err
	}
	// Bind first: the unmap notify names the port.
	ev, err := be.Bind(peer, port)
	if err != nil {
		return fail(fmt.Errorf("vchan: bind event channel %d of domain %d: %w", port, peer, err))
	}
	undo = append(undo, ev.Close)
	ctrl, err := be.Map(peer, []uint32{ringRef}, true)
	if err != nil {
		return fail(fmt.Errorf("vchan: map control page %d of domain %d: %w", ringRef, peer, err))
	}
	undo = append(undo, ctrl.Close)
	page, err := pageOf(ctrl, 1)
	if err != nil {
		return fail(err)
	}
	if err := ctrl.SetUnmapNotify(offCliLive, ev); err != nil {
		return fail(fmt.Errorf("vchan: unmap notify: %w", err))
	}
	lay, err := readLayout(page)
	if err != nil {
		return fail(err)
	}
	e := newEndpoint(false, peer, ev, ctrl, page)
	e.ringRef = ringRef
	grants := lay.grants
	ringBuf := func(order int, writable bool) ([]byte, error) {
		n := ringPages(order)
		if n == 0 {
			return page[inPageOffset(order):], nil
		}
		refs := grants[:n]
		grants = grants[n:]
		m, err := be.Map(peer, refs, writable)
		if err != nil {
			return nil, fmt.Errorf("vchan: map %d ring pages of domain %d: %w", n, peer, err)
		}
		undo = append(undo, m.Close)
		b, err := pageOf(m, n)
		if err != nil {
			return nil, err
		}
		e.ext = append(e.ext, m)
		return b, nil
	}
	left, err := ringBuf(lay.left, true)
	if err != nil {
		return fail(err)
	}
	right, err := ringBuf(lay.right, false)
	if err != nil {
		return fail(err)
	}
	e.wr = newRing(left, lay.left)
	e.rd = newRing(right, lay.right)
	// Nothing resets indices on connection: start from what the page holds.
	e.wrShadow = atomic.LoadUint32(e.wrProd)
	e.rdShadow = atomic.LoadUint32(e.rdCons)
	// cli_live = 1 and srv_notify = WRITE in one step.
	const connMask = 0xff<<(8*byteCliLive) | 0xff<<(8*byteSrvNotify)
	const connVal = liveConnected<<(8*byteCliLive) | notifyWrite<<(8*byteSrvNotify)
	if !e.flags.setBytes(connMask, connVal) {
		return fail(&BrokenError{What: "flag word never stable", Value: uint64(e.flags.load())})
	}
	if err := e.notify(); err != nil {
		return fail(err)
	}
	e.start()
	return e, nil
}

// Listen is NewServer followed by st.Publish(ctx, path, peer, RingRef,
// Port). Close also removes path from st.
func Listen(ctx context.Context, be Backend, st Store, peer DomID, path string, leftMin, rightMin int) (*Endpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e, err := NewServer(be, peer, leftMin, rightMin)
	if err != nil {
		return nil, err
	}
	if err := st.Publish(ctx, path, peer, e.RingRef(), e.Port()); err != nil {
		_ = e.Close() // report the publish error
		return nil, fmt.Errorf("vchan: publish %s: %w", path, err)
	}
	e.store, e.storePath = st, path
	return e, nil
}

// Dial looks up the ring reference and port under path in st and connects
// to them with NewClient.
func Dial(ctx context.Context, be Backend, st Store, peer DomID, path string) (*Endpoint, error) {
	ref, port, err := st.Lookup(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("vchan: look up %s: %w", path, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return NewClient(be, peer, ref, port)
}

// pageOf checks a mapping of n pages and returns its memory.
func pageOf(m Mapping, n int) ([]byte, error) {
	b := m.Bytes()
	if len(b) < n*PageSize || !aligned(b) {
		return nil, ErrMisaligned
	}
	return b[: n*PageSize : n*PageSize], nil
}

func newEndpoint(server bool, peer DomID, ev EventChannel, ctrl Mapping, page []byte) *Endpoint {
	e := &Endpoint{
		server:    server,
		peer:      peer,
		ev:        ev,
		ctrl:      ctrl,
		page:      page,
		flags:     flagWord{wordAt(page, offFlags)},
		rdWake:    make(chan struct{}, 1),
		wrWake:    make(chan struct{}, 1),
		rdDL:      deadline.New(),
		wrDL:      deadline.New(),
		rdTimer:   stoppedTimer(),
		wrTimer:   stoppedTimer(),
		recheck:   recheckInterval,
		connected: make(chan struct{}),
		done:      make(chan struct{}),
	}
	e.initWait()
	if server {
		e.peerLive, e.ownLive = byteCliLive, byteSrvLive
		e.reqByte, e.ownNotify = byteCliNotify, byteSrvNotify
		e.rdCons, e.rdProd = wordAt(page, offLeftCons), wordAt(page, offLeftProd)
		e.wrCons, e.wrProd = wordAt(page, offRightCons), wordAt(page, offRightProd)
	} else {
		e.peerLive, e.ownLive = byteSrvLive, byteCliLive
		e.reqByte, e.ownNotify = byteSrvNotify, byteCliNotify
		e.rdCons, e.rdProd = wordAt(page, offRightCons), wordAt(page, offRightProd)
		e.wrCons, e.wrProd = wordAt(page, offLeftCons), wordAt(page, offLeftProd)
		e.setConnected()
	}
	return e
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// start launches the watcher goroutine.
func (e *Endpoint) start() { go e.watch() }

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// RingRef is the grant reference of the control page: what a server
// publishes as ring-ref (and what a client was given).
func (e *Endpoint) RingRef() uint32 { return e.ringRef }

// Port is the local event channel port: what a server publishes as
// event-channel.
func (e *Endpoint) Port() uint32 { return e.ev.Port() }

// Done returns a channel that is closed when the peer closed or died, the
// peer broke the protocol, the backend failed, or the Endpoint was closed.
// Err says which.
func (e *Endpoint) Done() <-chan struct{} { return e.done }

// Err returns nil while Done is open, then why it closed: ErrPeerClosed, a
// *BrokenError (wrapping ErrBroken), an event channel error, or
// net.ErrClosed after Close. The first reason sticks.
func (e *Endpoint) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// stop records the first reason the endpoint stopped and closes done.
func (e *Endpoint) stop(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err == nil {
		e.err = err
		close(e.done)
	}
}

// setFatal makes every later operation fail with err.
func (e *Endpoint) setFatal(err error) {
	e.mu.Lock()
	if e.fatal == nil {
		e.fatal = err
	}
	e.mu.Unlock()
	e.state.Or(stFatal)
	e.stop(err)
}

// broken marks the peer as hostile.
func (e *Endpoint) broken(what string, v uint64) error {
	e.setFatal(&BrokenError{What: what, Value: v})
	return e.opErr()
}

// opErr is the error an operation returns once the endpoint is unusable,
// or nil.
func (e *Endpoint) opErr() error {
	s := e.state.Load()
	switch {
	case s&stClosed != 0:
		return net.ErrClosed
	case s&stFatal != 0:
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.fatal
	}
	return nil
}

func (e *Endpoint) setConnected() {
	e.connOnce.Do(func() {
		e.state.Or(stConnected)
		close(e.connected)
	})
}

// checkPeer loads the peer's live byte once and updates the state: 0 means
// gone (sticky), 1 connected, 2 (no client yet) nothing, anything else is a
// broken peer (the error). It reports whether the peer is gone.
func (e *Endpoint) checkPeer() (gone bool, err error) {
	if e.state.Load()&stPeerGone != 0 {
		return true, nil
	}
	switch live := byteOf(e.flags.load(), e.peerLive); live {
	case liveClosed:
		e.state.Or(stPeerGone)
		e.stop(ErrPeerClosed)
		return true, nil
	case liveConnected:
		if e.server {
			e.setConnected()
		}
	case liveWaiting:
	default:
		return false, e.broken("peer live byte", uint64(live))
	}
	return false, nil
}

// checkPeerMapped is checkPeer for callers that hold neither rmu nor wmu:
// it makes sure Close has not unmapped the page.
func (e *Endpoint) checkPeerMapped() (bool, error) {
	e.pageMu.RLock()
	defer e.pageMu.RUnlock()
	if e.state.Load()&stClosed != 0 {
		return false, net.ErrClosed
	}
	return e.checkPeer()
}

// notify sends an event to the peer.
func (e *Endpoint) notify() error {
	if err := e.ev.Notify(); err != nil {
		err = fmt.Errorf("vchan: notify: %w", err)
		e.setFatal(err)
		return err
	}
	e.eventsOut.Add(1)
	return nil
}

// sendIfRequested is the send half of the notify protocol: after advancing
// an index, clear bit in our own notify byte and send an event if it was
// set.
func (e *Endpoint) sendIfRequested(bit uint8) bool {
	if e.flags.testAndClear(e.ownNotify, bit) {
		if e.notify() == nil {
			e.notifies.Add(1)
		}
		return true
	}
	return false
}

// Readable reports whether the read ring holds bytes not read yet. It takes
// no lock and waits for nothing: a goroutine other than the reader may ask.
func (e *Endpoint) Readable() bool {
	return atomic.LoadUint32(e.rdProd) != atomic.LoadUint32(e.rdCons)
}

// request asks the peer for an event (the atomic OR is a full barrier, so
// the caller's re-check of the indices that follows is ordered after it).
func (e *Endpoint) request(bit uint8) {
	e.flags.or(e.reqByte, bit)
	e.requests.Add(1)
}

// wait blocks an operation that does not hold the wait role until the
// holder wakes it, a periodic re-check, a state change (done), the context
// or the deadline. t is the caller's private timer; dl may be nil.
func (e *Endpoint) wait(ctx context.Context, wakeup chan struct{}, t *time.Timer, dl *deadline.Deadline) error {
	var dlc <-chan struct{}
	if dl != nil {
		dlc = dl.Wait()
	}
	t.Reset(e.recheck)
	defer t.Stop()
	select {
	case <-wakeup:
	case <-t.C:
	case <-e.done:
	case <-ctx.Done():
		return ctx.Err()
	case <-dlc:
		return os.ErrDeadlineExceeded
	}
	return nil
}

// WaitConnected returns once a client has connected (cli_live == 1), or
// with ErrPeerClosed if it connected and left already, the Endpoint's
// error, or ctx.Err(). For a client it returns at once.
func (e *Endpoint) WaitConnected(ctx context.Context) error {
	t := stoppedTimer()
	for {
		if err := e.opErr(); err != nil {
			return err
		}
		gone, err := e.checkPeerMapped()
		if err != nil {
			return err
		}
		if e.state.Load()&stConnected != 0 {
			return nil
		}
		if gone {
			return ErrPeerClosed
		}
		t.Reset(e.recheck)
		select {
		case <-e.connected:
		case <-t.C:
		case <-e.done:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
}

// Read reads up to len(p) bytes, blocking until at least one is available.
// Data left in the ring stays readable after the peer closed; then Read
// returns io.EOF. It honours the read deadline (os.ErrDeadlineExceeded).
func (e *Endpoint) Read(p []byte) (int, error) {
	return e.ReadContext(context.Background(), p)
}

// ReadContext is Read that also returns ctx.Err() when ctx is done first.
func (e *Endpoint) ReadContext(ctx context.Context, p []byte) (int, error) {
	e.rmu.Lock()
	defer e.rmu.Unlock()
	marked := false
	defer func() {
		if marked {
			e.unmark(roleRead)
		}
	}()
	for {
		if err := e.opErr(); err != nil {
			return 0, err
		}
		if deadline.Passed(e.rdDL.Wait()) {
			return 0, os.ErrDeadlineExceeded
		}
		// Liveness before the index: data written before the peer closed
		// is visible once its live byte reads 0.
		gone, err := e.checkPeer()
		if err != nil {
			return 0, err
		}
		ready := atomic.LoadUint32(e.rdProd) - e.rdShadow
		if ready > e.rd.size {
			return 0, e.broken("read ring prod-cons", uint64(ready))
		}
		if len(p) == 0 {
			return 0, nil
		}
		if ready > 0 {
			n := uint32(min(uint64(len(p)), uint64(ready)))
			e.rd.copyOut(p[:n], e.rdShadow)
			e.rdShadow += n
			atomic.StoreUint32(e.rdCons, e.rdShadow)
			e.rdQuiet = !e.sendIfRequested(notifyRead)
			e.rdQuietAt = e.eventsOut.Load()
			e.bytesIn.Add(uint64(n))
			return int(n), nil
		}
		if gone {
			return 0, io.EOF
		}
		if !marked {
			e.mark(roleRead)
			marked = true
		}
		seq := e.evSeq.Load()
		e.request(notifyWrite)
		if atomic.LoadUint32(e.rdProd) != e.rdShadow {
			continue
		}
		if e.rdQuiet && e.eventsOut.Load() == e.rdQuietAt && !e.noDrainEvent {
			// The ring is drained and about to be waited on, and the
			// peer has had no event at all since we last consumed: one
			// event, unasked. The protocol does not need it, but C
			// vchan-socket-proxy does: at end of its input it writes the
			// rest and then waits for an event before it closes, one that
			// a reader signalling only on request never sends once the
			// rest fitted. Any event sent since (a write's, say: the
			// request/response pattern) already told the peer to look,
			// so round trips pay nothing for this.
			e.rdQuiet = false
			if e.notify() != nil {
				continue // fatal: opErr reports it
			}
		}
		e.rdQuiet = false
		if err := e.block(ctx, roleRead, seq, e.rdWake, e.rdTimer, e.rdDL, &e.rdCtx); err != nil {
			return 0, err
		}
	}
}

// Write writes all of p, blocking while the ring is full. It fails with
// ErrPeerClosed once the peer closed (returning how much was written).
// It honours the write deadline (os.ErrDeadlineExceeded).
func (e *Endpoint) Write(p []byte) (int, error) {
	return e.WriteBuffers(context.Background(), p)
}

// WriteContext is Write that also returns ctx.Err() when ctx is done first.
func (e *Endpoint) WriteContext(ctx context.Context, p []byte) (int, error) {
	return e.WriteBuffers(ctx, p)
}

// WriteBuffers writes the concatenation of bufs. Whatever fits is copied
// before the index is advanced, so buffers that fit together cost one index
// update and at most one event.
func (e *Endpoint) WriteBuffers(ctx context.Context, bufs ...[]byte) (int, error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	total := 0
	for _, b := range bufs {
		total += len(b)
	}
	written := 0
	bi, bo := 0, 0 // next buffer and offset in it
	marked := false
	defer func() {
		if marked {
			e.unmark(roleWrite)
		}
	}()
	for {
		if err := e.opErr(); err != nil {
			return written, err
		}
		if deadline.Passed(e.wrDL.Wait()) {
			return written, os.ErrDeadlineExceeded
		}
		if gone, err := e.checkPeer(); err != nil {
			return written, err
		} else if gone {
			return written, ErrPeerClosed
		}
		used := e.wrShadow - atomic.LoadUint32(e.wrCons)
		if used > e.wr.size {
			return written, e.broken("write ring prod-cons", uint64(used))
		}
		if total == 0 {
			return 0, nil
		}
		if space := e.wr.size - used; space > 0 {
			n := uint32(0)
			for n < space && bi < len(bufs) {
				src := bufs[bi][bo:]
				if uint32(len(src)) > space-n {
					src = src[:space-n]
				}
				e.wr.copyIn(e.wrShadow+n, src)
				n += uint32(len(src))
				bo += len(src)
				if bo == len(bufs[bi]) {
					bi, bo = bi+1, 0
				}
			}
			e.wrShadow += n
			atomic.StoreUint32(e.wrProd, e.wrShadow)
			e.sendIfRequested(notifyWrite)
			e.bytesOut.Add(uint64(n))
			written += int(n)
			if written == total {
				return written, nil
			}
			continue
		}
		if !marked {
			e.mark(roleWrite)
			marked = true
		}
		seq := e.evSeq.Load()
		e.request(notifyRead)
		if atomic.LoadUint32(e.wrCons) != e.wrShadow-e.wr.size {
			continue
		}
		if err := e.block(ctx, roleWrite, seq, e.wrWake, e.wrTimer, e.wrDL, &e.wrCtx); err != nil {
			return written, err
		}
	}
}

// Flush blocks until the peer has consumed every byte written so far (its
// consumer index has caught up with ours). It returns nil then; ErrPeerClosed
// if the peer closed or died with bytes still unread; ctx.Err() when ctx is
// done; os.ErrDeadlineExceeded when the write deadline passes. A program that
// ends its stream this way knows its last bytes were read before it closes.
// It waits like a Write (asking for the peer's READ notification), and is
// serialised with Writes.
func (e *Endpoint) Flush(ctx context.Context) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	marked := false
	defer func() {
		if marked {
			e.unmark(roleWrite)
		}
	}()
	for {
		if err := e.opErr(); err != nil {
			return err
		}
		cons := atomic.LoadUint32(e.wrCons)
		used := e.wrShadow - cons
		if used > e.wr.size {
			return e.broken("write ring prod-cons", uint64(used))
		}
		if used == 0 {
			return nil
		}
		if deadline.Passed(e.wrDL.Wait()) {
			return os.ErrDeadlineExceeded
		}
		if gone, err := e.checkPeer(); err != nil {
			return err
		} else if gone {
			return ErrPeerClosed
		}
		if !marked {
			e.mark(roleWrite)
			marked = true
		}
		seq := e.evSeq.Load()
		e.request(notifyRead)
		if atomic.LoadUint32(e.wrCons) != cons {
			continue
		}
		if err := e.block(ctx, roleWrite, seq, e.wrWake, e.wrTimer, e.wrDL, &e.wrCtx); err != nil {
			return err
		}
	}
}

// SetDrainEvent says whether a Read that drained the ring and is about to
// block sends the peer one event it did not ask for, when the peer had no
// event since the last read (on by default). C vchan-socket-proxy needs
// that event to finish a stream; a peer that follows the notify protocol
// does not, and turning it off spares such a peer a wakeup per drained
// ring, which matters for streams that drain the ring often.
func (e *Endpoint) SetDrainEvent(on bool) {
	e.rmu.Lock()
	e.noDrainEvent = !on
	e.rmu.Unlock()
}

// SetDeadline sets the read and write deadlines (zero: none).
func (e *Endpoint) SetDeadline(t time.Time) error {
	e.rdDL.Set(t)
	e.wrDL.Set(t)
	return nil
}

// SetReadDeadline sets the deadline for Read and ReadContext (zero: none).
// A Read blocked at that time returns os.ErrDeadlineExceeded.
func (e *Endpoint) SetReadDeadline(t time.Time) error {
	e.rdDL.Set(t)
	return nil
}

// SetWriteDeadline sets the deadline for the Write calls (zero: none).
func (e *Endpoint) SetWriteDeadline(t time.Time) error {
	e.wrDL.Set(t)
	return nil
}

// Stats returns a snapshot of the counters.
func (e *Endpoint) Stats() Stats {
	return Stats{
		BytesIn:   e.bytesIn.Load(),
		BytesOut:  e.bytesOut.Load(),
		EventsIn:  e.eventsIn.Load(),
		EventsOut: e.eventsOut.Load(),
		Notifies:  e.notifies.Load(),
		Requests:  e.requests.Load(),
		ReadRing:  int(e.rd.size),
		WriteRing: int(e.wr.size),
	}
}

// Close shuts the endpoint down with libxenvchan's close sequence: unmap
// the external rings, store 0 into our live byte, unmap the control page,
// send an event unconditionally, close the event channel, and (after
// Listen) remove the published path. It wakes blocked Read and Write calls
// (they return net.ErrClosed), waits for them and for the event goroutine
// to leave, and is safe to call more than once.
func (e *Endpoint) Close() error {
	e.closeOnce.Do(func() { e.closeErr = e.close() })
	return e.closeErr
}

func (e *Endpoint) close() error {
	e.state.Or(stClosed)
	e.stop(net.ErrClosed)
	e.interrupt(roleAll)
	<-e.watchDone
	// Blocked operations see done closed (the holder of the wait role was
	// interrupted) and return; once we hold both locks nothing touches the
	// shared memory or the event channel any more.
	e.rmu.Lock()
	defer e.rmu.Unlock()
	e.wmu.Lock()
	defer e.wmu.Unlock()
	e.pageMu.Lock()
	defer e.pageMu.Unlock()
	e.rdDL.Stop()
	e.wrDL.Stop()
	e.rdCtx.clear()
	e.wrCtx.clear()
	e.holdTimer.Stop()
	var errs []error
	for _, m := range e.ext {
		errs = append(errs, m.Close())
	}
	e.flags.clearByte(e.ownLive)
	errs = append(errs, e.ctrl.Close())
	if err := e.ev.Notify(); err == nil {
		e.eventsOut.Add(1)
	}
	errs = append(errs, e.ev.Close())
	if e.store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), closeStoreTimeout)
		defer cancel()
		if err := e.store.Remove(ctx, e.storePath); err != nil {
			errs = append(errs, fmt.Errorf("vchan: remove %s: %w", e.storePath, err))
		}
	}
	return errors.Join(errs...)
}
