// Package linkmgr owns this domain's links to other domains and the
// connections multiplexed over them.
//
// A link is one vchan ring pair plus an event channel between two domains,
// set up through Xenstore (docs/xenstore.md) and carrying the frames of
// idcfs/proto (docs/protocol.md). Every connection between the two domains
// runs over that one link: opening a connection costs one CONNECT_req /
// CONNECT_rsp round trip on a link that is already up. Each connection has
// its own credit-based flow control (the sender never has more bytes in
// flight than the receiver's window), so a reader that stalls never stops
// the link reader or the other connections, and the link writer sends
// frames of different connections in turn, each at most one max frame.
//
// Either side may drop a link at any time (peer death, a protocol error,
// idleness, shutdown); every connection on it then fails with ErrReset, and
// the next Dial sets up a new link.
//
// Manager is the entry point: Listen and Dial give *Conn, which implements
// net.Conn (errors as *net.OpError, io.EOF on an orderly close,
// net.ErrClosed after Close, os.ErrDeadlineExceeded on deadlines) plus
// ReadContext, WriteContext, CloseWrite and Reset. Listener has Accept and
// TryAccept. Links, Conns and Conn expose state for the filesystem layer.
//
// linkmgr knows nothing about FUSE or inodes. It logs through the injected
// logrus entry: link state changes at Info, teardowns at Warn, per
// connection events at Debug, with the fields peer, conn and port.
package linkmgr
