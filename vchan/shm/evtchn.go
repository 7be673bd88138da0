//go:build linux

package shm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"idcfs/vchan"
)

const (
	// handshakeTimeout bounds a Bind.
	handshakeTimeout = 3 * time.Second
	// helloTimeout is how long a listening port waits for the hello of a
	// new connection before dropping it. A binder sends it right after
	// connecting; the bound keeps a silent connection from holding up the
	// next binder for long.
	helloTimeout = time.Second
	// frameTimeout bounds writing a control frame to a peer that does not
	// read its socket (stopped or wedged); the connection is then dropped.
	frameTimeout = 2 * time.Second
	// maxPeerNotices bounds the unmap notices a peer may register on one
	// connection (a well-behaved peer registers one per mapping).
	maxPeerNotices = 4096
	// maxSockPath is the room in sockaddr_un.sun_path.
	maxSockPath = 107
)

// evtChan is one end of an event channel: a Unix stream connection to the
// other end for the handshake, unmap notices and goodbye, and an eventfd in
// each direction for the events.
//
// Wait reads the channel's own eventfd on the runtime poller, so that an
// event wakes the waiting goroutine directly: no goroutine stands between
// the peer's Notify and the waiter. Notify adds 1 to the peer's eventfd,
// received in the handshake. Each channel owns one goroutine that reads the
// socket: it records the peer's unmap notices and, when the connection ends
// without a goodbye, carries them out and wakes Wait. A channel made by
// AllocUnbound also accepts binders in that goroutine: it listens on
// dir/evtchn/<self>/<port> while the port is unbound and stops listening
// while it is bound (so a second binder is refused, as Xen refuses to bind a
// port that is not unbound). When the binder goes away the port becomes
// unbound for the same peer again and listens anew, as on Xen.
type evtChan struct {
	b      *Backend
	port   uint32
	peer   vchan.DomID
	listen bool   // made by AllocUnbound
	path   string // socket path (listen only)

	efd    *os.File        // our eventfd: events to us; each peer gets it
	efdNum int             // its descriptor, for sending
	erc    syscall.RawConn // efd's, for Wait's reads
	nowait bool            // read efd with RWF_NOWAIT

	wake chan struct{} // an event not counted in efd (bind, peer death, error); cap 1
	done chan struct{} // closed by Close
	rsem chan struct{} // the reader role, held by one Wait at a time; cap 1

	closed atomic.Bool           // Close was called
	broken atomic.Pointer[error] // the peer broke the protocol

	mu      sync.Mutex
	ln      *net.UnixListener // while listening
	notices []notice          // our unmap notices naming this channel
	refs    int               // 1 until Close, +1 per unmap notify naming it

	sendMu sync.Mutex // serialises writes on the socket, guards cur
	cur    *link      // current connection, nil while unbound

	// Notify takes only fdMu, never waiting for a socket write. Lock
	// order: sendMu, then fdMu.
	fdMu   sync.Mutex
	peerFd int // cur's eventfd of the peer, -1 while unbound

	// Reader state, owned by the holder of rsem.
	rbuf      [8]byte
	rerr      unix.Errno
	readFn    func(fd uintptr) bool // c.readEvent, bound once
	watchDone <-chan struct{}       // Done of the context watched for cancellation
	watchStop func() bool

	wg sync.WaitGroup // the channel's goroutine (counted from newChan on)
}

// link is one connection of a channel.
type link struct {
	conn  *net.UnixConn
	efd   int  // the peer's eventfd; closed with the link
	local bool // we closed it ourselves (guarded by sendMu)
}

var _ vchan.EventChannel = (*evtChan)(nil)

