package vchan

import (
	"sync"
	"time"
)

// deadline is a settable point in time exposed as a channel that is closed
// once it passes, so that a blocked operation can select on it.
type deadline struct {
	mu sync.Mutex
	t  *time.Timer   // pending timer, nil if none
	c  chan struct{} // closed when the deadline has passed

	// expired, if set, is called (without mu) each time c is closed: it
	// interrupts an operation that waits where it cannot select on c.
	expired func()
}

func newDeadline() *deadline { return &deadline{c: make(chan struct{})} }

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// set moves the deadline to t (zero: no deadline).
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.t != nil {
		if !d.t.Stop() {
			// The timer fired or is firing: it closes (or closed) the old
			// channel, so start afresh.
			d.c = make(chan struct{})
		}
		d.t = nil
	} else if isClosed(d.c) {
		d.c = make(chan struct{})
	}
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.c)
		if d.expired != nil {
			// Called under mu here; expired must not call back into d.
			d.expired()
		}
		return
	}
	c := d.c
	d.t = time.AfterFunc(dur, func() {
		d.mu.Lock()
		fired := !isClosed(c)
		if fired {
			close(c)
		}
		d.mu.Unlock()
		if fired && d.expired != nil {
			d.expired()
		}
	})
}

// wait returns a channel closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c
}

// stop releases the timer.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.t != nil {
		d.t.Stop()
		d.t = nil
	}
}
