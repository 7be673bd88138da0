//go:build linux

package shm

import (
	"context"
	"errors"
	"fmt"
	"io"
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

var eventToken = [1]byte{tokEvent}

// evtChan is one end of an event channel: a Unix stream connection to the
// other end.
//
// Wait reads the socket itself, on the runtime poller, so that an event
// wakes the waiting goroutine directly: no goroutine stands between the
// socket and the waiter. A channel made by AllocUnbound also owns one
// goroutine that accepts binders: it listens on dir/evtchn/<self>/<port>
// while the port is unbound and stops listening while it is bound (so a
// second binder is refused, as Xen refuses to bind a port that is not
// unbound). When the binder goes away the port becomes unbound for the same
// peer again and listens anew, as on Xen.
type evtChan struct {
	b      *Backend
	port   uint32
	peer   vchan.DomID
	listen bool   // made by AllocUnbound
	path   string // socket path (listen only)

	wake     chan struct{} // an event not read from the socket (bind, peer end); cap 1
	bound    chan struct{} // a connection was installed; cap 1
	relisten chan struct{} // listen only: the connection ended; cap 1
	done     chan struct{} // closed by Close
	rsem     chan struct{} // the reader role, held by one Wait at a time; cap 1

	closed atomic.Bool           // Close was called
	broken atomic.Pointer[error] // the peer broke the protocol

	mu      sync.Mutex
	ln      *net.UnixListener // while listening
	notices []notice          // our unmap notices naming this channel
	refs    int               // 1 until Close, +1 per unmap notify naming it

	sendMu  sync.Mutex    // serialises writes on conn, guards conn/fd/dropped
	conn    *net.UnixConn // current connection, nil while unbound
	fd      int           // conn's descriptor for Notify, -1 while unbound
	dropped *net.UnixConn // the last connection we closed ourselves

	// Reader state, owned by the holder of rsem.
	rconn     *net.UnixConn // the connection dec and sess belong to
	dec       streamDecoder
	sess      session
	rbuf      [512]byte
	watchDone <-chan struct{} // Done of the context watched for cancellation
	watchStop func() bool

	wg sync.WaitGroup // the accepting goroutine
}

var _ vchan.EventChannel = (*evtChan)(nil)

func (b *Backend) newChan(peer vchan.DomID, listen bool) (*evtChan, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
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
		return nil, ErrNoSpace
	}
	c := &evtChan{
		b:        b,
		port:     port,
		peer:     peer,
		listen:   listen,
		wake:     make(chan struct{}, 1),
		bound:    make(chan struct{}, 1),
		relisten: make(chan struct{}, 1),
		done:     make(chan struct{}),
		rsem:     make(chan struct{}, 1),
		refs:     1,
		fd:       -1,
	}
	if listen {
		c.path = b.portPath(b.self, port)
	}
	b.ports[port] = c
	return c, nil
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
		b.freePort(c)
		return nil, fmt.Errorf("shm: alloc unbound port: socket path %s longer than %d bytes", c.path, maxSockPath)
	}
	c.mu.Lock()
	err = c.listenLocked()
	c.mu.Unlock()
	if err != nil {
		b.freePort(c)
		return nil, fmt.Errorf("shm: alloc unbound port for %d: %w", peer, err)
	}
	c.wg.Add(1)
	go c.acceptLoop()
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
	conn, err := b.dialPort(peer, remotePort, c.port)
	if err != nil {
		b.freePort(c)
		return nil, fmt.Errorf("shm: bind to port %d of %d: %w", remotePort, peer, err)
	}
	c.install(conn, nil)
	c.signal()
	return c, nil
}

