package xenstore

import (
	"errors"
	"syscall"
)

// Sentinel errors. Protocol problems wrap ErrProtocol; see also *Error for
// errors reported by the store.
var (
	// ErrProtocol means a message broke the wire protocol: a short header, a
	// length past the limit, an unknown type, a malformed payload.
	ErrProtocol = errors.New("xenstore: protocol error")
	// ErrTooLarge means a message would exceed the payload limit.
	ErrTooLarge = errors.New("xenstore: payload too large")
	// ErrTxDone means a Tx was used after it was committed or aborted.
	ErrTxDone = errors.New("xenstore: transaction already ended")
	// ErrBadPerm means a permission string could not be parsed.
	ErrBadPerm = errors.New("xenstore: malformed permission")
	// ErrWatchClosed is returned by Watch.Close on a watch already closed.
	ErrWatchClosed = errors.New("xenstore: watch closed")
)

// Error is a request refused by the store, or refused locally before sending
// for the same reason the store would refuse it (for example a payload that
// is too large gives E2BIG).
type Error struct {
	Op   string        // operation, e.g. "read"
	Path string        // path the operation was about, if any
	Err  syscall.Errno // the errno the store named
	// Name is the error name as the store sent it. It differs from
	// ErrnoName(Err) only for names this package does not know, which map to
	// EINVAL as libxenstore does.
	Name string
}

func (e *Error) Error() string {
	name := e.Name
	if name == "" {
		name = ErrnoName(e.Err)
	}
	s := "xenstore " + e.Op
	if e.Path != "" {
		s += " " + e.Path
	}
	return s + ": " + name + " (" + e.Err.Error() + ")"
}

// Unwrap returns the errno, so errors.Is(err, syscall.ENOENT) works.
func (e *Error) Unwrap() error { return e.Err }

// errnoNames is the error table of xs_wire.h, in its fixed order.
var errnoNames = [...]struct {
	errno syscall.Errno
	name  string
}{
	{syscall.EINVAL, "EINVAL"},
	{syscall.EACCES, "EACCES"},
	{syscall.EEXIST, "EEXIST"},
	{syscall.EISDIR, "EISDIR"},
	{syscall.ENOENT, "ENOENT"},
	{syscall.ENOMEM, "ENOMEM"},
	{syscall.ENOSPC, "ENOSPC"},
	{syscall.EIO, "EIO"},
	{syscall.ENOTEMPTY, "ENOTEMPTY"},
	{syscall.ENOSYS, "ENOSYS"},
	{syscall.EROFS, "EROFS"},
	{syscall.EBUSY, "EBUSY"},
	{syscall.EAGAIN, "EAGAIN"},
	{syscall.EISCONN, "EISCONN"},
	{syscall.E2BIG, "E2BIG"},
	{syscall.EPERM, "EPERM"},
}

// ErrnoName returns the Xenstore name of an errno ("ENOENT"). Errnos outside
// the Xenstore table are named "EINVAL", as xenstored does.
func ErrnoName(e syscall.Errno) string {
	for _, n := range errnoNames {
		if n.errno == e {
			return n.name
		}
	}
	return "EINVAL"
}

// ParseErrno maps a Xenstore error name to its errno. ok is false for names
// outside the table; errno is then EINVAL, as libxenstore does.
func ParseErrno(name string) (errno syscall.Errno, ok bool) {
	for _, n := range errnoNames {
		if n.name == name {
			return n.errno, true
		}
	}
	return syscall.EINVAL, false
}