func (b *Backend) newChan(peer vchan.DomID, listen bool) (*evtChan, error) {
	efd, efdNum, err := newEventfd()
	if err != nil {
		return nil, err
	}
	erc, err := efd.SyscallConn()
	if err != nil {
		efd.Close()
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		efd.Close()
		return nil, os.ErrClosed
	}
	var port uint32
	for p := uint32(1); p <= maxPort; p++ {
		if b.ports[p] == nil {
			port = p
			break
		}
	}
	if port == 0 {
		efd.Close()
		return nil, ErrNoSpace
	}
	c := &evtChan{
		b:      b,
		port:   port,
		peer:   peer,
		listen: listen,
		efd:    efd,
		efdNum: efdNum,
		erc:    erc,
		nowait: nowaitReads(),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		rsem:   make(chan struct{}, 1),
		refs:   1,
		peerFd: -1,
	}
	c.readFn = c.readEvent
	c.wg.Add(1) // for the goroutine the caller starts, or discard
	if listen {
		c.path = b.portPath(b.self, port)
	}
	b.ports[port] = c
	return c, nil
}

// discard undoes newChan for a channel that never got going.
func (c *evtChan) discard() {
	c.wg.Done()
	c.b.freePort(c)
	c.efd.Close()
}

func (b *Backend) freePort(c *evtChan) {
	b.mu.Lock()
	if b.ports[c.port] == c {
		delete(b.ports, c.port)
	}
	b.mu.Unlock()
}

// AllocUnbound allocates the lowest free local port and lets domain peer
// bind to it. Until then Notify does nothing and Wait blocks.
func (b *Backend) AllocUnbound(peer vchan.DomID) (vchan.EventChannel, error) {
	if err := b.checkPeer("alloc unbound", peer); err != nil {
		return nil, err
	}
	c, err := b.newChan(peer, true)
	if err != nil {
		return nil, fmt.Errorf("shm: alloc unbound port for %d: %w", peer, err)
	}
	if len(c.path) > maxSockPath {
		c.discard()
		return nil, fmt.Errorf("shm: alloc unbound port: socket path %s longer than %d bytes", c.path, maxSockPath)
	}
	c.mu.Lock()
	err = c.listenLocked()
	c.mu.Unlock()
	if err != nil {
		c.discard()
		return nil, fmt.Errorf("shm: alloc unbound port for %d: %w", peer, err)
	}
	go c.serve()
	return c, nil
}

// listenLocked (re)creates the port's socket. A file already there is left
// from an earlier connection of ours or from a dead incarnation of this
// domain (we hold the domain lock): remove it.
func (c *evtChan) listenLocked() error {
	os.Remove(c.path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: c.path, Net: "unix"})
	if err != nil {
		return err
	}
	c.ln = ln
	return nil
}

// Bind binds a new local port to port remotePort of domain peer, which must
// be unbound and reserved for this domain. As on Xen the new port starts
// with one (spurious) event pending.
func (b *Backend) Bind(peer vchan.DomID, remotePort uint32) (vchan.EventChannel, error) {
	if err := b.checkPeer("bind", peer); err != nil {
		return nil, err
	}
	if remotePort == 0 || remotePort > maxPort {
		return nil, fmt.Errorf("shm: bind to port %d of %d: %w", remotePort, peer, ErrNoPort)
	}
	c, err := b.newChan(peer, false)
	if err != nil {
		return nil, fmt.Errorf("shm: bind to port %d of %d: %w", remotePort, peer, err)
	}
	conn, peerFd, err := b.dialPort(peer, remotePort, c.port, c.efdNum)
	if err != nil {
		c.discard()
		return nil, fmt.Errorf("shm: bind to port %d of %d: %w", remotePort, peer, err)
	}
	l := c.install(conn, peerFd, nil)
	signal(c.wake)
	go c.readBound(l)
	return c, nil
}

// readBound is a Bind channel's goroutine: it reads the one connection the
// channel will ever have.
func (c *evtChan) readBound(l *link) {
	defer c.wg.Done()
	c.readLink(l)
}

