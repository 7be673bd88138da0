package linkmgr

import (
	"context"
	"fmt"
	"idcfs/internal/deadline"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"idcfs/proto"
)

// Conn is one connection multiplexed over a link. It implements net.Conn.
//
// One Read and one Write may run at the same time (concurrent Reads are
// serialised, likewise Writes). Read takes data straight into the caller's
// buffer when it is already waiting; Write hands the caller's buffer to the
// link's writer, which sends it in frames of at most the peer's max frame
// and never more than the peer's credit, so Write returns once every byte
// is on the ring.
type Conn struct {
	m             *Manager
	l             *link
	id            uint64 // unique in the Manager
	wid           uint32 // id on the wire, unique in the link
	local, remote Addr
	outgoing      bool
	log           *logrus.Entry

	rser chan struct{} // 1-buffered: serialises readers
	wser chan struct{} // 1-buffered: serialises writers
	rdl  *deadline.Deadline
	wdl  *deadline.Deadline

	// rsig wakes the reader: data, handoff done, state change.
	rsig chan struct{}
	// wsig wakes the writer: frame sent, credit, state change.
	wsig chan struct{}

	// Receive side and connection state, guarded by mu. Lock order: a
	// link's mu before a Conn's mu, never the reverse.
	mu         sync.Mutex
	state      connState
	rbuf       []byte // received bytes are rbuf[rr:rw]
	rr, rw     int
	rxCnt      uint64 // bytes received in DATA_ind
	fwdCnt     uint64 // bytes handed to the application
	sentFwd    uint64 // fwdCnt last announced in a CREDIT
	window     uint32 // our buffer, announced as buf_alloc; grows up to maxWindow
	maxWindow  uint32
	waiter     []byte // buffer of a blocked Read, for direct handoff
	waitN      int    // bytes handed off into waiter
	handoff    bool   // the link reader is filling waiter right now
	wakeSent   bool   // waiter's Read was woken to return waitN bytes
	rwaitBusy  bool   // a Read waits for the handoff to finish
	rEOF       bool   // peer shut down its sending side
	closed     bool   // Close or Reset was called here
	wShut      bool   // we sent SHUTDOWN(write)
	peerNoRead bool   // peer shut down its receiving side
	resetErr   error  // set once the connection is reset
	freed      bool   // removed from the link and the manager

	// Send side, guarded by l.mu.
	wpend        []byte // buffer of the Write in progress
	woff         int    // bytes of wpend already on the ring
	wbusy        bool   // the link writer is sending a frame of wpend
	wwaitBusy    bool   // a Write waits for that frame to finish
	queued       bool   // in the link's data queue
	creditQueued bool   // in the link's credit queue
	wfail        error  // why writes fail from now on
	wb           wbatch // scratch for the Write fast path
	txCnt        uint64 // bytes sent
	peerAlloc    uint32 // peer's buf_alloc
	peerFwd      uint64 // peer's fwd_cnt

	bytesIn, bytesOut atomic.Uint64
}

type connState uint8

const (
	stConnecting connState = iota
	stEstablished
	stDone
)

var (
	_ net.Conn = (*Conn)(nil)
)

func newConn(m *Manager, l *link, wid uint32, local, remote Addr, outgoing bool) *Conn {
	c := &Conn{
		m:         m,
		l:         l,
		id:        m.nextConnID.Add(1),
		wid:       wid,
		local:     local,
		remote:    remote,
		outgoing:  outgoing,
		rser:      make(chan struct{}, 1),
		wser:      make(chan struct{}, 1),
		rdl:       deadline.New(),
		wdl:       deadline.New(),
		rsig:      make(chan struct{}, 1),
		wsig:      make(chan struct{}, 1),
		window:    uint32(m.cfg.Window),
		maxWindow: uint32(m.cfg.MaxWindow),
	}
	c.log = l.log.WithFields(logrus.Fields{"conn": c.id, "port": remote.Port})
	if !outgoing {
		c.log = l.log.WithFields(logrus.Fields{"conn": c.id, "port": local.Port})
	}
	return c
}

// ID returns the connection's id, unique in its Manager.
func (c *Conn) ID() uint64 { return c.id }

