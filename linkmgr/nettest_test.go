package linkmgr

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"idcfs/vchan"
)

// TestNetConn runs the standard net.Conn conformance suite on Conn, over a
// link between two domains and over the loopback link.
func TestNetConn(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	m1 := h.manager(1)
	m2 := h.manager(2)
	var port atomic.Uint32
	port.Store(100)
	for _, tc := range []struct {
		name       string
		dialer     *Manager
		listener   *Manager
		targetPeer vchan.DomID
	}{
		{"two-domains", m1, m2, 2},
		{"loopback", m1, m1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				p := port.Add(1)
				ln, err := tc.listener.Listen(p, 1)
				if err != nil {
					return nil, nil, nil, err
				}
				defer ln.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				a, err := tc.dialer.Dial(ctx, tc.targetPeer, p)
				if err != nil {
					return nil, nil, nil, err
				}
				b, err := ln.Accept(ctx)
				if err != nil {
					a.Close()
					return nil, nil, nil, err
				}
				return a, b, func() { a.Close(); b.Close() }, nil
			})
		})
	}
}
