package xenstored

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"

	"github.com/sirupsen/logrus"

	"idcfs/linkmgr/xenstore"
)

// maxQueued bounds the messages waiting to be written to one connection. A
// client that stops reading while events pile up past it is disconnected
// (logged), rather than letting the server grow without bound.
const maxQueued = 4096

// conn is one client connection. watches and txs are guarded by Server.mu;
// the output queue by omu.
type conn struct {
	s   *Server
	nc  net.Conn // nil for connections driven directly (fuzzing)
	dom uint32
	log *logrus.Entry

	watches []*watch
	txs     map[uint32]*tx

	omu      sync.Mutex
	out      [][]byte
	notify   chan struct{} // cap 1: out gained messages
	done     chan struct{} // closed by shutdown
	shutOnce sync.Once
}

func newConn(s *Server, nc net.Conn, dom uint32) *conn {
	return &conn{
		s:      s,
		nc:     nc,
		dom:    dom,
		log:    s.log.WithField("domid", dom),
		txs:    make(map[uint32]*tx),
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
}

// startConn registers a connection and starts its reader and writer. It
// reports false if the server is closed.
func (s *Server) startConn(nc net.Conn, dom uint32) bool {
	c := newConn(s, nc, dom)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(2)
	s.mu.Unlock()
	c.log.Debug("xenstored connection accepted")
	go c.readLoop()
	go c.writeLoop()
	return true
}

// shutdown closes the socket, which ends both goroutines.
func (c *conn) shutdown() {
	c.shutOnce.Do(func() {
		close(c.done)
		if c.nc != nil {
			c.nc.Close()
		}
	})
}

func (c *conn) readLoop() {
	defer c.s.wg.Done()
	defer func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		c.shutdown()
	}()
	for {
		m, err := xenstore.ReadMessage(c.nc, xenstore.MaxPayload)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
				c.log.Debug("xenstored connection closed")
			default:
				// A bad header leaves the stream unusable; xenstored drops
				// such connections too.
				c.log.WithError(err).Warn("xenstored dropping connection")
			}
			return
		}
		c.s.mu.Lock()
		c.handleLocked(m)
		c.s.mu.Unlock()
	}
}

func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	for {
		c.omu.Lock()
		q := c.out
		c.out = nil
		c.omu.Unlock()
		for _, b := range q {
			if _, err := c.nc.Write(b); err != nil {
				c.shutdown()
				return
			}
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-c.notify:
		case <-c.done:
			return
		}
	}
}

// send queues one message for the writer.
func (c *conn) send(m *xenstore.Message) {
	b, err := m.AppendMarshal(nil)
	if err != nil {
		// Only replies can be too large, and reply builders check that
		// first; keep the client informed anyway.
		b, _ = (&xenstore.Message{Op: xenstore.OpError, ReqID: m.ReqID, TxID: m.TxID, Payload: []byte("E2BIG\x00")}).AppendMarshal(nil)
	}
	c.omu.Lock()
	overflow := len(c.out) >= maxQueued
	if !overflow {
		c.out = append(c.out, b)
	}
	c.omu.Unlock()
	if overflow {
		c.log.Warn("xenstored client does not read its messages; dropping connection")
		c.shutdown()
		return
	}
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *conn) event(path, token string) {
	p := xenstore.AppendString(xenstore.AppendString(nil, path), token)
	c.send(&xenstore.Message{Op: xenstore.OpWatchEvent, Payload: p})
}

func (c *conn) replyErr(r request, e syscall.Errno) {
	c.send(&xenstore.Message{Op: xenstore.OpError, ReqID: r.reqID, TxID: r.txID,
		Payload: xenstore.AppendString(nil, xenstore.ErrnoName(e))})
}

func (c *conn) reply(r request, payload []byte) {
	if len(payload) > xenstore.MaxPayload {
		c.replyErr(r, syscall.E2BIG)
		return
	}
	c.send(&xenstore.Message{Op: r.op, ReqID: r.reqID, TxID: r.txID, Payload: payload})
}

var okPayload = []byte("OK\x00")

