package linkmgr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"idcfs/proto"
	"idcfs/vchan"
)

// Link roles (LinkInfo.Role).
const (
	roleServer       = "server"
	roleClient       = "client"
	roleLoopServer   = "loopback-server"
	roleLoopClient   = "loopback-client"
	readBufSize      = 1 << 10 // link reader's buffer: headers and small frames; payload beyond it goes straight to its destination
	disconnectBudget = 200 * time.Millisecond
	// frameStall is how long the link reader waits for the rest of a frame
	// in a blocked Read's buffer before it hands the Read the part it has.
	// An honest peer writes a frame at once (or as fast as the ring drains),
	// so only a stalled or hostile peer meets it.
	frameStall = time.Millisecond
)

type linkState uint8

const (
	lsSetup linkState = iota
	lsUp
	lsDown
)

var linkStateNames = [...]string{lsSetup: "setup", lsUp: "up", lsDown: "down"}

// errLinkLost is what a connect in flight sees when its link goes down
// before the reply; Dial then tries a fresh link.
var errLinkLost = errors.New("link lost")

// link is the multiplexer over one ring pair with one peer domain. It runs
// three goroutines once started: reader (demultiplexes frames), writer (the
// only one that writes to the ring: control frames first, then one data
// frame per turn, connections served round robin) and watchdog (idle
// teardown and ring death). All three are owned by the link and stopped by
// fail.
type link struct {
	m      *Manager
	peer   vchan.DomID
	role   string
	server bool // ring server: allocates odd connection ids
	log    *logrus.Entry

	ready    chan struct{} // closed when the link is up or setup failed
	setupErr error         // valid once ready is closed
	dead     chan struct{} // closed by fail
	deadErr  error         // valid once dead is closed
	ringGone chan struct{} // closed by fail once the ring is closed (and its keys removed)
	after    []*link       // earlier links to the same peer whose ring must be gone first

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	ep      *vchan.Endpoint        // set by start
	peerGen string                 // the peer daemon's generation when set up (under mu)
	notify  chan struct{}          // client: the server published a ring, or refused (1-buffered)
	refusal atomic.Pointer[string] // client: why the server cannot serve a ring (set before notify)
	pendSem chan struct{}          // bounds outgoing connects in flight

	mu           sync.Mutex
	state        linkState
	conns        map[uint32]*Conn
	nextWID      uint32
	ctrl         []byte  // encoded control frames waiting for the writer
	creditq      []*Conn // connections with a CREDIT to send
	dataq        []*Conn // connections with data and credit, round robin
	wwake        chan struct{}
	peerMaxFrame uint32
	writing      bool   // a goroutine is writing frames to the ring
	cb           wbatch // scratch of sendCtrlNowLocked (used while writing)
	ringSize     int    // write ring bytes (set by start)
	cut          int    // leading bytes of ctrl ending a frame the ring holds only part of
	idle         *time.Timer

	// Reader goroutine only.
	pendWake *Conn           // a Read whose wakeup is deferred (commit)
	nbctx    context.Context // always done: non-blocking ring reads

	hmu     sync.Mutex // guards hctx/hcancel
	hctx    context.Context
	hcancel context.CancelFunc
	// stallT interrupts a wait for the rest of a frame in a Read's buffer
	// after frameStall (link reader only).
	stallT *time.Timer

	// Parking (see readRing): streaming is set when a frame of a quarter
	// ring or more goes out, and cleared by unparkT once writing has
	// stopped (wactive, the goroutines putting frames on the ring, is
	// zero) for unparkDelay. While it is set the link reader waits on
	// rpark (rparked set) instead of the event channel. parkT (reader
	// only) bounds each parked wait.
	wactive   atomic.Int32
	streaming atomic.Bool
	rparked   atomic.Bool
	rpark     chan struct{}
	unparkT   *time.Timer
	parkT     *time.Timer
	parks     atomic.Uint64 // parked waits, for tests

	framesIn, framesOut, bytesIn, bytesOut atomic.Uint64
}

func newLink(m *Manager, peer vchan.DomID, role string) *link {
	ctx, cancel := context.WithCancel(m.ctx)
	l := &link{
		m:        m,
		peer:     peer,
		role:     role,
		server:   role == roleServer || role == roleLoopServer,
		log:      m.log.WithFields(logrus.Fields{"peer": peer, "role": role}),
		ready:    make(chan struct{}),
		dead:     make(chan struct{}),
		ringGone: make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		notify:   make(chan struct{}, 1),
		pendSem:  make(chan struct{}, m.cfg.MaxPending),
		conns:    make(map[uint32]*Conn),
		wwake:    make(chan struct{}, 1),
		rpark:    make(chan struct{}, 1),
	}
	l.unparkT = time.AfterFunc(time.Hour, func() {
		if l.wactive.Load() == 0 {
			l.streaming.Store(false)
			signal(l.rpark)
		}
	})
	l.unparkT.Stop()
	if l.server {
		l.nextWID = 1
	} else {
		l.nextWID = 2
	}
	l.hctx, l.hcancel = context.WithCancel(ctx)
	nb, cancelNB := context.WithCancel(context.Background())
	cancelNB()
	l.nbctx = nb
	return l
}

// start runs the link over ep: it sends HELLO and starts the goroutines.
// The link owns ep from now on.
func (l *link) start(ep *vchan.Endpoint) {
	// The peer is an idcfs link manager, which asks for every event it
	// needs: no unasked event each time the reader drains the ring.
	ep.SetDrainEvent(false)
	l.mu.Lock()
	l.ep = ep
	l.ringSize = ep.Stats().WriteRing
	l.ctrl = proto.Hello{
		Version:  proto.Version,
		Dom:      uint16(l.m.cfg.Self),
		MaxFrame: uint32(l.m.cfg.MaxFrame),
	}.AppendFrame(l.ctrl, 0)
	l.framesOut.Add(1) // control frames count when queued
	// Armed when the link comes up (setupDone), so a slow HELLO exchange
	// does not count as idleness.
	l.idle = time.NewTimer(time.Hour)
	l.idle.Stop()
	l.mu.Unlock()
	l.wg.Add(3)
	go l.reader()
	go l.writer()
	go l.watchdog()
}

