package vchan_test

import (
	"net"
	"testing"

	"golang.org/x/net/nettest"

	"idcfs/vchan"
	"idcfs/vchan/heap"
)

// conn makes an Endpoint a net.Conn for the conformance suite (addresses
// are the only missing part; linkmgr gives its streams real ones).
type conn struct {
	*vchan.Endpoint
	local, remote addr
}

type addr string

func (a addr) Network() string { return "vchan" }
func (a addr) String() string  { return string(a) }

func (c conn) LocalAddr() net.Addr  { return c.local }
func (c conn) RemoteAddr() net.Addr { return c.remote }

// TestNetConn runs golang.org/x/net/nettest.TestConn over a heap pair.
func TestNetConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		h := heap.New()
		srv, err := vchan.NewServer(h.Domain(srvDom), cliDom, 0, 0)
		if err != nil {
			return nil, nil, nil, err
		}
		cli, err := vchan.NewClient(h.Domain(cliDom), srvDom, srv.RingRef(), srv.Port())
		if err != nil {
			srv.Close()
			return nil, nil, nil, err
		}
		stop = func() {
			cli.Close()
			srv.Close()
		}
		return conn{srv, "dom0", "dom5"}, conn{cli, "dom5", "dom0"}, stop, nil
	})
}
