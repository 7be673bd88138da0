// Package xendev holds the Linux Xen device ABI used by the vchan Xen
// backend: ioctl request numbers, the byte layout of their argument structs,
// and one typed function per ioctl on /dev/xen/evtchn, /dev/xen/gntalloc and
// /dev/xen/gntdev.
//
// The argument structs mirror include/uapi/xen/{evtchn,gntalloc,gntdev}.h.
// Arguments are passed as byte buffers in native byte order; the kernel
// copies them with copy_from_user and copy_to_user, so their alignment does
// not matter. Request numbers are built by Ioc from direction, type, number
// and the size of the argument struct.
package xendev

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

// Device paths.
const (
	DevEvtchn   = "/dev/xen/evtchn"
	DevGntdev   = "/dev/xen/gntdev"
	DevGntalloc = "/dev/xen/gntalloc"
)

// Linux generic ioctl encoding (include/uapi/asm-generic/ioctl.h).
const (
	iocNRBits   = 8
	iocTypeBits = 8
	iocSizeBits = 14

	iocNRShift   = 0
	iocTypeShift = iocNRShift + iocNRBits
	iocSizeShift = iocTypeShift + iocTypeBits
	iocDirShift  = iocSizeShift + iocSizeBits

	// IocNone is the direction every Xen device ioctl uses, although they
	// pass a pointer.
	IocNone = 0
)

// Ioc builds an ioctl request number. It panics on out-of-range fields; it
// is only called with constants at package initialisation.
func Ioc(dir, typ, nr, size uintptr) uintptr {
	if dir > 3 || typ >= 1<<iocTypeBits || nr >= 1<<iocNRBits || size >= 1<<iocSizeBits {
		panic(fmt.Sprintf("xendev: ioctl field out of range: dir %d type %#x nr %d size %d", dir, typ, nr, size))
	}
	return dir<<iocDirShift | size<<iocSizeShift | typ<<iocTypeShift | nr<<iocNRShift
}

// ioctl type letters.
const (
	typeEvtchn = 'E'
	typeGrant  = 'G' // shared by gntdev and gntalloc
)

// The Go mirrors below exist so that request numbers are built from the
// size of the C struct; encoding uses the Off* constants, whose agreement
// with these structs is checked by the package tests.

// ioctl_evtchn_bind_interdomain
type evtchnBindInterdomain struct {
	RemoteDomain uint32
	RemotePort   uint32
}

// ioctl_evtchn_bind_unbound_port
type evtchnBindUnboundPort struct {
	RemoteDomain uint32
}

// ioctl_evtchn_unbind
type evtchnUnbind struct {
	Port uint32
}

// ioctl_evtchn_notify
type evtchnNotify struct {
	Port uint32
}

// ioctl_gntalloc_alloc_gref, with its one-element trailing array.
type gntallocAllocGref struct {
	Domid   uint16
	Flags   uint16
	Count   uint32
	Index   uint64
	GrefIDs [1]uint32
}

// ioctl_gntalloc_dealloc_gref
type gntallocDeallocGref struct {
	Index uint64
	Count uint32
}

// ioctl_gntalloc_unmap_notify and ioctl_gntdev_unmap_notify (same layout).
type unmapNotify struct {
	Index  uint64
	Action uint32
	Port   uint32
}

// ioctl_gntdev_grant_ref
type gntdevGrantRef struct {
	Domid uint32
	Ref   uint32
}

// ioctl_gntdev_map_grant_ref, with its one-element trailing array.
type gntdevMapGrantRef struct {
	Count uint32
	Pad   uint32
	Index uint64
	Refs  [1]gntdevGrantRef
}

// ioctl_gntdev_unmap_grant_ref
type gntdevUnmapGrantRef struct {
	Index uint64
	Count uint32
	Pad   uint32
}

// Request numbers.
var (
	EvtchnBindInterdomain = Ioc(IocNone, typeEvtchn, 1, unsafe.Sizeof(evtchnBindInterdomain{}))
	EvtchnBindUnboundPort = Ioc(IocNone, typeEvtchn, 2, unsafe.Sizeof(evtchnBindUnboundPort{}))
	EvtchnUnbind          = Ioc(IocNone, typeEvtchn, 3, unsafe.Sizeof(evtchnUnbind{}))
	EvtchnNotify          = Ioc(IocNone, typeEvtchn, 4, unsafe.Sizeof(evtchnNotify{}))
	EvtchnReset           = Ioc(IocNone, typeEvtchn, 5, 0)

	GntdevMapGrantRef    = Ioc(IocNone, typeGrant, 0, unsafe.Sizeof(gntdevMapGrantRef{}))
	GntdevUnmapGrantRef  = Ioc(IocNone, typeGrant, 1, unsafe.Sizeof(gntdevUnmapGrantRef{}))
	GntdevSetUnmapNotify = Ioc(IocNone, typeGrant, 7, unsafe.Sizeof(unmapNotify{}))

	GntallocAllocGref      = Ioc(IocNone, typeGrant, 5, unsafe.Sizeof(gntallocAllocGref{}))
	GntallocDeallocGref    = Ioc(IocNone, typeGrant, 6, unsafe.Sizeof(gntallocDeallocGref{}))
	GntallocSetUnmapNotify = Ioc(IocNone, typeGrant, 7, unsafe.Sizeof(unmapNotify{}))
)