// setupDone records the outcome of the setup and wakes waiters.
func (l *link) setupDone(err error) {
	l.mu.Lock()
	if isDone(l.ready) {
		l.mu.Unlock()
		return
	}
	l.setupErr = err
	if err == nil && l.state == lsSetup {
		l.state = lsUp
		if len(l.conns) == 0 {
			l.idle.Reset(l.m.cfg.IdleTimeout)
		}
	}
	close(l.ready)
	l.mu.Unlock()
	if err == nil {
		st := l.ep.Stats()
		l.log.WithFields(logrus.Fields{"read_ring": st.ReadRing, "write_ring": st.WriteRing}).Info("link up")
	}
}

// restartedPeer reports whether gen, the peer daemon's current generation,
// is not the one this (up) link was set up with.
func (l *link) restartedPeer(gen string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state == lsUp && l.peerGen != "" && gen != l.peerGen
}

func (l *link) isDown() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state == lsDown
}

// fail tears the link down: every connection on it is reset, the ring is
// closed, the goroutines are stopped. A DISCONNECT_ind on conn 0 is sent
// first, best effort, if reason is not ReasonNormal. It is safe to call
// from the link's own goroutines and more than once.
func (l *link) fail(cause error, reason proto.Reason, tell bool) {
	l.mu.Lock()
	if l.state == lsDown {
		l.mu.Unlock()
		return
	}
	wasUp := l.state == lsUp
	l.state = lsDown
	conns := make([]*Conn, 0, len(l.conns))
	for _, c := range l.conns {
		conns = append(conns, c)
	}
	ep := l.ep
	l.mu.Unlock()

	entry := l.log.WithError(cause).WithFields(logrus.Fields{"conns": len(conns), "reason": reason.String()})
	var pd *peerDropped
	blamed := reason == proto.ReasonProtocol || reason == proto.ReasonCredit
	switch {
	case blamed && errors.As(cause, &pd):
		entry.Warn("link torn down by the peer: it says this side broke the protocol")
	case blamed:
		entry.Warn("link torn down: peer broke the protocol")
	case reason == proto.ReasonIdle || reason == proto.ReasonShutdown:
		entry.Info("link down")
	case !wasUp:
		entry.Debug("link setup abandoned")
	default:
		entry.Warn("link torn down")
	}
	l.m.unlinkPeer(l)
	if tell && ep != nil {
		// A frame being written goes out first (nothing new starts: the
		// link is down), but within the budget: a writer blocked on a full
		// ring (a peer that stopped reading) holds the ring until it is
		// closed.
		deadline := time.Now().Add(disconnectBudget)
		l.mu.Lock()
		for l.writing && time.Now().Before(deadline) {
			l.mu.Unlock()
			time.Sleep(time.Millisecond)
			l.mu.Lock()
		}
		free := !l.writing
		l.writing = true
		// The end of a frame the ring holds only part of goes first.
		cut := append([]byte(nil), l.ctrl[:l.cut]...)
		l.mu.Unlock()
		if free {
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			var b [proto.HeaderLen + 4]byte
			_, _ = ep.WriteBuffers(ctx, cut, proto.Disconnect{Reason: reason}.AppendFrame(b[:0], 0))
			cancel()
		}
	}
	l.cancel()
	if ep != nil {
		_ = ep.Close() // the ring is gone either way
	}
	close(l.ringGone)
	err := fmt.Errorf("%w: link to dom %d lost: %v", ErrReset, l.peer, cause)
	if errors.Is(cause, ErrProtocol) {
		err = fmt.Errorf("%w: %w: link to dom %d dropped: %v", ErrReset, ErrProtocol, l.peer, cause)
	}
	l.deadErr = err
	close(l.dead)
	for _, c := range conns {
		c.resetBy(err)
	}
	l.setupDone(fmt.Errorf("%w: %v", errLinkLost, cause))
}

// wait stops the link's goroutines' owner: it returns once they exited.
func (l *link) wait() { l.wg.Wait() }

// interruptHandoff makes the reader stop a direct read into a waiting
// Read's buffer (the Read was cancelled).
func (l *link) interruptHandoff() {
	l.hmu.Lock()
	l.hcancel()
	l.hmu.Unlock()
}

func (l *link) handoffCtx() context.Context {
	l.hmu.Lock()
	defer l.hmu.Unlock()
	if l.hctx.Err() != nil && l.ctx.Err() == nil {
		l.hctx, l.hcancel = context.WithCancel(l.ctx)
	}
	return l.hctx
}

// ---- writer side ----

func (l *link) wakeWriter() { signal(l.wwake) }

// maxCtrlBacklog bounds the control frames waiting for the ring. They pile
// up only when the peer keeps sending requests but stops reading the
// answers; the link is then dropped instead of growing without bound.
const maxCtrlBacklog = 256 << 10

// queueCtrl appends an encoded control frame for the writer.
func (l *link) queueCtrl(f func(b []byte) []byte) {
	l.mu.Lock()
	over := false
	if l.state != lsDown {
		l.ctrl = f(l.ctrl)
		l.framesOut.Add(1)
		over = len(l.ctrl) > maxCtrlBacklog
	}
	l.mu.Unlock()
	l.wakeWriter()
	if over {
		l.overflow()
	}
}

// overflow drops a link whose peer does not read its answers.
func (l *link) overflow() {
	l.fail(fmt.Errorf("more than %d bytes of control frames unsent: the peer does not read", maxCtrlBacklog), proto.ReasonLimit, false)
}

func (l *link) sendShutdown(c *Conn, how proto.ShutdownHow) {
	l.queueCtrl(func(b []byte) []byte { return proto.Shutdown{How: how}.AppendFrame(b, c.wid) })
}

