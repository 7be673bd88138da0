package fsnode

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/sirupsen/logrus"

	"idcfs/linkmgr"
)

// Operation names used in log fields and for operation-dependent errnos.
const (
	opOpen    = "open"
	opAccept  = "accept"
	opConnect = "connect"
	opRead    = "read"
	opWrite   = "write"
	opUnlink  = "unlink"
	opCtl     = "ctl"
	opBind    = "bind"
)

// errnoTable lists the link manager's sentinel errors in the order they are
// tested. An error may wrap several (a *net.OpError around ErrReset, say);
// the first match wins.
var errnoTable = []struct {
	err   error
	errno syscall.Errno
}{
	{context.Canceled, syscall.EINTR},
	{context.DeadlineExceeded, syscall.ETIMEDOUT},
	{os.ErrDeadlineExceeded, syscall.EAGAIN},
	{linkmgr.ErrWouldBlock, syscall.EAGAIN},
	{linkmgr.ErrRefused, syscall.ECONNREFUSED},
	{linkmgr.ErrUnreachable, syscall.EHOSTUNREACH},
	{linkmgr.ErrTimeout, syscall.ETIMEDOUT},
	{linkmgr.ErrDenied, syscall.EACCES},
	{linkmgr.ErrReset, syscall.ECONNRESET},
	{linkmgr.ErrPeerClosed, syscall.EPIPE},
	{linkmgr.ErrAddrInUse, syscall.EADDRINUSE},
	{linkmgr.ErrListenerClosed, syscall.ECONNABORTED},
	{linkmgr.ErrProtocol, syscall.EPROTO},
}

// toErrno maps an error from the link manager (or the standard library
// beneath it) to the errno a FUSE operation op returns. It is the only
// place in idcfs that turns errors into errnos. A nil error gives 0.
//
// Errors that depend on the operation: net.ErrClosed (our side of the
// connection, or the whole link manager, is closed) and io.EOF are EPIPE
// on write, ECONNRESET on read, ENETDOWN when binding, accepting or
// connecting, and EBADF elsewhere. Callers handle io.EOF on read themselves (it is a
// 0-byte read, not an error). Anything unknown is EIO.
func toErrno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	for _, e := range errnoTable {
		if errors.Is(err, e.err) {
			return e.errno
		}
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		switch op {
		case opWrite:
			return syscall.EPIPE
		case opRead:
			return syscall.ECONNRESET
		case opBind, opAccept, opConnect:
			return syscall.ENETDOWN
		default:
			return syscall.EBADF
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		return errno
	}
	return syscall.EIO
}

// fail maps err for op, logs it once at the level its errno deserves, and
// returns the errno. EIO and EPROTO mean something is broken (Warn);
// everything else, interrupts and would-block included, is an expected
// outcome of what a user or a peer did (Debug).
func fail(log *logrus.Entry, op string, err error) syscall.Errno {
	errno := toErrno(op, err)
	entry := log.WithField("op", op).WithError(err).WithField("errno", errno.Error())
	switch errno {
	case syscall.EIO, syscall.EPROTO:
		entry.Warn("operation failed")
	case syscall.EINTR, syscall.EAGAIN:
		entry.Debug("operation interrupted or would block")
	default:
		entry.Debug("operation failed")
	}
	return errno
}
