package linkmgr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"idcfs/proto"
	"idcfs/vchan"
)

// retryInterval is how often an unanswered link request is repeated.
const retryInterval = 300 * time.Millisecond

// Manager owns every link of this domain and the connections on them.
// All methods are safe for concurrent use. Close stops every goroutine the
// Manager started.
type Manager struct {
	cfg    Config
	log    *logrus.Entry
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	xs     *xsAgent // nil without Xenstore

	mu        sync.Mutex
	closed    bool
	links     atomic.Pointer[map[vchan.DomID]*link] // current link per peer; copy on write under mu
	all       map[*link]struct{}                    // every link not yet torn down
	listeners atomic.Pointer[map[uint32]*Listener]  // copy on write under mu

	cmu        sync.Mutex
	conns      map[uint64]*Conn
	nextConnID atomic.Uint64
}

// New starts a Manager. With a Xenstore client it announces this domain's
// daemon, removes rings a previous daemon left behind, and watches for
// link requests from peers (see docs/xenstore.md). ctx bounds only this
// setup; the Manager lives until Close.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Backend == nil {
		return nil, errors.New("linkmgr: Config.Backend is nil")
	}
	cfg.setDefaults()
	mctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		cfg:    cfg,
		log:    cfg.Log.WithField("domid", cfg.Self),
		ctx:    mctx,
		cancel: cancel,
		all:    make(map[*link]struct{}),
		conns:  make(map[uint64]*Conn),
	}
	m.links.Store(&map[vchan.DomID]*link{})
	m.listeners.Store(&map[uint32]*Listener{})
	if cfg.Xenstore != nil {
		m.xs = newXSAgent(m, cfg.Xenstore)
		if err := m.xs.start(ctx); err != nil {
			cancel()
			m.wg.Wait()
			return nil, err
		}
	}
	m.log.Info("link manager started")
	return m, nil
}

// Self returns this domain's id.
func (m *Manager) Self() vchan.DomID { return m.cfg.Self }

// Close resets every connection, tears every link down (telling peers),
// withdraws this daemon's announcement, and waits for all goroutines.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrManagerClosed
	}
	m.closed = true
	links := make([]*link, 0, len(m.all))
	for l := range m.all {
		links = append(links, l)
	}
	lns := *m.listeners.Load()
	m.mu.Unlock()
	var err error
	if m.xs != nil {
		err = m.xs.withdraw()
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	for _, l := range links {
		l.fail(ErrManagerClosed, proto.ReasonShutdown, true)
	}
	m.cancel()
	if m.xs != nil {
		m.xs.stop()
	}
	m.wg.Wait()
	m.log.Info("link manager stopped")
	return err
}

// Dial opens a connection to port of domain peer, setting up the link
// first if there is none. Errors (in *net.OpError) wrap ErrRefused,
// ErrUnreachable, ErrTimeout or ErrDenied, or are ctx.Err(). peer may be
// Self: the connection then runs over an in-process loopback link.
func (m *Manager) Dial(ctx context.Context, peer vchan.DomID, port uint32) (*Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, m.cfg.ConnectTimeout)
	defer cancel()
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		var l *link
		l, err = m.getLink(dctx, peer)
		if err == nil {
			var c *Conn
			c, err = l.connect(dctx, port)
			if err == nil {
				return c, nil
			}
		}
		if !errors.Is(err, errLinkLost) {
			break
		}
	}
	switch {
	case ctx.Err() != nil:
		err = ctx.Err()
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		err = fmt.Errorf("%w: dom %d port %d after %v", ErrTimeout, peer, port, m.cfg.ConnectTimeout)
	case errors.Is(err, errLinkLost):
		err = fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	m.log.WithError(err).WithFields(logrus.Fields{"peer": peer, "port": port}).Debug("dial failed")
	return nil, &net.OpError{Op: opDial, Net: Network, Source: Addr{Dom: m.cfg.Self}, Addr: Addr{Dom: peer, Port: port}, Err: err}
}

// getLink returns the up link to peer, setting one up if needed.
func (m *Manager) getLink(ctx context.Context, peer vchan.DomID) (*link, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrManagerClosed
	}
	l := (*m.links.Load())[peer]
	if l == nil || l.isDown() {
		// A link that is going down may still be in the table for a moment.
		l = m.startLinkLocked(peer, true)
	}
	m.mu.Unlock()
	select {
	case <-l.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if l.setupErr != nil {
		return nil, l.setupErr
	}
	return l, nil
}

// roleFor says whether this domain serves the ring of a link to peer: the
// lower domid serves, so requests from both sides converge on one ring.
func (m *Manager) roleFor(peer vchan.DomID) string {
	if m.cfg.Self < peer {
		return roleServer
	}
	return roleClient
}

// startLinkLocked creates the link to peer and its owner goroutine.
// initiator: this side wants the link (a Dial), rather than answering a
// peer's request.
func (m *Manager) startLinkLocked(peer vchan.DomID, initiator bool) *link {
	if peer == m.cfg.Self {
		cl := newLink(m, peer, roleLoopClient)
		sl := newLink(m, peer, roleLoopServer)
		m.publishLinkLocked(peer, cl)
		m.all[cl], m.all[sl] = struct{}{}, struct{}{}
		m.wg.Add(1)
		go m.runLoopback(cl, sl)
		return cl
	}
	l := newLink(m, peer, m.roleFor(peer))
	// Every ring of this pair lives at the same Xenstore path, and closing
	// a ring removes its keys: a new ring is published only after the
	// earlier ones are gone.
	for o := range m.all {
		if o.peer == peer && o.role == l.role {
			l.after = append(l.after, o)
		}
	}
	if !initiator && l.role == roleClient {
		// Created because the server announced a ring: dial it at once.
		signal(l.notify)
	}
	m.publishLinkLocked(peer, l)
	m.all[l] = struct{}{}
	m.wg.Add(1)
	go m.runLink(l)
	return l
}