func (l *link) sendDisconnect(wid uint32, r proto.Reason) {
	l.queueCtrl(func(b []byte) []byte { return proto.Disconnect{Reason: r}.AppendFrame(b, wid) })
}

// queueCredit queues a CREDIT for c. When no one is writing it goes on the
// ring at once, from the calling goroutine (sendCtrlNowLocked), rather than
// through the writer: the peer gets its credit one goroutine hand-off
// sooner.
func (l *link) queueCredit(c *Conn) {
	l.mu.Lock()
	if !c.creditQueued && l.state != lsDown {
		c.creditQueued = true
		l.creditq = append(l.creditq, c)
	}
	l.sendCtrlNowLocked()
	work := l.workLocked()
	l.mu.Unlock()
	if work {
		l.wakeWriter()
	}
}

// sendCtrlNowLocked puts the pending control frames and CREDITs on the ring
// if no one else is writing. It never waits for ring space: bytes that do
// not fit stay first in line for the writer, which also reports a ring
// error. l.mu is held on entry and on return (released around the write).
func (l *link) sendCtrlNowLocked() {
	if l.writing || l.state != lsUp || l.ep == nil || (len(l.ctrl) == 0 && len(l.creditq) == 0) {
		return
	}
	l.writing = true
	b := &l.cb
	frames := l.takeCtrlLocked(b)
	l.mu.Unlock()
	n, _ := l.ep.WriteBuffers(l.nbctx, b.buf)
	l.mu.Lock()
	l.writing = false
	if n < len(b.buf) {
		rest := b.buf[n:]
		l.ctrl = append(append(make([]byte, 0, len(rest)+len(l.ctrl)), rest...), l.ctrl...)
		l.cut = len(rest) // the end of a cut frame, then whole ones
	} else {
		l.framesOut.Add(uint64(frames))
	}
}

// creditLocked is how many bytes c may send now.
func (c *Conn) creditLocked() int64 {
	return int64(c.peerAlloc) - int64(c.txCnt-c.peerFwd)
}

// scheduleLocked puts c in the data queue if it has data and credit.
func (l *link) scheduleLocked(c *Conn) {
	if c.queued || c.wbusy || c.wfail != nil || c.woff >= len(c.wpend) || c.creditLocked() <= 0 {
		return
	}
	c.queued = true
	l.dataq = append(l.dataq, c)
	signal(l.wwake)
}

func (l *link) unqueueLocked(c *Conn) {
	if !c.queued {
		return
	}
	c.queued = false
	for i, x := range l.dataq {
		if x == c {
			l.dataq = append(l.dataq[:i], l.dataq[i+1:]...)
			break
		}
	}
}

// wbatch is the scratch space of one ring writer: the link's writer
// goroutine has one, and every Conn one for its own fast path.
type wbatch struct {
	buf []byte
	hdr [proto.HeaderLen]byte
}

// workLocked reports whether frames wait for the ring.
func (l *link) workLocked() bool {
	return len(l.ctrl) > 0 || len(l.creditq) > 0 || len(l.dataq) > 0
}

// takeCtrlLocked moves the pending control frames and CREDITs into b.buf
// and returns how many CREDITs it encoded.
func (l *link) takeCtrlLocked(b *wbatch) int {
	b.buf = append(b.buf[:0], l.ctrl...)
	l.ctrl = l.ctrl[:0]
	l.cut = 0
	frames := 0
	for _, c := range l.creditq {
		c.creditQueued = false
		c.mu.Lock()
		cr := proto.Credit{BufAlloc: c.window, FwdCnt: c.fwdCnt}
		c.sentFwd = c.fwdCnt
		live := c.resetErr == nil && !c.closed
		c.mu.Unlock()
		if live {
			b.buf = cr.AppendFrame(b.buf, c.wid)
			frames++
		}
	}
	clear(l.creditq)
	l.creditq = l.creditq[:0]
	return frames
}

// writeBatchLocked writes, as one WriteBuffers call, the pending control
// frames, the pending CREDITs and at most one DATA_ind: from own if given
// (a Write on the fast path), else from the head of the data queue. l.mu
// is held on entry and on return (it is released around the ring write),
// and the caller holds the writing token (l.writing).
func (l *link) writeBatchLocked(b *wbatch, own *Conn) error {
	frames := l.takeCtrlLocked(b)
	c := own
	if c == nil && len(l.dataq) > 0 {
		c = l.dataq[0]
		copy(l.dataq, l.dataq[1:])
		l.dataq[len(l.dataq)-1] = nil
		l.dataq = l.dataq[:len(l.dataq)-1]
		c.queued = false
	}
	var payload []byte
	if c != nil {
		n := min(int64(len(c.wpend)-c.woff), c.creditLocked(), int64(l.peerMaxFrame))
		if n > 0 {
			payload = c.wpend[c.woff : c.woff+int(n)]
			c.wbusy = true
			// Counted before the write: the peer may answer with a CREDIT
			// before WriteBuffers returns.
			c.txCnt += uint64(n)
			proto.PutHeader(b.hdr[:], proto.Header{Type: proto.TypeData, Conn: c.wid, Length: uint32(n)})
		} else {
			c = nil
		}
	}
	l.mu.Unlock()
	var err error
	if payload != nil {
		if len(payload) >= l.ringSize/4 && !l.streaming.Load() {
			l.streaming.Store(true)
		}
		_, err = l.ep.WriteBuffers(l.ctx, b.buf, b.hdr[:], payload)
		frames++
	} else if len(b.buf) > 0 {
		_, err = l.ep.WriteBuffers(l.ctx, b.buf)
	}
	l.wroteFrame()
	l.framesOut.Add(uint64(frames))
	l.mu.Lock()
	if c == nil {
		return err
	}
	c.wbusy = false
	if err == nil {
		c.woff += len(payload)
		l.bytesOut.Add(uint64(len(payload)))
		c.bytesOut.Add(uint64(len(payload)))
	}
	if c != own {
		if err == nil {
			l.scheduleLocked(c)
		}
		// Wake the Write only when it has something to do: its data is all
		// out, or it waits for this frame to finish to give up.
		if c.woff == len(c.wpend) || c.wwaitBusy || err != nil {
			signal(c.wsig)
		}
	}
	return err
}

