package linkmgr

import (
	"sync"
	"time"
)

// deadline is a settable point in time whose channel is closed once it
// passes. The zero value is not usable; use newDeadline.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	c     chan struct{} // closed when the deadline has passed
}

func newDeadline() *deadline { return &deadline{c: make(chan struct{})} }

// set arms the deadline at t; the zero time disarms it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	expired := isDone(d.c)
	if t.IsZero() {
		if expired {
			d.c = make(chan struct{})
		}
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		if !expired {
			close(d.c)
		}
		return
	}
	if expired {
		d.c = make(chan struct{})
	}
	c := d.c
	d.timer = time.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.c == c && !isDone(c) {
			close(c)
		}
	})
}

// wait returns the channel closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// signal wakes one waiter on a 1-buffered channel without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
