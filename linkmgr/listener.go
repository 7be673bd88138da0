package linkmgr

import (
	"context"
	"net"
	"sync"

	"idcfs/proto"
)

// Listener accepts connections to one port of this domain, from any peer
// domain and from this domain itself.
type Listener struct {
	m       *Manager
	port    uint32
	backlog int

	mu     sync.Mutex
	queue  []*Conn // answered, not yet accepted
	closed bool
	sig    chan struct{} // 1-buffered: the queue gained a connection or closed
}

// Listen binds port. At most backlog connections (Config.Backlog if
// backlog <= 0) wait for Accept; more are refused with "backlog full".
// It fails with ErrAddrInUse if the port already has a listener.
func (m *Manager) Listen(port uint32, backlog int) (*Listener, error) {
	if backlog <= 0 {
		backlog = m.cfg.Backlog
	}
	ln := &Listener{m: m, port: port, backlog: backlog, sig: make(chan struct{}, 1)}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, &net.OpError{Op: opListen, Net: Network, Addr: Addr{Dom: m.cfg.Self, Port: port}, Err: ErrManagerClosed}
	}
	old := *m.listeners.Load()
	if _, ok := old[port]; ok {
		return nil, &net.OpError{Op: opListen, Net: Network, Addr: Addr{Dom: m.cfg.Self, Port: port}, Err: ErrAddrInUse}
	}
	next := make(map[uint32]*Listener, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[port] = ln
	m.listeners.Store(&next)
	m.log.WithField("port", port).Debug("listening")
	return ln, nil
}

// listener returns the listener of port, or nil. It never locks.
func (m *Manager) listener(port uint32) *Listener { return (*m.listeners.Load())[port] }

// Port returns the port the listener is bound to.
func (l *Listener) Port() uint32 { return l.port }

// Addr returns the listener's address.
func (l *Listener) Addr() net.Addr { return Addr{Dom: l.m.cfg.Self, Port: l.port} }

// offer queues an incoming connection, answering its CONNECT_req.
func (l *Listener) offer(c *Conn) proto.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return proto.StatusNoPort
	case len(l.queue) >= l.backlog:
		return proto.StatusBacklogFull
	}
	if !c.l.admit(c) {
		return proto.StatusRefused
	}
	l.queue = append(l.queue, c)
	signal(l.sig)
	return proto.StatusAccepted
}

// Accept waits for the next connection. It returns ErrListenerClosed once
// the listener is closed and ctx.Err() if ctx ends first (errors wrapped in
// *net.OpError).
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	for {
		c, err := l.TryAccept()
		if err == nil {
			return c, nil
		}
		if !isWouldBlock(err) {
			return nil, err
		}
		select {
		case <-l.sig:
		case <-ctx.Done():
			return nil, l.opError(ctx.Err())
		}
	}
}

func isWouldBlock(err error) bool {
	oe, ok := err.(*net.OpError)
	return ok && oe.Err == ErrWouldBlock
}

// TryAccept returns a pending connection without waiting, or ErrWouldBlock.
func (l *Listener) TryAccept() (*Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, l.opError(ErrListenerClosed)
	}
	if len(l.queue) == 0 {
		return nil, l.opError(ErrWouldBlock)
	}
	c := l.queue[0]
	l.queue[0] = nil
	l.queue = l.queue[1:]
	if len(l.queue) > 0 {
		signal(l.sig) // another acceptor may take the next one
	}
	return c, nil
}

// Pending returns how many connections wait for Accept.
func (l *Listener) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}

func (l *Listener) opError(err error) error {
	return &net.OpError{Op: opAccept, Net: Network, Addr: Addr{Dom: l.m.cfg.Self, Port: l.port}, Err: err}
}

// Close unbinds the port: later connects are refused, connections waiting
// for Accept are reset, established connections live on, and blocked
// Accept calls return ErrListenerClosed.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return l.opError(ErrListenerClosed)
	}
	l.closed = true
	queue := l.queue
	l.queue = nil
	l.mu.Unlock()
	close(l.sig) // wakes every Accept; they then see closed
	m := l.m
	m.mu.Lock()
	old := *m.listeners.Load()
	if old[l.port] == l {
		next := make(map[uint32]*Listener, len(old))
		for k, v := range old {
			if k != l.port {
				next[k] = v
			}
		}
		m.listeners.Store(&next)
	}
	m.mu.Unlock()
	for _, c := range queue {
		_ = c.Reset() // never accepted: nobody else holds it
	}
	return nil
}