// writer sends whatever Writes and the link queue for the ring, whenever no
// Write is sending its own frames (the fast path in Conn.write).
func (l *link) writer() {
	defer l.wg.Done()
	var b wbatch
	for {
		l.mu.Lock()
		for !l.workLocked() || l.writing {
			l.mu.Unlock()
			select {
			case <-l.wwake:
			case <-l.ctx.Done():
				return
			}
			l.mu.Lock()
		}
		if l.state == lsDown {
			l.mu.Unlock()
			return
		}
		l.writing = true
		l.beginWrites()
		err := l.writeBatchLocked(&b, nil)
		l.endWrites()
		l.writing = false
		l.mu.Unlock()
		if err != nil {
			l.fail(fmt.Errorf("ring write: %w", err), proto.ReasonNormal, false)
			return
		}
	}
}

// writeFastLocked lets a Write put its own frames on the ring while no one
// else writes and no other connection waits: no hand-off to the writer
// goroutine. It stops when the data is out, the credit is used up, or
// another connection queued data (which then gets its turn). l.mu is held.
func (l *link) writeFastLocked(c *Conn) error {
	if l.writing || len(l.dataq) > 0 || l.state != lsUp || l.ep == nil {
		return nil
	}
	l.writing = true
	l.beginWrites()
	var err error
	for err == nil && c.woff < len(c.wpend) && c.wfail == nil && c.creditLocked() > 0 && len(l.dataq) == 0 {
		err = l.writeBatchLocked(&c.wb, c)
	}
	l.endWrites()
	l.writing = false
	if l.workLocked() {
		signal(l.wwake)
	}
	return err
}

// ---- reader side ----

// protoError is a link-fatal protocol violation by the peer.
type protoError struct{ msg string }

func (e *protoError) Error() string { return e.msg }
func (e *protoError) Unwrap() error { return ErrProtocol }

func protoErrf(format string, args ...any) error {
	return &protoError{msg: fmt.Sprintf(format, args...)}
}

type frameReader struct {
	l       *link
	buf     []byte
	scratch []byte // destination of dropped payload
	r, w    int
}

// fill makes at least n bytes available in buf[r:w].
func (fr *frameReader) fill(n int) error {
	if fr.w-fr.r >= n {
		return nil
	}
	if fr.r > 0 {
		copy(fr.buf, fr.buf[fr.r:fr.w])
		fr.w -= fr.r
		fr.r = 0
	}
	for fr.w < n {
		m, err := fr.l.readRing(fr.l.ctx, fr.buf[fr.w:])
		fr.w += m
		if err != nil && fr.w < n {
			return err
		}
	}
	return nil
}

// readRing reads from the ring for the link reader. A Read whose wakeup was
// deferred (pendWake) is woken before the reader would block, so deferring
// never delays data.
//
// While a stream is being sent (frames of a quarter ring or more, until
// writing stops for unparkDelay), the reader parks instead of waiting on
// the event channel. An Endpoint has one event channel for both
// directions, and one goroutine waits on it at a time: a reader waiting
// there during a transfer receives every event meant for the blocked
// writer (the peer made room) and has to pass each one on, a goroutine
// hand-off (often a thread wake-up) per event on the data path. Parked,
// it asks the peer for no events and leaves them to the writer. The
// writers wake it when, after a frame, the ring holds something for it
// (wroteFrame); a Write that must wait for credit sends it back to the
// event channel at once (the CREDIT comes over the ring), and so does
// writing that stops for unparkDelay; and it looks at the ring every
// parkPoll regardless. Small frames (requests and answers) never park it:
// parked, it would see an answer that came after the last write only when
// unparkDelay ran out.
func (l *link) readRing(ctx context.Context, p []byte) (int, error) {
	if l.pendWake != nil {
		n, err := l.ep.ReadContext(l.nbctx, p)
		if n > 0 || (err != nil && !errors.Is(err, context.Canceled)) {
			return n, err
		}
		l.flushWake()
	}
	for l.streaming.Load() {
		if n, err := l.parkedRead(ctx, p); n > 0 || err != nil {
			return n, err
		}
	}
	return l.ep.ReadContext(ctx, p)
}

// Parking delays (see readRing).
const (
	parkPoll    = time.Millisecond
	unparkDelay = 50 * time.Microsecond
)

// parkedRead waits parked (see readRing) and then reads what the ring
// holds without blocking: (0, nil) when there is nothing yet.
func (l *link) parkedRead(ctx context.Context, p []byte) (int, error) {
	l.rparked.Store(true)
	defer l.rparked.Store(false)
	// Look after publishing rparked: a writer that finished a frame before
	// did not look for us.
	if n, err := l.nbRead(ctx, p); n > 0 || err != nil {
		return n, err
	}
	if l.parkT == nil {
		l.parkT = time.NewTimer(parkPoll)
	} else {
		l.parkT.Reset(parkPoll)
	}
	l.parks.Add(1)
	select {
	case <-l.rpark:
	case <-l.parkT.C:
	case <-ctx.Done():
	case <-l.ep.Done():
	}
	l.parkT.Stop()
	return l.nbRead(ctx, p)
}

// nbRead reads what the ring holds without blocking: (0, nil) when it
// holds nothing and ctx is not done.
func (l *link) nbRead(ctx context.Context, p []byte) (int, error) {
	n, err := l.ep.ReadContext(l.nbctx, p)
	if n == 0 && errors.Is(err, context.Canceled) {
		err = ctx.Err()
	}
	return n, err
}

// beginWrites and endWrites bracket a goroutine's run of frame writes.
func (l *link) beginWrites() {
	if l.wactive.Add(1) == 1 {
		l.unparkT.Stop()
	}
}