// dialPort connects to a listening port and does the binder's handshake.
func (b *Backend) dialPort(peer vchan.DomID, remotePort, localPort uint32) (*net.UnixConn, error) {
	path := b.portPath(peer, remotePort)
	if len(path) > maxSockPath {
		return nil, fmt.Errorf("socket path %s longer than %d bytes", path, maxSockPath)
	}
	d := net.Dialer{Timeout: handshakeTimeout}
	nc, err := d.Dial("unix", path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) ||
			errors.Is(err, syscall.ENOTSOCK) || errors.Is(err, syscall.EPROTOTYPE) {
			return nil, fmt.Errorf("%w: %v", ErrNoPort, err)
		}
		return nil, err
	}
	conn := nc.(*net.UnixConn)
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	msg := hello{typ: msgHello, domain: uint16(b.self), port: localPort, arg: remotePort}
	var buf [helloLen]byte
	if _, err := conn.Write(msg.append(buf[:0])); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: handshake: %v", ErrNoPort, err)
	}
	if _, err := io.ReadFull(conn, buf[:]); err != nil {
		conn.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("%w: no handshake reply within %v", ErrNoPort, handshakeTimeout)
		}
		return nil, fmt.Errorf("%w: handshake: %v", ErrNoPort, err)
	}
	reply, err := parseHello(buf[:])
	if err != nil {
		conn.Close()
		return nil, err
	}
	switch {
	case reply.typ == msgRefuse:
		conn.Close()
		return nil, fmt.Errorf("%w: %s", ErrRefused, refusalText(reply.arg))
	case reply.typ != msgAccept || reply.domain != uint16(peer) || reply.port != remotePort:
		conn.Close()
		return nil, fmt.Errorf("%w: reply type %d from domain %d port %d", ErrProtocol, reply.typ, reply.domain, reply.port)
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

func refusalText(code uint32) string {
	switch code {
	case refuseWrongPeer:
		return "port reserved for another domain"
	case refuseBound:
		return "port already bound"
	case refuseWrongPort:
		return "socket serves another port"
	}
	return fmt.Sprintf("code %d", code)
}

// install makes conn the channel's connection and sends it prefix (the
// handshake reply, for a listening port) followed by our unmap notices, in
// one write: a binder's Bind returns only after reading the reply, so the
// notices are on their way before the binder can do anything else.
func (c *evtChan) install(conn *net.UnixConn, prefix []byte) {
	fd := -1
	if rc, err := conn.SyscallConn(); err == nil {
		rc.Control(func(p uintptr) { fd = int(p) })
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		// Close ran between accept and here: it found no connection
		// to close, so this one must not be kept.
		conn.Close()
		return
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.conn, c.fd = conn, fd
	signal(c.bound)
	buf := prefix
	for _, n := range c.notices {
		buf = n.append(buf, tokNotice)
	}
	if len(buf) > 0 {
		c.writeFrameLocked(buf)
	}
}

// writeFrameLocked writes a control frame; c.sendMu is held. A peer that
// does not take it within frameTimeout loses the connection.
func (c *evtChan) writeFrameLocked(frame []byte) {
	if c.conn == nil {
		return
	}
	c.conn.SetWriteDeadline(time.Now().Add(frameTimeout))
	_, err := c.conn.Write(frame)
	c.conn.SetWriteDeadline(time.Time{})
	if err != nil {
		c.dropLocked()
	}
}

// dropLocked closes the connection from our side; c.sendMu is held.
func (c *evtChan) dropLocked() {
	if c.conn == nil {
		return
	}
	c.dropped = c.conn
	c.conn.Close()
	c.conn, c.fd = nil, -1
}

// acceptLoop is a listening channel's goroutine: it accepts a binder,
// hands the connection over, and once Wait saw the connection end and
// listened again (see ended), accepts the next. It exits on Close.
func (c *evtChan) acceptLoop() {
	defer c.wg.Done()
	for {
		conn, reply := c.accept()
		if conn == nil {
			return
		}
		c.install(conn, reply)
		select {
		case <-c.relisten:
		case <-c.done:
			return
		}
	}
}

// accept waits for a binder from c.peer, answers its hello and closes the
// listener: a bound port takes no more binders. It returns nil when the
// listener was closed by Close.
func (c *evtChan) accept() (*net.UnixConn, []byte) {
	c.mu.Lock()
	ln := c.ln
	c.mu.Unlock()
	if ln == nil {
		return nil, nil
	}
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, nil
			}
			// Out of descriptors and the like: back off a little.
			select {
			case <-c.done:
				return nil, nil
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		reply, ok := c.handshake(conn)
		if !ok {
			conn.Close()
			continue
		}
		c.mu.Lock()
		if c.closed.Load() {
			c.mu.Unlock()
			conn.Close()
			return nil, nil
		}
		c.ln = nil
		c.mu.Unlock()
		ln.Close()
		return conn, reply
	}
}

// handshake reads a binder's hello. It answers a refusal itself; for an
// accepted binder it returns the reply for install to send.
func (c *evtChan) handshake(conn *net.UnixConn) (reply []byte, ok bool) {
	conn.SetDeadline(time.Now().Add(helloTimeout))
	defer conn.SetDeadline(time.Time{})
	var buf [helloLen]byte
	if _, err := io.ReadFull(conn, buf[:]); err != nil {
		return nil, false
	}
	h, err := parseHello(buf[:])
	if err != nil || h.typ != msgHello {
		return nil, false
	}
	code := uint32(refuseNone)
	switch {
	case h.domain != uint16(c.peer):
		code = refuseWrongPeer
	case h.arg != c.port:
		code = refuseWrongPort
	}
	r := hello{typ: msgAccept, domain: uint16(c.b.self), port: c.port, arg: code}
	if code == refuseNone {
		return r.append(nil), true
	}
	r.typ = msgRefuse
	conn.Write(r.append(buf[:0]))
	return nil, false
}

// session is what the reader learned on one connection.
type session struct {
	notices map[notice]bool // the peer's unmap notices
	events  bool            // an event token in the current batch
	err     error
}

func (s *session) event() { s.events = true }

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

// fail marks the channel broken and wakes Wait, which reports err.
func (c *evtChan) fail(err error) {
	c.broken.CompareAndSwap(nil, &err)
	signal(c.wake)
}

// signal makes one token pending on a 1-buffered channel (tokens coalesce).
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (c *evtChan) signal() { signal(c.wake) }

// Port is the local port number.
func (c *evtChan) Port() uint32 { return c.port }

// Notify sends an event to the other end. On a port that is not bound (yet,
// or any more) it does nothing, as on Xen. It never blocks: when the peer has
// a socket full of unread events, one more would coalesce with them anyway.
func (c *evtChan) Notify() error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	return c.kick()
}

