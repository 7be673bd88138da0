package xenstored

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"

	"github.com/sirupsen/logrus"

	"idcfs/linkmgr/xenstore"
)

// Server is an embedded Xenstore. Requests from all connections run one at
// a time under one lock, as in the single-threaded C daemon, so every
// request sees a consistent tree and watch events are queued in the order
// of the changes.
type Server struct {
	log *logrus.Entry

	mu        sync.Mutex
	st        *store
	domains   map[uint32]bool
	special   map[string][]xenstore.Perm // permissions of @introduceDomain, @releaseDomain
	conns     map[*conn]struct{}
	listeners map[net.Listener]struct{}
	txSeq     uint32
	closed    bool

	wg sync.WaitGroup
}

// New returns a Server logging to log (nil discards the log), holding the
// tree a freshly booted Xen host has: /local/domain/0 with its domid node.
// Domain 0 is always introduced.
func New(log *logrus.Entry) *Server {
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	s := &Server{
		log:       log,
		st:        newStore(),
		domains:   map[uint32]bool{0: true},
		special:   make(map[string][]xenstore.Perm),
		conns:     make(map[*conn]struct{}),
		listeners: make(map[net.Listener]struct{}),
	}
	for _, sp := range []string{xenstore.IntroduceDomain, xenstore.ReleaseDomain} {
		s.special[sp] = []xenstore.Perm{{Dom: 0}}
	}
	o := s.opLocked(nil, 0)
	o.write(homeOf(0)+"/domid", []byte("0"))
	return s
}

func (s *Server) opLocked(v view, dom uint32) *op {
	if v == nil {
		v = s.st
	}
	return &op{v: v, dom: dom, exists: func(d uint32) bool { return s.domains[d] }}
}

// Listen creates a Unix socket at path (mode 0600, as xenstored's) whose
// every connection speaks for domain dom (0 = privileged), and serves it in
// the background until Close. A stale socket file (nobody accepts on it) is
// replaced; a live one gives an error. The socket file is removed on Close.
func (s *Server) Listen(path string, dom uint32) error {
	if dom > xenstore.MaxDomID {
		return ErrBadDomain
	}
	l, err := listenUnix(path)
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return err
	}
	if err := s.addListener(l); err != nil {
		l.Close()
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.serve(l, dom); err != nil {
			s.log.WithError(err).WithField("domid", dom).Warn("xenstored listener failed")
		}
	}()
	return nil
}

// listenUnix listens on a Unix socket at path. A socket file left behind by
// a process that is gone (connecting to it is refused) is replaced; a live
// one is not.
func listenUnix(path string) (net.Listener, error) {
	l, err := net.Listen("unix", path)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return l, err
	}
	fi, serr := os.Lstat(path)
	if serr != nil || fi.Mode().Type() != os.ModeSocket {
		return nil, err
	}
	c, derr := net.Dial("unix", path)
	if derr == nil {
		c.Close()
		return nil, err // someone is serving there
	}
	if !errors.Is(derr, syscall.ECONNREFUSED) {
		return nil, err
	}
	if rerr := os.Remove(path); rerr != nil {
		return nil, err
	}
	return net.Listen("unix", path)
}

// Serve accepts connections on l, each speaking for domain dom, until l is
// closed (it then returns nil) or accepting fails. Close closes l.
func (s *Server) Serve(l net.Listener, dom uint32) error {
	if dom > xenstore.MaxDomID {
		return ErrBadDomain
	}
	if err := s.addListener(l); err != nil {
		return err
	}
	return s.serve(l, dom)
}

func (s *Server) addListener(l net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.listeners[l] = struct{}{}
	return nil
}

func (s *Server) serve(l net.Listener, dom uint32) error {
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	for {
		nc, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if !s.startConn(nc, dom) {
			nc.Close()
			return nil
		}
	}
}