func (l *link) endWrites() {
	if l.wactive.Add(-1) == 0 && l.streaming.Load() {
		l.unparkT.Reset(unparkDelay)
	}
}

// wroteFrame wakes the parked reader if the ring holds something for it.
func (l *link) wroteFrame() {
	if l.rparked.Load() && l.ep.Readable() {
		signal(l.rpark)
	}
}

// unpark sends the reader back to the event channel: a Write is about to
// wait for credit, which comes over the ring. The next large frame parks
// it again.
func (l *link) unpark() {
	if l.streaming.Load() {
		l.streaming.Store(false)
	}
	if l.rparked.Load() {
		signal(l.rpark)
	}
}

// flushWake wakes the Read whose wakeup was deferred.
func (l *link) flushWake() {
	if c := l.pendWake; c != nil {
		c.mu.Lock()
		c.wakeSent = true
		c.mu.Unlock()
		l.pendWake = nil
		signal(c.rsig)
	}
}

func (l *link) reader() {
	defer l.wg.Done()
	fr := &frameReader{l: l, buf: make([]byte, readBufSize), scratch: make([]byte, readBufSize)}
	err := l.readLoop(fr)
	l.flushWake()
	var (
		pe *protoError
		pd *peerDropped
	)
	switch {
	case l.ctx.Err() != nil:
		// torn down by someone else
	case errors.As(err, &pe):
		l.fail(err, proto.ReasonProtocol, true)
	case errors.As(err, &pd):
		l.fail(err, pd.reason, false)
	case errors.Is(err, io.EOF):
		l.fail(fmt.Errorf("peer closed the ring"), proto.ReasonNormal, false)
	default:
		l.fail(fmt.Errorf("ring read: %w", err), proto.ReasonNormal, false)
	}
}

// peerDropped: the peer sent DISCONNECT_ind on conn 0.
type peerDropped struct{ reason proto.Reason }

func (e *peerDropped) Error() string { return "peer dropped the link (" + e.reason.String() + ")" }

func (l *link) readLoop(fr *frameReader) error {
	maxIn := uint32(l.m.cfg.MaxFrame)
	gotHello := false
	for {
		if err := fr.fill(proto.HeaderLen); err != nil {
			return err
		}
		h, err := proto.ParseHeader(fr.buf[fr.r:fr.w], maxIn)
		if err != nil {
			return protoErrf("bad frame header: %v", err)
		}
		fr.r += proto.HeaderLen
		l.framesIn.Add(1)
		if l.pendWake != nil && (h.Type != proto.TypeData || h.Conn != l.pendWake.wid) {
			l.flushWake()
		}
		if !gotHello && h.Type != proto.TypeHello {
			return protoErrf("%s before HELLO", h.Type)
		}
		if h.Type == proto.TypeData {
			if err := l.onData(fr, h); err != nil {
				return err
			}
			continue
		}
		if err := fr.fill(int(h.Length)); err != nil {
			return err
		}
		body := fr.buf[fr.r : fr.r+int(h.Length)]
		fr.r += int(h.Length)
		switch h.Type {
		case proto.TypeHello:
			if gotHello {
				return protoErrf("second HELLO")
			}
			gotHello = true
			if err := l.onHello(body); err != nil {
				return err
			}
		case proto.TypeConnectReq:
			err = l.onConnectReq(h, body)
		case proto.TypeConnectRsp:
			err = l.onConnectRsp(h, body)
		case proto.TypeCredit:
			err = l.onCredit(h, body)
		case proto.TypeShutdown:
			err = l.onShutdown(h, body)
		case proto.TypeDisconnect:
			err = l.onDisconnect(h, body)
		}
		if err != nil {
			return err
		}
	}
}

func (l *link) onHello(body []byte) error {
	hello, err := proto.ParseHello(body)
	if err != nil {
		return protoErrf("bad HELLO: %v", err)
	}
	if vchan.DomID(hello.Dom) != l.peer {
		return protoErrf("HELLO from dom %d on the link to dom %d", hello.Dom, l.peer)
	}
	l.mu.Lock()
	l.peerMaxFrame = hello.MaxFrame
	l.mu.Unlock()
	l.setupDone(nil)
	return nil
}

// peerParity reports whether wid is an id the peer allocates.
func (l *link) peerParity(wid uint32) bool {
	odd := wid&1 == 1
	return odd != l.server
}

func (l *link) lookup(wid uint32) *Conn {
	l.mu.Lock()
	c := l.conns[wid]
	l.mu.Unlock()
	return c
}

func (l *link) onConnectReq(h proto.Header, body []byte) error {
	req, err := proto.ParseConnectReq(body)
	if err != nil {
		return protoErrf("bad CONNECT_req: %v", err)
	}
	if !l.peerParity(h.Conn) {
		return protoErrf("CONNECT_req with conn id %d of our parity", h.Conn)
	}
	l.mu.Lock()
	_, dup := l.conns[h.Conn]
	n := len(l.conns)
	l.mu.Unlock()
	if dup {
		return protoErrf("CONNECT_req for conn id %d in use", h.Conn)
	}
	refuse := func(st proto.Status) error {
		l.log.WithFields(logrus.Fields{"port": req.DstPort, "status": st.String()}).Debug("incoming connection refused")
		l.queueCtrl(func(b []byte) []byte { return proto.ConnectRsp{Status: st}.AppendFrame(b, h.Conn) })
		return nil
	}
	if n >= l.m.cfg.MaxConns {
		return refuse(proto.StatusLimit)
	}
	if allow := l.m.cfg.Allow; allow != nil && !allow(l.peer, req.DstPort) {
		return refuse(proto.StatusDenied)
	}
	ln := l.m.listener(req.DstPort)
	if ln == nil {
		return refuse(proto.StatusNoPort)
	}
	c := newConn(l.m, l, h.Conn, Addr{Dom: l.m.cfg.Self, Port: req.DstPort}, Addr{Dom: l.peer, Port: req.SrcPort}, false)
	c.state = stEstablished
	c.peerAlloc = req.Window
	if st := ln.offer(c); st != proto.StatusAccepted {
		return refuse(st)
	}
	c.log.Debug("incoming connection accepted")
	return nil
}