// dialPort connects to a listening port and does the binder's handshake,
// sending our eventfd efd with the hello. It returns the connection and the
// listener's eventfd.
func (b *Backend) dialPort(peer vchan.DomID, remotePort, localPort uint32, efd int) (*net.UnixConn, int, error) {
	path := b.portPath(peer, remotePort)
	if len(path) > maxSockPath {
		return nil, -1, fmt.Errorf("socket path %s longer than %d bytes", path, maxSockPath)
	}
	d := net.Dialer{Timeout: handshakeTimeout}
	nc, err := d.Dial("unix", path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) ||
			errors.Is(err, syscall.ENOTSOCK) || errors.Is(err, syscall.EPROTOTYPE) {
			return nil, -1, fmt.Errorf("%w: %v", ErrNoPort, err)
		}
		return nil, -1, err
	}
	conn := nc.(*net.UnixConn)
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	msg := hello{typ: msgHello, domain: uint16(b.self), port: localPort, arg: remotePort}
	var buf [helloLen]byte
	if _, _, err := conn.WriteMsgUnix(msg.append(buf[:0]), unix.UnixRights(efd), nil); err != nil {
		conn.Close()
		return nil, -1, fmt.Errorf("%w: handshake: %v", ErrNoPort, err)
	}
	fds, err := readMsgFull(conn, buf[:])
	if err != nil {
		conn.Close()
		switch {
		case errors.Is(err, ErrProtocol):
			return nil, -1, err
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, -1, fmt.Errorf("%w: no handshake reply within %v", ErrNoPort, handshakeTimeout)
		}
		return nil, -1, fmt.Errorf("%w: handshake: %v", ErrNoPort, err)
	}
	reply, err := parseHello(buf[:])
	switch {
	case err != nil:
	case reply.typ == msgRefuse && reply.arg == refuseBadEventfd:
		err = fmt.Errorf("%w: %s", ErrProtocol, refusalText(reply.arg))
	case reply.typ == msgRefuse:
		err = fmt.Errorf("%w: %s", ErrRefused, refusalText(reply.arg))
	case reply.typ != msgAccept || reply.domain != uint16(peer) || reply.port != remotePort:
		err = fmt.Errorf("%w: reply type %d from domain %d port %d", ErrProtocol, reply.typ, reply.domain, reply.port)
	}
	if err != nil {
		closeFds(fds)
		conn.Close()
		return nil, -1, err
	}
	peerFd, err := takeEventfd(fds)
	if err != nil {
		conn.Close()
		return nil, -1, err
	}
	conn.SetDeadline(time.Time{})
	return conn, peerFd, nil
}

func refusalText(code uint32) string {
	switch code {
	case refuseWrongPeer:
		return "port reserved for another domain"
	case refuseBound:
		return "port already bound"
	case refuseWrongPort:
		return "socket serves another port"
	case refuseBadEventfd:
		return "peer wants exactly one eventfd with the hello"
	}
	return fmt.Sprintf("code %d", code)
}

// install makes conn (with the peer's eventfd peerFd) the channel's
// connection and sends it reply (the handshake reply, for a listening port,
// with our eventfd) followed by our unmap notices, in one write: a binder's
// Bind returns only after reading the reply, so the notices are on their
// way before the binder can do anything else. It returns nil, having closed
// conn and peerFd, if the channel was closed in the meantime.
func (c *evtChan) install(conn *net.UnixConn, peerFd int, reply []byte) *link {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		// Close ran between accept and here: it found no connection
		// to close, so this one must not be kept.
		conn.Close()
		unix.Close(peerFd)
		return nil
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	l := &link{conn: conn, efd: peerFd}
	c.cur = l
	c.fdMu.Lock()
	c.peerFd = peerFd
	c.fdMu.Unlock()
	buf := reply
	for _, n := range c.notices {
		buf = n.append(buf, tokNotice)
	}
	if reply == nil {
		if len(buf) > 0 {
			c.writeFrameLocked(buf)
		}
		return l
	}
	// The reply carries our eventfd; a stream socket may take only part
	// of a long message, the rest follows as a frame.
	conn.SetWriteDeadline(time.Now().Add(frameTimeout))
	n, _, err := conn.WriteMsgUnix(buf, unix.UnixRights(c.efdNum), nil)
	conn.SetWriteDeadline(time.Time{})
	if err != nil || n == 0 {
		c.dropLocked()
		return l
	}
	if n < len(buf) {
		c.writeFrameLocked(buf[n:])
	}
	return l
}

