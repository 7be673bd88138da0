package fsnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"idcfs/linkmgr"
)

func TestToErrno(t *testing.T) {
	tests := []struct {
		name string
		op   string
		err  error
		want syscall.Errno
	}{
		{"nil", opRead, nil, 0},
		{"canceled", opRead, context.Canceled, syscall.EINTR},
		{"deadline", opConnect, context.DeadlineExceeded, syscall.ETIMEDOUT},
		{"os deadline", opRead, os.ErrDeadlineExceeded, syscall.EAGAIN},
		{"would block", opAccept, linkmgr.ErrWouldBlock, syscall.EAGAIN},
		{"refused", opConnect, linkmgr.ErrRefused, syscall.ECONNREFUSED},
		{"unreachable", opConnect, linkmgr.ErrUnreachable, syscall.EHOSTUNREACH},
		{"timeout", opConnect, linkmgr.ErrTimeout, syscall.ETIMEDOUT},
		{"denied", opConnect, linkmgr.ErrDenied, syscall.EACCES},
		{"reset on read", opRead, linkmgr.ErrReset, syscall.ECONNRESET},
		{"reset on write", opWrite, linkmgr.ErrReset, syscall.ECONNRESET},
		{"peer closed", opWrite, linkmgr.ErrPeerClosed, syscall.EPIPE},
		{"addr in use", opBind, linkmgr.ErrAddrInUse, syscall.EADDRINUSE},
		{"listener closed", opAccept, linkmgr.ErrListenerClosed, syscall.ECONNABORTED},
		{"protocol", opRead, linkmgr.ErrProtocol, syscall.EPROTO},
		{"closed on write", opWrite, net.ErrClosed, syscall.EPIPE},
		{"closed on read", opRead, net.ErrClosed, syscall.ECONNRESET},
		{"closed on accept", opAccept, net.ErrClosed, syscall.ENETDOWN},
		{"closed on connect", opConnect, net.ErrClosed, syscall.ENETDOWN},
		{"closed on ctl", opCtl, net.ErrClosed, syscall.EBADF},
		{"eof on write", opWrite, io.EOF, syscall.EPIPE},
		{"bare errno", opRead, syscall.EMSGSIZE, syscall.EMSGSIZE},
		{"wrapped errno", opRead, fmt.Errorf("x: %w", syscall.ENOBUFS), syscall.ENOBUFS},
		{"unknown", opRead, errors.New("something else"), syscall.EIO},
		{"op error around reset", opRead,
			&net.OpError{Op: "read", Net: "idc", Err: linkmgr.ErrReset}, syscall.ECONNRESET},
		{"op error around peer closed", opWrite,
			&net.OpError{Op: "write", Net: "idc", Err: linkmgr.ErrPeerClosed}, syscall.EPIPE},
		{"wrapped refused", opConnect,
			fmt.Errorf("dial dom(2):80: %w", linkmgr.ErrRefused), syscall.ECONNREFUSED},
		{"manager closed on connect", opConnect, linkmgr.ErrManagerClosed, syscall.ENETDOWN},
		{"manager closed on read", opRead, linkmgr.ErrManagerClosed, syscall.ECONNRESET},
		{"canceled wins over reset", opRead,
			errors.Join(context.Canceled, linkmgr.ErrReset), syscall.EINTR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := toErrno(tt.op, tt.err); got != tt.want {
				t.Errorf("toErrno(%s, %v) = %v (%d), want %v (%d)", tt.op, tt.err, got, got, tt.want, tt.want)
			}
		})
	}
}

// Every sentinel of the link manager has a row in the table, and no two
// rows map the same error.
func TestErrnoTableCoversLinkmgr(t *testing.T) {
	sentinels := []error{
		linkmgr.ErrRefused, linkmgr.ErrUnreachable, linkmgr.ErrTimeout, linkmgr.ErrDenied,
		linkmgr.ErrReset, linkmgr.ErrPeerClosed, linkmgr.ErrAddrInUse, linkmgr.ErrWouldBlock,
		linkmgr.ErrListenerClosed, linkmgr.ErrProtocol,
	}
	for _, s := range sentinels {
		n := 0
		for _, row := range errnoTable {
			if row.err == s {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%v appears %d times in errnoTable, want 1", s, n)
		}
		for _, op := range []string{opRead, opWrite, opAccept, opConnect} {
			if got := toErrno(op, s); got == syscall.EIO || got == 0 {
				t.Errorf("toErrno(%s, %v) = %v", op, s, got)
			}
		}
	}
}