// admit registers an incoming connection and queues its CONNECT_rsp. It
// runs under the listener's lock (listener before link), so the answer is
// queued before Accept can hand the connection out.
func (l *link) admit(c *Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state == lsDown {
		return false
	}
	if len(l.ctrl) > maxCtrlBacklog {
		return false // the refusal queued next drops the link (queueCtrl)
	}
	l.conns[c.wid] = c
	l.stopIdleLocked()
	l.ctrl = proto.ConnectRsp{Status: proto.StatusAccepted, Window: c.window}.AppendFrame(l.ctrl, c.wid)
	l.framesOut.Add(1)
	signal(l.wwake)
	l.m.addConn(c)
	return true
}

func (l *link) onConnectRsp(h proto.Header, body []byte) error {
	rsp, err := proto.ParseConnectRsp(body)
	if err != nil {
		return protoErrf("bad CONNECT_rsp: %v", err)
	}
	c := l.lookup(h.Conn)
	if c == nil {
		if rsp.Status == proto.StatusAccepted {
			// Our dial gave up and freed the id; tell the peer.
			l.sendDisconnect(h.Conn, proto.ReasonReset)
		}
		return nil
	}
	c.mu.Lock()
	if c.state != stConnecting {
		c.mu.Unlock()
		return protoErrf("CONNECT_rsp for established conn %d", h.Conn)
	}
	abandoned := c.closed
	if rsp.Status == proto.StatusAccepted && !abandoned {
		c.state = stEstablished
	}
	c.mu.Unlock()
	switch {
	case abandoned:
		if rsp.Status == proto.StatusAccepted {
			l.sendDisconnect(h.Conn, proto.ReasonReset)
		}
		c.free()
	case rsp.Status == proto.StatusAccepted:
		l.mu.Lock()
		c.peerAlloc = rsp.Window
		l.mu.Unlock()
		signal(c.wsig)
	default:
		c.mu.Lock()
		c.resetErr = connectError(rsp.Status)
		c.state = stDone
		c.mu.Unlock()
		signal(c.wsig)
		c.free()
	}
	return nil
}

func connectError(st proto.Status) error {
	switch st {
	case proto.StatusDenied, proto.StatusLimit:
		return fmt.Errorf("%w: %s", ErrDenied, st)
	default:
		return fmt.Errorf("%w: %s", ErrRefused, st)
	}
}

// resetConn resets c for a protocol violation of the peer that does not
// endanger the link: the peer is told, the reason logged.
func (l *link) resetConn(c *Conn, reason proto.Reason, why string) {
	c.log.WithField("reason", reason.String()).Warn("connection reset: " + why)
	l.sendDisconnect(c.wid, reason)
	c.resetBy(fmt.Errorf("%w: %w: %s", ErrReset, ErrProtocol, why))
}

func (l *link) onData(fr *frameReader, h proto.Header) error {
	n := int(h.Length)
	c := l.lookup(h.Conn)
	if c == nil {
		// Reset or closed here; the peer may not know yet.
		return l.discard(fr, n)
	}
	c.mu.Lock()
	switch {
	case c.state == stConnecting:
		c.mu.Unlock()
		return protoErrf("DATA_ind for conn %d before CONNECT_rsp", h.Conn)
	case c.resetErr != nil:
		c.mu.Unlock()
		return l.discard(fr, n)
	case c.rEOF:
		c.mu.Unlock()
		l.resetConn(c, proto.ReasonProtocol, "DATA_ind after SHUTDOWN")
		return l.discard(fr, n)
	case c.rxCnt+uint64(n)-c.fwdCnt > uint64(c.window):
		over := c.rxCnt + uint64(n) - c.fwdCnt - uint64(c.window)
		c.mu.Unlock()
		l.resetConn(c, proto.ReasonCredit, fmt.Sprintf("peer exceeded its credit by %d bytes", over))
		return l.discard(fr, n)
	}
	c.rxCnt += uint64(n)
	closed := c.closed
	c.mu.Unlock()
	l.bytesIn.Add(uint64(n))
	if closed {
		return l.discard(fr, n)
	}
	// Bytes already buffered first, then straight from the ring into the
	// destination.
	for n > 0 {
		if avail := fr.w - fr.r; avail > 0 {
			k := min(avail, n)
			src := fr.buf[fr.r : fr.r+k]
			for len(src) > 0 {
				dst, dest := c.reserve(len(src), fr.scratch)
				m := copy(dst, src)
				src = src[m:]
				l.commit(c, m, dest, k == n && len(src) == 0)
			}
			fr.r += k
			n -= k
			continue
		}
		// A waiting Read's buffer may take the next frame's header too (a
		// Read may use all of its buffer as scratch): one ring read less
		// per frame. Those bytes then move to the frame buffer.
		dst, dest := c.reserve(n, fr.scratch)
		ctx := l.ctx
		var m int
		var err error
		if dest == toWokenWaiter || (dest == toWaiter && l.pendWake == c) {
			// The Read already holds bytes and is woken, or must be woken
			// before the reader waits: take what the ring holds now. If that
			// is nothing, wake the Read and wait for the ring in the frame
			// buffer, not in the Read's buffer: the Read returns at once
			// instead of waiting for the handoff to end.
			m, err = l.ep.ReadContext(l.nbctx, dst)
			if m == 0 {
				l.commit(c, 0, dest, false)
				if err != nil && !errors.Is(err, context.Canceled) {
					return err
				}
				l.flushWake()
				fr.r, fr.w = 0, 0
				fr.w, err = l.readRing(l.ctx, fr.buf)
				if err != nil && fr.w == 0 {
					return err
				}
				continue
			}
		} else if dest == toWaiter {
			ctx = l.handoffCtx()
			m, err = l.ep.ReadContext(l.nbctx, dst)
			if m == 0 && errors.Is(err, context.Canceled) {
				// The ring holds none of the rest of the frame: wait for
				// it in the Read's buffer, but if the Read holds bytes
				// already, not longer than frameStall.
				stall := c.holdsBytes()
				if stall {
					if l.stallT == nil {
						l.stallT = time.AfterFunc(frameStall, l.interruptHandoff)
					} else {
						l.stallT.Reset(frameStall)
					}
				}
				m, err = l.readRing(ctx, dst)
				if stall {
					l.stallT.Stop()
				}
			}
		} else {
			m, err = l.readRing(ctx, dst)
		}
		if m > n {
			fr.r, fr.w = 0, copy(fr.buf, dst[n:m])
			m = n
		}
		n -= m
		l.commit(c, m, dest, n == 0 || err != nil)
		if err != nil {
			if dest == toWaiter && l.ctx.Err() == nil && ctx.Err() != nil {
				// The waiting Read gave up (the rest is buffered), or the
				// frame stalled: the Read gets what it holds before the
				// reader waits again.
				if l.pendWake != c {
					l.flushWake()
					l.pendWake = c
				}
				continue
			}
			return err
		}
	}
	return nil
}

