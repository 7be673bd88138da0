package xen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"idcfs/vchan"
	"idcfs/vchan/xen/internal/xendev"
)

// AllocUnbound allocates a local port that domain peer may bind, on a new
// evtchn file of its own.
func (b *Backend) AllocUnbound(peer vchan.DomID) (vchan.EventChannel, error) {
	if err := checkPeer(peer); err != nil {
		return nil, err
	}
	c, err := b.newChannel(peer, func(fd uintptr) (uint32, error) {
		p, err := xendev.BindUnboundPort(fd, uint16(peer))
		return p, opErr("evtchn BIND_UNBOUND_PORT", int(peer), err)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Bind binds a new local port to remotePort of domain peer, on a new evtchn
// file of its own. Xen marks the new port pending, so the first Wait may
// return at once.
func (b *Backend) Bind(peer vchan.DomID, remotePort uint32) (vchan.EventChannel, error) {
	if err := checkPeer(peer); err != nil {
		return nil, err
	}
	if remotePort == 0 {
		return nil, fmt.Errorf("%w: remote event channel port 0", ErrInvalid)
	}
	c, err := b.newChannel(peer, func(fd uintptr) (uint32, error) {
		p, err := xendev.BindInterdomain(fd, uint16(peer), remotePort)
		return p, opErr("evtchn BIND_INTERDOMAIN", int(peer), err)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (b *Backend) newChannel(peer vchan.DomID, bind func(fd uintptr) (uint32, error)) (*eventChannel, error) {
	d, err := openDevice(filepath.Join(b.dir, "evtchn"), true)
	if err != nil {
		return nil, err
	}
	c := &eventChannel{dev: d, peer: peer}
	err = d.control(func(fd uintptr) error {
		p, err := bind(fd)
		if err != nil {
			return err
		}
		if p == 0 {
			return &OpError{Op: "evtchn bind", Peer: int(peer), Err: errors.New("kernel returned port 0")}
		}
		c.port = p
		// Ports start unmasked; writing it is what libxenevtchn does
		// and is harmless.
		return c.unmask(fd)
	})
	if err != nil {
		_ = d.close() // closing the file unbinds whatever was bound
		return nil, err
	}
	return c, nil
}

// eventChannel is one bound port on its own evtchn file, which is on the
// runtime poller.
type eventChannel struct {
	dev  *device
	peer vchan.DomID
	port uint32

	mu     sync.Mutex
	closed bool

	waitMu sync.Mutex // serialises Wait; guards buf
	buf    [64]byte
}

var _ vchan.EventChannel = (*eventChannel)(nil)

func (c *eventChannel) Port() uint32 { return c.port }

// openPort returns the port, or net.ErrClosed after Close.
func (c *eventChannel) openPort() (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.port, nil
}

// Notify sends an event to the other end.
func (c *eventChannel) Notify() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	return c.closedErr(c.dev.control(func(fd uintptr) error {
		return opErr("evtchn NOTIFY", int(c.peer), xendev.Notify(fd, c.port))
	}))
}

// unmask writes the port number to the file, which re-enables delivery
// after the driver masked the port to report it.
func (c *eventChannel) unmask(fd uintptr) error {
	b := xendev.PortsBytes(c.port)
	for {
		_, err := unix.Write(int(fd), b)
		if err == unix.EINTR {
			continue
		}
		return opErr("evtchn unmask", int(c.peer), err)
	}
}

// longAgo is a deadline that has passed: setting it wakes a pending read.
var longAgo = time.Unix(1, 0)

// Wait blocks until the port was signalled since the previous Wait, ctx is
// done, or the channel is closed (net.ErrClosed). It waits on the runtime
// poller; a done ctx interrupts it through a read deadline.
func (c *eventChannel) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	stop := context.AfterFunc(ctx, func() { _ = c.dev.f.SetReadDeadline(longAgo) })
	defer stop()
	for {
		var n int
		var rerr error
		err := c.dev.rc.Read(func(fd uintptr) bool {
			for {
				n, rerr = unix.Read(int(fd), c.buf[:])
				if rerr != unix.EINTR {
					break
				}
			}
			return rerr != unix.EAGAIN
		})
		err = c.dev.closedErr(err)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			// A deadline left by an earlier Wait's context.
			if err := c.dev.f.SetReadDeadline(time.Time{}); err != nil {
				return c.closedErr(err)
			}
			continue
		case err != nil:
			return c.closedErr(err)
		case rerr == unix.EFBIG:
			// The driver's pending ring overflowed: empty it, and
			// report an event so the caller re-checks everything.
			return c.closedErr(c.dev.control(func(fd uintptr) error {
				if err := xendev.Reset(fd); err != nil {
					return opErr("evtchn RESET", int(c.peer), err)
				}
				return c.unmask(fd)
			}))
		case rerr != nil:
			return opErr("evtchn read", int(c.peer), rerr)
		case n < 4:
			return opErr("evtchn read", int(c.peer), fmt.Errorf("short read of %d bytes", n))
		}
		// Only this channel's port is bound on the file; whatever was
		// read, unmask it so the next event is delivered.
		return c.closedErr(c.dev.control(c.unmask))
	}
}

// closedErr maps the error of an operation on a closed file to
// net.ErrClosed.
func (c *eventChannel) closedErr(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return net.ErrClosed
	}
	return err
}

// Close unbinds the port and closes its file, which wakes a pending Wait.
// A second Close does nothing.
func (c *eventChannel) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	uerr := c.dev.control(func(fd uintptr) error {
		return opErr("evtchn UNBIND", int(c.peer), xendev.Unbind(fd, c.port))
	})
	return errors.Join(uerr, c.dev.close())
}
