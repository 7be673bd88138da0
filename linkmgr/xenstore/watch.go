package xenstore

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Special watch paths.
const (
	IntroduceDomain = "@introduceDomain" // fires when a domain is introduced
	ReleaseDomain   = "@releaseDomain"   // fires when a domain goes away
)

// MaxQueuedEvents is how many distinct undelivered events a Watch keeps
// before it coalesces them into one event for the watched path itself.
const MaxQueuedEvents = 256

// unwatchTimeout bounds the UNWATCH request sent by Watch.Close.
const unwatchTimeout = 10 * time.Second

// Event is one watch event: Path is the node that changed (relative if the
// watch was registered with a relative path), Token the watch's token.
type Event struct {
	Path  string
	Token string
}

// Watch is a registered Xenstore watch.
//
// Events are queued per watch, so a slow consumer never delays replies or
// other watches. Xenstore events only say "something changed at Path", and
// Xenstore itself may merge identical events, so the queue drops an event
// identical to one still undelivered, and once MaxQueuedEvents distinct
// events are waiting it replaces them all by one event whose Path is the
// watched path: the consumer then re-reads everything it watches. No change
// is lost without an event following it.
type Watch struct {
	c     *Client
	path  string
	token string

	events chan Event
	notify chan struct{} // cap 1: the queue gained events
	stop   chan struct{}
	pumped chan struct{} // closed when the pump goroutine exits

	mu     sync.Mutex
	queue  []Event
	closed bool
}

// Watch registers a watch on path (a node and everything below it, or one
// of the special paths IntroduceDomain and ReleaseDomain) with the given
// token. The event the server fires on registration is delivered too. The
// Watch owns a goroutine; Close it when done.
func (c *Client) Watch(ctx context.Context, path, token string) (*Watch, error) {
	if err := checkString(opWatch, path, path); err != nil {
		return nil, err
	}
	if strings.IndexByte(token, 0) >= 0 {
		return nil, &Error{Op: opWatch, Path: path, Err: syscall.EINVAL}
	}
	w := &Watch{
		c:      c,
		path:   path,
		token:  token,
		events: make(chan Event),
		notify: make(chan struct{}, 1),
		stop:   make(chan struct{}),
		pumped: make(chan struct{}),
	}
	// Register before sending, so the initial event, which follows the
	// reply at once, finds the watch.
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, c.closedErr(opWatch, path)
	}
	for _, o := range c.watches[token] {
		if o.path == path {
			c.mu.Unlock()
			return nil, &Error{Op: opWatch, Path: path, Err: syscall.EEXIST}
		}
	}
	c.watches[token] = append(c.watches[token], w)
	c.wg.Add(1)
	c.mu.Unlock()
	go w.pump()

	p := AppendString(AppendString(nil, path), token)
	reply, err := c.roundTrip(ctx, OpWatch, 0, p, opWatch, path)
	if err == nil {
		err = expectOK(opWatch, path, reply)
	}
	if err != nil {
		w.shutdown()
		return nil, err
	}
	return w, nil
}

// Events returns the channel of events. It is closed when the watch or the
// client is closed.
func (w *Watch) Events() <-chan Event { return w.events }

// Path returns the watched path, as given to Client.Watch.
func (w *Watch) Path() string { return w.path }

// Token returns the watch's token.
func (w *Watch) Token() string { return w.token }

// Close unregisters the watch, closes its Events channel and waits for its
// goroutine. If the client is already closed there is nothing to
// unregister and Close returns nil.
func (w *Watch) Close() error {
	if !w.shutdown() {
		return ErrWatchClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), unwatchTimeout)
	defer cancel()
	p := AppendString(AppendString(nil, w.path), w.token)
	reply, err := w.c.roundTrip(ctx, OpUnwatch, 0, p, opUnwatch, w.path)
	if err == nil {
		err = expectOK(opUnwatch, w.path, reply)
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// shutdown removes the watch from the client and stops its goroutine. It
// reports false if the watch was already shut down.
func (w *Watch) shutdown() bool {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return false
	}
	w.closed = true
	w.mu.Unlock()
	c := w.c
	c.mu.Lock()
	list := c.watches[w.token]
	for i, o := range list {
		if o == w {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(c.watches, w.token)
	} else {
		c.watches[w.token] = list
	}
	c.mu.Unlock()
	close(w.stop)
	<-w.pumped
	return true
}

// pump moves queued events to the Events channel. It exits when the watch
// is closed or the client's connection is gone, closing Events.
func (w *Watch) pump() {
	defer w.c.wg.Done()
	defer close(w.pumped)
	defer close(w.events)
	for {
		w.mu.Lock()
		q := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, ev := range q {
			select {
			case w.events <- ev:
			case <-w.stop:
				return
			case <-w.c.done:
				return
			}
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-w.notify:
		case <-w.stop:
			return
		case <-w.c.done:
			return
		}
	}
}

// enqueue adds an event to the watch's queue without blocking.
func (w *Watch) enqueue(ev Event) {
	w.mu.Lock()
	dup := false
	for _, q := range w.queue {
		if q == ev {
			dup = true
			break
		}
	}
	if !dup {
		if len(w.queue) >= MaxQueuedEvents {
			w.queue = append(w.queue[:0], Event{Path: w.path, Token: w.token})
		} else {
			w.queue = append(w.queue, ev)
		}
	}
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// covers reports whether an event for epath belongs to a watch on wpath.
func covers(wpath, epath string) bool {
	if epath == wpath || wpath == "/" && strings.HasPrefix(epath, "/") {
		return true
	}
	return strings.HasPrefix(epath, wpath) && epath[len(wpath)] == '/'
}

// dispatch routes an event to the watches with its token. When several
// watches share a token, the event goes to those whose path covers it, or
// to all of them if none does (never dropped while a watch has the token).
func (c *Client) dispatch(ev Event) {
	c.mu.Lock()
	list := c.watches[ev.Token]
	var targets []*Watch
	if len(list) == 1 {
		targets = list
	} else {
		for _, w := range list {
			if covers(w.path, ev.Path) {
				targets = append(targets, w)
			}
		}
		if len(targets) == 0 {
			targets = list
		}
	}
	targets = append([]*Watch(nil), targets...)
	c.mu.Unlock()
	for _, w := range targets {
		w.enqueue(ev)
	}
}