// writeFrameLocked writes a control frame; c.sendMu is held. A peer that
// does not take it within frameTimeout loses the connection.
func (c *evtChan) writeFrameLocked(frame []byte) {
	if c.cur == nil {
		return
	}
	conn := c.cur.conn
	conn.SetWriteDeadline(time.Now().Add(frameTimeout))
	_, err := conn.Write(frame)
	conn.SetWriteDeadline(time.Time{})
	if err != nil {
		c.dropLocked()
	}
}

// dropLocked closes the connection and the peer's eventfd from our side;
// c.sendMu is held. The eventfd is closed under fdMu, which Notify holds
// while it uses the descriptor.
func (c *evtChan) dropLocked() {
	l := c.cur
	if l == nil {
		return
	}
	l.local = true
	l.conn.Close()
	c.fdMu.Lock()
	unix.Close(l.efd)
	c.peerFd = -1
	c.fdMu.Unlock()
	c.cur = nil
}

// serve is a listening channel's goroutine: it accepts a binder, reads the
// connection until it ends, listens again and accepts the next. It exits on
// Close, or when the peer broke the protocol (the channel stays broken).
func (c *evtChan) serve() {
	defer c.wg.Done()
	for {
		l := c.accept()
		if l == nil {
			return
		}
		if !c.readLink(l) {
			return
		}
	}
}

// relisten makes a listening port unbound again, for the same peer, after
// its connection ended. It reports whether the port listens.
func (c *evtChan) relisten() bool {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return false
	}
	err := c.listenLocked()
	c.mu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("shm: port %d: listen again: %w", c.port, err))
		return false
	}
	return true
}

// accept waits for a binder from c.peer, does the handshake, closes the
// listener (a bound port takes no more binders) and installs the
// connection. It returns nil when the listener was closed by Close.
func (c *evtChan) accept() *link {
	c.mu.Lock()
	ln := c.ln
	c.mu.Unlock()
	if ln == nil {
		return nil
	}
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of descriptors and the like: back off a little.
			select {
			case <-c.done:
				return nil
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		peerFd, reply, ok := c.handshake(conn)
		if !ok {
			conn.Close()
			continue
		}
		c.mu.Lock()
		if c.closed.Load() {
			c.mu.Unlock()
			conn.Close()
			unix.Close(peerFd)
			return nil
		}
		c.ln = nil
		c.mu.Unlock()
		ln.Close()
		return c.install(conn, peerFd, reply)
	}
}

// handshake reads a binder's hello and the eventfd that comes with it. It
// answers a refusal itself; for an accepted binder it returns the binder's
// eventfd and the reply for install to send.
func (c *evtChan) handshake(conn *net.UnixConn) (peerFd int, reply []byte, ok bool) {
	conn.SetDeadline(time.Now().Add(helloTimeout))
	defer conn.SetDeadline(time.Time{})
	var buf [helloLen]byte
	fds, err := readMsgFull(conn, buf[:])
	if err != nil {
		return -1, nil, false
	}
	h, err := parseHello(buf[:])
	if err != nil || h.typ != msgHello {
		closeFds(fds)
		return -1, nil, false
	}
	code := uint32(refuseNone)
	switch {
	case h.domain != uint16(c.peer):
		code = refuseWrongPeer
	case h.arg != c.port:
		code = refuseWrongPort
	}
	if code == refuseNone {
		peerFd, err = takeEventfd(fds)
		if err != nil {
			code = refuseBadEventfd
		}
	} else {
		closeFds(fds)
	}
	r := hello{typ: msgAccept, domain: uint16(c.b.self), port: c.port, arg: code}
	if code == refuseNone {
		return peerFd, r.append(nil), true
	}
	r.typ = msgRefuse
	conn.Write(r.append(buf[:0]))
	return -1, nil, false
}

// session is what the reader learned on one connection.
type session struct {
	notices map[notice]bool // the peer's unmap notices
	err     error
}

func (s *session) notice(n notice, cancel bool) {
	if cancel {
		delete(s.notices, n)
		return
	}
	if len(s.notices) >= maxPeerNotices && !s.notices[n] {
		s.err = fmt.Errorf("%w: more than %d unmap notices", ErrProtocol, maxPeerNotices)
		return
	}
	s.notices[n] = true
}

func (s *session) bye() {}

