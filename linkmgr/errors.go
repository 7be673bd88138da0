package linkmgr

import (
	"errors"
	"net"
)

// Sentinel errors. Conn methods wrap them in *net.OpError; Manager methods
// wrap them with the peer and port. Test them with errors.Is.
var (
	// ErrRefused: the peer answered, but nothing listens on the port or its
	// accept queue is full.
	ErrRefused = errors.New("linkmgr: connection refused")
	// ErrUnreachable: no link can be set up to the domain (it does not
	// exist, runs no idcfs daemon, or the two domains are not permitted to
	// link). Reported without waiting for a timeout.
	ErrUnreachable = errors.New("linkmgr: domain unreachable")
	// ErrTimeout: the link setup or the CONNECT exchange took longer than
	// Config.ConnectTimeout.
	ErrTimeout = errors.New("linkmgr: connect timed out")
	// ErrDenied: the peer's policy refused the connection, or the peer has
	// too many connections on the link.
	ErrDenied = errors.New("linkmgr: connection denied")
	// ErrReset: the link was lost or the peer reset the connection.
	ErrReset = errors.New("linkmgr: connection reset")
	// ErrPeerClosed: the peer no longer reads; writes cannot be delivered.
	ErrPeerClosed = errors.New("linkmgr: peer closed the connection")
	// ErrAddrInUse: Listen on a port that already has a listener.
	ErrAddrInUse = errors.New("linkmgr: port already in use")
	// ErrWouldBlock: TryAccept found no pending connection.
	ErrWouldBlock = errors.New("linkmgr: operation would block")
	// ErrListenerClosed: Accept on a closed listener.
	ErrListenerClosed = errors.New("linkmgr: listener closed")
	// ErrProtocol: the peer broke the link protocol; the connection or the
	// link was reset.
	ErrProtocol = errors.New("linkmgr: protocol error")
	// ErrManagerClosed: the Manager was closed. It wraps net.ErrClosed.
	ErrManagerClosed = closedError{}
)

type closedError struct{}

func (closedError) Error() string        { return "linkmgr: manager closed" }
func (closedError) Is(target error) bool { return target == net.ErrClosed }

// Operation names used in *net.OpError.
const (
	opDial   = "dial"
	opAccept = "accept"
	opRead   = "read"
	opWrite  = "write"
	opClose  = "close"
	opListen = "listen"
)