// LocalAddr returns this end's address.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// ConnInfo describes a connection.
type ConnInfo struct {
	ID            uint64
	Local, Remote Addr
	// State is one of connecting, established, write-shut (CloseWrite was
	// called), read-eof (the peer shut its sending side), peer-read-shut,
	// closing, reset.
	State    string
	BytesIn  uint64 // bytes the application read
	BytesOut uint64 // bytes put on the ring
	Outgoing bool   // this side dialed
	Buffered int    // received bytes not read yet
	Window   uint32 // this side's receive window
}

// Info returns a snapshot of the connection's state.
func (c *Conn) Info() ConnInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ConnInfo{
		ID: c.id, Local: c.local, Remote: c.remote, State: c.stateStringLocked(),
		BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(), Outgoing: c.outgoing,
		Buffered: c.rw - c.rr, Window: c.window,
	}
}

func (c *Conn) stateStringLocked() string {
	switch {
	case c.resetErr != nil:
		return "reset"
	case c.state == stConnecting:
		return "connecting"
	case c.closed:
		return "closing"
	case c.wShut && c.rEOF:
		return "closing"
	case c.wShut:
		return "write-shut"
	case c.rEOF:
		return "read-eof"
	case c.peerNoRead:
		return "peer-read-shut"
	}
	return "established"
}

func (c *Conn) opError(op string, err error) error {
	if err == nil {
		return nil
	}
	if err == io.EOF {
		return err
	}
	return &net.OpError{Op: op, Net: Network, Source: c.local, Addr: c.remote, Err: err}
}

// acquire takes a 1-buffered semaphore, honouring ctx and a deadline.
func acquire(ctx context.Context, sem chan struct{}, dl *deadline.Deadline) error {
	select {
	case sem <- struct{}{}:
		return nil
	default:
	}
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-dl.Wait():
		return os.ErrDeadlineExceeded
	}
}

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) { return c.ReadContext(context.Background(), p) }

// ReadContext reads up to len(p) bytes, blocking until at least one is
// available. It returns io.EOF once the peer shut down its sending side and
// every byte was read, ErrReset (wrapped) if the link was lost or the peer
// reset the connection, net.ErrClosed after Close, os.ErrDeadlineExceeded
// after the read deadline, and ctx.Err() if ctx ends before a byte was
// taken. Bytes that were taken are always returned.
func (c *Conn) ReadContext(ctx context.Context, p []byte) (int, error) {
	n, err := c.read(ctx, p)
	return n, c.opError(opRead, err)
}