// readLink reads the socket of l until the connection ends. Unless the peer
// said goodbye or we closed it ourselves, the peer died: its unmap notices
// are carried out here, as Xen's kernel would have done in the dead domain,
// and then Wait is woken (the death, like the kernel's unmap notify, is an
// event; an orderly close is not). A listening port listens again before
// that. A peer that breaks the protocol loses the connection and the
// channel is broken. readLink reports whether a listening port listens
// again.
func (c *evtChan) readLink(l *link) bool {
	if l == nil {
		return false
	}
	var dec streamDecoder
	sess := session{notices: make(map[notice]bool)}
	buf := make([]byte, 512)
	var perr error
	for perr == nil {
		n, err := l.conn.Read(buf)
		if n > 0 {
			perr = dec.feed(buf[:n], &sess)
			if perr == nil {
				perr = sess.err
			}
		}
		if err != nil {
			break
		}
	}
	c.sendMu.Lock()
	local := l.local
	if c.cur == l {
		c.dropLocked()
	}
	c.sendMu.Unlock()
	if perr != nil && !local {
		c.fail(fmt.Errorf("shm: port %d, peer %d: %w", c.port, c.peer, perr))
		return false
	}
	died := !dec.bye && !local
	if died {
		for n := range sess.notices {
			c.b.clearByte(n)
		}
	}
	again := c.listen && c.relisten()
	if died {
		c.wakeWait()
	}
	return again
}

// fail marks the channel broken and wakes Wait, which reports err.
func (c *evtChan) fail(err error) {
	c.broken.CompareAndSwap(nil, &err)
	c.wakeWait()
}

// wakeWait makes an event pending that the eventfd does not count: a
// waiting Wait takes it from c.wake, the reader role's holder is
// interrupted to look. (Never by writing our eventfd: the peer shares that
// file and could make such a write block.)
func (c *evtChan) wakeWait() {
	signal(c.wake)
	c.interrupt()
}

// signal makes one token pending on a 1-buffered channel (tokens coalesce).
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Port is the local port number.
func (c *evtChan) Port() uint32 { return c.port }

// Notify sends an event to the other end. On a port that is not bound (yet,
// or any more) it does nothing, as on Xen. It never blocks: when the
// peer's eventfd counter cannot take more, the event coalesces with those
// it holds.
func (c *evtChan) Notify() error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	return c.kick()
}

// kick adds 1 to the peer's eventfd; used by Notify and by unmap notifies
// (which may fire after Close, as the kernel keeps the port for them).
func (c *evtChan) kick() error {
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	if c.peerFd < 0 {
		return nil
	}
	for {
		_, err := unix.Write(c.peerFd, eventOne[:])
		switch err {
		case nil, unix.EAGAIN:
			return nil
		case unix.EINTR:
			continue
		}
		return fmt.Errorf("shm: notify port %d: %w", c.port, err)
	}
}

// Wait blocks until an event arrived since the previous Wait returned, ctx
// is done (ctx.Err()), the channel is closed (net.ErrClosed) or the peer
// broke the protocol (an error wrapping ErrProtocol). The end of the
// connection counts as an event: if the peer died, its unmap notices have
// been carried out by then.
//
// Wait reads the channel's eventfd itself; concurrent Waits take turns at
// reading and each event wakes one of them, as a read of a Xen event
// channel device does.
func (c *evtChan) Wait(ctx context.Context) error {
	if err := c.waitErr(); err != nil {
		return err
	}
	select {
	case <-c.wake:
		return c.waitErr()
	default:
	}
	select {
	case c.rsem <- struct{}{}:
	case <-c.wake:
		return c.waitErr()
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return net.ErrClosed
	}
	defer func() { <-c.rsem }()
	return c.read(ctx)
}

