//go:build linux

package shm

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// clearByteAt sets mem[off] to 0 with an atomic AND on the aligned 32-bit
// word that holds it, so that a peer's concurrent atomic update of a
// neighbouring byte (the ring's notify bits share the word with the live
// bytes) is never lost. mem must start on a 4-byte boundary (it is page
// aligned) and off must be inside it. Little-endian targets only (all Xen
// targets are).
func clearByteAt(mem []byte, off int) {
	w := (*uint32)(unsafe.Pointer(&mem[off&^3]))
	atomic.AndUint32(w, ^(uint32(0xff) << (8 * (off & 3))))
}

// mapFixed maps one page of fd over the page at addr, which must lie inside
// a reservation this package made with unix.Mmap (MAP_FIXED replaces the
// reserved page, it never touches memory we do not own). x/sys has no
// MAP_FIXED helper that takes an address, hence the raw syscall; the whole
// reservation is later unmapped with unix.Munmap on the slice it returned.
func mapFixed(addr unsafe.Pointer, fd int, prot int) error {
	r, _, e := unix.Syscall6(unix.SYS_MMAP, uintptr(addr), pageSize, uintptr(prot),
		unix.MAP_SHARED|unix.MAP_FIXED, uintptr(fd), 0)
	if e != 0 {
		return e
	}
	if r != uintptr(addr) {
		// Cannot happen with MAP_FIXED; refuse rather than use it.
		return unix.EFAULT
	}
	return nil
}

// readEventfd reads the counter of an eventfd into buf. With nowait it uses
// preadv2 with RWF_NOWAIT, so that a zero counter gives EAGAIN whatever the
// O_NONBLOCK flag of the open file description says: the peer shares that
// description and may clear the flag. The offset -1 means the current
// position, as for read(2).
func readEventfd(fd uintptr, buf *[8]byte, nowait bool) unix.Errno {
	if !nowait {
		_, _, e := unix.Syscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(buf)), uintptr(len(buf)))
		return e
	}
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	lo := ^uintptr(0)
	hi := uintptr(^uint64(0) >> (unix.SizeofLong*8 - 1) >> 1) // as x/sys/unix splits -1
	_, _, e := unix.Syscall6(unix.SYS_PREADV2, fd, uintptr(unsafe.Pointer(&iov)), 1, lo, hi, unix.RWF_NOWAIT)
	return e
}