// Byte offsets of the fields, as the kernel reads them.
const (
	OffBindInterdomainRemoteDomain = 0
	OffBindInterdomainRemotePort   = 4
	OffBindUnboundRemoteDomain     = 0
	OffPort                        = 0 // unbind, notify

	OffAllocDomid   = 0
	OffAllocFlags   = 2
	OffAllocCount   = 4
	OffAllocIndex   = 8
	OffAllocGrefIDs = 16

	OffDeallocIndex = 0
	OffDeallocCount = 8

	OffNotifyIndex  = 0
	OffNotifyAction = 8
	OffNotifyPort   = 12

	OffMapCount = 0
	OffMapIndex = 8
	OffMapRefs  = 16
	SizeofRef   = 8 // ioctl_gntdev_grant_ref
	OffRefDomid = 0
	OffRefRef   = 4

	OffUnmapIndex = 0
	OffUnmapCount = 8
)

// Flags and actions.
const (
	// GntallocFlagWritable lets the peer map the pages read-write.
	GntallocFlagWritable = 1
	// UnmapNotifyClearByte zeroes the byte at the notify offset.
	UnmapNotifyClearByte = 0x1
	// UnmapNotifySendEvent signals the notify port.
	UnmapNotifySendEvent = 0x2
)

// Limits.
const (
	// DomidFirstReserved is DOMID_FIRST_RESERVED: ids from here on name
	// no real domain (DOMID_SELF, DOMID_IO, ...).
	DomidFirstReserved = 0x7FF0
	// MaxGntallocPages is the default domain-wide limit of the gntalloc
	// driver (module parameter limit).
	MaxGntallocPages = 1024
	// MaxGntdevRefs is the largest count one MAP_GRANT_REF accepts in
	// current kernels (module parameter limit of gntdev).
	MaxGntdevRefs = 65536
	// MaxReadPorts bounds how many pending port numbers one read returns
	// (the driver caps reads at one page).
	MaxReadPorts = 4096 / 4
)

var ne = binary.NativeEndian

// AllocGrefArg encodes ioctl_gntalloc_alloc_gref for count pages.
func AllocGrefArg(domid uint16, flags uint16, count int) []byte {
	b := make([]byte, max(int(unsafe.Sizeof(gntallocAllocGref{})), OffAllocGrefIDs+4*count))
	ne.PutUint16(b[OffAllocDomid:], domid)
	ne.PutUint16(b[OffAllocFlags:], flags)
	ne.PutUint32(b[OffAllocCount:], uint32(count))
	return b
}

// ParseAllocGref decodes the output of ALLOC_GREF for count pages.
func ParseAllocGref(b []byte, count int) (index uint64, refs []uint32) {
	index = ne.Uint64(b[OffAllocIndex:])
	refs = make([]uint32, count)
	for i := range refs {
		refs[i] = ne.Uint32(b[OffAllocGrefIDs+4*i:])
	}
	return index, refs
}

// MapGrantRefArg encodes ioctl_gntdev_map_grant_ref for refs of domid.
func MapGrantRefArg(domid uint16, refs []uint32) []byte {
	b := make([]byte, max(int(unsafe.Sizeof(gntdevMapGrantRef{})), OffMapRefs+SizeofRef*len(refs)))
	ne.PutUint32(b[OffMapCount:], uint32(len(refs)))
	for i, r := range refs {
		e := b[OffMapRefs+SizeofRef*i:]
		ne.PutUint32(e[OffRefDomid:], uint32(domid))
		ne.PutUint32(e[OffRefRef:], r)
	}
	return b
}

// IndexCountArg encodes ioctl_gntalloc_dealloc_gref and
// ioctl_gntdev_unmap_grant_ref, which share one layout.
func IndexCountArg(index uint64, count int) []byte {
	b := make([]byte, unsafe.Sizeof(gntdevUnmapGrantRef{}))
	ne.PutUint64(b[OffUnmapIndex:], index)
	ne.PutUint32(b[OffUnmapCount:], uint32(count))
	return b
}

// UnmapNotifyArg encodes ioctl_gntalloc_unmap_notify and
// ioctl_gntdev_unmap_notify.
func UnmapNotifyArg(index uint64, action, port uint32) []byte {
	b := make([]byte, unsafe.Sizeof(unmapNotify{}))
	ne.PutUint64(b[OffNotifyIndex:], index)
	ne.PutUint32(b[OffNotifyAction:], action)
	ne.PutUint32(b[OffNotifyPort:], port)
	return b
}

// BindInterdomainArg encodes ioctl_evtchn_bind_interdomain.
func BindInterdomainArg(remoteDomain uint16, remotePort uint32) []byte {
	b := make([]byte, unsafe.Sizeof(evtchnBindInterdomain{}))
	ne.PutUint32(b[OffBindInterdomainRemoteDomain:], uint32(remoteDomain))
	ne.PutUint32(b[OffBindInterdomainRemotePort:], remotePort)
	return b
}

// BindUnboundPortArg encodes ioctl_evtchn_bind_unbound_port.
func BindUnboundPortArg(remoteDomain uint16) []byte {
	b := make([]byte, unsafe.Sizeof(evtchnBindUnboundPort{}))
	ne.PutUint32(b[OffBindUnboundRemoteDomain:], uint32(remoteDomain))
	return b
}

// PortArg encodes ioctl_evtchn_unbind and ioctl_evtchn_notify.
func PortArg(port uint32) []byte {
	b := make([]byte, unsafe.Sizeof(evtchnNotify{}))
	ne.PutUint32(b[OffPort:], port)
	return b
}

// PortsBytes encodes port numbers as the evtchn device reads and writes them.
func PortsBytes(ports ...uint32) []byte {
	b := make([]byte, 4*len(ports))
	for i, p := range ports {
		ne.PutUint32(b[4*i:], p)
	}
	return b
}

// ParsePorts decodes the pending ports read from the evtchn device; a
// trailing partial word is ignored.
func ParsePorts(b []byte) []uint32 {
	ps := make([]uint32, len(b)/4)
	for i := range ps {
		ps[i] = ne.Uint32(b[4*i:])
	}
	return ps
}