// handleLocked runs one request. Server.mu must be held.
func (c *conn) handleLocked(m *xenstore.Message) {
	r, e := parseRequest(m, c.dom)
	if e == 0 {
		var payload []byte
		payload, e = c.execLocked(r)
		if e == 0 {
			c.reply(r, payload)
			if r.op == xenstore.OpWatch {
				// The initial event follows the reply.
				w := c.watches[len(c.watches)-1]
				c.event(w.path, w.token)
			}
			return
		}
	}
	c.log.WithFields(logrus.Fields{"op": m.Op.String(), "errno": xenstore.ErrnoName(e)}).Debug("xenstored request refused")
	c.replyErr(r, e)
}

// execLocked runs a parsed request and returns the reply payload.
func (c *conn) execLocked(r request) ([]byte, syscall.Errno) {
	s := c.s
	var t *tx
	switch r.op {
	case xenstore.OpWatch, xenstore.OpUnwatch, xenstore.OpGetDomainPath, xenstore.OpIntroduce,
		xenstore.OpRelease, xenstore.OpIsDomainIntroduced, xenstore.OpResume, xenstore.OpSetTarget,
		xenstore.OpResetWatches:
		// These ignore the transaction id.
	case xenstore.OpTransactionStart:
		if r.txID != 0 {
			return nil, syscall.EBUSY
		}
	default:
		if r.txID != 0 {
			if t = c.txs[r.txID]; t == nil {
				return nil, syscall.ENOENT
			}
		}
	}
	var v view = s.st
	if t != nil {
		v = t
	}
	o := s.opLocked(v, c.dom)
	// commit fires the changes of a request outside a transaction at once,
	// and keeps those of one inside for TRANSACTION_END.
	commit := func(e syscall.Errno) ([]byte, syscall.Errno) {
		if e != 0 {
			return nil, e
		}
		if t != nil {
			t.record(o.changes)
		} else {
			s.fireLocked(o.changes)
		}
		return okPayload, 0
	}

	switch r.op {
	case xenstore.OpRead:
		path, e := canonical(c.dom, r.args[0], false)
		if e != 0 {
			return nil, e
		}
		return o.read(path)
	case xenstore.OpDirectory:
		path, e := canonical(c.dom, r.args[0], false)
		if e != 0 {
			return nil, e
		}
		names, _, e := o.directory(path)
		if e != 0 {
			return nil, e
		}
		var b []byte
		for _, n := range names {
			b = xenstore.AppendString(b, n)
		}
		return b, 0
	case xenstore.OpDirectoryPart:
		return c.directoryPart(o, r)
	case xenstore.OpGetPerms:
		if special(r.args[0]) {
			return nil, syscall.EINVAL // as Xen 4.17 answers
		}
		path, e := canonical(c.dom, r.args[0], false)
		if e != 0 {
			return nil, e
		}
		perms, e := o.getPerms(path)
		if e != 0 {
			return nil, e
		}
		var b []byte
		for _, p := range perms {
			b = xenstore.AppendString(b, p.String())
		}
		return b, 0
	case xenstore.OpWrite:
		path, e := canonical(c.dom, r.args[0], false)
		if e != 0 {
			return nil, e
		}
		return commit(o.write(path, r.value))
	case xenstore.OpMkdir:
		path, e := canonical(c.dom, r.args[0], false)
		if e != 0 {
			return nil, e
		}
		return commit(o.mkdir(path))
	case xenstore.OpRm:
		path, e := canonical(c.dom, r.args[0], false)
		if e != 0 {
			return nil, e
		}
		return commit(o.rm(path))
	case xenstore.OpSetPerms:
		perms, err := xenstore.ParsePerms(r.args[1:])
		if err != nil {
			return nil, syscall.EINVAL
		}
		if special(r.args[0]) {
			old := s.special[r.args[0]]
			if e := o.checkSetPerms(old, perms); e != 0 {
				return nil, e
			}
			s.special[r.args[0]] = perms
			return okPayload, 0
		}
		path, e := canonical(c.dom, r.args[0], false)
		if e != 0 {
			return nil, e
		}
		return commit(o.setPerms(path, perms))
	case xenstore.OpGetDomainPath:
		dom, ok := xenstore.ParseDomID(r.args[0])
		if !ok {
			return nil, syscall.EINVAL
		}
		return xenstore.AppendString(nil, homeOf(dom)), 0
	case xenstore.OpWatch:
		return c.watchLocked(r)
	case xenstore.OpUnwatch:
		abs, e := canonical(c.dom, r.args[0], true)
		if e != 0 {
			return nil, e
		}
		var found bool
		if c.watches, found = removeWatch(c.watches, abs, r.args[1]); !found {
			return nil, syscall.ENOENT
		}
		return okPayload, 0
	case xenstore.OpResetWatches:
		c.watches = nil
		c.txs = make(map[uint32]*tx)
		return okPayload, 0
	case xenstore.OpTransactionStart:
		if c.dom != 0 && s.domainTxLocked(c.dom) >= quotaTransactions {
			return nil, syscall.ENOSPC
		}
		id := s.nextTxIDLocked()
		c.txs[id] = newTx(id, s.st)
		return xenstore.AppendString(nil, strconv.FormatUint(uint64(id), 10)), 0
	case xenstore.OpTransactionEnd:
		if t == nil {
			return nil, syscall.ENOENT
		}
		delete(c.txs, t.id)
		if r.args[0] == "F" {
			return okPayload, 0
		}
		if t.conflict() {
			return nil, syscall.EAGAIN
		}
		t.apply()
		s.fireLocked(t.committedChanges())
		return okPayload, 0
	case xenstore.OpIsDomainIntroduced:
		dom, ok := xenstore.ParseDomID(r.args[0])
		if !ok {
			return nil, syscall.EINVAL
		}
		if s.domains[dom] {
			return []byte("T\x00"), 0
		}
		return []byte("F\x00"), 0
	}
	// INTRODUCE, RELEASE, RESUME and SET_TARGET are done through the Go
	// API (IntroduceDomain, ReleaseDomain), not over the wire.
	return nil, syscall.ENOSYS
}

