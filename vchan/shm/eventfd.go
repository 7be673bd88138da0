//go:build linux

package shm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Events travel through eventfds: each channel end has one (events to it),
// sent to each peer it is bound to during the handshake. The peer process is
// not trusted, so a received descriptor is checked before use, and since the
// peer shares the open file description of every eventfd it holds (and may
// change its O_NONBLOCK flag at any time), reads do not rely on that flag.

// maxRecvFds is the room for descriptors in one receive: enough to see that
// a peer sent more than one. The kernel closes any beyond it (MSG_CTRUNC).
const maxRecvFds = 8

// eventfdLink is what /proc/self/fd/N reads for an eventfd.
const eventfdLink = "anon_inode:[eventfd]"

// eventOne is the value Notify adds to the peer's eventfd (a host-endian
// u64; little-endian targets only).
var eventOne = [8]byte{1}

// newEventfd creates a non-blocking, close-on-exec eventfd and wraps it in a
// file that uses the runtime poller.
func newEventfd() (*os.File, int, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, -1, fmt.Errorf("eventfd: %w", err)
	}
	return os.NewFile(uintptr(fd), "eventfd"), fd, nil
}

// nowaitReads reports whether this kernel reads an eventfd with RWF_NOWAIT
// (Linux 5.12 on): such a read returns EAGAIN on a zero counter even if the
// peer cleared O_NONBLOCK on the description both share. Older kernels fall
// back to read(2), which relies on the flag.
var nowaitReads = sync.OnceValue(func() bool {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var buf [8]byte
	_, err = unix.Preadv2(fd, [][]byte{buf[:]}, -1, unix.RWF_NOWAIT)
	return err == unix.EAGAIN
})

// checkEventfd accepts fd only if it is an eventfd, and makes sure it is
// non-blocking (for our writes to it).
func checkEventfd(fd int) error {
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return fmt.Errorf("%w: cannot check the received descriptor: %v", ErrProtocol, err)
	}
	if link != eventfdLink {
		return fmt.Errorf("%w: received descriptor is %q, want an eventfd", ErrProtocol, link)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("eventfd: set non-blocking: %w", err)
	}
	return nil
}

// takeEventfd returns the one descriptor of fds if it is an eventfd. On
// error it has closed all of them.
func takeEventfd(fds []int) (int, error) {
	if len(fds) != 1 {
		closeFds(fds)
		return -1, fmt.Errorf("%w: handshake carried %d descriptors, want one eventfd", ErrProtocol, len(fds))
	}
	if err := checkEventfd(fds[0]); err != nil {
		unix.Close(fds[0])
		return -1, err
	}
	return fds[0], nil
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// readMsgFull reads exactly len(buf) bytes from conn (never more: what
// follows the handshake is for the channel's reader) and returns every
// descriptor that came with them. On error it has closed them all.
// Descriptors attached to later bytes are not ours: the kernel closes those
// when the reader reads them without room for them.
func readMsgFull(conn *net.UnixConn, buf []byte) ([]int, error) {
	var fds []int
	oob := make([]byte, unix.CmsgSpace(4*maxRecvFds))
	for got := 0; got < len(buf); {
		n, oobn, flags, _, err := conn.ReadMsgUnix(buf[got:], oob)
		if oobn > 0 {
			more, perr := parseRights(oob[:oobn])
			fds = append(fds, more...)
			if perr != nil {
				closeFds(fds)
				return nil, perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			closeFds(fds)
			return nil, fmt.Errorf("%w: handshake carried more than %d descriptors", ErrProtocol, maxRecvFds)
		}
		got += n
		if err == nil && n == 0 {
			err = io.EOF
		}
		if err != nil {
			closeFds(fds)
			if errors.Is(err, io.EOF) && got > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return fds, nil
}

// parseRights returns the descriptors of the SCM_RIGHTS messages in oob.
func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: control message: %v", ErrProtocol, err)
	}
	var fds []int
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		more, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			return fds, fmt.Errorf("%w: control message: %v", ErrProtocol, err)
		}
		fds = append(fds, more...)
	}
	return fds, nil
}