// holdsBytes reports whether a blocked Read of c holds bytes not yet
// returned.
func (c *Conn) holdsBytes() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waitN > 0
}

func (l *link) discard(fr *frameReader, n int) error {
	for n > 0 {
		if fr.w == fr.r {
			fr.r, fr.w = 0, 0
			m, err := l.readRing(l.ctx, fr.buf[:min(n, len(fr.buf))])
			fr.w = m
			if err != nil && m == 0 {
				return err
			}
		}
		k := min(fr.w-fr.r, n)
		fr.r += k
		n -= k
	}
	return nil
}

// Destinations of received bytes (reserve).
const (
	toBuffer      = iota // the connection's receive buffer
	toWaiter             // straight into a blocked Read's buffer
	toWokenWaiter        // likewise, but the Read was already woken: never wait for the ring with its buffer
	toDiscard            // the connection was closed here: drop
)

// reserve returns where the next up to n received bytes of c go. Only the
// link reader calls it, and it alone grows, compacts and resets rbuf; Read
// only advances rr. scratch receives bytes to drop. A Read that already
// waits for a handoff to end gets no more bytes: they are buffered for the
// next Read.
func (c *Conn) reserve(n int, scratch []byte) ([]byte, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		c.rbuf, c.rr, c.rw = nil, 0, 0
		return scratch[:min(n, len(scratch))], toDiscard
	}
	if c.rw == c.rr && c.waiter != nil && c.waitN < len(c.waiter) && !c.rwaitBusy {
		c.handoff = true
		end := c.waitN + n
		if end < len(c.waiter) {
			// Room for the next header as well (see onData).
			end = min(len(c.waiter), end+proto.HeaderLen)
		}
		dest := toWaiter
		if c.wakeSent {
			dest = toWokenWaiter
		}
		return c.waiter[c.waitN:min(len(c.waiter), end)], dest
	}
	if c.rr == c.rw {
		c.rr, c.rw = 0, 0
	}
	if len(c.rbuf)-c.rw < n && c.rr > 0 {
		k := copy(c.rbuf, c.rbuf[c.rr:c.rw])
		c.rr, c.rw = 0, k
	}
	if len(c.rbuf)-c.rw < n {
		size := max(2*len(c.rbuf), c.rw+n, 4096)
		size = min(size, max(int(c.window), c.rw+n))
		nb := make([]byte, size)
		copy(nb, c.rbuf[:c.rw])
		c.rbuf = nb
	}
	return c.rbuf[c.rw : c.rw+n], toBuffer
}

// commit makes m reserved bytes of c visible to its reader. A Read is woken
// when its buffer is full or it waits for the handoff to finish; at the end
// of a frame (last) that filled part of a waiting Read's buffer the wakeup
// is deferred (pendWake): if the next frame is for the same connection and
// already on the ring, it goes into the same buffer, and one wakeup serves
// both. readRing and readLoop wake the Read before anything could delay it.
// A Read already woken (toWokenWaiter) is woken again only if it waits for
// the handoff to finish.
func (l *link) commit(c *Conn, m int, dest int, last bool) {
	c.mu.Lock()
	wake, deferWake := false, false
	switch dest {
	case toWokenWaiter:
		c.handoff = false
		c.waitN += m // counted in fwdCnt by Read when it returns them
		wake = c.rwaitBusy
	case toWaiter:
		c.handoff = false
		c.waitN += m // counted in fwdCnt by Read when it returns them
		switch {
		case c.waitN == len(c.waiter) || c.rwaitBusy:
			wake = true
			c.wakeSent = true
		case last:
			deferWake = true
		}
	case toBuffer:
		if !c.closed {
			c.rw += m
		}
		wake = last
	default:
		wake = last
	}
	c.mu.Unlock()
	switch {
	case wake:
		if l.pendWake == c {
			l.pendWake = nil
		}
		signal(c.rsig)
	case deferWake:
		if l.pendWake != c {
			l.flushWake()
			l.pendWake = c
		}
	}
}

func (l *link) onCredit(h proto.Header, body []byte) error {
	cr, err := proto.ParseCredit(body)
	if err != nil {
		return protoErrf("bad CREDIT: %v", err)
	}
	c := l.lookup(h.Conn)
	if c == nil {
		return nil
	}
	l.mu.Lock()
	if cr.FwdCnt < c.peerFwd || cr.FwdCnt > c.txCnt {
		prev, tx := c.peerFwd, c.txCnt
		l.mu.Unlock()
		l.resetConn(c, proto.ReasonProtocol, fmt.Sprintf("CREDIT fwd_cnt %d outside [%d, %d]", cr.FwdCnt, prev, tx))
		return nil
	}
	c.peerAlloc, c.peerFwd = cr.BufAlloc, cr.FwdCnt
	l.scheduleLocked(c)
	l.mu.Unlock()
	return nil
}