// Close closes all listeners and connections and waits for the server's
// goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	var errs []error
	for l := range s.listeners {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for c := range s.conns {
		c.shutdown()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}

// IntroduceDomain makes domain dom known, as the toolstack does when it
// builds a domain: /local/domain/<dom> (owner 0, readable by dom), its domid
// node, and data/ owned by dom. It fires @introduceDomain.
func (s *Server) IntroduceDomain(dom uint32) error {
	if dom > xenstore.MaxDomID {
		return ErrBadDomain
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.domains[dom] {
		return fmt.Errorf("%w: %d", ErrDomainExists, dom)
	}
	s.domains[dom] = true
	home := homeOf(dom)
	o := s.opLocked(nil, 0)
	steps := []struct {
		path  string
		value string
		perms []xenstore.Perm
	}{
		{home, "", []xenstore.Perm{{Dom: 0}, {Dom: dom, Read: true}}},
		{home + "/domid", strconv.FormatUint(uint64(dom), 10), []xenstore.Perm{{Dom: 0}, {Dom: dom, Read: true}}},
		{home + "/data", "", []xenstore.Perm{{Dom: dom}}},
	}
	for _, st := range steps {
		if e := o.write(st.path, []byte(st.value)); e != 0 {
			return fmt.Errorf("xenstored: creating %s: %w", st.path, e)
		}
		if e := o.setPerms(st.path, st.perms); e != 0 {
			return fmt.Errorf("xenstored: permissions of %s: %w", st.path, e)
		}
	}
	s.fireLocked(o.changes)
	s.fireSpecialLocked(xenstore.IntroduceDomain)
	s.log.WithField("domid", dom).Info("domain introduced")
	return nil
}

// ReleaseDomain forgets domain dom: it removes /local/domain/<dom> (firing
// the watches on it, the domain's own included), fires @releaseDomain, and
// then drops the watches and transactions of the domain's connections. The
// connections stay open.
func (s *Server) ReleaseDomain(dom uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if dom == 0 || !s.domains[dom] {
		return fmt.Errorf("%w: %d", ErrNoDomain, dom)
	}
	delete(s.domains, dom)
	o := s.opLocked(nil, 0)
	if e := o.rm(homeOf(dom)); e != 0 {
		return fmt.Errorf("xenstored: removing %s: %w", homeOf(dom), e)
	}
	s.fireLocked(o.changes)
	s.fireSpecialLocked(xenstore.ReleaseDomain)
	for c := range s.conns {
		if c.dom == dom {
			c.watches = nil
			c.txs = make(map[uint32]*tx)
		}
	}
	s.log.WithField("domid", dom).Info("domain released")
	return nil
}

// fireLocked queues the watch events of changes, in their order, as
// xenstored's fire_watches does for each: every connection whose domain may
// see the change gets one event per watch it matches, naming the changed
// node. A change matches the watches on its node and, unless exact, those
// on the node's ancestors.
func (s *Server) fireLocked(changes []change) {
	if len(changes) == 0 {
		return
	}
	for c := range s.conns {
		if len(c.watches) == 0 {
			continue
		}
		for _, ch := range changes {
			if !permitted(c.dom, ch) {
				continue
			}
			for _, w := range c.watches {
				if w.special {
					continue
				}
				if ch.path == w.abs || (!ch.exact && isBelow(ch.path, w.abs)) {
					c.event(w.eventPath(ch.path), w.token)
				}
			}
		}
	}
}

func (s *Server) fireSpecialLocked(name string) {
	perms := s.special[name]
	for c := range s.conns {
		if !canRead(c.dom, perms) {
			continue
		}
		for _, w := range c.watches {
			if w.special && w.abs == name {
				c.event(name, w.token)
			}
		}
	}
}

// permitted applies xenstored's delivery rule (watch_permitted): the
// watcher may read the changed node, or could before a permission change
// (or, in a transaction, when the transaction first accessed it), or may
// read its parent. Absent permissions grant nothing.
func permitted(dom uint32, ch change) bool {
	for _, perms := range [][]xenstore.Perm{ch.oldPerms, ch.perms, ch.parentPerms} {
		if perms != nil && canRead(dom, perms) {
			return true
		}
	}
	return false
}

// watch is one registered watch of a connection.
type watch struct {
	path    string // as registered
	abs     string // absolute form, or the special path
	token   string
	special bool
	home    string // set for relative watches: events are sent relative
}

func (w *watch) eventPath(changed string) string {
	if w.home != "" && isBelow(changed, w.home) {
		return changed[len(w.home)+1:]
	}
	return changed
}

// domainWatchesLocked counts the watches of all connections of dom.
func (s *Server) domainWatchesLocked(dom uint32) int {
	n := 0
	for c := range s.conns {
		if c.dom == dom {
			n += len(c.watches)
		}
	}
	return n
}

func (s *Server) domainTxLocked(dom uint32) int {
	n := 0
	for c := range s.conns {
		if c.dom == dom {
			n += len(c.txs)
		}
	}
	return n
}

func (s *Server) nextTxIDLocked() uint32 {
	for {
		s.txSeq++
		if s.txSeq == 0 {
			continue
		}
		used := false
		for c := range s.conns {
			if _, ok := c.txs[s.txSeq]; ok {
				used = true
				break
			}
		}
		if !used {
			return s.txSeq
		}
	}
}

func removeWatch(list []*watch, abs, token string) ([]*watch, bool) {
	for i, w := range list {
		if w.abs == abs && w.token == token {
			return slices.Delete(list, i, i+1), true
		}
	}
	return list, false
}