// kick sends one event token; used by Notify and by unmap notifies (which
// may fire after Close, as the kernel keeps the port for them).
func (c *evtChan) kick() error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.fd < 0 {
		return nil
	}
	for {
		_, err := unix.Write(c.fd, eventToken[:])
		switch err {
		case nil, unix.EAGAIN:
			return nil
		case unix.EINTR:
			continue
		case unix.EPIPE, unix.ECONNRESET:
			// The peer is gone; the reader sees the end of the stream.
			return nil
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
// Wait reads the event socket itself; concurrent Waits take turns at
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

// read is Wait's reader role: read the socket until an event token, the
// end of the connection, ctx or Close. The caller holds rsem.
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
		c.sendMu.Lock()
		conn := c.conn
		c.sendMu.Unlock()
		if conn == nil {
			select {
			case <-c.bound:
				continue
			case <-c.wake:
				return c.waitErr()
			case <-ctx.Done():
				return ctx.Err()
			case <-c.done:
				return net.ErrClosed
			}
		}
		if conn != c.rconn {
			c.rconn = conn
			c.dec = streamDecoder{}
			if c.sess.notices == nil {
				c.sess.notices = make(map[notice]bool)
			}
			clear(c.sess.notices)
			c.sess.err = nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := conn.Read(c.rbuf[:])
		c.sess.events = false
		if n > 0 {
			perr := c.dec.feed(c.rbuf[:n], &c.sess)
			if perr == nil {
				perr = c.sess.err
			}
			if perr != nil {
				c.sendMu.Lock()
				if c.conn == conn {
					c.dropLocked()
				}
				c.sendMu.Unlock()
				c.rconn = nil
				c.fail(fmt.Errorf("shm: port %d, peer %d: %w", c.port, c.peer, perr))
				return c.waitErr()
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Set by watch's interrupt (this or an earlier context) or by
			// Close; clear it and look again.
			conn.SetReadDeadline(time.Time{})
		default:
			if c.ended(conn) {
				return c.waitErr()
			}
			continue
		}
		if c.sess.events {
			return nil
		}
	}
}

// ended handles the end of conn, seen by the reader: unless the peer said
// goodbye or we closed it ourselves, the peer died, and its unmap notices
// are carried out here, as Xen's kernel would have done in the dead
// domain. It reports whether the peer died: that, like the kernel's unmap
// notify, is an event; an orderly close is not.
func (c *evtChan) ended(conn *net.UnixConn) bool {
	c.sendMu.Lock()
	local := c.dropped == conn
	if c.conn == conn {
		c.dropLocked()
	}
	c.sendMu.Unlock()
	conn.Close()
	died := !c.dec.bye && !local
	if died {
		for n := range c.sess.notices {
			c.b.clearByte(n)
		}
	}
	clear(c.sess.notices)
	c.rconn = nil
	if c.listen {
		// The port is unbound again, for the same peer, from now on.
		c.mu.Lock()
		var err error
		if !c.closed.Load() {
			err = c.listenLocked()
		}
		c.mu.Unlock()
		if err != nil {
			c.fail(fmt.Errorf("shm: port %d: listen again: %w", c.port, err))
		}
		signal(c.relisten)
	}
	return died
}

// watch arranges for a Read blocked in Wait to be interrupted when ctx is
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

// interrupt makes a pending Read of the connection return at once.
func (c *evtChan) interrupt() {
	c.sendMu.Lock()
	if c.conn != nil {
		c.conn.SetReadDeadline(time.Unix(1, 0))
	}
	c.sendMu.Unlock()
}

// Close unbinds the port and wakes a pending Wait. If an unmap notify of a
// mapping that is still open names the channel, the connection stays up
// (events are still delivered to the peer) until that mapping is closed,
// as the kernel keeps a reference to the port; Close then returns at once.
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
	// Wake a Wait blocked in Read, wait for it to leave and keep the
	// reader role for good.
	c.interrupt()
	c.rsem <- struct{}{}
	c.unwatch()
	c.release()
	return nil
}

// release drops one reference; the last one says goodbye to the peer,
// closes the connection and waits for the reader goroutine.
func (c *evtChan) release() {
	c.mu.Lock()
	c.refs--
	last := c.refs == 0
	c.mu.Unlock()
	if !last {
		return
	}
	c.sendMu.Lock()
	if c.conn != nil {
		c.conn.SetWriteDeadline(time.Now().Add(frameTimeout))
		c.conn.Write([]byte{tokBye})
		c.dropLocked()
	}
	c.sendMu.Unlock()
	c.wg.Wait()
	c.b.freePort(c)
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