func (l *link) onShutdown(h proto.Header, body []byte) error {
	sd, err := proto.ParseShutdown(body)
	if err != nil {
		return protoErrf("bad SHUTDOWN: %v", err)
	}
	c := l.lookup(h.Conn)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	if c.state == stConnecting {
		c.mu.Unlock()
		return protoErrf("SHUTDOWN for conn %d before CONNECT_rsp", h.Conn)
	}
	if sd.How&proto.ShutWrite != 0 {
		c.rEOF = true
	}
	noRead := sd.How&proto.ShutRead != 0
	if noRead {
		c.peerNoRead = true
	}
	c.mu.Unlock()
	signal(c.rsig)
	if noRead {
		c.failWrites(ErrPeerClosed)
	}
	c.log.WithField("how", uint8(sd.How)).Debug("peer shut down connection")
	c.maybeFree()
	return nil
}

func (l *link) onDisconnect(h proto.Header, body []byte) error {
	d, err := proto.ParseDisconnect(body)
	if err != nil {
		return protoErrf("bad DISCONNECT_ind: %v", err)
	}
	if h.Conn == 0 {
		return &peerDropped{reason: d.Reason}
	}
	c := l.lookup(h.Conn)
	if c == nil {
		return nil
	}
	c.log.WithField("reason", d.Reason.String()).Debug("peer disconnected connection")
	c.mu.Lock()
	connecting := c.state == stConnecting
	c.mu.Unlock()
	if connecting {
		return protoErrf("DISCONNECT_ind for conn %d before CONNECT_rsp", h.Conn)
	}
	c.resetBy(fmt.Errorf("%w: by peer (%s)", ErrReset, d.Reason))
	return nil
}

// ---- connections ----

func (l *link) stopIdleLocked() {
	if l.idle != nil {
		l.idle.Stop()
	}
}

func (l *link) removeConn(c *Conn) {
	l.mu.Lock()
	if l.conns[c.wid] == c {
		delete(l.conns, c.wid)
	}
	l.unqueueLocked(c)
	if len(l.conns) == 0 && l.state == lsUp && l.idle != nil {
		l.idle.Reset(l.m.cfg.IdleTimeout)
	}
	l.mu.Unlock()
}

// allocIDLocked returns a free wire id of our parity.
func (l *link) allocIDLocked() uint32 {
	for {
		id := l.nextWID
		l.nextWID += 2
		if l.nextWID < 2 { // wrapped
			if l.server {
				l.nextWID = 1
			} else {
				l.nextWID = 2
			}
		}
		if _, used := l.conns[id]; !used && id != 0 {
			return id
		}
	}
}

// connect opens a connection to port over the link.
func (l *link) connect(ctx context.Context, port uint32) (*Conn, error) {
	select {
	case l.pendSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.dead:
		return nil, errLinkLost
	}
	defer func() { <-l.pendSem }()
	l.mu.Lock()
	if l.state != lsUp {
		l.mu.Unlock()
		return nil, errLinkLost
	}
	if len(l.conns) >= l.m.cfg.MaxConns {
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: %d connections on the link to dom %d", ErrDenied, len(l.conns), l.peer)
	}
	wid := l.allocIDLocked()
	c := newConn(l.m, l, wid, Addr{Dom: l.m.cfg.Self}, Addr{Dom: l.peer, Port: port}, true)
	// An ephemeral local port, for addresses and the peer's information.
	c.local.Port = 1<<31 | uint32(c.id)&(1<<31-1)
	l.conns[wid] = c
	l.stopIdleLocked()
	l.ctrl = proto.ConnectReq{DstPort: port, SrcPort: c.local.Port, Window: c.window}.AppendFrame(l.ctrl, wid)
	l.framesOut.Add(1)
	l.mu.Unlock()
	l.wakeWriter()
	for {
		select {
		case <-c.wsig:
		case <-ctx.Done():
			return nil, l.abandon(c, ctx.Err())
		}
		c.mu.Lock()
		st, err := c.state, c.resetErr
		c.mu.Unlock()
		switch {
		case st == stEstablished:
			l.m.addConn(c)
			c.log.Debug("outgoing connection established")
			return c, nil
		case err != nil:
			if errors.Is(err, ErrReset) {
				return nil, errLinkLost
			}
			return nil, err
		}
	}
}

// abandon gives up a connect in flight. The id stays reserved until the
// reply comes, so a late CONNECT_rsp cannot hit a newer connection.
func (l *link) abandon(c *Conn, err error) error {
	c.mu.Lock()
	st := c.state
	c.closed = true
	c.mu.Unlock()
	if st == stEstablished {
		// The reply raced with the cancel: reset the fresh connection.
		l.sendDisconnect(c.wid, proto.ReasonReset)
		c.free()
	}
	return err
}

// ---- watchdog ----

func (l *link) watchdog() {
	defer l.wg.Done()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.ep.Done():
			l.fail(fmt.Errorf("ring closed: %v", l.ep.Err()), proto.ReasonNormal, false)
			return
		case <-l.idle.C:
			l.mu.Lock()
			idle := len(l.conns) == 0 && l.state == lsUp && len(l.pendSem) == 0
			l.mu.Unlock()
			if idle {
				l.fail(errors.New("idle"), proto.ReasonIdle, true)
				return
			}
		}
	}
}

// info returns the link's LinkInfo.
func (l *link) info() LinkInfo {
	l.mu.Lock()
	li := LinkInfo{Peer: l.peer, State: linkStateNames[l.state], Role: l.role, Conns: len(l.conns)}
	ep := l.ep
	l.mu.Unlock()
	if ep != nil {
		st := ep.Stats()
		li.ReadRing, li.WriteRing = st.ReadRing, st.WriteRing
	}
	li.BytesIn, li.BytesOut = l.bytesIn.Load(), l.bytesOut.Load()
	li.FramesIn, li.FramesOut = l.framesIn.Load(), l.framesOut.Load()
	return li
}