func (c *conn) watchLocked(r request) ([]byte, syscall.Errno) {
	path, token := r.args[0], r.args[1]
	abs, e := canonical(c.dom, path, true)
	if e != 0 {
		return nil, e
	}
	for _, w := range c.watches {
		if w.abs == abs && w.token == token {
			return nil, syscall.EEXIST
		}
	}
	if c.dom != 0 && c.s.domainWatchesLocked(c.dom) >= quotaWatches {
		return nil, syscall.ENOSPC
	}
	w := &watch{path: path, abs: abs, token: token, special: special(path)}
	if !w.special && path[0] != '/' {
		w.home = homeOf(c.dom)
	}
	c.watches = append(c.watches, w)
	return okPayload, 0
}

// directoryPart answers DIRECTORY_PART: "gen\0" then the child names from
// the byte offset into the list, as many whole names as fit; the chunk that
// reaches the end carries one extra "\0".
func (c *conn) directoryPart(o *op, r request) ([]byte, syscall.Errno) {
	path, e := canonical(c.dom, r.args[0], false)
	if e != 0 {
		return nil, e
	}
	off, ok := xenstore.ParseTxID(r.args[1])
	if !ok && r.args[1] != "0" {
		return nil, syscall.EINVAL
	}
	names, gen, e := o.directory(path)
	if e != 0 {
		return nil, e
	}
	var all []byte
	for _, n := range names {
		all = xenstore.AppendString(all, n)
	}
	if int(off) > len(all) || (off > 0 && all[off-1] != 0) {
		return nil, syscall.EINVAL
	}
	b := xenstore.AppendString(nil, strconv.FormatUint(gen, 10))
	rest := all[off:]
	for len(rest) > 0 {
		i := 0
		for rest[i] != 0 {
			i++
		}
		if len(b)+i+2 > xenstore.MaxPayload { // name, its "\0", room for the end mark
			return b, 0
		}
		b = append(b, rest[:i+1]...)
		rest = rest[i+1:]
	}
	return append(b, 0), 0
}
