// Package deadline provides a settable point in time exposed as a channel
// that is closed once it passes, so that a blocked operation can select on
// it: the machinery behind SetReadDeadline and SetWriteDeadline of the
// project's net.Conn-shaped types (vchan.Endpoint, linkmgr.Conn).
package deadline

import (
	"sync"
	"time"
)

// Deadline is a settable point in time. The zero value is not usable; use
// New. Its methods are safe for concurrent use.
type Deadline struct {
	mu sync.Mutex
	t  *time.Timer   // pending timer, nil if none
	c  chan struct{} // closed when the deadline has passed

	// expired, if set, is called each time c is closed.
	expired func()
}

// New returns a Deadline that is not armed.
func New() *Deadline { return &Deadline{c: make(chan struct{})} }

// OnExpire registers f to be called each time the deadline passes, to
// interrupt an operation that waits where it cannot select on Wait. f runs
// on a timer goroutine, or in Set when t is already past (then with the
// Deadline's lock held: f must not call back into the Deadline). Register
// before the first Set.
func (d *Deadline) OnExpire(f func()) {
	d.mu.Lock()
	d.expired = f
	d.mu.Unlock()
}

// Passed reports whether the channel c is closed.
func Passed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Set moves the deadline to t; the zero time disarms it. A t in the past
// makes it pass at once.
func (d *Deadline) Set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.t != nil {
		if !d.t.Stop() {
			// The timer fired or is firing: it closes (or closed) the old
			// channel, so start afresh.
			d.c = make(chan struct{})
		}
		d.t = nil
	} else if Passed(d.c) {
		d.c = make(chan struct{})
	}
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.c)
		if d.expired != nil {
			d.expired()
		}
		return
	}
	c := d.c
	d.t = time.AfterFunc(dur, func() {
		d.mu.Lock()
		fired := !Passed(c)
		if fired {
			close(c)
		}
		f := d.expired
		d.mu.Unlock()
		if fired && f != nil {
			f()
		}
	})
}

// Wait returns a channel that is closed when the deadline passes. After a
// Set, call Wait again: a re-armed deadline has a new channel.
func (d *Deadline) Wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c
}

// Stop releases the timer; the deadline no longer passes on its own.
func (d *Deadline) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.t != nil {
		d.t.Stop()
		d.t = nil
	}
}