func (c *Conn) read(ctx context.Context, p []byte) (int, error) {
	if err := acquire(ctx, c.rser, c.rdl); err != nil {
		return 0, err
	}
	defer func() { <-c.rser }()
	c.mu.Lock()
	for {
		if c.closed {
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		if c.rw > c.rr {
			if len(p) == 0 {
				c.mu.Unlock()
				return 0, nil
			}
			n := copy(p, c.rbuf[c.rr:c.rw])
			c.rr += n
			credit := c.consumedLocked(n)
			c.mu.Unlock()
			c.afterRead(n, credit)
			return n, nil
		}
		if c.resetErr != nil {
			err := c.resetErr
			c.mu.Unlock()
			return 0, err
		}
		if c.rEOF {
			c.mu.Unlock()
			return 0, io.EOF
		}
		if len(p) == 0 {
			c.mu.Unlock()
			return 0, nil
		}
		if isDone(c.rdl.Wait()) {
			c.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		if err := ctx.Err(); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		// Wait, offering p to the link reader.
		c.waiter, c.waitN, c.wakeSent = p, 0, false
		c.mu.Unlock()
		var cancelled error
		select {
		case <-c.rsig:
		case <-ctx.Done():
			cancelled = ctx.Err()
		case <-c.rdl.Wait():
			cancelled = os.ErrDeadlineExceeded
		}
		c.mu.Lock()
		for c.handoff {
			// The link reader is copying into p: it must finish before p
			// is given back. If this Read is giving up, ask the reader not
			// to wait for more bytes of the frame.
			c.rwaitBusy = true
			closed := c.closed
			c.mu.Unlock()
			if cancelled != nil || closed {
				c.l.interruptHandoff()
			}
			<-c.rsig
			c.mu.Lock()
			c.rwaitBusy = false
		}
		n := c.waitN
		c.waiter, c.waitN, c.wakeSent = nil, 0, false
		if n > 0 {
			credit := c.consumedLocked(n)
			c.mu.Unlock()
			c.afterRead(n, credit)
			return n, nil
		}
		if cancelled != nil {
			c.mu.Unlock()
			return 0, cancelled
		}
	}
}

// consumedLocked accounts n bytes handed to the application and reports
// whether a CREDIT should go out.
func (c *Conn) consumedLocked(n int) bool {
	half := uint64(c.window / 2)
	crossed := c.fwdCnt-c.sentFwd < half
	c.fwdCnt += uint64(n)
	if c.resetErr != nil || c.rEOF || c.closed || c.fwdCnt-c.sentFwd < half {
		return false
	}
	if crossed {
		c.tuneWindowLocked()
	}
	return true
}

// tuneWindowLocked doubles the window, up to maxWindow, when a CREDIT
// becomes due and the peer has sent at least three quarters of what the last one
// allowed while no more than a quarter of the window waits in the receive
// buffer: the application keeps up, so the window is what holds the peer
// back whenever the CREDIT takes longer to reach it than the rest of its
// credit lasts. The larger window goes out in that CREDIT. A window never
// shrinks: the peer may use what it was once granted.
func (c *Conn) tuneWindowLocked() {
	w := uint64(c.window)
	if c.window >= c.maxWindow || c.rxCnt-c.sentFwd < w-w/4 || uint64(c.rw-c.rr) > w/4 {
		return
	}
	c.window = uint32(min(2*w, uint64(c.maxWindow)))
}

func (c *Conn) afterRead(n int, credit bool) {
	c.bytesIn.Add(uint64(n))
	if credit {
		c.l.queueCredit(c)
	}
}

// Write implements net.Conn.
func (c *Conn) Write(p []byte) (int, error) { return c.WriteContext(context.Background(), p) }

// WriteContext writes all of p, blocking while the peer's credit is
// exhausted. It returns ErrPeerClosed (wrapped) once the peer can no longer
// receive, ErrReset if the link was lost or the connection reset,
// net.ErrClosed after Close or CloseWrite, os.ErrDeadlineExceeded after the
// write deadline, and ctx.Err() when ctx ends; n counts the bytes already
// on the ring.
func (c *Conn) WriteContext(ctx context.Context, p []byte) (int, error) {
	n, err := c.write(ctx, p)
	return n, c.opError(opWrite, err)
}

func (c *Conn) write(ctx context.Context, p []byte) (int, error) {
	if err := acquire(ctx, c.wser, c.wdl); err != nil {
		return 0, err
	}
	defer func() { <-c.wser }()
	l := c.l
	l.mu.Lock()
	if c.wfail != nil {
		err := c.wfail
		l.mu.Unlock()
		return 0, err
	}
	if isDone(c.wdl.Wait()) {
		l.mu.Unlock()
		return 0, os.ErrDeadlineExceeded
	}
	if len(p) == 0 {
		l.mu.Unlock()
		return 0, nil
	}
	c.wpend, c.woff = p, 0
	if err := l.writeFastLocked(c); err != nil {
		l.mu.Unlock()
		l.fail(fmt.Errorf("ring write: %w", err), proto.ReasonNormal, false)
		l.mu.Lock()
	}
	if c.woff == len(p) {
		c.wpend, c.woff = nil, 0
		l.mu.Unlock()
		return len(p), nil
	}
	l.scheduleLocked(c)
	l.mu.Unlock()
	// The rest waits for credit (or for the writer): the CREDIT comes over
	// the ring, so the link reader must not stay parked.
	l.unpark()
	var stop error
	for {
		if stop == nil {
			select {
			case <-c.wsig:
			case <-ctx.Done():
				stop = ctx.Err()
			case <-c.wdl.Wait():
				stop = os.ErrDeadlineExceeded
			}
		}
		l.mu.Lock()
		if c.woff == len(p) && !c.wbusy {
			c.wpend, c.woff = nil, 0
			l.mu.Unlock()
			return len(p), nil
		}
		if stop == nil {
			stop = c.wfail
		}
		if stop == nil {
			l.mu.Unlock()
			continue
		}
		// Giving up (stop is set): the loop no longer waits in the select.
		if c.wbusy {
			// A frame of p is being copied onto the ring; wait for it.
			c.wwaitBusy = true
			l.mu.Unlock()
			<-c.wsig
			l.mu.Lock()
			c.wwaitBusy = false
			l.mu.Unlock()
			continue
		}
		n := c.woff
		c.wpend, c.woff = nil, 0
		l.unqueueLocked(c)
		l.mu.Unlock()
		return n, stop
	}
}

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rdl.Set(t)
	c.wdl.Set(t)
	return nil
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rdl.Set(t)
	return nil
}

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wdl.Set(t)
	return nil
}

