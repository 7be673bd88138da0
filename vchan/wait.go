package vchan

import (
	"context"
	"fmt"
	"idcfs/internal/deadline"
	"os"
	"time"
)

// Waiting for events.
//
// At most one goroutine at a time waits on the event channel: the holder of
// the wait role. A Read or Write that must block takes the role when it is
// free and calls ev.Wait itself, so an event wakes the blocked operation
// directly, with no goroutine in between. While the role is taken, a second
// blocked operation waits on its wake channel instead; whenever the holder's
// Wait returns, the holder counts the event (evSeq) and wakes every other
// blocked operation, which re-checks its own condition and, if it must still
// block, competes for the role.
//
// An operation marks itself blocked (waiting) before it asks the peer for an
// event and notes evSeq before the request. It takes the role only if no
// event was consumed since then: an event consumed by someone else after
// the request may have been the one the operation asked for, so it
// re-checks instead. Otherwise every event sent after the request is still
// pending on the channel, and the operation's own Wait receives it.
//
// When no operation is blocked, the Endpoint's watcher goroutine holds the
// role, so that the peer's close or death closes Done while the endpoint is
// idle. It steps aside while operations block: it sleeps until the role is
// free and no operation is marked, and takes the role only after no
// operation has started to block for watchSettle. During a busy exchange it
// therefore stays off the event channel (it would otherwise receive most
// events and hand each one over), and once the endpoint is idle it is back
// on the channel within about watchSettle; in between it re-checks the live
// byte itself.
//
// A holder cannot select on anything while in ev.Wait, so everything that
// must end its wait cancels the context it waits with (wctx): the periodic
// re-check (holdTimer), the caller's context (AfterFunc registrations kept
// from one wait to the next, see ctxWatch), the deadline (its expired hook)
// and Close. wctx is replaced only after it was cancelled: the backends may
// keep state keyed on it between Waits.

// Wait roles (bits of Endpoint.waiting and values of Endpoint.holder).
const (
	roleRead  uint8 = 1 << iota // a blocked Read
	roleWrite                   // a blocked Write
	roleWatch                   // the watcher goroutine

	roleOps = roleRead | roleWrite
	roleAll = roleOps | roleWatch
)

// watchSettle is how long the endpoint must have had no operation start to
// block before the watcher waits on the event channel again.
const watchSettle = 5 * time.Millisecond

// ctxWatch is an operation's registrations on its callers' contexts: when
// one is done it interrupts that operation's Wait. The two contexts used
// last stay registered, so a caller that keeps one long-lived context, or
// alternates between two, costs no allocation per wait. A registration
// that fires while the operation waits for another context only makes it
// look again.
type ctxWatch struct {
	slot [2]ctxReg // slot[0] is the most recently used
	fire func()    // interrupts the role's Wait; made once
}

type ctxReg struct {
	done <-chan struct{} // Done of the registered context, nil if none
	stop func() bool
}

// set registers ctx unless it is registered already or done. The caller
// holds the role's lock (rmu or wmu).
func (w *ctxWatch) set(ctx context.Context) {
	d := ctx.Done()
	switch {
	case d == nil || d == w.slot[0].done:
		return
	case d == w.slot[1].done:
		w.slot[0], w.slot[1] = w.slot[1], w.slot[0]
		return
	case ctx.Err() != nil:
		return
	}
	if w.slot[1].stop != nil {
		w.slot[1].stop()
	}
	w.slot[1] = w.slot[0]
	w.slot[0] = ctxReg{done: d, stop: context.AfterFunc(ctx, w.fire)}
}

func (w *ctxWatch) clear() {
	for i := range w.slot {
		if w.slot[i].stop != nil {
			w.slot[i].stop()
		}
		w.slot[i] = ctxReg{}
	}
}

// initWait sets up the waiting state of a new Endpoint.
func (e *Endpoint) initWait() {
	e.wctx, e.wcancel = context.WithCancel(context.Background())
	e.holdTimer = time.AfterFunc(time.Hour, func() { e.interrupt(roleOps) })
	e.holdTimer.Stop()
	e.rdCtx.fire = func() { e.interrupt(roleRead) }
	e.wrCtx.fire = func() { e.interrupt(roleWrite) }
	e.rdDL.OnExpire(e.rdCtx.fire)
	e.wrDL.OnExpire(e.wrCtx.fire)
	e.watchWake = make(chan struct{}, 1)
	e.watchDone = make(chan struct{})
}

// interrupt ends the Wait of the role holder if it is one of roles.
func (e *Endpoint) interrupt(roles uint8) {
	e.evMu.Lock()
	defer e.evMu.Unlock()
	if e.holder&roles != 0 {
		e.wcancel()
	}
}

// armLocked returns the context for the next Wait, replacing a cancelled
// one. evMu is held.
func (e *Endpoint) armLocked() context.Context {
	if e.wctx.Err() != nil {
		e.wctx, e.wcancel = context.WithCancel(context.Background())
	}
	return e.wctx
}

