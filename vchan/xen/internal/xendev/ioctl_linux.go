package xendev

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl issues request on fd with arg, which must be at least as long as the
// size encoded in the request, and returns the ioctl's return value. It is
// the only place that converts a Go pointer for the kernel.
func ioctl(fd uintptr, req uintptr, arg []byte) (uintptr, error) {
	if len(arg) < int(req>>iocSizeShift&(1<<iocSizeBits-1)) {
		return 0, fmt.Errorf("xendev: argument of %d bytes for request %#x", len(arg), req)
	}
	var p unsafe.Pointer
	if len(arg) > 0 {
		p = unsafe.Pointer(&arg[0])
	}
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(p))
		switch errno {
		case 0:
			return r, nil
		case unix.EINTR:
			continue
		default:
			return 0, errno
		}
	}
}

// BindUnboundPort runs IOCTL_EVTCHN_BIND_UNBOUND_PORT on an evtchn fd and
// returns the new local port, which domain remote may bind.
func BindUnboundPort(fd uintptr, remote uint16) (uint32, error) {
	r, err := ioctl(fd, EvtchnBindUnboundPort, BindUnboundPortArg(remote))
	return uint32(r), err
}

// BindInterdomain runs IOCTL_EVTCHN_BIND_INTERDOMAIN on an evtchn fd and
// returns the new local port, connected to remotePort of domain remote.
func BindInterdomain(fd uintptr, remote uint16, remotePort uint32) (uint32, error) {
	r, err := ioctl(fd, EvtchnBindInterdomain, BindInterdomainArg(remote, remotePort))
	return uint32(r), err
}

// Unbind runs IOCTL_EVTCHN_UNBIND.
func Unbind(fd uintptr, port uint32) error {
	_, err := ioctl(fd, EvtchnUnbind, PortArg(port))
	return err
}

// Notify runs IOCTL_EVTCHN_NOTIFY.
func Notify(fd uintptr, port uint32) error {
	_, err := ioctl(fd, EvtchnNotify, PortArg(port))
	return err
}

// Reset runs IOCTL_EVTCHN_RESET (empties the pending ring after an overflow).
func Reset(fd uintptr) error {
	_, err := ioctl(fd, EvtchnReset, nil)
	return err
}

// AllocGref runs IOCTL_GNTALLOC_ALLOC_GREF on a gntalloc fd: count zeroed
// pages granted to domid. It returns the mmap offset and one ref per page.
func AllocGref(fd uintptr, domid uint16, writable bool, count int) (index uint64, refs []uint32, err error) {
	if count < 1 || count > MaxGntallocPages {
		return 0, nil, fmt.Errorf("xendev: gntalloc of %d pages", count)
	}
	var flags uint16
	if writable {
		flags = GntallocFlagWritable
	}
	arg := AllocGrefArg(domid, flags, count)
	if _, err := ioctl(fd, GntallocAllocGref, arg); err != nil {
		return 0, nil, err
	}
	index, refs = ParseAllocGref(arg, count)
	return index, refs, nil
}

// DeallocGref runs IOCTL_GNTALLOC_DEALLOC_GREF.
func DeallocGref(fd uintptr, index uint64, count int) error {
	_, err := ioctl(fd, GntallocDeallocGref, IndexCountArg(index, count))
	return err
}

// GntallocUnmapNotify runs IOCTL_GNTALLOC_SET_UNMAP_NOTIFY; index is the
// page's mmap offset plus the byte offset within the page.
func GntallocUnmapNotify(fd uintptr, index uint64, action, port uint32) error {
	_, err := ioctl(fd, GntallocSetUnmapNotify, UnmapNotifyArg(index, action, port))
	return err
}

// MapGrantRef runs IOCTL_GNTDEV_MAP_GRANT_REF on a gntdev fd for refs of
// domid and returns the mmap offset.
func MapGrantRef(fd uintptr, domid uint16, refs []uint32) (uint64, error) {
	if len(refs) < 1 || len(refs) > MaxGntdevRefs {
		return 0, fmt.Errorf("xendev: gntdev map of %d refs", len(refs))
	}
	arg := MapGrantRefArg(domid, refs)
	if _, err := ioctl(fd, GntdevMapGrantRef, arg); err != nil {
		return 0, err
	}
	return ne.Uint64(arg[OffMapIndex:]), nil
}

// UnmapGrantRef runs IOCTL_GNTDEV_UNMAP_GRANT_REF.
func UnmapGrantRef(fd uintptr, index uint64, count int) error {
	_, err := ioctl(fd, GntdevUnmapGrantRef, IndexCountArg(index, count))
	return err
}

// GntdevUnmapNotify runs IOCTL_GNTDEV_SET_UNMAP_NOTIFY; index is the
// mapping's mmap offset plus the byte offset within it.
func GntdevUnmapNotify(fd uintptr, index uint64, action, port uint32) error {
	_, err := ioctl(fd, GntdevSetUnmapNotify, UnmapNotifyArg(index, action, port))
	return err
}