func (m *Manager) publishLinkLocked(peer vchan.DomID, l *link) {
	old := *m.links.Load()
	next := make(map[vchan.DomID]*link, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[peer] = l
	m.links.Store(&next)
}

// unlinkPeer forgets l as the current link to its peer.
func (m *Manager) unlinkPeer(l *link) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.links.Load()
	if old[l.peer] != l {
		return
	}
	next := make(map[vchan.DomID]*link, len(old))
	for k, v := range old {
		if v != l {
			next[k] = v
		}
	}
	m.links.Store(&next)
}

// currentLink returns the current link to peer, or nil. It never locks.
func (m *Manager) currentLink(peer vchan.DomID) *link { return (*m.links.Load())[peer] }

// runLink owns a link to another domain for its whole life.
func (m *Manager) runLink(l *link) {
	defer m.wg.Done()
	defer m.forget(l)
	ep, err := m.setupRing(l)
	if err != nil {
		l.setupDone(err)
		l.fail(err, proto.ReasonNormal, false)
		return
	}
	m.runStarted(l, ep)
}

func (m *Manager) runStarted(l *link, ep *vchan.Endpoint) {
	l.start(ep)
	t := time.NewTimer(m.cfg.ConnectTimeout)
	select {
	case <-l.ready:
	case <-t.C:
		err := fmt.Errorf("%w: no HELLO from dom %d", ErrTimeout, l.peer)
		l.setupDone(err)
		l.fail(err, proto.ReasonTimeout, true)
	case <-l.dead:
	}
	t.Stop()
	<-l.dead
	l.wait()
}

// runLoopback owns the two halves of the loopback link.
func (m *Manager) runLoopback(cl, sl *link) {
	defer m.wg.Done()
	defer m.forget(cl)
	defer m.forget(sl)
	rs := m.cfg.RingSize
	srv, err := vchan.NewServer(m.cfg.Backend, m.cfg.Self, rs, rs)
	if err != nil {
		err = fmt.Errorf("%w: loopback ring: %v", ErrUnreachable, err)
		cl.setupDone(err)
		cl.fail(err, proto.ReasonNormal, false)
		sl.fail(err, proto.ReasonNormal, false)
		return
	}
	cli, err := vchan.NewClient(m.cfg.Backend, m.cfg.Self, srv.RingRef(), srv.Port())
	if err != nil {
		_ = srv.Close()
		err = fmt.Errorf("%w: loopback ring: %v", ErrUnreachable, err)
		cl.setupDone(err)
		cl.fail(err, proto.ReasonNormal, false)
		sl.fail(err, proto.ReasonNormal, false)
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.runStarted(sl, srv)
	}()
	m.runStarted(cl, cli)
	// One half down takes the other down too (its ring read sees EOF).
	sl.fail(errors.New("loopback client half down"), proto.ReasonNormal, false)
	wg.Wait()
}

func (m *Manager) forget(l *link) {
	m.mu.Lock()
	delete(m.all, l)
	m.mu.Unlock()
}

// Links describes every link that is set up or being set up.
func (m *Manager) Links() []LinkInfo {
	m.mu.Lock()
	links := make([]*link, 0, len(m.all))
	for l := range m.all {
		links = append(links, l)
	}
	m.mu.Unlock()
	out := make([]LinkInfo, 0, len(links))
	for _, l := range links {
		out = append(out, l.info())
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Peer != out[j].Peer {
			return out[i].Peer < out[j].Peer
		}
		return out[i].Role < out[j].Role
	})
	return out
}

// LinkInfo describes a link.
type LinkInfo struct {
	Peer                vchan.DomID
	State               string // setup, up, down
	Role                string // server, client, loopback-server, loopback-client
	ReadRing, WriteRing int    // ring sizes in bytes
	Conns               int
	BytesIn, BytesOut   uint64 // payload bytes of DATA_ind
	FramesIn, FramesOut uint64
}

func (m *Manager) addConn(c *Conn) {
	m.cmu.Lock()
	m.conns[c.id] = c
	m.cmu.Unlock()
}

func (m *Manager) removeConn(c *Conn) {
	m.cmu.Lock()
	delete(m.conns, c.id)
	m.cmu.Unlock()
}

// Conns describes every established connection, by increasing id.
func (m *Manager) Conns() []ConnInfo {
	m.cmu.Lock()
	cs := make([]*Conn, 0, len(m.conns))
	for _, c := range m.conns {
		cs = append(cs, c)
	}
	m.cmu.Unlock()
	sort.Slice(cs, func(i, j int) bool { return cs[i].id < cs[j].id })
	out := make([]ConnInfo, len(cs))
	for i, c := range cs {
		out[i] = c.Info()
	}
	return out
}

// Conn returns the connection with the given id, or nil if it is gone.
func (m *Manager) Conn(id uint64) *Conn {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	return m.conns[id]
}