// mark records that the operation of role r may block: from now on the
// holder of the wait role wakes it after every Wait.
func (e *Endpoint) mark(r uint8) {
	e.evMu.Lock()
	e.waiting |= r
	e.activity++
	e.evMu.Unlock()
}

// unmark is called when the operation of role r returns.
func (e *Endpoint) unmark(r uint8) {
	e.evMu.Lock()
	e.waiting &^= r
	if e.watchWant && e.holder == 0 && e.waiting == 0 {
		e.watchWant = false
		wake(e.watchWake)
	}
	e.evMu.Unlock()
}

// wakeLocked wakes the marked operations in roles. evMu is held, so a wake
// is never missed by an operation that takes the role next.
func (e *Endpoint) wakeLocked(roles uint8) {
	if roles&roleRead != 0 {
		wake(e.rdWake)
	}
	if roles&roleWrite != 0 {
		wake(e.wrWake)
	}
}

// acquire takes the wait role for r, which must have marked itself; seq
// is evSeq as r noted it before its request. It fails when the role is
// taken or an event was consumed since seq.
func (e *Endpoint) acquire(r uint8, seq uint64) (context.Context, bool) {
	e.evMu.Lock()
	defer e.evMu.Unlock()
	if e.holder != 0 || e.evSeq.Load() != seq {
		return nil, false
	}
	e.holder = r
	return e.armLocked(), true
}

// release gives the wait role back after ev.Wait returned werr with wctx,
// counts the event, wakes the other blocked operations and reports whether
// an event arrived. A Wait error that wctx did not cause is a backend
// failure: the endpoint becomes unusable.
func (e *Endpoint) release(r uint8, wctx context.Context, werr error) bool {
	if werr != nil && wctx.Err() == nil {
		e.setFatal(fmt.Errorf("vchan: event channel: %w", werr))
	}
	e.evMu.Lock()
	defer e.evMu.Unlock()
	e.holder = 0
	if werr == nil {
		e.evSeq.Add(1)
		e.eventsIn.Add(1)
	}
	e.wakeLocked(e.waiting &^ r)
	return werr == nil
}

// block waits for the operation of role r (marked, seq noted before its
// request) until an event, the periodic re-check, a state change, ctx or
// the deadline. A nil result means: look again.
func (e *Endpoint) block(ctx context.Context, r uint8, seq uint64, wakeup chan struct{}, t *time.Timer, dl *deadline.Deadline, cw *ctxWatch) error {
	wctx, ok := e.acquire(r, seq)
	if !ok {
		if e.evSeq.Load() != seq {
			return nil // an event came after our request
		}
		return e.wait(ctx, wakeup, t, dl)
	}
	// A wake sent before we took the role is stale: we receive the next
	// event ourselves.
	select {
	case <-wakeup:
	default:
	}
	// Register the interrupts, then look at what they watch: whatever
	// happens after the look cancels wctx.
	cw.set(ctx)
	var err error
	switch {
	case ctx.Err() != nil:
		err = ctx.Err()
	case deadline.Passed(dl.Wait()):
		err = os.ErrDeadlineExceeded
	case deadline.Passed(e.done):
	default:
		e.holdTimer.Reset(e.recheck)
		werr := e.ev.Wait(wctx)
		e.holdTimer.Stop()
		if e.release(r, wctx, werr) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if deadline.Passed(dl.Wait()) {
			return os.ErrDeadlineExceeded
		}
		return nil
	}
	e.drop(r)
	return err
}

// drop gives the wait role back without having waited.
func (e *Endpoint) drop(r uint8) {
	e.evMu.Lock()
	defer e.evMu.Unlock()
	e.holder = 0
	e.wakeLocked(e.waiting &^ r)
}

// watch is the Endpoint's goroutine: it holds the wait role while no
// operation blocks, so that Done closes when the peer goes while the
// endpoint is idle. It returns once Done is closed.
func (e *Endpoint) watch() {
	defer close(e.watchDone)
	t := stoppedTimer()
	var seen uint64
	for {
		if deadline.Passed(e.done) {
			return
		}
		e.evMu.Lock()
		free := e.holder == 0 && e.waiting == 0
		if free && e.activity == seen {
			e.holder = roleWatch
			wctx := e.armLocked()
			e.evMu.Unlock()
			werr := e.ev.Wait(wctx)
			e.release(roleWatch, wctx, werr)
			_, _ = e.checkPeerMapped() // a broken peer is recorded in the state
			continue
		}
		if !free {
			// Operations are blocked: their holder sees the events.
			// Sleep until the role is free and nobody is marked.
			e.watchWant = true
			e.evMu.Unlock()
			select {
			case <-e.watchWake:
			case <-e.done:
				return
			}
			continue
		}
		seen = e.activity
		e.evMu.Unlock()
		t.Reset(watchSettle)
		select {
		case <-t.C:
		case <-e.done:
			t.Stop()
			return
		}
		_, _ = e.checkPeerMapped()
	}
}