// waitErr is what Wait returns on a closed or broken channel.
func (c *evtChan) waitErr() error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	if p := c.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// read is Wait's reader role: read the eventfd until it counts an event, or
// an event comes through c.wake, or ctx or Close. The caller holds rsem.
//
// Whoever wants the reader to look (ctx, Close, wakeWait) first makes that
// visible (ctx done, c.closed, c.wake) and then sets a past read deadline
// on the eventfd. The loop clears an expired deadline before it looks, so
// either it sees the cause or the deadline was set after the clear and the
// next read returns at once.
func (c *evtChan) read(ctx context.Context) error {
	c.watch(ctx)
	for {
		if err := c.waitErr(); err != nil {
			return err
		}
		select {
		case <-c.wake:
			return c.waitErr()
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		err := c.erc.Read(c.readFn)
		if err == nil && c.rerr != 0 {
			err = c.rerr
		}
		switch {
		case err == nil:
			return c.waitErr()
		case errors.Is(err, os.ErrDeadlineExceeded):
			c.efd.SetReadDeadline(time.Time{})
		default:
			return fmt.Errorf("shm: port %d: read eventfd: %w", c.port, err)
		}
	}
}

// readEvent is the read callback of the eventfd's RawConn: false asks the
// runtime poller to wait for the descriptor. Any count read is one event.
func (c *evtChan) readEvent(fd uintptr) bool {
	for {
		switch e := readEventfd(fd, &c.rbuf, c.nowait); e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			c.rerr = e
			return true
		}
	}
}

// watch arranges for a read blocked in Wait to be interrupted when ctx is
// done. The registration is kept from one Wait to the next while the
// context stays the same (the usual case: one long-lived waiter), so the
// hot path allocates nothing. The caller holds rsem.
func (c *evtChan) watch(ctx context.Context) {
	done := ctx.Done()
	if done == nil || done == c.watchDone {
		return
	}
	c.unwatch()
	c.watchDone = done
	c.watchStop = context.AfterFunc(ctx, c.interrupt)
}

func (c *evtChan) unwatch() {
	if c.watchStop != nil {
		c.watchStop()
	}
	c.watchDone, c.watchStop = nil, nil
}

// interrupt makes a pending read of the eventfd return at once.
func (c *evtChan) interrupt() {
	c.efd.SetReadDeadline(time.Unix(1, 0))
}

// Close unbinds the port and wakes a pending Wait. If an unmap notify of a
// mapping that is still open names the channel, the connection stays up
// (events are still delivered to the peer, and its death is still acted
// upon) until that mapping is closed, as the kernel keeps a reference to
// the port; Close then returns at once.
func (c *evtChan) Close() error {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return nil
	}
	c.closed.Store(true)
	close(c.done)
	ln := c.ln
	c.ln = nil
	c.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	// Wake a Wait blocked in read, wait for it to leave and keep the
	// reader role for good.
	c.interrupt()
	c.rsem <- struct{}{}
	c.unwatch()
	c.release()
	return nil
}

// release drops one reference; the last one says goodbye to the peer,
// closes the connection, waits for the channel's goroutine and closes the
// eventfd.
func (c *evtChan) release() {
	c.mu.Lock()
	c.refs--
	last := c.refs == 0
	c.mu.Unlock()
	if !last {
		return
	}
	c.sendMu.Lock()
	if c.cur != nil {
		conn := c.cur.conn
		conn.SetWriteDeadline(time.Now().Add(frameTimeout))
		conn.Write([]byte{tokBye})
		c.dropLocked()
	}
	c.sendMu.Unlock()
	c.wg.Wait()
	c.b.freePort(c)
	c.efd.Close()
}

// addNotice registers one of our unmap notices: sent now if bound, and to
// every later binder.
func (c *evtChan) addNotice(n notice) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return net.ErrClosed
	}
	c.refs++
	c.notices = append(c.notices, n)
	c.sendMu.Lock()
	c.writeFrameLocked(n.append(make([]byte, 0, noticeLen), tokNotice))
	c.sendMu.Unlock()
	return nil
}

// removeNotice withdraws a notice (the mapping is closing or replacing it).
// The reference it held is dropped by the caller through release.
func (c *evtChan) removeNotice(n notice) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, m := range c.notices {
		if m == n {
			c.notices = append(c.notices[:i], c.notices[i+1:]...)
			break
		}
	}
	c.sendMu.Lock()
	c.writeFrameLocked(n.append(make([]byte, 0, noticeLen), tokCancel))
	c.sendMu.Unlock()
}
