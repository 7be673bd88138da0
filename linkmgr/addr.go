package linkmgr

import (
	"net"
	"strconv"

	"idcfs/vchan"
)

// Network is the network name of every Addr.
const Network = "idc"

// Addr is the address of one end of a connection: a domain and a port.
type Addr struct {
	Dom  vchan.DomID
	Port uint32
}

var _ net.Addr = Addr{}

// Network returns "idc".
func (Addr) Network() string { return Network }

// String returns "dom(N):port".
func (a Addr) String() string {
	return "dom(" + strconv.Itoa(int(a.Dom)) + "):" + strconv.FormatUint(uint64(a.Port), 10)
}