// CloseWrite shuts down the sending side: the peer reads io.EOF after all
// data written so far. Later writes fail with net.ErrClosed.
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError(opClose, net.ErrClosed)
	}
	if c.resetErr != nil {
		err := c.resetErr
		c.mu.Unlock()
		return c.opError(opClose, err)
	}
	send := !c.wShut
	c.wShut = true
	c.mu.Unlock()
	if send {
		c.failWrites(net.ErrClosed)
		c.l.sendShutdown(c, proto.ShutWrite)
		c.log.Debug("connection write side shut down")
		c.maybeFree()
	}
	return nil
}

// Close closes the connection gracefully: data already written is still
// delivered, then the peer reads io.EOF; the peer's further writes fail.
// Pending Read and Write calls return net.ErrClosed. Close never blocks on
// the peer.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError(opClose, net.ErrClosed)
	}
	c.closed = true
	reset := c.resetErr != nil
	how := proto.ShutRead
	if !c.wShut {
		how |= proto.ShutWrite
	}
	c.wShut = true
	c.mu.Unlock()
	signal(c.rsig)
	c.failWrites(net.ErrClosed)
	if !reset {
		c.l.sendShutdown(c, how)
	}
	c.log.Debug("connection closed")
	c.maybeFree()
	return nil
}

// Reset ends both directions at once: pending data is dropped, the peer
// gets ErrReset. Later calls here return net.ErrClosed.
func (c *Conn) Reset() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError(opClose, net.ErrClosed)
	}
	c.closed = true
	wasReset := c.resetErr != nil
	if !wasReset {
		c.resetErr = ErrReset
	}
	c.mu.Unlock()
	signal(c.rsig)
	c.failWrites(net.ErrClosed)
	if !wasReset {
		c.l.sendDisconnect(c.wid, proto.ReasonReset)
	}
	c.log.Debug("connection reset locally")
	c.free()
	return nil
}

// failWrites makes pending and later writes fail with err (the first
// reason wins).
func (c *Conn) failWrites(err error) {
	c.setWriteFailure(err)
	signal(c.wsig)
}

func (c *Conn) setWriteFailure(err error) {
	l := c.l
	l.mu.Lock()
	if c.wfail == nil {
		c.wfail = err
	}
	l.unqueueLocked(c)
	l.mu.Unlock()
}

// resetBy marks the connection reset by the peer or by the link (err wraps
// ErrReset) and frees it.
func (c *Conn) resetBy(err error) {
	// Writes first, so that once a Read reports the reset a Write does too;
	// and both before anyone is woken: a connect in flight waits on wsig
	// and then looks at resetErr.
	c.setWriteFailure(err)
	c.mu.Lock()
	if c.resetErr == nil {
		c.resetErr = err
	}
	c.mu.Unlock()
	signal(c.wsig)
	signal(c.rsig)
	c.free()
}

// maybeFree frees the connection once both directions are finished: we
// closed it and sent SHUTDOWN(write), and the peer shut its sending side.
func (c *Conn) maybeFree() {
	c.mu.Lock()
	done := c.closed && c.wShut && c.rEOF
	c.mu.Unlock()
	if done {
		c.free()
	}
}

// free removes the connection from its link and the Manager.
func (c *Conn) free() {
	c.mu.Lock()
	if c.freed {
		c.mu.Unlock()
		return
	}
	c.freed = true
	c.state = stDone
	c.mu.Unlock()
	c.l.removeConn(c)
	c.m.removeConn(c)
}
